//! Temporary limit overrides: a higher (or lower) limit for one entitlement type until a time.
//!
//! An override is active while `now < expires_at`. The effective entitlement checks that itself,
//! so a read stays right even when the `expire_override` job runs late; the job then only records
//! the expiry (status `expired`, audit row). At most one override per entitlement type is active
//! for a tenant: a new one replaces the old.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainError;
use crate::ids::{Actor, OverrideId};

/// The longest an override may last.
pub const MAX_OVERRIDE: Duration = Duration::days(90);

/// The limit an override replaces. Each maps to the tier limit of the same name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementType {
    Leads,
    Scoring,
    Routing,
    Voice,
    Api,
}

impl EntitlementType {
    pub const ALL: [EntitlementType; 5] = [
        Self::Leads,
        Self::Scoring,
        Self::Routing,
        Self::Voice,
        Self::Api,
    ];

    /// The stored name, which is also the tier limit's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leads => "leads",
            Self::Scoring => "scoring",
            Self::Routing => "routing",
            Self::Voice => "voice",
            Self::Api => "api",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                DomainError::invalid(
                    "entitlement_type",
                    format!("unknown type '{s}'; use one of leads, scoring, routing, voice, api"),
                )
            })
    }
}

/// Why an override was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverrideReason {
    Emergency,
    Incident,
    Compliance,
}

impl OverrideReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emergency => "emergency",
            Self::Incident => "incident",
            Self::Compliance => "compliance",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s {
            "emergency" => Ok(Self::Emergency),
            "incident" => Ok(Self::Incident),
            "compliance" => Ok(Self::Compliance),
            other => Err(DomainError::invalid(
                "reason",
                format!("unknown override reason '{other}'; use emergency, incident or compliance"),
            )),
        }
    }
}

/// A temporary limit override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitOverride {
    pub override_id: OverrideId,
    pub entitlement_type: EntitlementType,
    /// The tier's limit when the override was granted (`None`: unlimited).
    pub original_limit: Option<i64>,
    pub override_limit: i64,
    pub reason: OverrideReason,
    pub granted_by: Actor,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LimitOverride {
    /// Whether the override applies at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

/// Checks a requested expiry: after `now`, at most [`MAX_OVERRIDE`] ahead.
pub fn check_expiry(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), DomainError> {
    if expires_at <= now || expires_at > now + MAX_OVERRIDE {
        return Err(DomainError::OverrideExpiry {
            expires_at,
            now,
            max_days: MAX_OVERRIDE.num_days(),
        });
    }
    Ok(())
}

/// Checks a requested limit: zero or more.
pub fn check_limit(limit: i64) -> Result<(), DomainError> {
    if limit < 0 {
        return Err(DomainError::invalid(
            "override_limit",
            format!("is {limit}; a limit cannot be negative"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_must_be_in_the_future_and_bounded() {
        let now = Utc::now();
        assert!(check_expiry(now, now).is_err());
        assert!(check_expiry(now - Duration::seconds(1), now).is_err());
        assert!(check_expiry(now + Duration::seconds(1), now).is_ok());
        assert!(check_expiry(now + MAX_OVERRIDE + Duration::seconds(1), now).is_err());
    }

    #[test]
    fn unknown_names_list_the_choices() {
        let e = EntitlementType::parse("sms").unwrap_err().to_string();
        assert!(e.contains("leads, scoring, routing, voice, api"), "{e}");
        assert!(OverrideReason::parse("whim").is_err());
        assert!(check_limit(-1).is_err());
    }
}
