//! `POST /v1/tenants/{tenant_id}/overrides` and `DELETE /v1/tenants/{tenant_id}/overrides/{override_id}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tierflow_domain::ids::{Actor, OverrideId, Reason};
use tierflow_domain::limit_override::{EntitlementType, OverrideReason};
use tierflow_store::overrides::{OverrideRequest, create_override, remove_override};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::tenants::{created_or_replayed, parse_tenant, to_json};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::{IdempotencyHeader, Json, Path};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(remove))
}

/// A temporary limit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// leads, scoring, routing, voice or api.
    pub entitlement_type: String,
    /// The limit while the override lasts (0 or more).
    pub override_limit: i64,
    /// emergency, incident or compliance.
    pub reason: String,
    /// When it ends: after now, at most 90 days ahead.
    pub expires_at: DateTime<Utc>,
    /// A free-text note for the audit trail.
    pub note: Option<String>,
    /// Defaults to the token's name.
    pub granted_by: Option<String>,
}

/// Grants a temporary limit; its expiry is scheduled as a job. Honors `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/overrides", operation_id = "create_override", tag = "overrides", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "the tenant"),
           ("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry")),
    request_body = OverrideBody,
    responses(
        (status = 201, description = "the override, its expiry job, the effective entitlement", body = Object),
        (status = 200, description = "a replay", body = Object),
        (status = 404, description = "unknown tenant", body = Problem),
        (status = 409, description = "the key was used for another request", body = Problem),
        (status = 422, description = "invalid field", body = Problem)))]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    IdempotencyHeader(key): IdempotencyHeader,
    Json(body): Json<OverrideBody>,
) -> Result<(StatusCode, HeaderMap, axum::Json<serde_json::Value>), ApiError> {
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
    created_or_replayed(out.replayed, &out)
}

/// Ends an active override now and cancels its expiry job.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/overrides/{override_id}", operation_id = "remove_override", tag = "overrides",
    security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "the tenant"),
           ("override_id" = String, Path, description = "the override")),
    responses(
        (status = 200, description = "the effective entitlement without the override", body = Object),
        (status = 404, description = "unknown tenant or override", body = Problem),
        (status = 409, description = "the override is no longer active", body = Problem)))]
async fn remove(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((tenant_id, override_id)): Path<(String, String)>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let id = Uuid::parse_str(&override_id)
        .map_err(|_| ApiError::Malformed(format!("override id '{override_id}' is not a UUID")))?;
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
    Ok(axum::Json(to_json(&out)?))
}
