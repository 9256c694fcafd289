//! Input rules that have no domain type of their own (a job id, a cursor, a tier's display name,
//! free-form JSON), each as one marker type holding both its check and its OpenAPI schema, so
//! that what `/openapi.json` declares and what the server accepts cannot drift apart. Ids with a
//! domain type (`TenantId`, `TierId`, …) carry their schema in `tierflow_domain::ids`.
//!
//! A route's parameter or field names the rule with `value_type = …` (or a `params(...)` type);
//! its handler calls the same type's `parse`/`check`. The unit tests below check each pattern
//! against its check. Also here: [`integral`], integers as JSON Schema reads them (`5.0` is one),
//! and [`exactly_one_of`], for bodies that take one field of a pair.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tierflow_domain::ids::{PRINTABLE_PATTERN, parse_uuid, uuid_schema};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use uuid::Uuid;

use crate::error::ApiError;

/// A string schema matching `pattern`, `max` characters at most.
fn string(description: &str, pattern: &str, max: usize, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

/// A UUID path segment (a transition, override or test clock id): the hyphenated form only.
pub struct UuidParam;

impl UuidParam {
    /// The id, or 400 naming `what`.
    pub fn parse(what: &'static str, s: &str) -> Result<Uuid, ApiError> {
        parse_uuid(what, s).map_err(|e| ApiError::Malformed(e.to_string()))
    }
}

impl utoipa::PartialSchema for UuidParam {
    fn schema() -> RefOr<Schema> {
        uuid_schema()
    }
}

impl utoipa::ToSchema for UuidParam {
    fn name() -> std::borrow::Cow<'static, str> {
        "Uuid".into()
    }
}

/// A job id: what tierflow writes is a ULID (26 letters and digits); apalis's own are UUIDs.
pub struct JobId;

impl JobId {
    const PATTERN: &str = "^[A-Za-z0-9-]+$";
    const MAX: usize = 64;

    /// Checks `id` (422, naming `job_id`, before it reaches SQL).
    pub fn check(id: &str) -> Result<(), ApiError> {
        if id.is_empty()
            || id.len() > Self::MAX
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ApiError::field(
                "job_id",
                "job_id must be a job's id: 1 to 64 letters, digits and '-' (see GET /v1/jobs)",
            ));
        }
        Ok(())
    }
}

impl utoipa::PartialSchema for JobId {
    fn schema() -> RefOr<Schema> {
        string(
            "A job's id: 1 to 64 ASCII letters, digits and '-' (a ULID for the jobs tierflow writes).",
            Self::PATTERN,
            Self::MAX,
            "01JDQ3V5Z8K2M4N6P8R0S2T4V6",
        )
    }
}

impl utoipa::ToSchema for JobId {}

/// A job kind filter: a snake_case name, as every kind has (a NUL or a control character would
/// otherwise come back from PostgreSQL as a 500). Not an enum: the table may hold kinds of other
/// versions, and filtering by an unknown kind simply finds nothing.
pub struct JobKindFilter;

impl JobKindFilter {
    const PATTERN: &str = "^[a-z_]+$";
    const MAX: usize = 64;

    /// Checks `kind` (422, naming `kind`).
    pub fn check(kind: &str) -> Result<(), ApiError> {
        if kind.is_empty()
            || kind.len() > Self::MAX
            || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(ApiError::field(
                "kind",
                "kind must be a job kind's name: lowercase letters and '_' (e.g. apply_downgrade)",
            ));
        }
        Ok(())
    }
}

impl utoipa::PartialSchema for JobKindFilter {
    fn schema() -> RefOr<Schema> {
        string(
            "A job kind's name: 1 to 64 lowercase ASCII letters and '_'.",
            Self::PATTERN,
            Self::MAX,
            "apply_downgrade",
        )
    }
}

impl utoipa::ToSchema for JobKindFilter {}

/// The cursor of a tenant's transition history: `<microseconds>_<transition id>` of the last
/// row of the previous page, as `next_cursor` gave it.
pub struct HistoryCursor;

impl HistoryCursor {
    /// At most 16 digits: any time up to the year 2286, far past any transition's.
    const PATTERN: &str = r"^[0-9]{1,16}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

