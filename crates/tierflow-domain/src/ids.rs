//! Parsed identifiers and short texts.
//!
//! Each type is built only through `parse`, which says exactly what is wrong with a bad value, so
//! code that holds a `TenantId` never re-checks it. Serde goes through `parse` as well
//! (`#[serde(try_from = "String")]`), so a JSON body cannot smuggle in an unchecked value.
//!
//! Each type is also an OpenAPI schema (`utoipa::ToSchema`) whose `pattern`, `minLength` and
//! `maxLength` say exactly what `parse` accepts: the rule and its declaration sit in one macro
//! call, and `tests::patterns_agree_with_parse` checks the two against each other, so a client
//! that validates against `/openapi.json` is never refused for a malformed id.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainError;

/// Checks a text field: not empty, at most `max` characters, each accepted by `ok`; and, for a
/// value that travels as a URL path segment, not a dot segment.
fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
    allowed: &str,
    path_segment: bool,
) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    // Ids travel as URL path segments, which proxies and HTTP clients rewrite when they are dot
    // segments (`/v1/tenants/../entitlement`).
    if path_segment && (value == "." || value == "..") {
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

/// The OpenAPI schema of a text newtype: a string of 1 to `max` characters matching `pattern`.
fn text_schema(
    description: &str,
    max: usize,
    pattern: &str,
    example: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

/// A regular expression (ECMA-262 and Rust `regex` alike) for "no control character": Rust's
/// `char::is_control` is exactly the Unicode category Cc, U+0000–U+001F and U+007F–U+009F.
pub const PRINTABLE_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]+$";

macro_rules! text_newtype {
    (
        $(#[doc = $doc:literal])* $name:ident, $field:literal, $max:expr, $ok:expr, $allowed:literal,
        path_segment: $segment:expr, pattern: $pattern:expr, example: $example:literal
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, or says what is wrong with it.
            pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                check_text($field, &value, $max, $ok, $allowed, $segment)?;
                Ok(Self(value))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The regular expression a valid value matches (beside its length, 1 to
            /// [`Self::MAX_CHARS`] characters).
            pub const PATTERN: &str = $pattern;
            /// The most characters a value may have.
            pub const MAX_CHARS: usize = $max;
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let doc = [$($doc.trim()),*].join(" ");
                text_schema(
                    &format!("{doc} 1 to {} characters: {}.", $max, $allowed),
                    $max,
                    $pattern,
                    $example,
                )
            }
        }

        impl utoipa::ToSchema for $name {}

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
    TenantId, "tenant_id", 64, id_char, "ASCII letters, digits, '-', '_', '.' and ':', but not `.` or `..`",
    path_segment: true,
    // Any run of the alphabet but the dot segments `.` and `..`, without a look-ahead (which not
    // every client's regular-expression engine has): one character that is not a dot, or two of
    // which one is not a dot, or three or more of any.
    pattern: r"^(?:[A-Za-z0-9_:-]|[A-Za-z0-9_:-][A-Za-z0-9._:-]|\.[A-Za-z0-9_:-]|[A-Za-z0-9._:-]{3,})$",
    example: "acme-42"
);
text_newtype!(
    /// A tier's business id (`free`, `starter`, `professional`, `enterprise`).
    TierId, "tier_id", 32, tier_char, "lowercase ASCII letters, digits, '-' and '_'",
    path_segment: false,
    pattern: r"^[a-z0-9_-]+$",
    example: "starter"
);
text_newtype!(
    /// Who asked for a change: a service, an operator, a job (`billing`, `ops:alice`, `job:apply_downgrade`).
    Actor, "requested_by", 128, printable, "printable characters",
    path_segment: false,
    pattern: PRINTABLE_PATTERN,
    example: "ops:alice"
);
text_newtype!(
    /// The name of an operator's hold on a tenant (`compliance-review`, `fraud_case_1234`): the
    /// restriction source `hold:<name>`.
    HoldName, "hold name", 64, tier_char, "lowercase ASCII letters, digits, '-' and '_'",
    path_segment: false,
    pattern: r"^[a-z0-9_-]+$",
    example: "compliance-review"
);
text_newtype!(
    /// Why a change was asked for, in words an auditor can read.
    Reason, "reason", 1000, printable, "printable characters",
    path_segment: false,
    pattern: PRINTABLE_PATTERN,
    example: "customer asked to downgrade at renewal"
);
text_newtype!(
    /// A caller-chosen key that makes a request safe to retry.
    IdempotencyKey, "idempotency_key", 255, |c: char| c.is_ascii_graphic(), "visible ASCII characters",
    path_segment: false,
    pattern: r"^[\x21-\x7e]+$",
    example: "billing-7f3a-downgrade-2026-12"
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

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                uuid_schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// A UUID as tierflow writes and reads it: 36 characters, hyphenated (RFC 9562's string form).
pub const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The OpenAPI schema of a UUID: `format: uuid` and the hyphenated pattern [`parse_uuid`] accepts.
pub fn uuid_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
        .pattern(Some(UUID_PATTERN))
        .examples(["0190a0a0-0000-7000-8000-000000000000"])
        .into()
}

/// Parses a UUID in its hyphenated form only — the form the API writes and documents — so that
/// what `/openapi.json` declares (`format: uuid`) and what is accepted are the same set (the
/// `uuid` crate alone also takes the braced, URN and 32-digit forms).
pub fn parse_uuid(field: &'static str, value: &str) -> Result<Uuid, DomainError> {
    let bad = || {
        DomainError::invalid(
            field,
            format!(
                "'{}' is not a UUID (use the hyphenated form, e.g. 0190a0a0-0000-7000-8000-000000000000)",
                value.escape_debug()
            ),
        )
    };
    if value.len() != 36 {
        return Err(bad());
    }
    Uuid::try_parse(value).map_err(|_| bad())
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
    fn uuids_are_hyphenated_only() {
        let re = regex::Regex::new(UUID_PATTERN).unwrap();
        let id = "0190a0a0-0000-7000-8000-00000000000A";
        assert!(parse_uuid("id", id).is_ok());
        assert!(re.is_match(id));
        for bad in [
            "0190a0a000007000800000000000000a",
            "{0190a0a0-0000-7000-8000-00000000000a}",
            "urn:uuid:0190a0a0-0000-7000-8000-00000000000a",
            "0190a0a0-0000-7000-8000-00000000000g",
            "",
        ] {
            assert!(parse_uuid("id", bad).is_err(), "{bad}");
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    /// Each type's declared pattern and length accept exactly what `parse` accepts, over every
    /// character class the rules name and their edges.
    #[test]
    fn patterns_agree_with_parse() {
        fn check<T>(
            name: &str,
            pattern: &str,
            max: usize,
            parse: impl Fn(&str) -> Result<T, DomainError>,
        ) {
            let re = regex::Regex::new(pattern).unwrap();
            let chars = [
                "a", "Z", "0", "9", "-", "_", ".", ":", " ", "é", "ß", "\\", "/", "%", "~", "!",
                "\u{0}", "\u{1f}", "\u{7f}", "\u{85}", "\u{9f}", "\u{a0}", "\u{2028}", "\u{fffd}",
                "😀",
            ];
            let mut samples: Vec<String> = vec![String::new()];
            for a in chars {
                samples.push(a.to_owned());
                for b in chars {
                    samples.push(format!("{a}{b}"));
                    samples.push(format!("{a}{b}{a}"));
                }
            }
            for n in [max - 1, max, max + 1] {
                samples.push("a".repeat(n));
                samples.push("é".repeat(n));
            }
            for s in samples {
                let declared = re.is_match(&s) && (1..=max).contains(&s.chars().count());
                assert_eq!(
                    declared,
                    parse(&s).is_ok(),
                    "{name}: {s:?} is {} by the schema",
                    if declared { "valid" } else { "invalid" }
                );
            }
        }
        check("TenantId", TenantId::PATTERN, TenantId::MAX_CHARS, |s| {
            TenantId::parse(s)
        });
        check("TierId", TierId::PATTERN, TierId::MAX_CHARS, |s| {
            TierId::parse(s)
        });
        check("Actor", Actor::PATTERN, Actor::MAX_CHARS, |s| {
            Actor::parse(s)
        });
        check("HoldName", HoldName::PATTERN, HoldName::MAX_CHARS, |s| {
            HoldName::parse(s)
        });
        check("Reason", Reason::PATTERN, Reason::MAX_CHARS, |s| {
            Reason::parse(s)
        });
        check(
            "IdempotencyKey",
            IdempotencyKey::PATTERN,
            IdempotencyKey::MAX_CHARS,
            |s| IdempotencyKey::parse(s),
        );
    }

    #[test]
    fn serde_goes_through_parse() {
        let bad: Result<TierId, _> = serde_json::from_str("\"Not A Tier\"");
        assert!(bad.is_err());
        let good: TierId = serde_json::from_str("\"starter\"").unwrap();
        assert_eq!(good.as_str(), "starter");
    }
}
