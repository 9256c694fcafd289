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

use crate::app::AppState;
use crate::auth::{Admin, Caller};
use crate::error::responses::{AdminOnly, Authenticated, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Json, Path};
use crate::input::{DisplayName, FeatureMap, LimitMap, NulFreeJson, integral};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put))
}

/// Every tier, by rank.
#[utoipa::path(get, path = "/v1/tiers", operation_id = "list_tiers", tag = "tiers", security(("bearer" = [])),
    responses((status = 200, description = "the tiers, by rank", body = Vec<Tier>), Authenticated))]
async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<axum::Json<Vec<Tier>>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let tiers = tierflow_store::tiers::list(&mut conn).await?;
    Ok(axum::Json(tiers))
}

/// A tier's definition.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    #[schema(value_type = DisplayName)]
    pub name: String,
    #[schema(value_type = TierCategory)]
    pub category: String,
    /// Orders tiers: higher is more; equal ranks are lateral moves.
    #[serde(deserialize_with = "integral::int32")]
    #[schema(minimum = -2147483648, maximum = 2147483647, example = 20)]
    pub rank: i32,
    /// `false` retires the tier: no new transitions to it. Default `true`.
    #[serde(default = "yes")]
    pub active: bool,
    #[schema(value_type = FeatureMap)]
    pub features: Features,
    #[serde(deserialize_with = "integral::int_map")]
    #[schema(value_type = LimitMap)]
    pub limits: Limits,
    /// Free-form JSON for the operator (tierflow does not read it). Default `null`.
    #[serde(default)]
    #[schema(value_type = NulFreeJson)]
    pub metadata: serde_json::Value,
}

fn yes() -> bool {
    true
}

/// Creates or replaces a tier, as an audited change with the catalogue's next version. Admin
/// only. Tenants on it see the change at once; those whose entitlement it changes get a new
/// version and an `entitlement.changed` event, fanned out in the background (`fanout_job`).
/// `active: false` retires the tier: no new transitions to it.
#[utoipa::path(put, path = "/v1/tiers/{tier_id}", operation_id = "put_tier", tag = "tiers", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("tier_id" = TierId, Path, description = "the tier")),
    request_body = TierBody,
    responses(
        (status = 201, description = "created", body = TierEdit),
        (status = 200, description = "replaced", body = TierEdit),
        Authenticated, JsonBody, AdminOnly,
        (status = 404, description = "`not-found`: no such route (an empty tier id)", body = Problem, content_type = PROBLEM_JSON)))]
async fn put(
    State(state): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(tier_id): Path<String>,
    Json(body): Json<TierBody>,
) -> Result<(StatusCode, axum::Json<TierEdit>), ApiError> {
    let tier_id = TierId::parse(tier_id).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let category = TierCategory::parse(&body.category)
        .ok_or_else(|| ApiError::field("category", "use free, paid or enterprise"))?;
    // Control characters (NUL above all, which PostgreSQL's text and jsonb refuse) never reach
    // the database.
    DisplayName::check("name", &body.name)?;
    FeatureMap::check(&body.features)?;
    LimitMap::check(&body.limits)?;
    NulFreeJson::check("metadata", &body.metadata)?;
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
