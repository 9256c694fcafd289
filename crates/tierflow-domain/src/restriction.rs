//! The four restriction flags and the sources that hold them.
//!
//! A flag is never stored as a bare boolean. Each source that wants a flag set (a pending
//! downgrade, a suspension, an operator's hold) holds its own row, and the flag is on while any
//! source holds it — the way Kill Bill's blocking states combine. Lifting one source therefore
//! never clears a restriction that another source still holds: reactivating a suspended tenant
//! whose downgrade is still in grace keeps voice off.
//!
//! Each flag switches off one feature in the effective entitlement:
//!
//! | flag                | feature switched off |
//! |---------------------|----------------------|
//! | `voice_disabled`    | `voice`              |
//! | `sla_frozen`        | `sla_timers`         |
//! | `escalation_frozen` | `escalation`         |
//! | `routing_degraded`  | `priority_routing`   |

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DomainError;
use crate::ids::TransitionId;
use crate::tier::feature;

/// One restriction flag.
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
pub enum Restriction {
    VoiceDisabled,
    SlaFrozen,
    EscalationFrozen,
    RoutingDegraded,
}

impl Restriction {
    /// Every flag, in a stable order.
    pub const ALL: [Restriction; 4] = [
        Self::VoiceDisabled,
        Self::SlaFrozen,
        Self::EscalationFrozen,
        Self::RoutingDegraded,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VoiceDisabled => "voice_disabled",
            Self::SlaFrozen => "sla_frozen",
            Self::EscalationFrozen => "escalation_frozen",
            Self::RoutingDegraded => "routing_degraded",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| DomainError::invalid("restriction", format!("unknown flag '{s}'")))
    }

    /// The feature this flag switches off.
    pub fn feature(self) -> &'static str {
        match self {
            Self::VoiceDisabled => feature::VOICE,
            Self::SlaFrozen => feature::SLA_TIMERS,
            Self::EscalationFrozen => feature::ESCALATION,
            Self::RoutingDegraded => feature::PRIORITY_ROUTING,
        }
    }
}

/// Who holds a restriction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RestrictionSource {
    /// A downgrade in its grace period; lifted when it is applied or cancelled.
    PendingDowngrade(TransitionId),
    /// The tenant is suspended; lifted on reactivation.
    Suspension,
    /// The tenant's entitlement expired; lifted on reactivation.
    Expiry,
    /// A named hold placed by an operator (compliance, fraud review, …).
    Hold(String),
}

impl RestrictionSource {
    /// The stored key: `downgrade:<transition id>`, `suspension`, `expiry`, `hold:<name>`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Parses a stored key.
    pub fn parse(key: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::invalid("restriction source", format!("unknown source '{key}'"));
        if key == "suspension" {
            return Ok(Self::Suspension);
        }
        if key == "expiry" {
            return Ok(Self::Expiry);
        }
        if let Some(id) = key.strip_prefix("downgrade:") {
            let id = Uuid::parse_str(id).map_err(|_| bad())?;
            return Ok(Self::PendingDowngrade(TransitionId(id)));
        }
        match key.strip_prefix("hold:") {
            Some(name) if !name.is_empty() => Ok(Self::Hold(name.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for RestrictionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PendingDowngrade(id) => write!(f, "downgrade:{id}"),
            Self::Suspension => f.write_str("suspension"),
            Self::Expiry => f.write_str("expiry"),
            Self::Hold(name) => write!(f, "hold:{name}"),
        }
    }
}

/// Serialized as its key (a string), so the schema is that string's shape.
impl utoipa::PartialSchema for RestrictionSource {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "Who holds a restriction: `downgrade:<transition id>` (a downgrade in its grace \
                 period), `suspension`, `expiry`, or `hold:<name>` (an operator's hold).",
            ))
            .pattern(Some(
                r"^(?:downgrade:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|suspension|expiry|hold:[a-z0-9_-]{1,64})$",
            ))
            .examples(["downgrade:0190a0a0-0000-7000-8000-000000000000", "hold:compliance-review"])
            .into()
    }
}

impl utoipa::ToSchema for RestrictionSource {}

impl TryFrom<String> for RestrictionSource {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, DomainError> {
        Self::parse(&value)
    }
}

