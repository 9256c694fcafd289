//! `GET /v1/tiers` and `PUT /v1/tiers/{tier_id}` (admin).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tierflow_domain::ids::{Actor, TierId};
use tierflow_domain::tier::{Features, Limits, Tier, TierCategory};
use tierflow_store::tiers::TierEdit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenants::to_json;
use crate::app::AppState;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Path};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put))
}

/// Every tier, by rank.
#[utoipa::path(get, path = "/v1/tiers", operation_id = "list_tiers", tag = "tiers", security(("bearer" = [])),
    responses((status = 200, description = "the tiers", body = Vec<Object>)))]
async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let tiers = tierflow_store::tiers::list(&mut conn).await?;
    Ok(axum::Json(to_json(&tiers)?))
}

/// A tier's definition.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    pub name: String,
    /// free, paid or enterprise.
    pub category: String,
    /// Orders tiers: higher is more; equal ranks are lateral moves.
    pub rank: i32,
    #[serde(default = "yes")]
    pub active: bool,
    /// Feature switches, e.g. {"voice": true}.
    #[schema(value_type = Object)]
    pub features: Features,
    /// Limits, e.g. {"leads": 1000}; null is unlimited.
    #[schema(value_type = Object)]
    pub limits: Limits,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

fn yes() -> bool {
    true
}

/// Creates or replaces a tier (admin), as an audited change with the catalogue's next version.
/// Tenants on it see the change at once; those whose entitlement it changes get a new version
/// and an `entitlement.changed` event, fanned out in the background (`fanout_job`). `active:
/// false` retires the tier: no new transitions to it.
#[utoipa::path(put, path = "/v1/tiers/{tier_id}", operation_id = "put_tier", tag = "tiers", security(("bearer" = [])),
    params(("tier_id" = String, Path, description = "the tier")),
    request_body = TierBody,
    responses(
        (status = 201, description = "created", body = TierEdit),
        (status = 200, description = "replaced", body = TierEdit),
        (status = 403, description = "not an admin token", body = Problem),
        (status = 422, description = "invalid field", body = Problem)))]
async fn put(
    State(state): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(tier_id): Path<String>,
    Json(body): Json<TierBody>,
) -> Result<(StatusCode, axum::Json<TierEdit>), ApiError> {
    let tier_id = TierId::parse(tier_id).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let category = TierCategory::parse(&body.category)
        .ok_or_else(|| ApiError::field("category", "use free, paid or enterprise"))?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::field("name", "name must be 1 to 100 characters"));
    }
    // Control characters (NUL above all, which PostgreSQL's text and jsonb refuse) never reach
    // the database.
    if body.name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            "name must not contain control characters",
        ));
    }
    for (field, key) in body
        .features
        .keys()
        .map(|k| ("features", k))
        .chain(body.limits.keys().map(|k| ("limits", k)))
    {
        if key.is_empty() || key.chars().any(char::is_control) {
            return Err(ApiError::field(
                field,
                format!(
                    "{field} keys must be non-empty and free of control characters; got {key:?}"
                ),
            ));
        }
    }
    if has_nul(&body.metadata) {
        return Err(ApiError::field(
            "metadata",
            "metadata must not contain NUL characters",
        ));
    }
    if let Some((name, _)) = body.limits.iter().find(|(_, l)| l.is_some_and(|l| l < 0)) {
        return Err(ApiError::field(
            "limits",
            format!("limit '{name}' is negative; use 0 or more, or null for unlimited"),
        ));
    }
    let tier = Tier {
        tier_id,
        name: body.name,
        category,
        rank: body.rank,
        active: body.active,
        features: body.features,
        limits: body.limits,
        metadata: body.metadata,
    };
    let actor = Actor::parse(admin.name.clone())?;
    let mut conn = state.pool.acquire().await?;
    let edit = tierflow_store::tiers::put(&mut conn, &admin.context(&state), &tier, &actor).await?;
    let status = if edit.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(edit)))
}

/// Whether a NUL character appears in any key or string of `v` (PostgreSQL's `jsonb` refuses it).
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
