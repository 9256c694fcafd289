//! `POST /v1/tenants` (provision) and `GET /v1/tenants/{tenant_id}/entitlement`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tierflow_domain::effective::EffectiveEntitlement;
use tierflow_domain::ids::{Actor, Reason, TenantId, TierId};
use tierflow_store::TransitionOutcome;
use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::responses::{Authenticated, BadParameters, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Json, Path};
use crate::input::UuidParam;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(provision))
        .routes(routes!(entitlement))
}

/// A new tenant and its first tier.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionBody {
    #[schema(value_type = TenantId)]
    pub tenant_id: String,
    #[schema(value_type = TierId)]
    pub tier_id: String,
    #[schema(value_type = Option<Reason>)]
    pub reason: Option<String>,
    /// Defaults to the token's name.
    #[schema(value_type = Option<Actor>)]
    pub requested_by: Option<String>,
    /// When the entitlement expires (status `expired`, every restriction on, until reactivated);
    /// after now (after the test clock's time for a tenant on a test clock).
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A test clock for the tenant to live by (`POST /v1/test-clocks`); for upstreams' tests.
    #[schema(value_type = Option<UuidParam>)]
    pub test_clock_id: Option<String>,
}

/// Provisions a tenant on its first tier.
#[utoipa::path(post, path = "/v1/tenants", operation_id = "provision_tenant", tag = "tenants", security(("bearer" = [])),
    request_body = ProvisionBody,
    responses(
        (status = 201, description = "the provision transition and the effective entitlement", body = TransitionOutcome),
        Authenticated, JsonBody,
        (status = 404, description = "`not-found`: unknown tier or test clock", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: the tenant exists, or the tier is inactive", body = Problem, content_type = PROBLEM_JSON)))]
async fn provision(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<ProvisionBody>,
) -> Result<(StatusCode, axum::Json<TransitionOutcome>), ApiError> {
    let req = ProvisionRequest {
        tenant_id: TenantId::parse(body.tenant_id)?,
        tier_id: TierId::parse(body.tier_id)?,
        reason: body.reason.map(Reason::parse).transpose()?,
        requested_by: Actor::parse(body.requested_by.unwrap_or_else(|| caller.name.clone()))?,
        expires_at: body.expires_at,
        test_clock_id: body
            .test_clock_id
            .map(|id| tierflow_domain::ids::parse_uuid("test_clock_id", &id))
            .transpose()?,
    };
    let mut conn = state.pool.acquire().await?;
    let out = provision_tenant(&mut conn, &caller.context(&state), req).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// What the tenant may do now, with the provenance of every value.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/entitlement", operation_id = "get_entitlement", tag = "tenants", security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant")),
    responses(
        (status = 200, description = "the effective entitlement", body = EffectiveEntitlement),
        Authenticated, BadParameters,
        (status = 404, description = "`not-found`: unknown tenant", body = Problem, content_type = PROBLEM_JSON)))]
async fn entitlement(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(tenant_id): Path<String>,
) -> Result<axum::Json<EffectiveEntitlement>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let mut conn = state.pool.acquire().await?;
    let e = tierflow_store::tenants::effective(&mut conn, &state.ctx, &tenant).await?;
    Ok(axum::Json(e))
}

/// A tenant id from a path: malformed is 400.
pub(crate) fn parse_tenant(s: String) -> Result<TenantId, ApiError> {
    TenantId::parse(s).map_err(|e| ApiError::Malformed(e.to_string()))
}

/// 201 for a new result, 200 with `Idempotent-Replayed: true` for a replay of an earlier request.
pub(crate) fn created_or_replayed<T>(
    replayed: bool,
    body: T,
) -> (StatusCode, axum::http::HeaderMap, axum::Json<T>) {
    let mut headers = axum::http::HeaderMap::new();
    let status = if replayed {
        headers.insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, headers, axum::Json(body))
}
