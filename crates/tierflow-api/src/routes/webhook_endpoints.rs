//! `/v1/webhook-endpoints`: the endpoints `entitlement.changed` events are delivered to, each
//! with its own Standard Webhooks secret and event filter — admin tokens only. A secret is shown
//! once, in the answer to the create or rotate request that made it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tierflow_store::webhooks::{
    self, DEFAULT_ROTATION_OVERLAP_SECS, EndpointStatus, EndpointUpdate, EndpointWithSecret,
    NewEndpoint, WebhookEndpoint,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Admin;
use crate::error::responses::{AdminOnly, Authenticated, BadParameters, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Json, Path, Query};
use crate::input::{EndpointDescription, EndpointUrl, UuidParam, integral};
use tierflow_domain::ids::Reason;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(rotate_secret))
}

/// An event type an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "entitlement.changed")]
    EntitlementChanged,
}

impl EventType {
    fn name(self) -> String {
        match self {
            Self::EntitlementChanged => tierflow_store::events::ENTITLEMENT_CHANGED.to_owned(),
        }
    }
}

fn names(types: Vec<EventType>) -> Vec<String> {
    types.into_iter().map(EventType::name).collect()
}

/// A new endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    #[schema(value_type = EndpointUrl)]
    pub url: String,
    #[serde(default)]
    #[schema(value_type = Option<EndpointDescription>, nullable = false)]
    pub description: String,
    /// The event types to deliver; absent or empty: every type.
    #[serde(default)]
    pub event_types: Vec<EventType>,
}

/// Every endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    pub items: Vec<WebhookEndpoint>,
}

/// Creates an endpoint with a fresh secret, returned in this answer only. Admin only.
#[utoipa::path(post, path = "/v1/webhook-endpoints", operation_id = "create_webhook_endpoint", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    request_body = EndpointBody,
    responses(
        (status = 201, description = "the endpoint and its secret (`whsec_…`; shown once)", body = EndpointWithSecret),
        Authenticated, JsonBody, AdminOnly))]
async fn create(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Json(body): Json<EndpointBody>,
) -> Result<(StatusCode, axum::Json<EndpointWithSecret>), ApiError> {
    EndpointUrl::check("url", &body.url)?;
    let new = NewEndpoint {
        url: body.url,
        description: body.description,
        event_types: names(body.event_types),
    };
    let mut conn = state.pool.acquire().await?;
    let out = webhooks::create(&mut conn, &caller.context(&state), new).await?;
    Ok((StatusCode::CREATED, axum::Json(out)))
}

/// Every endpoint, oldest first, without secrets. Admin only.
#[utoipa::path(get, path = "/v1/webhook-endpoints", operation_id = "list_webhook_endpoints", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    responses(
        (status = 200, description = "the endpoints", body = EndpointList),
        Authenticated, AdminOnly))]
async fn list(
    State(state): State<Arc<AppState>>,
    Admin(_caller): Admin,
) -> Result<axum::Json<EndpointList>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let items = webhooks::list(&mut conn).await?;
    Ok(axum::Json(EndpointList { items }))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    UuidParam::parse("endpoint_id", id)
}

/// One endpoint, without its secrets. Admin only.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{endpoint_id}", operation_id = "get_webhook_endpoint", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("endpoint_id" = UuidParam, Path, description = "the endpoint")),
    responses(
        (status = 200, description = "the endpoint", body = WebhookEndpoint),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: unknown endpoint", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: reason is not printable text", body = Problem, content_type = PROBLEM_JSON)))]
async fn get(
    State(state): State<Arc<AppState>>,
    Admin(_caller): Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookEndpoint>, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.pool.acquire().await?;
    Ok(axum::Json(webhooks::get(&mut conn, id).await?))
}

/// What to change; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// Absent or null: unchanged.
    #[schema(value_type = Option<EndpointUrl>)]
    pub url: Option<String>,
    /// Absent or null: unchanged.
    #[schema(value_type = Option<EndpointDescription>)]
    pub description: Option<String>,
    /// The event types to deliver; empty: every type; absent or null: unchanged.
    pub event_types: Option<Vec<EventType>>,
}

/// Changes an endpoint's URL, description or event filter; its secret and status stay. Queued
/// and dead deliveries go to the new URL (each attempt reads the endpoint as it is then). Admin
/// only.
#[utoipa::path(patch, path = "/v1/webhook-endpoints/{endpoint_id}", operation_id = "update_webhook_endpoint", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("endpoint_id" = UuidParam, Path, description = "the endpoint")),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "the endpoint", body = WebhookEndpoint),
        Authenticated, JsonBody, AdminOnly,
        (status = 404, description = "`not-found`: unknown endpoint", body = Problem, content_type = PROBLEM_JSON)))]
