//! `POST /v1/tenants/{tenant_id}/transitions`, its history (cursor-paginated), and cancel.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{Actor, IdempotencyKey, Reason, TenantId, TierId, TransitionId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::rows::TransitionRecord;
use tierflow_store::transitions::{CancelOutcome, cancel_transition, history};
use tierflow_store::{TransitionOutcome, TransitionRequest, submit_transition};
use utoipa::openapi::schema::Type;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenants::{created_or_replayed, parse_tenant};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::responses::{Authenticated, BadParameters, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{IdempotencyHeader, Json, OptionalJson, Path, Query};
use crate::input::{HistoryCursor, UuidParam, exactly_one_of, integral};

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
#[schema(as = TransitionFields)]
pub struct TransitionBody {
    /// The tier to move to (upgrade, downgrade or lateral, by rank).
    #[schema(value_type = Option<TierId>)]
    pub tier_id: Option<String>,
    /// Suspend or reactivate instead of changing the tier.
    pub action: Option<StatusAction>,
    /// Grace of a downgrade, 0 to 7,776,000 (90 days); default from configuration.
    #[serde(default, deserialize_with = "integral::opt_int")]
    #[schema(minimum = 0, maximum = 7_776_000, example = 604_800)]
    pub grace_seconds: Option<i64>,
    #[schema(value_type = Option<Reason>)]
    pub reason: Option<String>,
    /// Defaults to the token's name.
    #[schema(value_type = Option<Actor>)]
    pub requested_by: Option<String>,
}

/// [`TransitionBody`] as the document shows it: its fields, and exactly one of `tier_id` and
/// `action` (what [`request`] accepts).
pub struct TransitionRequestBody;

impl utoipa::PartialSchema for TransitionRequestBody {
    fn schema() -> RefOr<Schema> {
        exactly_one_of(
            <TransitionBody as utoipa::PartialSchema>::schema(),
            &[("tier_id", Type::String), ("action", Type::String)],
        )
    }
}

impl utoipa::ToSchema for TransitionRequestBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "TransitionBody".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <TransitionBody as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Requests a transition. Send an `Idempotency-Key` to make it safe to retry: the same key and
/// body returns the first result (`Idempotent-Replayed: true`, `"replayed": true`); the same key
/// with another body is a 409.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/transitions", operation_id = "request_transition", tag = "transitions", security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant"),
           ("Idempotency-Key" = Option<IdempotencyKey>, Header, nullable = false, description = "makes the request safe to retry")),
    request_body = TransitionRequestBody,
    responses(
        (status = 201, description = "the transition, its jobs with due times, the effective entitlement", body = TransitionOutcome),
        (status = 200, description = "a replay of an earlier request with the same key", body = TransitionOutcome,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        Authenticated, JsonBody,
        (status = 404, description = "`not-found`: unknown tenant or tier", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: conflicts with the current state (already on the tier, inactive tier, …); `idempotency-conflict`: the key was used for another request", body = Problem, content_type = PROBLEM_JSON)))]
async fn request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    IdempotencyHeader(key): IdempotencyHeader,
    Json(body): Json<TransitionBody>,
) -> Result<(StatusCode, HeaderMap, axum::Json<TransitionOutcome>), ApiError> {
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
    Ok(created_or_replayed(out.replayed, out))
}

/// History query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1–200 (default 50).
    #[serde(default, deserialize_with = "integral::query_int")]
    #[param(minimum = 1, maximum = 200, nullable = false)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<HistoryCursor>, nullable = false)]
    pub cursor: Option<String>,
}

/// One page of history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub items: Vec<TransitionRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// The tenant's transitions, newest first, cursor-paginated.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/transitions", operation_id = "list_transitions", tag = "transitions", security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant"), HistoryQuery),
    responses(
        (status = 200, body = HistoryPage, description = "one page, newest first"),
        Authenticated, BadParameters,
        (status = 404, description = "`not-found`: unknown tenant", body = Problem, content_type = PROBLEM_JSON)))]
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
    let before = q.cursor.as_deref().map(HistoryCursor::parse).transpose()?;
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
            .map(|t| HistoryCursor::encode(t.requested_at, t.id.0))
    } else {
        None
    };
    Ok(axum::Json(HistoryPage {
        items: rows,
        next_cursor,
    }))
}

/// Who cancels and why.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[schema(value_type = Option<Reason>)]
    pub reason: Option<String>,
    /// Defaults to the token's name.
    #[schema(value_type = Option<Actor>)]
    pub requested_by: Option<String>,
}

/// Cancels a pending downgrade: the tenant keeps its tier, the grace restrictions are lifted,
/// the scheduled jobs are cancelled.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/transitions/{transition_id}/cancel", operation_id = "cancel_transition", tag = "transitions",
    security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant"),
           ("transition_id" = UuidParam, Path, description = "the pending transition")),
    request_body(content = Option<CancelBody>, description = "optional: an empty body means no reason and the token's name as actor"),
    responses(
        (status = 200, description = "the cancelled transition and the effective entitlement", body = CancelOutcome),
        Authenticated, JsonBody,
        (status = 404, description = "`not-found`: unknown tenant or transition", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: the transition is not pending", body = Problem, content_type = PROBLEM_JSON)))]
async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((tenant_id, transition_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<CancelBody>,
) -> Result<axum::Json<CancelOutcome>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let id = UuidParam::parse("transition_id", &transition_id)?;
    // The body is optional: empty means "no reason, the token's name as actor".
    let body = body.unwrap_or_default();
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
    Ok(axum::Json(out))
}
