//! The effective entitlement: what a tenant may do now, and where each value comes from.
//!
//! Precedence, lowest first: the tier's value (`plan`), an active override (`override`, limits
//! only), a restriction flag (`restriction`, features only). The result carries the provenance of
//! every value, so support can answer "why can't this tenant make calls?" from one read.
//!
//! This is the product's most frequent read; it is a pure fold over rows the store loads with
//! one indexed query each, and it decides override activity by `now`, so it is right even before
//! a late `expire_override` job has run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{OverrideId, TenantId, TierId};
use crate::limit_override::LimitOverride;
use crate::restriction::{Hold, Restriction, RestrictionFlags, RestrictionSource, sources_of};
use crate::tier::{Tier, TierCategory};
use crate::transition::{EntitlementStatus, PendingDowngrade};

/// Where a value comes from (`source`), with what names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum Provenance {
    /// The tier's own value.
    Plan { tier_id: TierId },
    /// An active override.
    Override {
        override_id: OverrideId,
        expires_at: DateTime<Utc>,
    },
    /// A restriction flag, held by these sources.
    Restriction {
        restriction: Restriction,
        held_by: Vec<RestrictionSource>,
    },
}

/// A value with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Valued<T> {
    pub value: T,
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A feature switch with its provenance.
pub type FeatureValue = Valued<bool>;
/// A limit (`null`: unlimited) with its provenance.
pub type LimitValue = Valued<Option<i64>>;

/// The schema of a [`Valued`]: since `provenance` is flattened, each of [`Provenance`]'s
/// variants (as its derived schema has them) with a `value` beside its fields — one flat object
/// per `source`, which is what is serialized (and what client generators can read, unlike an
/// `allOf` of a `oneOf`).
/// Each variant is titled `<name>From<Source>` (`FeatureFromPlan`), which generated clients use
/// as its class name.
fn valued_schema(
    name: &str,
    description: &str,
    value: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{OneOfBuilder, Schema};
    let variants = match <Provenance as utoipa::PartialSchema>::schema() {
        RefOr::T(Schema::OneOf(one_of)) => one_of.items,
        other => vec![other],
    };
    let with_value = variants.into_iter().map(|v| match v {
        RefOr::T(Schema::Object(mut o)) => {
            let source = match o.properties.get("source") {
                Some(RefOr::T(Schema::Object(s))) => s
                    .enum_values
                    .as_ref()
                    .and_then(|v| v.first())
                    .and_then(|v| v.as_str())
                    .map(|s| s[..1].to_uppercase() + &s[1..]),
                _ => None,
            };
            o.title = source.map(|s| format!("{name}From{s}"));
            o.properties.insert("value".into(), value.clone());
            o.required.insert(0, "value".into());
            RefOr::T(Schema::Object(o))
        }
        other => other,
    });
    with_value
        .fold(OneOfBuilder::new(), OneOfBuilder::item)
        .description(Some(description))
        .into()
}

macro_rules! valued_schema {
    ($alias:ident, $title:literal, $value:ty, $description:literal) => {
        impl utoipa::PartialSchema for $alias {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                valued_schema(
                    $title,
                    $description,
                    <$value as utoipa::PartialSchema>::schema(),
                )
            }
        }

        impl utoipa::ToSchema for $alias {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($alias).into()
            }

            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                <Provenance as utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}

valued_schema!(
    FeatureValue,
    "Feature",
    bool,
    "A feature switch (`value`) and where it comes from (`source`: the tier's plan, or a restriction that switched it off, naming its holders)."
);
valued_schema!(
    LimitValue,
    "Limit",
    Option<i64>,
    "A limit (`value`, null: unlimited) and where it comes from (`source`: the tier's plan, or an active override, naming it and its expiry)."
);

/// What the tenant may do now, with the provenance of every feature and limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EffectiveEntitlement {
    pub tenant_id: TenantId,
    pub tier_id: TierId,
    pub tier_name: String,
    pub category: TierCategory,
    pub status: EntitlementStatus,
    pub effective_at: DateTime<Utc>,
    /// When the entitlement expires (status `expired`, every restriction on), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub pending_downgrade: Option<PendingDowngrade>,
    pub restrictions: RestrictionFlags,
    /// For each flag that is on, the sources holding it.
    pub restriction_sources: BTreeMap<Restriction, Vec<RestrictionSource>>,
    /// The tier's feature switches, as restrictions leave them.
    #[schema(value_type = BTreeMap<String, FeatureValue>)]
    pub features: BTreeMap<String, Valued<bool>>,
    /// The tier's limits, as overrides replace them.
    #[schema(value_type = BTreeMap<String, LimitValue>)]
    pub limits: BTreeMap<String, Valued<Option<i64>>>,
    /// Bumped by every change to the tenant; orders events downstream.
    pub version: i64,
    pub as_of: DateTime<Utc>,
}

/// The stored state the effective entitlement is computed from.
#[derive(Debug, Clone)]
pub struct EntitlementState<'a> {
    pub tenant_id: &'a TenantId,
    pub tier: &'a Tier,
    pub status: EntitlementStatus,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub pending: Option<&'a PendingDowngrade>,
    pub holds: &'a [Hold],
    pub overrides: &'a [LimitOverride],
}