    /// Encodes the cursor after a row requested at `at` with id `id`.
    pub fn encode(at: DateTime<Utc>, id: Uuid) -> String {
        format!("{}_{id}", at.timestamp_micros())
    }

    /// Decodes a cursor (400 if it is not one [`Self::encode`] could have made).
    pub fn parse(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
        let bad = || {
            ApiError::Malformed(format!(
                "cursor '{}' is not one this API returned",
                c.escape_debug()
            ))
        };
        let (micros, id) = c.split_once('_').ok_or_else(bad)?;
        if micros.is_empty() || micros.len() > 16 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(bad)?;
        Ok((at, parse_uuid("cursor", id).map_err(|_| bad())?))
    }
}

impl utoipa::PartialSchema for HistoryCursor {
    fn schema() -> RefOr<Schema> {
        string(
            "`next_cursor` of the previous page (opaque to clients).",
            Self::PATTERN,
            53,
            "1764676800000000_0190a0a0-0000-7000-8000-000000000000",
        )
    }
}

impl utoipa::ToSchema for HistoryCursor {}

/// The cursor of a tenant's audit trail: the id of the last row of the previous page.
pub struct AuditCursor;

impl AuditCursor {
    /// A positive id of at most 18 digits (always an `i64`).
    const PATTERN: &str = "^[1-9][0-9]{0,17}$";

    /// Decodes a cursor (400 if it is not one this API could have returned).
    pub fn parse(c: &str) -> Result<i64, ApiError> {
        let ok = (1..=18).contains(&c.len())
            && c.bytes().all(|b| b.is_ascii_digit())
            && !c.starts_with('0');
        ok.then(|| c.parse::<i64>().ok()).flatten().ok_or_else(|| {
            ApiError::Malformed(format!(
                "cursor '{}' is not one this API returned",
                c.escape_debug()
            ))
        })
    }
}

impl utoipa::PartialSchema for AuditCursor {
    fn schema() -> RefOr<Schema> {
        string(
            "`next_cursor` of the previous page (opaque to clients).",
            Self::PATTERN,
            18,
            "42",
        )
    }
}

impl utoipa::ToSchema for AuditCursor {}

/// An audit `kind` filter: a family (`transition`) or one action (`transition.downgrade`).
pub struct AuditKind;

impl AuditKind {
    const PATTERN: &str = r"^[a-z_]{1,32}(\.[a-z_]{1,32})?$";

    /// Checks `kind` (400).
    pub fn check(kind: &str) -> Result<(), ApiError> {
        let part = |p: &str| {
            (1..=32).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        };
        let ok = match kind.split_once('.') {
            Some((family, action)) => part(family) && part(action),
            None => part(kind),
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::Malformed(format!(
                "kind '{}' is not a change kind: use a family such as `transition` or an action \
                 such as `transition.downgrade`",
                kind.escape_debug()
            )))
        }
    }
}

impl utoipa::PartialSchema for AuditKind {
    fn schema() -> RefOr<Schema> {
        string(
            "A family of changes (`transition`, `override`, `action`, `hold`, `tier`) or one \
             action (`transition.downgrade`): lowercase letters and '_', one optional '.'.",
            Self::PATTERN,
            65,
            "transition.downgrade",
        )
    }
}

impl utoipa::ToSchema for AuditKind {}

/// A name for people (a tier's, a test clock's): 1 to 100 characters, none a control character,
/// not all white space.
pub struct DisplayName;

impl DisplayName {
    const MAX: usize = 100;

    /// Rust's `char::is_whitespace` (Unicode White_Space) less the control characters, which
    /// the pattern refuses anyway: spelled out, because `\s` differs between regex engines.
    const SPACE: &str = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

    fn pattern() -> String {
        let (cc, ws) = (r"\x00-\x1f\x7f-\x9f", Self::SPACE);
        format!("^[^{cc}]*[^{cc}{ws}][^{cc}]*$")
    }

