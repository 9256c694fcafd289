//! Transitions: classification by rank, and the plan of what a request changes.
//!
//! [`plan_transition`] answers, for one request and the tenant's current state, everything the
//! store must write in the request's transaction: the transition row, the tier and status applied
//! now, the pending downgrade it supersedes, the restriction holds it takes and lifts, and the
//! actions (jobs) it schedules with their due times. [`plan_apply_downgrade`] does the same for the
//! job that ends a grace period.
//!
//! # The rules
//!
//! | request                         | kind           | applied now                        | actions scheduled |
//! |---------------------------------|----------------|------------------------------------|-------------------|
//! | higher rank                     | `upgrade`      | tier; pending downgrade cancelled, its holds lifted | – |
//! | same rank, other tier           | `lateral`      | as upgrade                         | – |
//! | lower rank, grace G > 0         | `downgrade`    | transition `pending` until now + G; all four flags held by `downgrade:<id>`; a pending downgrade is replaced (`cancelled`) | `voice_disable` now, `sla_freeze` now, `apply_downgrade` at now + G |
//! | lower rank, grace 0             | `downgrade`    | tier at once, like an upgrade (there is no grace to enforce) | – |
//! | suspend                         | `suspension`   | status `suspended`; all four flags held by `suspension` | – |
//! | reactivate                      | `reactivation` | status `active`; the `suspension` holds lifted | – |
//!
//! Suspension and tier changes are independent axes. A suspension leaves a pending downgrade
//! running (it is applied at grace end, and the tenant stays suspended); a downgrade or upgrade
//! may be requested while suspended (the status stays `suspended`); reactivation lifts only the
//! suspension's holds, so a downgrade still in grace keeps voice off. An `expired` entitlement
//! takes no tier change until it is reactivated.
//!
//! Refused, with nothing changed: the current tier as target ([`DomainError::AlreadyOnTier`]),
//! an inactive target tier, suspending a suspended tenant, reactivating an active one.
//!
//! # State of a transition
//!
//! ```text
//! upgrade / lateral / zero-grace downgrade / suspension / reactivation ──▶ effective
//! downgrade ──▶ pending ──(apply_downgrade at grace end)──▶ effective
//!                  └──(upgrade, lateral, another downgrade, cancel)──▶ cancelled
//! ```

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::DomainError;
use crate::ids::{TierId, TransitionId};
use crate::restriction::{Hold, RestrictionSource, hold_all};
use crate::tier::Tier;

/// The longest grace period a request may ask for.
pub const MAX_GRACE: Duration = Duration::days(90);

/// A tenant entitlement's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementStatus {
    Active,
    Suspended,
    Expired,
}

/// A transition's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// The tenant's first tier assignment.
    Provision,
    Upgrade,
    Downgrade,
    Lateral,
    Suspension,
    Reactivation,
}

/// A transition's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransitionStatus {
    /// A downgrade in its grace period.
    Pending,
    Effective,
    Cancelled,
}

macro_rules! stored_enum {
    ($name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }

            /// Parses a stored name.
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                match s {
                    $($s => Ok(Self::$variant),)+
                    other => Err(DomainError::invalid(
                        stringify!($name),
                        format!("unknown value '{other}'"),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum!(EntitlementStatus { Active => "active", Suspended => "suspended", Expired => "expired" });
stored_enum!(TransitionKind {
    Provision => "provision", Upgrade => "upgrade", Downgrade => "downgrade",
    Lateral => "lateral", Suspension => "suspension", Reactivation => "reactivation",
});
stored_enum!(TransitionStatus { Pending => "pending", Effective => "effective", Cancelled => "cancelled" });
stored_enum!(Action { VoiceDisable => "voice_disable", SlaFreeze => "sla_freeze", ApplyDowngrade => "apply_downgrade" });

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "tier_id")]
pub enum Target {
    /// Move to this tier (upgrade, downgrade or lateral, by rank).
    Tier(TierId),
    /// Suspend the tenant.
    Suspend,
    /// Lift a suspension (or an expiry).
    Reactivate,
}

/// A grace period: zero or more, at most [`MAX_GRACE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct GracePeriod(Duration);

impl GracePeriod {
    /// Parses a grace period in seconds.
    pub fn from_secs(secs: i64) -> Result<Self, DomainError> {
        if secs < 0 {
            return Err(DomainError::invalid(
                "grace_seconds",
                format!("is {secs}; a grace period cannot be negative (use 0 for none)"),
            ));
        }
        let max = MAX_GRACE.num_seconds();
        if secs > max {
            return Err(DomainError::invalid(
                "grace_seconds",
                format!("is {secs}; at most {max} (90 days) is allowed"),
            ));
        }
        Ok(Self(Duration::seconds(secs)))
    }

    /// Parses a grace period given as a duration (for sub-second test graces).
    pub fn from_duration(d: Duration) -> Result<Self, DomainError> {
        if d < Duration::zero() || d > MAX_GRACE {
            return Err(DomainError::invalid(
                "grace",
                format!("is {d}; it must lie between 0 and 90 days"),
            ));
        }
        Ok(Self(d))
    }

    /// No grace.
    pub fn zero() -> Self {
        Self(Duration::zero())
    }

    /// The length.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl TryFrom<i64> for GracePeriod {
    type Error = DomainError;
    fn try_from(secs: i64) -> Result<Self, DomainError> {
        Self::from_secs(secs)
    }
}

impl From<GracePeriod> for i64 {
    fn from(g: GracePeriod) -> i64 {
        g.0.num_seconds()
    }
}

/// One of the timed actions a transition schedules (each runs as a job of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Enforce "voice off" downstream, at once.
    VoiceDisable,
    /// Enforce frozen SLA timers and escalations, and degraded routing, downstream, at once.
    SlaFreeze,
    /// Move the tenant to the lower tier at grace end.
    ApplyDowngrade,
}

/// An action and when it is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub action: Action,
    pub due_at: DateTime<Utc>,
}

