//! [`ApiError`]: the one error type that becomes an HTTP response, as RFC 9457
//! `application/problem+json`; and [`responses`], the error responses the OpenAPI document
//! declares for it.
//!
//! Each variant's doc names its status. Its `type` is a stable URI per error class
//! (`https://tierflow.dev/problems/<class>`, the enum [`ProblemType`]), so clients branch on the
//! type, not the text. Internal causes are logged in full and reach the client only as an opaque
//! 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tierflow_domain::DomainError;
use tierflow_store::StoreError;

/// The base of every problem `type`.
pub const PROBLEM_BASE: &str = "https://tierflow.dev/problems/";

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

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

/// The class of a problem: its `type` URI (`https://tierflow.dev/problems/<slug>`). Clients
/// branch on this, never on `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// 400: the request is malformed (JSON syntax, a path id, a query value, a header).
    MalformedRequest,
    /// 401: no valid bearer token.
    Unauthorized,
    /// 403: the token's role may not do this (admin-only routes).
    Forbidden,
    /// 404: no such tenant, tier, transition, override, hold, test clock, job or route.
    NotFound,
    /// 405: the route does not take that method.
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    StateConflict,
    /// 409: the idempotency key was used for a different request.
    IdempotencyConflict,
    /// 413: the body is over the server's limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: a body field (or a query value) is missing, unknown, of the wrong type or out of range.
    ValidationFailed,
    /// 503: the database cannot serve now; retry after `Retry-After` seconds.
    Unavailable,
    /// 500: a bug or corrupt data, logged with the request's `X-Request-Id`.
    Internal,
}

impl ProblemType {
    /// Every type, in the order the document lists them.
    pub const ALL: [ProblemType; 12] = [
        Self::MalformedRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::StateConflict,
        Self::IdempotencyConflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationFailed,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The last segment of the URI; stable (clients match on it).
    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedRequest => "malformed-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::StateConflict => "state-conflict",
            Self::IdempotencyConflict => "idempotency-conflict",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::ValidationFailed => "validation-failed",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The `type` URI.
    pub fn uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

impl Serialize for ProblemType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri())
    }
}

/// An enum of the URIs, serialized the same way ([`ProblemType::uri`]); `x-enum-varnames` gives
/// generated clients readable names (`NOT_FOUND`) for them.
impl utoipa::PartialSchema for ProblemType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names: Vec<String> = Self::ALL
            .iter()
            .map(|t| t.slug().to_uppercase().replace('-', "_"))
            .collect();
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "The class of a problem; clients branch on this, never on `detail`.",
            ))
            .enum_values(Some(Self::ALL.iter().map(|t| t.uri())))
            .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter([
                ("x-enum-varnames", serde_json::json!(names)),
            ])))
            .examples([Self::NotFound.uri()])
            .into()
    }
}

impl utoipa::ToSchema for ProblemType {}

impl ApiError {
    fn class(&self) -> (StatusCode, ProblemType, &'static str) {
        match self {
            Self::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                ProblemType::MalformedRequest,
                "Malformed request",
            ),
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                ProblemType::Unauthorized,
                "Unauthorized",
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, ProblemType::Forbidden, "Forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ProblemType::NotFound, "Not found"),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemType::MethodNotAllowed,
                "Method not allowed",
            ),
            Self::StateConflict(_) => (
                StatusCode::CONFLICT,
                ProblemType::StateConflict,
                "Conflicts with the current state",
            ),
            Self::IdempotencyConflict(_) => (
                StatusCode::CONFLICT,
                ProblemType::IdempotencyConflict,
                "Idempotency key reused",
            ),
            Self::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemType::PayloadTooLarge,
                "Payload too large",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ProblemType::UnsupportedMediaType,
                "Unsupported media type",
            ),
            Self::Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ProblemType::ValidationFailed,
                "Validation failed",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemType::Unavailable,
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::Internal,
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

/// An RFC 9457 problem document: every error response, as `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable URI of the error class.
    #[serde(rename = "type")]
    pub kind: ProblemType,
    /// The class in words; constant per `type`.
    #[schema(example = "Not found")]
    pub title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599, example = 404)]
    pub status: u16,
    /// What was wrong and what to do.
    #[schema(example = "tenant 'acme-42' is not known")]
    pub detail: String,
    /// The offending field, for some validation errors; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "grace_seconds")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.class();
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
            kind,
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            field,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
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