    /// Checks `name` as `field` (422).
    pub fn check(field: &str, name: &str) -> Result<(), ApiError> {
        if name.trim().is_empty() || name.chars().count() > Self::MAX {
            return Err(ApiError::field(
                field,
                format!("{field} must be 1 to 100 characters, not all white space"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ApiError::field(
                field,
                format!("{field} must not contain control characters"),
            ));
        }
        Ok(())
    }
}

impl utoipa::PartialSchema for DisplayName {
    fn schema() -> RefOr<Schema> {
        string(
            "A name for people: 1 to 100 characters, no control character, not all white space.",
            &Self::pattern(),
            Self::MAX,
            "Professional",
        )
    }
}

impl utoipa::ToSchema for DisplayName {}

/// A webhook endpoint's URL, as the API takes it: `http(s)://`, a lower-case host name or an
/// IPv4 address, an optional port, path and query; at most 2,048 characters. Stricter than what
/// `tierflow webhooks` takes (any URL the `url` crate parses): a pattern every client's
/// validator reads the same way, and every URL it admits parses.
pub struct EndpointUrl;

impl EndpointUrl {
    const MAX: usize = 2048;

    fn pattern() -> &'static str {
        concat!(
            r"^https?://",
            r"([a-z][a-z0-9]{0,30}(-[a-z0-9]{1,30}){0,4}(\.[a-z][a-z0-9]{0,30}(-[a-z0-9]{1,30}){0,4}){0,6}",
            r"|(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})",
            r"(:[1-9][0-9]{0,3})?",
            r"(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,1500})?",
            r"(\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,400})?$",
        )
    }

    /// Checks `url` as `field` (422). The URL is not echoed: it may carry a token.
    pub fn check(field: &str, url: &str) -> Result<(), ApiError> {
        static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(EndpointUrl::pattern())
                .unwrap_or_else(|e| unreachable!("the URL pattern compiles: {e}"))
        });
        if url.chars().count() > Self::MAX || !PATTERN.is_match(url) {
            return Err(ApiError::field(
                field,
                format!(
                    "{field} must be an http(s) URL with a lower-case host name or an IPv4 address, an optional port up to 9999, path and query, at most {} characters",
                    Self::MAX
                ),
            ));
        }
        Ok(())
    }
}

impl utoipa::PartialSchema for EndpointUrl {
    fn schema() -> RefOr<Schema> {
        string(
            "Where deliveries are POSTed: http(s), a lower-case host name or IPv4 address, an optional port, path and query. Redirects are not followed.",
            Self::pattern(),
            Self::MAX,
            "https://billing.example.com/hooks/tierflow",
        )
    }
}

impl utoipa::ToSchema for EndpointUrl {}

/// A webhook endpoint's description: at most 500 characters, no control character but a line
/// break; may be empty.
pub struct EndpointDescription;

impl EndpointDescription {
    fn pattern() -> &'static str {
        r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*$"
    }
}

impl utoipa::PartialSchema for EndpointDescription {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "What the endpoint is for: at most 500 characters, no control character but a line break.",
            ))
            .max_length(Some(500))
            .pattern(Some(Self::pattern()))
            .examples(["billing's entitlement sync"])
            .into()
    }
}

impl utoipa::ToSchema for EndpointDescription {}

/// The keys of a tier's `features` and `limits`: non-empty, no control character.
fn key_names() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(PRINTABLE_PATTERN))
        .into()
}

/// A tier's feature switches: `{"voice": true}`.
pub struct FeatureMap;

impl FeatureMap {
    /// Checks every key (422, naming `features`).
    pub fn check(features: &BTreeMap<String, bool>) -> Result<(), ApiError> {
        check_keys("features", features.keys())
    }
}

fn check_keys<'a>(field: &str, mut keys: impl Iterator<Item = &'a String>) -> Result<(), ApiError> {
    match keys.find(|k| k.is_empty() || k.chars().any(char::is_control)) {
        Some(key) => Err(ApiError::field(
            field,
            format!("{field} keys must be non-empty and free of control characters; got {key:?}"),
        )),
        None => Ok(()),
    }
}

impl utoipa::PartialSchema for FeatureMap {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Feature switches by name (names non-empty, no control characters).",
            ))
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Boolean)))
            .property_names(Some(key_names()))
            .examples([serde_json::json!({"voice": true, "sla_timers": false})])
            .into()
    }
}

