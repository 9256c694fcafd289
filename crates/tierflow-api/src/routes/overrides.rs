//! `POST /v1/tenants/{tenant_id}/overrides` and `DELETE /v1/tenants/{tenant_id}/overrides/{override_id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tierflow_domain::ids::{Actor, IdempotencyKey, OverrideId, Reason, TenantId};
use tierflow_domain::limit_override::{EntitlementType, OverrideReason};
use tierflow_store::overrides::{
    OverrideOutcome, OverrideRequest, RemoveOutcome, create_override, remove_override,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenants::{created_or_replayed, parse_tenant};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::responses::{Authenticated, BadParameters, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{IdempotencyHeader, Json, Path};
use crate::input::{UuidParam, integral};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(remove))
}

/// A temporary limit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// The limit it replaces.
    #[schema(value_type = EntitlementType)]
    pub entitlement_type: String,
    /// The limit while the override lasts (0 or more).
    #[serde(deserialize_with = "integral::int")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64, example = 5000)]
    pub override_limit: i64,
    #[schema(value_type = OverrideReason)]
    pub reason: String,
    /// When it ends: after now, at most 90 days ahead (the server's clock, or the tenant's test
    /// clock; a time outside that window is a 422).
    pub expires_at: DateTime<Utc>,
    /// A free-text note for the audit trail.
    #[schema(value_type = Option<Reason>)]
    pub note: Option<String>,
    /// Defaults to the token's name.
    #[schema(value_type = Option<Actor>)]
    pub granted_by: Option<String>,
}

/// Grants a temporary limit; its expiry is scheduled as a job. Honors `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/overrides", operation_id = "create_override", tag = "overrides", security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant"),
           ("Idempotency-Key" = Option<IdempotencyKey>, Header, nullable = false, description = "makes the request safe to retry")),
    request_body = OverrideBody,
    responses(
        (status = 201, description = "the override, its expiry job, the effective entitlement", body = OverrideOutcome),
        (status = 200, description = "a replay of an earlier request with the same key", body = OverrideOutcome,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        Authenticated, JsonBody,
        (status = 404, description = "`not-found`: unknown tenant", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`idempotency-conflict`: the key was used for another request", body = Problem, content_type = PROBLEM_JSON)))]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    IdempotencyHeader(key): IdempotencyHeader,
    Json(body): Json<OverrideBody>,
) -> Result<(StatusCode, HeaderMap, axum::Json<OverrideOutcome>), ApiError> {
    let req = OverrideRequest {
        tenant_id: parse_tenant(tenant_id)?,
        entitlement_type: EntitlementType::parse(&body.entitlement_type)?,
        override_limit: body.override_limit,
        reason: OverrideReason::parse(&body.reason)?,
        granted_by: Actor::parse(body.granted_by.unwrap_or_else(|| caller.name.clone()))?,
        expires_at: body.expires_at,
        note: body.note.map(Reason::parse).transpose()?,
        idempotency_key: key,
    };
    let mut conn = state.pool.acquire().await?;
    let out = create_override(&mut conn, &caller.context(&state), req).await?;
    Ok(created_or_replayed(out.replayed, out))
}

/// Ends an active override now and cancels its expiry job.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/overrides/{override_id}", operation_id = "remove_override", tag = "overrides",
    security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant"),
           ("override_id" = UuidParam, Path, description = "the override")),
    responses(
        (status = 200, description = "the effective entitlement without the override", body = RemoveOutcome),
        Authenticated, BadParameters,
        (status = 404, description = "`not-found`: unknown tenant or override", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: the override is no longer active", body = Problem, content_type = PROBLEM_JSON)))]
async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((tenant_id, override_id)): Path<(String, String)>,
) -> Result<axum::Json<RemoveOutcome>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let id = UuidParam::parse("override_id", &override_id)?;
    let actor = Actor::parse(caller.name.clone())?;
    let mut conn = state.pool.acquire().await?;
    let out = remove_override(
        &mut conn,
        &caller.context(&state),
        &tenant,
        OverrideId(id),
        &actor,
        None,
    )
    .await?;
    Ok(axum::Json(out))
}
