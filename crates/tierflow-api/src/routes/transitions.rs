//! `POST /v1/tenants/{tenant_id}/transitions`, its history (cursor-paginated), and cancel.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{Actor, Reason, TierId, TransitionId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::transitions::{cancel_transition, history};
use tierflow_store::{TransitionRequest, submit_transition};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::tenants::{created_or_replayed, parse_tenant, to_json};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::{IdempotencyHeader, Json, Path, Query};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(request, list))
        .routes(routes!(cancel))
}

/// A status change instead of a tier.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusAction {
    Suspend,
    Reactivate,
}

/// A transition request: a target tier, or a status action.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// The tier to move to (upgrade, downgrade or lateral, by rank).
    pub tier_id: Option<String>,
    /// Suspend or reactivate instead of changing the tier.
    pub action: Option<StatusAction>,
    /// Grace of a downgrade, 0 to 7,776,000 (90 days); default from configuration.
    pub grace_seconds: Option<i64>,
    pub reason: Option<String>,
    /// Defaults to the token's name.
    pub requested_by: Option<String>,
}

/// Requests a transition. Send an `Idempotency-Key` to make it safe to retry: the same key and
/// body returns the first result (`Idempotent-Replayed: true`, `"replayed": true`); the same key
/// with another body is a 409.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/transitions", operation_id = "request_transition", tag = "transitions", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "the tenant"),
           ("Idempotency-Key" = Option<String>, Header, description = "makes the request safe to retry")),
    request_body = TransitionBody,
    responses(
        (status = 201, description = "the transition, its jobs with due times, the effective entitlement", body = Object),
        (status = 200, description = "a replay of an earlier request with the same key", body = Object),
        (status = 404, description = "unknown tenant or tier", body = Problem),
        (status = 409, description = "conflicts with the current state, or the key was used for another request", body = Problem),
        (status = 422, description = "invalid field", body = Problem)))]
async fn request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    IdempotencyHeader(key): IdempotencyHeader,
    Json(body): Json<TransitionBody>,
) -> Result<(StatusCode, HeaderMap, axum::Json<serde_json::Value>), ApiError> {
    let target = match (body.tier_id, body.action) {
        (Some(tier), None) => Target::Tier(TierId::parse(tier)?),
        (None, Some(StatusAction::Suspend)) => Target::Suspend,
        (None, Some(StatusAction::Reactivate)) => Target::Reactivate,
        _ => {
            return Err(ApiError::field(
                "tier_id",
                "give exactly one of tier_id (a tier to move to) or action (suspend, reactivate)",
            ));
        }
    };
    let req = TransitionRequest {
        tenant_id: parse_tenant(tenant_id)?,
        target,
        grace: body.grace_seconds.map(GracePeriod::from_secs).transpose()?,
        reason: body.reason.map(Reason::parse).transpose()?,
        requested_by: Actor::parse(body.requested_by.unwrap_or_else(|| caller.name.clone()))?,
        idempotency_key: key,
    };
    let out = submit_transition(&state.pool, &caller.context(&state), req).await?;
    created_or_replayed(out.replayed, &out)
}

/// History query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The tenant's transitions, newest first, cursor-paginated.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/transitions", operation_id = "list_transitions", tag = "transitions", security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "the tenant"), HistoryQuery),
    responses(
        (status = 200, body = HistoryPage, description = "success"),
        (status = 400, description = "bad limit or cursor", body = Problem),
        (status = 404, description = "unknown tenant", body = Problem)))]
async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(tenant_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Malformed(format!(
            "limit is {limit}; use 1 to 200"
        )));
    }
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut conn = state.pool.acquire().await?;
    if !tierflow_store::tenants::exists(&mut conn, &tenant).await? {
        return Err(ApiError::NotFound(format!(
            "tenant '{tenant}' is not known"
        )));
    }
    let mut rows = history(&mut conn, &tenant, limit + 1, before).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last()
            .map(|t| format!("{}_{}", t.requested_at.timestamp_micros(), t.id))
    } else {
        None
    };
    let items = rows.iter().map(to_json).collect::<Result<_, _>>()?;
    Ok(axum::Json(HistoryPage { items, next_cursor }))
}

fn parse_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::Malformed(format!("cursor '{c}' is not one this API returned"));
    let (micros, id) = c.split_once('_').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// Who cancels and why.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub reason: Option<String>,
    /// Defaults to the token's name.
    pub requested_by: Option<String>,
}

/// Cancels a pending downgrade: the tenant keeps its tier, the grace restrictions are lifted,
/// the scheduled jobs are cancelled.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/transitions/{transition_id}/cancel", operation_id = "cancel_transition", tag = "transitions",
    security(("bearer" = [])),
    params(("tenant_id" = String, Path, description = "the tenant"),
           ("transition_id" = String, Path, description = "the pending transition")),
    request_body(content = CancelBody, description = "optional"),
    responses(
        (status = 200, description = "the cancelled transition and the effective entitlement", body = Object),
        (status = 404, description = "unknown tenant or transition", body = Problem),
        (status = 409, description = "the transition is not pending", body = Problem)))]
async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((tenant_id, transition_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let id = Uuid::parse_str(&transition_id).map_err(|_| {
        ApiError::Malformed(format!("transition id '{transition_id}' is not a UUID"))
    })?;
    // The body is optional: empty means "no reason, the token's name as actor".
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::Malformed(format!("the body is not valid JSON: {e}"))
            } else {
                ApiError::Validation {
                    detail: e.to_string(),
                    field: None,
                }
            }
        })?
    };
    let actor = Actor::parse(body.requested_by.unwrap_or_else(|| caller.name.clone()))?;
    let reason = body.reason.map(Reason::parse).transpose()?;
    let mut conn = state.pool.acquire().await?;
    let out = cancel_transition(
        &mut conn,
        &caller.context(&state),
        &tenant,
        TransitionId(id),
        &actor,
        reason.as_ref(),
    )
    .await?;
    Ok(axum::Json(to_json(&out)?))
}