/// A downgrade waiting for its grace period to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingDowngrade {
    pub transition_id: TransitionId,
    pub to_tier: TierId,
    pub grace_ends_at: DateTime<Utc>,
}

/// The tenant's state the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct CurrentState<'a> {
    pub tier: &'a Tier,
    pub status: EntitlementStatus,
    pub pending: Option<&'a PendingDowngrade>,
}

/// Everything one request changes, for the store to write in one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionPlan {
    pub transition_id: TransitionId,
    pub kind: TransitionKind,
    pub status: TransitionStatus,
    pub from_tier: TierId,
    pub to_tier: TierId,
    pub from_status: EntitlementStatus,
    pub to_status: EntitlementStatus,
    /// When the change takes (or took) effect: now, or the grace end of a pending downgrade.
    pub effective_at: DateTime<Utc>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// The tier the tenant is on once this request commits.
    pub tier_now: TierId,
    /// The pending downgrade this request cancels.
    pub supersedes: Option<TransitionId>,
    /// Sources whose holds are lifted now.
    pub lift: Vec<RestrictionSource>,
    /// Holds taken now.
    pub hold: Vec<Hold>,
    /// Jobs to schedule.
    pub actions: Vec<PlannedAction>,
}

/// How two tiers relate, by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierMove {
    Upgrade,
    Downgrade,
    Lateral,
}

/// Classifies a move between two tiers by rank; the same tier is not a move.
pub fn classify(from: &Tier, to: &Tier) -> Result<TierMove, DomainError> {
    if from.tier_id == to.tier_id {
        return Err(DomainError::AlreadyOnTier(to.tier_id.to_string()));
    }
    Ok(match to.rank.cmp(&from.rank) {
        std::cmp::Ordering::Greater => TierMove::Upgrade,
        std::cmp::Ordering::Less => TierMove::Downgrade,
        std::cmp::Ordering::Equal => TierMove::Lateral,
    })
}

