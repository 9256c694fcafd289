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

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", responses((status = 200, body = Health, description = "success")))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        detail: None,
    })
}

/// Readiness: the database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health", responses(
    (status = 200, body = Health, description = "success"), (status = 503, body = Health, description = "database down or migrations pending")))]
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Health>) {
    match crate::ops::readiness(&state.pool).await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ready",
                detail: None,
            }),
        ),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not ready",
                detail: Some(why),
            }),
        ),
    }
}
