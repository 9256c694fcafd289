//! Parsed identifiers and short texts.
//!
//! Each type is built only through `parse`, which says exactly what is wrong with a bad value, so
//! code that holds a `TenantId` never re-checks it. Serde goes through `parse` as well
//! (`#[serde(try_from = "String")]`), so a JSON body cannot smuggle in an unchecked value.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainError;

/// Checks a text field: trimmed, not empty, at most `max` characters, each accepted by `ok`.
fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    // Ids travel as URL path segments, which proxies and HTTP clients rewrite when they are dot
    // segments (`/v1/tenants/../entitlement`).
    if value == "." || value == ".." {
        return Err(DomainError::invalid(
            field,
            format!("must not be {value:?}: a path segment of only dots is rewritten on its way"),
        ));
    }
    let len = value.chars().count();
    if len > max {
        return Err(DomainError::invalid(
            field,
            format!("is {len} characters long; at most {max} are allowed"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !ok(*c)) {
        return Err(DomainError::invalid(
            field,
            format!("contains {bad:?}; only {allowed} are allowed"),
        ));
    }
    Ok(())
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $ok:expr, $allowed:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, or says what is wrong with it.
            pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                check_text($field, &value, $max, $ok, $allowed)?;
                Ok(Self(value))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, DomainError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

fn tier_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')
}

fn printable(c: char) -> bool {
    !c.is_control()
}

text_newtype!(
    /// A tenant's id, as the upstream systems know it (`acme-42`, `org:7f3a`).
    TenantId, "tenant_id", 64, id_char, "ASCII letters, digits, '-', '_', '.' and ':'"
);
text_newtype!(
    /// A tier's business id (`free`, `starter`, `professional`, `enterprise`).
    TierId, "tier_id", 32, tier_char, "lowercase ASCII letters, digits, '-' and '_'"
);
text_newtype!(
    /// Who asked for a change: a service, an operator, a job (`billing`, `ops:alice`, `job:apply_downgrade`).
    Actor, "requested_by", 128, printable, "printable characters"
);
text_newtype!(
    /// The name of an operator's hold on a tenant (`compliance-review`, `fraud_case_1234`): the
    /// restriction source `hold:<name>`.
    HoldName, "hold name", 64, tier_char, "lowercase ASCII letters, digits, '-' and '_'"
);
text_newtype!(
    /// Why a change was asked for, in words an auditor can read.
    Reason, "reason", 1000, printable, "printable characters"
);
text_newtype!(
    /// A caller-chosen key that makes a request safe to retry.
    IdempotencyKey, "idempotency_key", 255, |c: char| c.is_ascii_graphic(), "visible ASCII characters"
);

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUID v7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_newtype!(
    /// A transition's id.
    TransitionId
);
uuid_newtype!(
    /// An override's id.
    OverrideId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_not_ids() {
        for bad in [".", ".."] {
            let err = TenantId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("path segment"), "{bad}: {err}");
        }
        assert!(TenantId::parse("...").is_ok());
        assert!(TenantId::parse("a.b").is_ok());
    }

    #[test]
    fn tenant_id_accepts_upstream_shapes() {
        for ok in ["acme", "acme-42", "org:7f3a", "a.b_c"] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn bad_ids_say_what_is_wrong() {
        let err = TenantId::parse("").unwrap_err();
        assert_eq!(err.to_string(), "invalid tenant_id: must not be empty");
        let err = TenantId::parse("a b").unwrap_err();
        assert!(err.to_string().contains("contains ' '"), "{err}");
        let err = TierId::parse("Pro").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
        let err = TenantId::parse("x".repeat(65)).unwrap_err();
        assert!(err.to_string().contains("65 characters"), "{err}");
    }

    #[test]
    fn serde_goes_through_parse() {
        let bad: Result<TierId, _> = serde_json::from_str("\"Not A Tier\"");
        assert!(bad.is_err());
        let good: TierId = serde_json::from_str("\"starter\"").unwrap();
        assert_eq!(good.as_str(), "starter");
    }
}
