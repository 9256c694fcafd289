//! [`StoreError`]: every way a store operation fails. Nothing is changed when one is returned.

use tierflow_domain::DomainError;
use tierflow_queue::QueueError;

/// A store operation failed; the caller's transaction is as it was before the call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A domain rule refused the request.
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("tenant '{0}' is not known; provision it first (`tierflow tenants provision`)")]
    UnknownTenant(String),
    #[error("tenant '{0}' already exists")]
    TenantExists(String),
    #[error("tier '{0}' is not known; list tiers with `tierflow tiers list`")]
    UnknownTier(String),
    #[error("transition {0} is not known for this tenant")]
    UnknownTransition(String),
    #[error("transition {id} is {status}; only a pending transition can be cancelled")]
    TransitionNotPending { id: String, status: String },
    #[error("override {0} is not known for this tenant")]
    UnknownOverride(String),
    #[error("override {id} is {status}; only an active override can be removed")]
    OverrideNotActive { id: String, status: String },
    #[error("tenant '{tenant}' has no hold '{name}'")]
    UnknownHold { tenant: String, name: String },
    #[error("tenant '{tenant}' already has a hold '{name}'; lift it first or choose another name")]
    HoldExists { tenant: String, name: String },
    #[error(
        "test clock {0} is not known; create one with POST /v1/test-clocks or `tierflow clock create`"
    )]
    UnknownTestClock(String),
    #[error("test clock {0} is being advanced by another request; wait for it to finish")]
    ClockBusy(String),
    #[error("test clock {id} stands at {frozen}; it only moves forward, not to {to}")]
    ClockBackwards {
        id: String,
        frozen: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    },
    #[error("expires_at {expires_at} must be after the tenant's now ({now})")]
    ExpiryInPast {
        expires_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    },
    /// The idempotency key was used before with a different request.
    #[error(
        "idempotency key '{key}' was already used for a different request ({operation}); use a new key for a new request"
    )]
    IdempotencyConflict { key: String, operation: String },
    /// A stored row does not parse: the database holds something tierflow never writes.
    #[error("webhook endpoint {0} is not known; list them with `tierflow webhooks list`")]
    UnknownWebhookEndpoint(String),
    #[error(
        "webhook endpoint {id}'s previous secret still signs until {ends}; rotate again after that, or now with overlap_seconds=0 to replace both at once"
    )]
    RotationOverlap {
        id: String,
        ends: chrono::DateTime<chrono::Utc>,
    },
    #[error("{field}: {detail}")]
    InvalidField { field: &'static str, detail: String },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether the caller caused this error (bad input, unknown id, conflict) rather than the
    /// system (database, corrupt data). Callers map the first to 4xx, the second to 5xx.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, Self::Corrupt(_) | Self::Queue(_) | Self::Database(_))
    }
}

/// Turns a stored value that does not parse into [`StoreError::Corrupt`].
pub(crate) fn corrupt(what: &str) -> impl FnOnce(DomainError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}
