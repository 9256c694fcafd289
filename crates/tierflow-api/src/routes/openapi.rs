//! `GET /openapi.json`: the OpenAPI 3 document, generated from the route registrations.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(document))
}

/// An OpenAPI 3.1 document (its full schema is the OpenAPI Initiative's; only the top is named
/// here).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only a schema: the document is served as the rendered text.
struct OpenApiDocument {
    /// The OpenAPI version.
    #[schema(example = "3.1.0")]
    openapi: String,
    #[schema(value_type = Object)]
    info: (),
    /// Every route, with its parameters, bodies and responses.
    #[schema(value_type = Object)]
    paths: (),
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi_document", tag = "health",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = OpenApiDocument)))]
async fn document(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.clone(),
    )
}
