//! `POST /v1/tenants/{tenant_id}/holds` and `DELETE /v1/tenants/{tenant_id}/holds/{name}`: an
//! operator's named hold (compliance, fraud review) — admin tokens only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tierflow_domain::ids::{Actor, HoldName, Reason, TenantId};
use tierflow_domain::restriction::Restriction;
use tierflow_store::holds::{HoldOutcome, HoldRequest, lift_hold, place_hold};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenants::parse_tenant;
use crate::app::AppState;
use crate::auth::Admin;
use crate::error::responses::{AdminOnly, Authenticated, BadParameters, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Json, Path, Query};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(place))
        .routes(routes!(lift))
}

/// A hold to place.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// The hold's name.
    #[schema(value_type = HoldName)]
    pub name: String,
    /// The flags it holds; absent or empty: all four.
    #[serde(default)]
    #[schema(value_type = Vec<Restriction>)]
    pub restrictions: Vec<String>,
    /// Why, for the audit trail (required).
    #[schema(value_type = Reason)]
    pub reason: String,
    /// Defaults to the token's name.
    #[schema(value_type = Option<Actor>)]
    pub requested_by: Option<String>,
}

/// Places a named hold: its flags stay on through every transition until the hold is lifted.
/// Admin only.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/holds", operation_id = "place_hold", tag = "tenants", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("tenant_id" = TenantId, Path, description = "the tenant")),
    request_body = HoldBody,
    responses(
        (status = 201, description = "the hold and the effective entitlement", body = HoldOutcome),
        Authenticated, JsonBody, AdminOnly,
        (status = 404, description = "`not-found`: unknown tenant", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: a hold of that name exists", body = Problem, content_type = PROBLEM_JSON)))]
async fn place(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(tenant_id): Path<String>,
    Json(body): Json<HoldBody>,
) -> Result<(StatusCode, axum::Json<HoldOutcome>), ApiError> {
    let req = HoldRequest {
        tenant_id: parse_tenant(tenant_id)?,
        name: HoldName::parse(body.name)?,
        restrictions: body
            .restrictions
            .iter()
            .map(|r| Restriction::parse(r))
            .collect::<Result<_, _>>()?,
        reason: Reason::parse(body.reason)?,
        requested_by: Actor::parse(body.requested_by.unwrap_or_else(|| caller.name.clone()))?,
    };
    let mut conn = state.pool.acquire().await?;
    let out = place_hold(&mut conn, &caller.context(&state), req).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// Why a hold is lifted.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LiftQuery {
    /// Why, for the audit trail.
    #[param(value_type = Option<Reason>, nullable = false)]
    pub reason: Option<String>,
}

/// Lifts a hold: only its own flags go off; flags another source holds stay on. Admin only.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/holds/{name}", operation_id = "lift_hold", tag = "tenants", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("tenant_id" = TenantId, Path, description = "the tenant"),
           ("name" = HoldName, Path, description = "the hold's name"), LiftQuery),
    responses(
        (status = 200, description = "the lifted hold and the effective entitlement", body = HoldOutcome),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: unknown tenant or hold", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: reason is not printable text", body = Problem, content_type = PROBLEM_JSON)))]
async fn lift(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path((tenant_id, name)): Path<(String, String)>,
    Query(q): Query<LiftQuery>,
) -> Result<axum::Json<HoldOutcome>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let name = HoldName::parse(name).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let reason = q.reason.map(Reason::parse).transpose()?;
    let actor = Actor::parse(caller.name.clone())?;
    let mut conn = state.pool.acquire().await?;
    let out = lift_hold(
        &mut conn,
        &caller.context(&state),
        &tenant,
        &name,
        &actor,
        reason.as_ref(),
    )
    .await?;
    Ok(axum::Json(out))
}