impl utoipa::ToSchema for FeatureMap {}

/// A tier's limits: `{"leads": 1000, "api": null}`; null is unlimited.
pub struct LimitMap;

impl LimitMap {
    /// Checks every key and that no limit is negative (422, naming `limits`).
    pub fn check(limits: &BTreeMap<String, Option<i64>>) -> Result<(), ApiError> {
        check_keys("limits", limits.keys())?;
        if let Some((name, _)) = limits.iter().find(|(_, l)| l.is_some_and(|l| l < 0)) {
            return Err(ApiError::field(
                "limits",
                format!("limit '{name}' is negative; use 0 or more, or null for unlimited"),
            ));
        }
        Ok(())
    }
}

impl utoipa::PartialSchema for LimitMap {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Limits by name (names non-empty, no control characters): 0 or more, or null for unlimited.",
            ))
            .additional_properties(Some(
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0))
                    .maximum(Some(i64::MAX)),
            ))
            .property_names(Some(key_names()))
            .examples([serde_json::json!({"leads": 1000, "api": null})])
            .into()
    }
}

impl utoipa::ToSchema for LimitMap {}

/// Free-form JSON that PostgreSQL's `jsonb` can store: any value, with no NUL character in any
/// string or key (`jsonb` refuses it). Recursive, as the rule is.
pub struct NulFreeJson;

impl NulFreeJson {
    /// `^[^\x00]*$`: no NUL.
    const NO_NUL: &str = r"^[^\x00]*$";

    /// Checks `v` (422, naming `field`).
    pub fn check(field: &str, v: &serde_json::Value) -> Result<(), ApiError> {
        if has_nul(v) {
            return Err(ApiError::field(
                field,
                format!("{field} must not contain NUL characters"),
            ));
        }
        Ok(())
    }
}

/// Whether a NUL character appears in any key or string of `v`.
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Any JSON value, by keywords alone: each applies only to values of its own type (`items` to
/// arrays, `pattern` to strings, `additionalProperties` and `propertyNames` to objects), so
/// together they constrain every string and key at any depth and nothing else. Not an `anyOf`
/// per type: client generators cannot follow a recursive union, and OpenAPI validators loop on a
/// recursive `allOf`; a typeless schema is "any value" to both.
impl utoipa::PartialSchema for NulFreeJson {
    fn schema() -> RefOr<Schema> {
        let me = || Ref::from_schema_name("NulFreeJson");
        // utoipa's `Object` has no `items` (only its `Array`, which always states a `type`); its
        // `extensions` are flattened into the object, so they carry the keyword.
        let items = Extensions::from_iter([(
            "items",
            serde_json::to_value(me()).unwrap_or(serde_json::Value::Null),
        )]);
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some(
                "Any JSON value with no NUL character in any string or key.",
            ))
            .pattern(Some(Self::NO_NUL))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::Ref(me()))))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(Self::NO_NUL)),
            ))
            .extensions(Some(items))
            .examples([serde_json::json!({"sku": "PRO-2026"})])
            .into()
    }
}

impl utoipa::ToSchema for NulFreeJson {}