/// The error responses of the OpenAPI document, as sets a route lists beside its own responses
/// (each a `utoipa::IntoResponses`), so that every route declares the same statuses, with the
/// same content type (`application/problem+json`) and schema ([`Problem`]), for the same causes:
///
/// ```text
/// responses((status = 200, body = Tier), Authenticated, JsonBody, AdminOnly,
///           (status = 404, description = "unknown tier", body = Problem, content_type = PROBLEM_JSON))
/// ```
///
/// A route adds its own 404 and 409 (their causes differ per route). `routes::tests` checks the
/// document: every error response is a problem document, and every route that takes a token, a
/// body or an admin role lists the matching set.
pub mod responses {
    use std::collections::BTreeMap;

    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    use super::PROBLEM_JSON;

    /// A problem response with `description` (naming the problem `type`s it carries).
    pub fn problem(description: &str) -> ResponseBuilder {
        ResponseBuilder::new().description(description).content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
    }

    fn set(
        responses: impl IntoIterator<Item = (&'static str, ResponseBuilder)>,
    ) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        responses
            .into_iter()
            .map(|(status, r)| (status.to_owned(), RefOr::T(r.build())))
            .collect()
    }

    fn string_header(description: &str) -> utoipa::openapi::header::Header {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(description))
            .build()
    }

    /// Every route that takes a bearer token: 401, and the server-side 500 and 503.
    pub struct Authenticated;

    impl utoipa::IntoResponses for Authenticated {
        fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
            set([
                (
                    "401",
                    problem("`unauthorized`: no `Authorization: Bearer <token>` header, or the token is not valid")
                        .header("WWW-Authenticate", string_header("`Bearer`")),
                ),
                (
                    "500",
                    problem("`internal`: a bug or corrupt data; logged with this request's `X-Request-Id`"),
                ),
                (
                    "503",
                    problem("`unavailable`: the database cannot serve now (unreachable, restarting, too slow); retry with backoff")
                        .header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(Some(
                                    ObjectBuilder::new()
                                        .schema_type(Type::Integer)
                                        .minimum(Some(0)),
                                ))
                                .description(Some("Seconds to wait before retrying"))
                                .build(),
                        ),
                ),
            ])
        }
    }

    /// Routes with path, query or header parameters: 400 when one is malformed.
    pub struct BadParameters;

    impl utoipa::IntoResponses for BadParameters {
        fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
            set([(
                "400",
                problem(
                    "`malformed-request`: a path id, a query value or a header does not match its schema",
                ),
            )])
        }
    }

    /// Routes that take a JSON body: 400 (not JSON), 413 (too large), 415 (not
    /// `application/json`), 422 (a field missing, unknown, of the wrong type or out of range).
    pub struct JsonBody;

    impl utoipa::IntoResponses for JsonBody {
        fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
            set([
                (
                    "400",
                    problem(
                        "`malformed-request`: the body is not JSON, or a path id, a query value or a header does not match its schema",
                    ),
                ),
                (
                    "413",
                    problem(
                        "`payload-too-large`: the body is over the server's `--max-body-bytes` (64 KiB by default)",
                    ),
                ),
                (
                    "415",
                    problem(
                        "`unsupported-media-type`: the body is not sent as `Content-Type: application/json`",
                    ),
                ),
                (
                    "422",
                    problem(
                        "`validation-failed`: a body field is missing, unknown, of the wrong type or outside its schema; `field` names it where one does",
                    ),
                ),
            ])
        }
    }

    /// Admin-only routes: 403 for a service token. Such routes also carry
    /// `x-tierflow-role: admin`.
    pub struct AdminOnly;

    impl utoipa::IntoResponses for AdminOnly {
        fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
            set([(
                "403",
                problem(
                    "`forbidden`: this route needs an admin token; the token is a service token",
                ),
            )])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error the API answers has a type the document lists, each listed once.
    #[test]
    fn every_error_class_is_a_listed_problem_type() {
        let errors = [
            ApiError::Malformed(String::new()),
            ApiError::Unauthorized(String::new()),
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::StateConflict(String::new()),
            ApiError::IdempotencyConflict(String::new()),
            ApiError::TooLarge(String::new()),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::field("f", ""),
            ApiError::Unavailable(String::new()),
            ApiError::Internal(String::new()),
        ];
        for e in &errors {
            assert!(ProblemType::ALL.contains(&e.class().1), "{e:?}");
        }
        let mut slugs: Vec<_> = ProblemType::ALL.iter().map(|t| t.slug()).collect();
        slugs.sort();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
        assert_eq!(
            serde_json::to_value(ProblemType::NotFound).unwrap(),
            "https://tierflow.dev/problems/not-found"
        );
    }
}
