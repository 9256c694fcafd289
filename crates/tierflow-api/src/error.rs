//! [`ApiError`]: the one error type that becomes an HTTP response, as RFC 9457
//! `application/problem+json`.
//!
//! Each variant's doc names its status. Its `type` is a stable URI per error class
//! (`https://tierflow.dev/problems/<class>`), so clients branch on the type, not the text.
//! Internal causes are logged in full and reach the client only as an opaque 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tierflow_domain::DomainError;
use tierflow_store::StoreError;

/// The base of every problem `type`.
pub const PROBLEM_BASE: &str = "https://tierflow.dev/problems/";

/// Every error the API returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON syntax, a malformed id, a bad query or header).
    #[error("{0}")]
    Malformed(String),
    /// 401: no valid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such tenant, tier, transition, override, job or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request conflicts with the current state (already on the tier, not pending, …).
    #[error("{0}")]
    StateConflict(String),
    /// 409: the idempotency key was used for a different request.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// 413: the body is larger than the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 415: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed, but a field is missing, unknown, of the wrong type or out of range.
    #[error("{detail}")]
    Validation {
        detail: String,
        field: Option<String>,
    },
    /// 503: the database cannot be reached; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or corrupt data; logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn class(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
            ),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::StateConflict(_) => (
                StatusCode::CONFLICT,
                "state-conflict",
                "Conflicts with the current state",
            ),
            Self::IdempotencyConflict(_) => (
                StatusCode::CONFLICT,
                "idempotency-conflict",
                "Idempotency key reused",
            ),
            Self::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Validation failed",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// A 422 about one field.
    pub fn field(field: &str, detail: impl Into<String>) -> Self {
        Self::Validation {
            detail: detail.into(),
            field: Some(field.to_owned()),
        }
    }
}

/// The problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI of the error class.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong and what to do.
    pub detail: String,
    /// The offending field, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.class();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "an internal error occurred; it has been logged with this request's X-Request-Id"
                    .to_owned()
            }
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                "the database is unavailable; retry with backoff".to_owned()
            }
            other => other.to_string(),
        };
        let field = match &self {
            Self::Validation { field, .. } => field.clone(),
            _ => None,
        };
        let problem = Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, Self::Unavailable(_)) {
            // Database trouble passes (a restart, a failover, a freed connection): come back soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, .. } => ApiError::field(field, e.to_string()),
            DomainError::OverrideExpiry { .. } => ApiError::field("expires_at", e.to_string()),
            DomainError::InactiveTier(_)
            | DomainError::AlreadyOnTier(_)
            | DomainError::AlreadySuspended
            | DomainError::NotSuspended(_)
            | DomainError::Expired => ApiError::StateConflict(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rule(d) => d.into(),
            StoreError::UnknownTenant(_)
            | StoreError::UnknownTier(_)
            | StoreError::UnknownTransition(_)
            | StoreError::UnknownOverride(_)
            | StoreError::UnknownHold { .. }
            | StoreError::UnknownTestClock(_)
            | StoreError::UnknownWebhookEndpoint(_) => ApiError::NotFound(e.to_string()),
            StoreError::InvalidField { field, detail } => ApiError::field(field, detail),
            StoreError::ClockBackwards { .. } => ApiError::field("to", e.to_string()),
            StoreError::ExpiryInPast { .. } => ApiError::field("expires_at", e.to_string()),
            StoreError::TenantExists(_)
            | StoreError::HoldExists { .. }
            | StoreError::ClockBusy(_)
            | StoreError::RotationOverlap { .. }
            | StoreError::TransitionNotPending { .. }
            | StoreError::OverrideNotActive { .. } => ApiError::StateConflict(e.to_string()),
            StoreError::IdempotencyConflict { .. } => ApiError::IdempotencyConflict(e.to_string()),
            StoreError::Database(ref db) if is_unavailable(db) => {
                ApiError::Unavailable(e.to_string())
            }
            StoreError::Queue(q) => q.into(),
            StoreError::Corrupt(_) | StoreError::Database(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e).into()
    }
}

impl From<tierflow_queue::QueueError> for ApiError {
    fn from(e: tierflow_queue::QueueError) -> Self {
        match e {
            tierflow_queue::QueueError::Timeout(_) => ApiError::Unavailable(e.to_string()),
            tierflow_queue::QueueError::Database(db) => db.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Whether `e` means the database cannot serve right now — a retry later can succeed — rather
/// than a bug: the pool could not get or keep a connection (refused, cut, timed out, closed), or
/// the server said so: connection exceptions (class 08), operator intervention (57: a
/// terminated backend, a shutting-down or starting server, the statement timeout), a dropped
/// database (3D000), insufficient resources (53: too many connections, disk full), or a
/// serialization failure or deadlock (40001, 40P01).
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            ["08", "57", "53"].iter().any(|class| c.starts_with(class))
                || matches!(c.as_ref(), "3D000" | "40001" | "40P01")
        }),
        _ => false,
    }
}