/// Integers as JSON Schema reads them: `type: integer` admits any number with no fraction, so
/// `563.0` is as valid as `563` (clients in JavaScript, or any that goes through a float, send
/// the former). serde's `i64` takes only the latter; these `deserialize_with` helpers take both,
/// and still refuse a fraction, a string, or a value out of range.
pub mod integral {
    use std::collections::BTreeMap;
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, Visitor};

    struct Integral<const QUERY: bool>;

    impl<const QUERY: bool> Visitor<'_> for Integral<QUERY> {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // Within i64 exactly: -2^63 ≤ v < 2^63 (2^63 itself is not an i64).
            const TWO_63: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && (-TWO_63..TWO_63).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::custom(format!("{v} is not an integer in range")))
            }
        }

        /// A query value arrives as text: an optional `-`, digits, and optionally a zero fraction
        /// (`5.0`) — not `+5` or ` 5`, which JSON would not write either.
        fn visit_str<E: Error>(self, v: &str) -> Result<i64, E> {
            if !QUERY {
                return Err(E::invalid_type(serde::de::Unexpected::Str(v), &self));
            }
            let bad = || E::custom(format!("'{}' is not an integer", v.escape_debug()));
            let whole = match v.split_once('.') {
                Some((whole, zeros)) if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') => {
                    whole
                }
                Some(_) => return Err(bad()),
                None => v,
            };
            let digits = whole.strip_prefix('-').unwrap_or(whole);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            whole.parse::<i64>().map_err(|_| bad())
        }
    }

    struct OrNull<const QUERY: bool>;

    impl<'de, const QUERY: bool> Visitor<'de> for OrNull<QUERY> {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or null")
        }

        fn visit_none<E: Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
            d.deserialize_any(Integral::<QUERY>).map(Some)
        }
    }

    /// A JSON integer.
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(Integral::<false>)
    }

    /// A JSON integer that fits an `i32`.
    pub fn int32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        let v = int(d)?;
        i32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range")))
    }

    /// A JSON integer or null.
    pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_option(OrNull::<false>)
    }

    /// An integer query value (absent is `None`).
    pub fn query_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_option(OrNull::<true>)
    }

    /// A map of JSON integers or nulls (a tier's limits).
    pub fn int_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Option<i64>>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Limit(#[serde(deserialize_with = "opt_int")] Option<i64>);
        let map: BTreeMap<String, Limit> = serde::Deserialize::deserialize(d)?;
        Ok(map.into_iter().map(|(k, Limit(v))| (k, v)).collect())
    }
}

