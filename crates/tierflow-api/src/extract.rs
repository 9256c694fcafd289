//! Extractors that reject with [`ApiError`], so every malformed request gets a problem document
//! that says what was wrong.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tierflow_domain::ids::IdempotencyKey;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON body; a bad one is 400 (syntax), 413 (size), 415 (content type) or 422 (shape).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection, state.max_body_bytes)),
        }
    }
}

fn json_rejection(r: JsonRejection, max_body_bytes: usize) -> ApiError {
    let text = r.body_text();
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "{text}; send at most {max_body_bytes} bytes (this server's --max-body-bytes)"
        )),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Validation {
            detail: text,
            field: None,
        },
        _ => ApiError::Malformed(text),
    }
}

/// An optional JSON body: empty (or only white space) or `null` is `None`; otherwise it is held
/// to the same rules as [`Json`] (`application/json`, the size limit, the shape), with the same
/// problem documents.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
                    "{}; send at most {} bytes (this server's --max-body-bytes)",
                    r.body_text(),
                    state.max_body_bytes
                )),
                _ => ApiError::Malformed(r.body_text()),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        // The JSON extractor reads only the headers (the content type) and the body.
        let mut req = Request::new(axum::body::Body::from(bytes));
        *req.headers_mut() = headers;
        Json::<Option<T>>::from_request(req, state)
            .await
            .map(|Json(v)| OptionalJson(v))
    }
}

/// Path parameters; a bad one is 400.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<AppState>> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r: PathRejection| ApiError::Malformed(r.body_text()))
    }
}

/// Query parameters; a bad one is 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<Arc<AppState>> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r: QueryRejection| ApiError::Malformed(r.body_text()))
    }
}

/// The optional `Idempotency-Key` header.
pub struct IdempotencyHeader(pub Option<IdempotencyKey>);

impl FromRequestParts<Arc<AppState>> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState>) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyHeader(None));
        };
        let text = v
            .to_str()
            .map_err(|_| ApiError::Malformed("Idempotency-Key must be visible ASCII".into()))?;
        IdempotencyKey::parse(text)
            .map(|k| IdempotencyHeader(Some(k)))
            .map_err(|e| ApiError::Malformed(e.to_string()))
    }
}