async fn update(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Json(body): Json<EndpointPatch>,
) -> Result<axum::Json<WebhookEndpoint>, ApiError> {
    let id = parse_id(&id)?;
    if let Some(url) = &body.url {
        EndpointUrl::check("url", url)?;
    }
    let change = EndpointUpdate {
        url: body.url,
        description: body.description,
        event_types: body.event_types.map(names),
    };
    let mut conn = state.pool.acquire().await?;
    let out = webhooks::update(&mut conn, &caller.context(&state), id, change).await?;
    Ok(axum::Json(out))
}

/// Why an endpoint is disabled.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DisableQuery {
    /// Why, for the audit trail and the endpoint's `disabled_reason`.
    #[param(value_type = Option<Reason>, nullable = false)]
    pub reason: Option<String>,
}

/// Disables an endpoint: it gets no new events, and its queued deliveries die with a message
/// saying so (re-deliver them with `POST /v1/jobs/{id}/retry` after enabling it). Disabling a
/// disabled endpoint changes nothing. Admin only.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{endpoint_id}/disable", operation_id = "disable_webhook_endpoint", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("endpoint_id" = UuidParam, Path, description = "the endpoint"), DisableQuery),
    responses(
        (status = 200, description = "the endpoint", body = WebhookEndpoint),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: unknown endpoint", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: reason is not printable text", body = Problem, content_type = PROBLEM_JSON)))]
async fn disable(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Query(q): Query<DisableQuery>,
) -> Result<axum::Json<WebhookEndpoint>, ApiError> {
    let id = parse_id(&id)?;
    let reason = q.reason.map(Reason::parse).transpose()?;
    let reason = reason.as_ref().map(|r| r.as_str());
    let mut conn = state.pool.acquire().await?;
    let ctx = caller.context(&state);
    let out = webhooks::set_status(&mut conn, &ctx, id, EndpointStatus::Disabled, reason).await?;
    Ok(axum::Json(out))
}

/// Enables an endpoint (also one disabled by its `410 Gone`): it gets every event from now on.
/// Admin only.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{endpoint_id}/enable", operation_id = "enable_webhook_endpoint", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("endpoint_id" = UuidParam, Path, description = "the endpoint")),
    responses(
        (status = 200, description = "the endpoint", body = WebhookEndpoint),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: unknown endpoint", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: reason is not printable text", body = Problem, content_type = PROBLEM_JSON)))]
async fn enable(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookEndpoint>, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.pool.acquire().await?;
    let ctx = caller.context(&state);
    let out = webhooks::set_status(&mut conn, &ctx, id, EndpointStatus::Enabled, None).await?;
    Ok(axum::Json(out))
}

/// How long the old secret keeps signing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RotateQuery {
    /// Seconds the old secret keeps signing beside the new one, 0 to 2,592,000 (30 days);
    /// default 86,400 (a day).
    #[serde(default, deserialize_with = "integral::query_int")]
    #[param(minimum = 0, maximum = 2592000, nullable = false)]
    pub overlap_seconds: Option<i64>,
}

/// Replaces the endpoint's secret. Until the overlap ends every delivery carries two signatures,
/// the new secret's and the old one's, so receivers can switch at their own pace. Admin only.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", operation_id = "rotate_webhook_secret", tag = "webhooks", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("endpoint_id" = UuidParam, Path, description = "the endpoint"), RotateQuery),
    responses(
        (status = 200, description = "the endpoint and its new secret (shown once)", body = EndpointWithSecret),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: unknown endpoint", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: the previous rotation's overlap is still running", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: overlap_seconds out of range", body = Problem, content_type = PROBLEM_JSON)))]
async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    Query(q): Query<RotateQuery>,
) -> Result<axum::Json<EndpointWithSecret>, ApiError> {
    let id = parse_id(&id)?;
    let overlap = q.overlap_seconds.unwrap_or(DEFAULT_ROTATION_OVERLAP_SECS);
    let mut conn = state.pool.acquire().await?;
    let ctx = caller.context(&state);
    let out = webhooks::rotate_secret(&mut conn, &ctx, id, overlap).await?;
    Ok(axum::Json(out))
}