impl From<RestrictionSource> for String {
    fn from(value: RestrictionSource) -> String {
        value.key()
    }
}

/// One stored restriction row: `source` holds `restriction`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hold {
    pub restriction: Restriction,
    pub source: RestrictionSource,
}

/// The four flags, derived from the holds: a flag is on while any source holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestrictionFlags {
    pub voice_disabled: bool,
    pub sla_frozen: bool,
    pub escalation_frozen: bool,
    pub routing_degraded: bool,
}

impl RestrictionFlags {
    /// A flag is on while at least one source holds it.
    pub fn from_holds<'a>(holds: impl IntoIterator<Item = &'a Hold>) -> Self {
        let mut flags = Self::default();
        for hold in holds {
            *flags.get_mut(hold.restriction) = true;
        }
        flags
    }

    /// Whether `r` is on.
    pub fn get(&self, r: Restriction) -> bool {
        match r {
            Restriction::VoiceDisabled => self.voice_disabled,
            Restriction::SlaFrozen => self.sla_frozen,
            Restriction::EscalationFrozen => self.escalation_frozen,
            Restriction::RoutingDegraded => self.routing_degraded,
        }
    }

    fn get_mut(&mut self, r: Restriction) -> &mut bool {
        match r {
            Restriction::VoiceDisabled => &mut self.voice_disabled,
            Restriction::SlaFrozen => &mut self.sla_frozen,
            Restriction::EscalationFrozen => &mut self.escalation_frozen,
            Restriction::RoutingDegraded => &mut self.routing_degraded,
        }
    }
}

/// The sources holding `r`, sorted.
pub fn sources_of<'a>(
    holds: impl IntoIterator<Item = &'a Hold>,
    r: Restriction,
) -> Vec<RestrictionSource> {
    holds
        .into_iter()
        .filter(|h| h.restriction == r)
        .map(|h| h.source.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The holds a source takes for all four flags (a pending downgrade, a suspension).
pub fn hold_all(source: &RestrictionSource) -> Vec<Hold> {
    Restriction::ALL
        .into_iter()
        .map(|restriction| Hold {
            restriction,
            source: source.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifting_one_source_keeps_flags_another_holds() {
        let downgrade = RestrictionSource::PendingDowngrade(TransitionId::new());
        let mut holds = hold_all(&downgrade);
        holds.extend(hold_all(&RestrictionSource::Suspension));
        assert!(RestrictionFlags::from_holds(&holds).voice_disabled);

        // Reactivation lifts the suspension's rows only.
        holds.retain(|h| h.source != RestrictionSource::Suspension);
        let flags = RestrictionFlags::from_holds(&holds);
        assert!(flags.voice_disabled && flags.sla_frozen);
        assert!(flags.escalation_frozen && flags.routing_degraded);

        // Cancelling the downgrade lifts the rest.
        holds.retain(|h| h.source != downgrade);
        assert_eq!(
            RestrictionFlags::from_holds(&holds),
            RestrictionFlags::default()
        );
    }

    #[test]
    fn source_keys_round_trip() {
        for s in [
            RestrictionSource::PendingDowngrade(TransitionId::new()),
            RestrictionSource::Suspension,
            RestrictionSource::Hold("compliance".into()),
        ] {
            assert_eq!(RestrictionSource::parse(&s.key()).unwrap(), s);
        }
        assert!(RestrictionSource::parse("downgrade:nope").is_err());
        assert!(RestrictionSource::parse("hold:").is_err());
    }

    #[test]
    fn sources_of_lists_each_holder_once() {
        let holds = [
            Hold {
                restriction: Restriction::VoiceDisabled,
                source: RestrictionSource::Suspension,
            },
            Hold {
                restriction: Restriction::VoiceDisabled,
                source: RestrictionSource::Hold("fraud".into()),
            },
            Hold {
                restriction: Restriction::SlaFrozen,
                source: RestrictionSource::Suspension,
            },
        ];
        assert_eq!(sources_of(&holds, Restriction::VoiceDisabled).len(), 2);
        assert_eq!(sources_of(&holds, Restriction::RoutingDegraded), vec![]);
    }
}
