//! [`DomainError`]: every way a rule or a parser can refuse a request.
//!
//! Each message says what was wrong and what to do instead; the API shows it to callers as is.

use chrono::{DateTime, Utc};

/// A rule said no, or an input did not parse. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// An input field did not parse (empty, too long, bad characters, out of range).
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The target tier exists but is switched off for new transitions.
    #[error("tier '{0}' is inactive; choose an active tier (see `tierflow tiers list`)")]
    InactiveTier(String),
    /// The tenant is already on the requested tier.
    #[error(
        "tenant is already on tier '{0}'; nothing to do (to keep it, cancel the pending downgrade instead)"
    )]
    AlreadyOnTier(String),
    /// A suspension was requested for a tenant that is already suspended.
    #[error("tenant is already suspended; reactivate it first")]
    AlreadySuspended,
    /// A reactivation was requested for a tenant that is not suspended.
    #[error("tenant is not suspended (status '{0}'); only a suspended tenant can be reactivated")]
    NotSuspended(String),
    /// The tenant's entitlement has expired; tier changes need it reactivated first.
    #[error("tenant entitlement has expired; reactivate it before changing its tier")]
    Expired,
    /// An override's expiry is not in the future or too far ahead.
    #[error(
        "override expires_at {expires_at} must be after now ({now}) and at most {max_days} days ahead"
    )]
    OverrideExpiry {
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        max_days: i64,
    },
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}