/// Plans a request. `to_tier` is the target tier when `target` is [`Target::Tier`] (the store
/// has looked it up; an unknown id never reaches this function).
pub fn plan_transition(
    transition_id: TransitionId,
    state: CurrentState<'_>,
    target: &Target,
    to_tier: Option<&Tier>,
    grace: GracePeriod,
    now: DateTime<Utc>,
) -> Result<TransitionPlan, DomainError> {
    let mut plan = TransitionPlan {
        transition_id,
        kind: TransitionKind::Lateral,
        status: TransitionStatus::Effective,
        from_tier: state.tier.tier_id.clone(),
        to_tier: state.tier.tier_id.clone(),
        from_status: state.status,
        to_status: state.status,
        effective_at: now,
        grace_ends_at: None,
        tier_now: state.tier.tier_id.clone(),
        supersedes: None,
        lift: Vec::new(),
        hold: Vec::new(),
        actions: Vec::new(),
    };
    match target {
        Target::Suspend => {
            if state.status == EntitlementStatus::Suspended {
                return Err(DomainError::AlreadySuspended);
            }
            plan.kind = TransitionKind::Suspension;
            plan.to_status = EntitlementStatus::Suspended;
            plan.hold = hold_all(&RestrictionSource::Suspension);
        }
        Target::Reactivate => {
            if state.status == EntitlementStatus::Active {
                return Err(DomainError::NotSuspended(state.status.to_string()));
            }
            plan.kind = TransitionKind::Reactivation;
            plan.to_status = EntitlementStatus::Active;
            // Reactivation ends a suspension and an expiry alike; a pending downgrade's and an
            // operator's holds stay.
            plan.lift = vec![RestrictionSource::Suspension, RestrictionSource::Expiry];
        }
        Target::Tier(wanted) => {
            let to = match to_tier {
                Some(t) if &t.tier_id == wanted => t,
                _ => {
                    return Err(DomainError::invalid(
                        "tier_id",
                        format!("tier '{wanted}' was not looked up"),
                    ));
                }
            };
            let kind = classify(state.tier, to)?;
            if !to.active {
                return Err(DomainError::InactiveTier(to.tier_id.to_string()));
            }
            if state.status == EntitlementStatus::Expired {
                return Err(DomainError::Expired);
            }
            plan.to_tier = to.tier_id.clone();
            // Any tier move ends the pending downgrade: an upgrade or lateral move cancels it,
            // another downgrade replaces it.
            if let Some(pending) = state.pending {
                plan.supersedes = Some(pending.transition_id);
                plan.lift
                    .push(RestrictionSource::PendingDowngrade(pending.transition_id));
            }
            let grace = grace.duration();
            plan.kind = match kind {
                TierMove::Upgrade => TransitionKind::Upgrade,
                TierMove::Lateral => TransitionKind::Lateral,
                TierMove::Downgrade => TransitionKind::Downgrade,
            };
            if kind == TierMove::Downgrade && grace > Duration::zero() {
                let ends = now + grace;
                plan.status = TransitionStatus::Pending;
                plan.effective_at = ends;
                plan.grace_ends_at = Some(ends);
                plan.hold = hold_all(&RestrictionSource::PendingDowngrade(transition_id));
                plan.actions = vec![
                    PlannedAction {
                        action: Action::VoiceDisable,
                        due_at: now,
                    },
                    PlannedAction {
                        action: Action::SlaFreeze,
                        due_at: now,
                    },
                    PlannedAction {
                        action: Action::ApplyDowngrade,
                        due_at: ends,
                    },
                ];
            } else {
                plan.tier_now = to.tier_id.clone();
            }
        }
    }
    Ok(plan)
}

/// What the `apply_downgrade` job should do with a transition, decided from its stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyDecision {
    /// Apply now: move to `to_tier`, mark the transition effective, lift its holds.
    Apply {
        to_tier: TierId,
        lift: RestrictionSource,
    },
    /// The grace period has not ended yet (the job ran early); run again at this time.
    NotYetDue(DateTime<Utc>),
    /// Nothing to do: the transition is no longer pending (applied or cancelled).
    NoLongerPending(TransitionStatus),
}

/// Decides what `apply_downgrade` does for a transition in `status` whose grace ends at
/// `grace_ends_at`. A second run after the first applied it finds it `effective` and does nothing.
pub fn plan_apply_downgrade(
    transition_id: TransitionId,
    status: TransitionStatus,
    to_tier: &TierId,
    grace_ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApplyDecision {
    if status != TransitionStatus::Pending {
        return ApplyDecision::NoLongerPending(status);
    }
    if now < grace_ends_at {
        return ApplyDecision::NotYetDue(grace_ends_at);
    }
    ApplyDecision::Apply {
        to_tier: to_tier.clone(),
        lift: RestrictionSource::PendingDowngrade(transition_id),
    }
}

/// What the `expire_entitlement` job should do, decided from the tenant's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryDecision {
    /// Expire now: status `expired`, every restriction held by [`RestrictionSource::Expiry`].
    Expire { hold: Vec<crate::restriction::Hold> },
    /// Not yet: run again at this time.
    NotYetDue(DateTime<Utc>),
    /// Nothing to do, and why: the expiry was moved or cleared, or the tenant already expired.
    Moot(String),
}

/// Decides what `expire_entitlement` does for a job scheduled for `scheduled`, given the
/// tenant's `status` and its current `expires_at`.
pub fn plan_expiry(
    status: EntitlementStatus,
    expires_at: Option<DateTime<Utc>>,
    scheduled: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ExpiryDecision {
    match expires_at {
        None => ExpiryDecision::Moot("the expiry was cleared".into()),
        Some(at) if at != scheduled => {
            ExpiryDecision::Moot(format!("the expiry was moved to {at}"))
        }
        Some(_) if status == EntitlementStatus::Expired => {
            ExpiryDecision::Moot("the entitlement has already expired".into())
        }
        Some(at) if now < at => ExpiryDecision::NotYetDue(at),
        Some(_) => ExpiryDecision::Expire {
            hold: hold_all(&RestrictionSource::Expiry),
        },
    }
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
