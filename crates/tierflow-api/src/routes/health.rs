//! `GET /healthz` (the process is up) and `GET /readyz` (the database answers and its migrations
//! are current). Neither needs a token.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

/// Whether the process (`/healthz`) or its database (`/readyz`) can serve.
#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: HealthStatus,
    /// What is wrong, without internals (details go to the log); absent when all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "database unreachable")]
    detail: Option<String>,
}

/// `ok` (alive), `ready` (the database answers, migrations current) or `not ready`.
#[derive(Serialize, utoipa::ToSchema)]
enum HealthStatus {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
}

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", responses((status = 200, body = Health, description = "the process answers")))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        detail: None,
    })
}

/// Readiness: the database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", responses(
    (status = 200, body = Health, description = "ready to serve"), (status = 503, body = Health, description = "database down or migrations pending")))]
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Health>) {
    match crate::ops::readiness(&state.pool).await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: HealthStatus::Ready,
                detail: None,
            }),
        ),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: HealthStatus::NotReady,
                detail: Some(why),
            }),
        ),
    }
}