/// An object schema `fields` (a derived `ToSchema`, inlined) that also requires exactly one of
/// `choices` to be present and not null — what a handler's `match (a, b)` accepts, which the
/// derive cannot say. `allOf` keeps the object's properties where generators find them; the
/// `oneOf` beside them only constrains.
pub fn exactly_one_of(fields: RefOr<Schema>, choices: &[(&str, Type)]) -> RefOr<Schema> {
    let one_of = choices.iter().fold(OneOfBuilder::new(), |b, (name, ty)| {
        b.item(
            ObjectBuilder::new()
                .property(*name, ObjectBuilder::new().schema_type(ty.clone()))
                .required(*name),
        )
    });
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("`{n}`")).collect();
    AllOfBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!("Give exactly one of {}.", names.join(" or "))))
        .item(fields)
        .item(one_of)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn cursors_round_trip_and_match_their_patterns() {
        let at: DateTime<Utc> = "2026-12-02T10:00:00.123456Z".parse().unwrap();
        let id = Uuid::now_v7();
        let c = HistoryCursor::encode(at, id);
        assert!(matches(HistoryCursor::PATTERN, &c), "{c}");
        assert_eq!(HistoryCursor::parse(&c).unwrap(), (at, id));
        for bad in [
            "garbage",
            "-1_0190a0a0-0000-7000-8000-000000000000",
            "+1_0190a0a0-0000-7000-8000-000000000000",
            "12345678901234567_0190a0a0-0000-7000-8000-000000000000",
            "1_0190a0a000007000800000000000000a",
        ] {
            assert!(HistoryCursor::parse(bad).is_err(), "{bad}");
            assert!(!matches(HistoryCursor::PATTERN, bad), "{bad}");
        }
        assert!(HistoryCursor::parse(&format!("{}_{id}", "9".repeat(16))).is_ok());
        for (c, ok) in [
            ("1", true),
            ("999999999999999999", true),
            ("0", false),
            ("01", false),
            ("-1", false),
            ("+1", false),
            ("1000000000000000000", false),
        ] {
            assert_eq!(AuditCursor::parse(c).is_ok(), ok, "{c}");
            assert_eq!(matches(AuditCursor::PATTERN, c), ok, "{c}");
        }
    }

    #[test]
    fn simple_rules_match_their_patterns() {
        for s in [
            "",
            "a",
            "A",
            "a_b",
            "a.b",
            "a.b.c",
            "a-b",
            "01J",
            "é",
            "\u{0}",
            "x".repeat(33).as_str(),
            &format!("{}.{}", "a".repeat(32), "b".repeat(32)),
        ] {
            assert_eq!(
                AuditKind::check(s).is_ok(),
                matches(AuditKind::PATTERN, s),
                "audit kind {s:?}"
            );
            let len_ok = (1..=64).contains(&s.chars().count());
            assert_eq!(
                JobKindFilter::check(s).is_ok(),
                len_ok && matches(JobKindFilter::PATTERN, s),
                "job kind {s:?}"
            );
            assert_eq!(
                JobId::check(s).is_ok(),
                len_ok && matches(JobId::PATTERN, s),
                "job id {s:?}"
            );
        }
    }

    #[test]
    fn integers_are_what_json_schema_calls_integers() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Body {
            #[serde(default, deserialize_with = "integral::opt_int")]
            n: Option<i64>,
        }
        let parse = |s: &str| serde_json::from_str::<Body>(s).map(|b| b.n).ok();
        assert_eq!(parse(r#"{"n": 563}"#), Some(Some(563)));
        assert_eq!(parse(r#"{"n": 563.0}"#), Some(Some(563)));
        assert_eq!(parse(r#"{"n": -2.0}"#), Some(Some(-2)));
        assert_eq!(parse(r#"{"n": null}"#), Some(None));
        assert_eq!(parse(r#"{}"#), Some(None));
        for bad in [
            r#"{"n": 5.5}"#,
            r#"{"n": "5"}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": true}"#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        #[derive(serde::Deserialize, Debug)]
        struct Query {
            #[serde(default, deserialize_with = "integral::query_int")]
            limit: Option<i64>,
        }
        let query = |s: &str| serde_urlencoded::from_str::<Query>(s).map(|q| q.limit).ok();
        assert_eq!(query("limit=5"), Some(Some(5)));
        assert_eq!(query("limit=5.0"), Some(Some(5)));
        assert_eq!(query("limit=-5"), Some(Some(-5)));
        assert_eq!(query(""), Some(None));
        for bad in [
            "limit=+5",
            "limit=5.5",
            "limit=",
            "limit=%205",
            "limit=5.",
            "limit=abc",
        ] {
            assert_eq!(query(bad), None, "{bad}");
        }
    }

    #[test]
    fn endpoint_urls_match_their_pattern_and_parse() {
        for ok in [
            "https://billing.example.com/hooks/tierflow",
            "http://localhost:8080/h?token=a-b_c",
            "http://127.0.0.1:9999/",
            "https://a-b.c1/x%20y",
        ] {
            assert!(matches(EndpointUrl::pattern(), ok), "{ok}");
            assert!(EndpointUrl::check("url", ok).is_ok(), "{ok}");
            assert!(tierflow_store::webhooks::check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://example.com/",
            "https://Example.com/",
            "https://user:pw@example.com/",
            "https://example.com:65536/",
            "https://256.1.1.1/",
            "https://xn--a/",
            "https://example.com/a b",
            "example.com/hooks",
        ] {
            assert!(!matches(EndpointUrl::pattern(), bad), "{bad}");
            assert!(EndpointUrl::check("url", bad).is_err(), "{bad}");
        }
        for ok in ["", "billing\nsync"] {
            assert!(matches(EndpointDescription::pattern(), ok), "{ok:?}");
        }
        assert!(!matches(EndpointDescription::pattern(), "a\tb"));
    }

    #[test]
    fn display_names_match_their_pattern() {
        let pattern = DisplayName::pattern();
        let mut samples: Vec<String> = [
            "", " ", "  ", "a", " a ", "\t", "a\tb", "\u{a0}", "\u{3000}", "\u{feff}", "\u{85}",
            "\u{2028}", "x\u{0}", "Pro Plan", "é", "😀",
        ]
        .map(str::to_owned)
        .to_vec();
        samples.push("a".repeat(100));
        samples.push("a".repeat(101));
        samples.push(format!(" {}", "a".repeat(99)));
        for s in samples {
            let declared = matches(&pattern, &s) && (1..=100).contains(&s.chars().count());
            assert_eq!(declared, DisplayName::check("name", &s).is_ok(), "{s:?}");
        }
    }
}