/// Computes the effective entitlement at `now`.
pub fn effective_entitlement(s: &EntitlementState<'_>, now: DateTime<Utc>) -> EffectiveEntitlement {
    let plan = || Provenance::Plan {
        tier_id: s.tier.tier_id.clone(),
    };
    let flags = RestrictionFlags::from_holds(s.holds);

    let mut features: BTreeMap<String, Valued<bool>> = s
        .tier
        .features
        .iter()
        .map(|(name, on)| {
            let v = Valued {
                value: *on,
                provenance: plan(),
            };
            (name.clone(), v)
        })
        .collect();
    let mut restriction_sources = BTreeMap::new();
    for r in Restriction::ALL.into_iter().filter(|r| flags.get(*r)) {
        let held_by = sources_of(s.holds, r);
        restriction_sources.insert(r, held_by.clone());
        // A restriction only switches a feature off; a feature the plan lacks stays absent.
        if let Some(f) = features.get_mut(r.feature()).filter(|f| f.value) {
            *f = Valued {
                value: false,
                provenance: Provenance::Restriction {
                    restriction: r,
                    held_by,
                },
            };
        }
    }

    let mut limits: BTreeMap<String, Valued<Option<i64>>> = s
        .tier
        .limits
        .iter()
        .map(|(name, limit)| {
            let v = Valued {
                value: *limit,
                provenance: plan(),
            };
            (name.clone(), v)
        })
        .collect();
    for o in s.overrides.iter().filter(|o| o.is_active(now)) {
        limits.insert(
            o.entitlement_type.as_str().to_owned(),
            Valued {
                value: Some(o.override_limit),
                provenance: Provenance::Override {
                    override_id: o.override_id,
                    expires_at: o.expires_at,
                },
            },
        );
    }

    EffectiveEntitlement {
        tenant_id: s.tenant_id.clone(),
        tier_id: s.tier.tier_id.clone(),
        tier_name: s.tier.name.clone(),
        category: s.tier.category,
        status: s.status,
        effective_at: s.effective_at,
        expires_at: s.expires_at,
        pending_downgrade: s.pending.cloned(),
        restrictions: flags,
        restriction_sources,
        features,
        limits,
        version: s.version,
        as_of: now,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::ids::{Actor, TransitionId};
    use crate::limit_override::{EntitlementType, OverrideReason};
    use crate::restriction::hold_all;
    use crate::tier::canonical_tiers;

    fn pro() -> Tier {
        canonical_tiers().swap_remove(2)
    }

    fn at() -> DateTime<Utc> {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn voice_override(expires_at: DateTime<Utc>) -> LimitOverride {
        LimitOverride {
            override_id: OverrideId::new(),
            entitlement_type: EntitlementType::Voice,
            original_limit: Some(1_000),
            override_limit: 5_000,
            reason: OverrideReason::Incident,
            granted_by: Actor::parse("ops:alice").unwrap(),
            created_at: at(),
            expires_at,
        }
    }

    fn compute(
        holds: &[Hold],
        overrides: &[LimitOverride],
        now: DateTime<Utc>,
    ) -> EffectiveEntitlement {
        let tier = pro();
        let tenant = TenantId::parse("acme").unwrap();
        effective_entitlement(
            &EntitlementState {
                tenant_id: &tenant,
                tier: &tier,
                status: EntitlementStatus::Active,
                effective_at: at(),
                expires_at: None,
                version: 1,
                pending: None,
                holds,
                overrides,
            },
            now,
        )
    }

    #[test]
    fn plain_plan_values_carry_plan_provenance() {
        let e = compute(&[], &[], at());
        assert!(e.features["voice"].value);
        assert_eq!(e.limits["leads"].value, Some(10_000));
        assert!(matches!(
            e.limits["leads"].provenance,
            Provenance::Plan { .. }
        ));
        assert!(e.restriction_sources.is_empty());
    }

    #[test]
    fn restrictions_switch_features_off_and_name_their_sources() {
        let source = RestrictionSource::PendingDowngrade(TransitionId::new());
        let holds = hold_all(&source);
        let e = compute(&holds, &[], at());
        for f in ["voice", "sla_timers", "escalation", "priority_routing"] {
            assert!(!e.features[f].value, "{f} off");
            match &e.features[f].provenance {
                Provenance::Restriction { held_by, .. } => {
                    assert_eq!(held_by, std::slice::from_ref(&source))
                }
                other => panic!("{f}: {other:?}"),
            }
        }
        assert!(e.features["api_access"].value, "untouched feature stays on");
        assert!(e.restrictions.voice_disabled);
    }

    #[test]
    fn override_replaces_the_limit_while_active() {
        let o = voice_override(at() + Duration::hours(1));
        let e = compute(&[], std::slice::from_ref(&o), at());
        assert_eq!(e.limits["voice"].value, Some(5_000));
        assert!(matches!(
            e.limits["voice"].provenance,
            Provenance::Override { .. }
        ));
    }

    #[test]
    fn override_expiring_during_grace_falls_back_to_plan_but_keeps_restrictions() {
        let holds = hold_all(&RestrictionSource::PendingDowngrade(TransitionId::new()));
        let o = voice_override(at() + Duration::hours(1));
        let during = compute(&holds, std::slice::from_ref(&o), at());
        assert_eq!(during.limits["voice"].value, Some(5_000));
        // The expiry job may not have run yet; the read is right anyway.
        let after = compute(&holds, std::slice::from_ref(&o), at() + Duration::hours(1));
        assert_eq!(after.limits["voice"].value, Some(1_000));
        assert!(matches!(
            after.limits["voice"].provenance,
            Provenance::Plan { .. }
        ));
        assert!(
            !after.features["voice"].value,
            "grace restrictions still hold"
        );
    }
}
