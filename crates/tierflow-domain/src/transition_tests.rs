//! Edge cases of [`plan_transition`] and [`plan_apply_downgrade`], one test each.

use super::*;
use crate::restriction::{Restriction, RestrictionFlags};
use crate::tier::canonical_tiers;

fn tier(id: &str) -> Tier {
    canonical_tiers()
        .into_iter()
        .find(|t| t.tier_id.as_str() == id)
        .unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn grace(secs: i64) -> GracePeriod {
    GracePeriod::from_secs(secs).unwrap()
}

fn to(id: &str) -> Target {
    Target::Tier(TierId::parse(id).unwrap())
}

fn state(tier: &Tier) -> CurrentState<'_> {
    CurrentState {
        tier,
        status: EntitlementStatus::Active,
        pending: None,
    }
}

fn plan(state: CurrentState<'_>, target: &str, g: i64) -> Result<TransitionPlan, DomainError> {
    let to_tier = tier(target);
    plan_transition(
        TransitionId::new(),
        state,
        &to(target),
        Some(&to_tier),
        grace(g),
        now(),
    )
}

fn pending_to(id: &str) -> PendingDowngrade {
    PendingDowngrade {
        transition_id: TransitionId::new(),
        to_tier: TierId::parse(id).unwrap(),
        grace_ends_at: now() + Duration::days(3),
    }
}

#[test]
fn classification_follows_rank() {
    let (free, starter, pro) = (tier("free"), tier("starter"), tier("professional"));
    assert_eq!(classify(&free, &pro).unwrap(), TierMove::Upgrade);
    assert_eq!(classify(&pro, &starter).unwrap(), TierMove::Downgrade);
    let mut team = pro.clone();
    team.tier_id = TierId::parse("team").unwrap();
    assert_eq!(classify(&pro, &team).unwrap(), TierMove::Lateral);
}

#[test]
fn upgrade_applies_at_once_with_no_jobs() {
    let starter = tier("starter");
    let p = plan(state(&starter), "professional", 600).unwrap();
    assert_eq!(p.kind, TransitionKind::Upgrade);
    assert_eq!(p.status, TransitionStatus::Effective);
    assert_eq!(p.tier_now.as_str(), "professional");
    assert_eq!(p.effective_at, now());
    assert!(p.actions.is_empty() && p.hold.is_empty() && p.supersedes.is_none());
}

#[test]
fn downgrade_holds_all_flags_and_schedules_three_actions() {
    let pro = tier("professional");
    let p = plan(state(&pro), "starter", 600).unwrap();
    assert_eq!(p.kind, TransitionKind::Downgrade);
    assert_eq!(p.status, TransitionStatus::Pending);
    assert_eq!(
        p.tier_now.as_str(),
        "professional",
        "tier stays until grace end"
    );
    let ends = now() + Duration::seconds(600);
    assert_eq!(p.grace_ends_at, Some(ends));
    let due: Vec<_> = p.actions.iter().map(|a| (a.action, a.due_at)).collect();
    assert_eq!(
        due,
        [
            (Action::VoiceDisable, now()),
            (Action::SlaFreeze, now()),
            (Action::ApplyDowngrade, ends)
        ]
    );
    let flags = RestrictionFlags::from_holds(&p.hold);
    assert!(flags.voice_disabled && flags.sla_frozen && flags.escalation_frozen);
    assert!(flags.routing_degraded);
    assert!(
        p.hold
            .iter()
            .all(|h| h.source == RestrictionSource::PendingDowngrade(p.transition_id))
    );
}

#[test]
fn upgrade_during_pending_downgrade_cancels_it_and_lifts_its_holds() {
    let pro = tier("professional");
    let pending = pending_to("starter");
    let s = CurrentState {
        pending: Some(&pending),
        ..state(&pro)
    };
    let p = plan(s, "enterprise", 600).unwrap();
    assert_eq!(p.kind, TransitionKind::Upgrade);
    assert_eq!(p.supersedes, Some(pending.transition_id));
    assert_eq!(
        p.lift,
        [RestrictionSource::PendingDowngrade(pending.transition_id)]
    );
    assert!(p.actions.is_empty());
}

#[test]
fn second_downgrade_replaces_the_first() {
    let pro = tier("professional");
    let first = pending_to("starter");
    let s = CurrentState {
        pending: Some(&first),
        ..state(&pro)
    };
    let p = plan(s, "free", 60).unwrap();
    assert_eq!(p.kind, TransitionKind::Downgrade);
    assert_eq!(p.status, TransitionStatus::Pending);
    assert_eq!(p.supersedes, Some(first.transition_id));
    assert_eq!(
        p.lift,
        [RestrictionSource::PendingDowngrade(first.transition_id)]
    );
    assert_eq!(p.hold.len(), 4);
    assert_eq!(p.actions.len(), 3);
}

#[test]
fn lateral_applies_at_once_and_cancels_a_pending_downgrade() {
    let pro = tier("professional");
    let mut team = pro.clone();
    team.tier_id = TierId::parse("team").unwrap();
    let pending = pending_to("starter");
    let s = CurrentState {
        pending: Some(&pending),
        ..state(&pro)
    };
    let p = plan_transition(
        TransitionId::new(),
        s,
        &to("team"),
        Some(&team),
        grace(600),
        now(),
    )
    .unwrap();
    assert_eq!(p.kind, TransitionKind::Lateral);
    assert_eq!(p.status, TransitionStatus::Effective);
    assert_eq!(p.tier_now.as_str(), "team");
    assert_eq!(p.supersedes, Some(pending.transition_id));
}

#[test]
fn downgrade_while_suspended_keeps_the_suspension() {
    let pro = tier("professional");
    let s = CurrentState {
        status: EntitlementStatus::Suspended,
        ..state(&pro)
    };
    let p = plan(s, "starter", 600).unwrap();
    assert_eq!(p.kind, TransitionKind::Downgrade);
    assert_eq!(p.to_status, EntitlementStatus::Suspended);
    assert!(
        !p.lift.contains(&RestrictionSource::Suspension),
        "suspension holds stay"
    );
}

#[test]
fn suspension_during_grace_leaves_the_downgrade_pending() {
    let pro = tier("professional");
    let pending = pending_to("starter");
    let s = CurrentState {
        pending: Some(&pending),
        ..state(&pro)
    };
    let p = plan_transition(
        TransitionId::new(),
        s,
        &Target::Suspend,
        None,
        grace(0),
        now(),
    )
    .unwrap();
    assert_eq!(p.kind, TransitionKind::Suspension);
    assert_eq!(p.to_status, EntitlementStatus::Suspended);
    assert_eq!(p.supersedes, None, "the downgrade keeps running");
    assert!(p.lift.is_empty());
    assert!(
        p.hold
            .iter()
            .all(|h| h.source == RestrictionSource::Suspension)
    );
    assert_eq!(
        plan_transition(
            TransitionId::new(),
            CurrentState {
                status: EntitlementStatus::Suspended,
                ..s
            },
            &Target::Suspend,
            None,
            grace(0),
            now()
        ),
        Err(DomainError::AlreadySuspended)
    );
}

#[test]
fn reactivation_lifts_only_the_suspension_and_the_expiry() {
    let pro = tier("professional");
    let s = CurrentState {
        status: EntitlementStatus::Suspended,
        ..state(&pro)
    };
    let p = plan_transition(
        TransitionId::new(),
        s,
        &Target::Reactivate,
        None,
        grace(0),
        now(),
    )
    .unwrap();
    assert_eq!(p.kind, TransitionKind::Reactivation);
    assert_eq!(p.to_status, EntitlementStatus::Active);
    assert_eq!(
        p.lift,
        [RestrictionSource::Suspension, RestrictionSource::Expiry]
    );
    let active = plan_transition(
        TransitionId::new(),
        state(&pro),
        &Target::Reactivate,
        None,
        grace(0),
        now(),
    );
    assert_eq!(active, Err(DomainError::NotSuspended("active".into())));
}

#[test]
fn zero_grace_downgrade_applies_at_once() {
    let pro = tier("professional");
    let p = plan(state(&pro), "starter", 0).unwrap();
    assert_eq!(p.kind, TransitionKind::Downgrade);
    assert_eq!(p.status, TransitionStatus::Effective);
    assert_eq!(p.tier_now.as_str(), "starter");
    assert_eq!(p.grace_ends_at, None);
    assert!(p.actions.is_empty() && p.hold.is_empty());
}

#[test]
fn transition_to_the_current_tier_is_refused() {
    let pro = tier("professional");
    assert_eq!(
        plan(state(&pro), "professional", 0),
        Err(DomainError::AlreadyOnTier("professional".into()))
    );
}

#[test]
fn inactive_target_tier_is_refused() {
    let pro = tier("professional");
    let mut legacy = tier("starter");
    legacy.active = false;
    let r = plan_transition(
        TransitionId::new(),
        state(&pro),
        &to("starter"),
        Some(&legacy),
        grace(0),
        now(),
    );
    assert_eq!(r, Err(DomainError::InactiveTier("starter".into())));
}

#[test]
fn unknown_target_tier_never_plans() {
    let pro = tier("professional");
    let r = plan_transition(
        TransitionId::new(),
        state(&pro),
        &to("nope"),
        None,
        grace(0),
        now(),
    );
    assert!(matches!(
        r,
        Err(DomainError::Invalid {
            field: "tier_id",
            ..
        })
    ));
}

#[test]
fn expired_entitlement_takes_no_tier_change() {
    let pro = tier("professional");
    let s = CurrentState {
        status: EntitlementStatus::Expired,
        ..state(&pro)
    };
    assert_eq!(plan(s, "enterprise", 0), Err(DomainError::Expired));
}

#[test]
fn grace_must_be_within_bounds() {
    assert!(
        GracePeriod::from_secs(-1)
            .unwrap_err()
            .to_string()
            .contains("negative")
    );
    assert!(GracePeriod::from_secs(MAX_GRACE.num_seconds() + 1).is_err());
    assert!(GracePeriod::from_secs(MAX_GRACE.num_seconds()).is_ok());
}

#[test]
fn apply_downgrade_runs_once_and_never_early() {
    let id = TransitionId::new();
    let starter = TierId::parse("starter").unwrap();
    let ends = now();
    assert_eq!(
        plan_apply_downgrade(
            id,
            TransitionStatus::Pending,
            &starter,
            ends,
            ends - Duration::seconds(1)
        ),
        ApplyDecision::NotYetDue(ends)
    );
    assert_eq!(
        plan_apply_downgrade(id, TransitionStatus::Pending, &starter, ends, ends),
        ApplyDecision::Apply {
            to_tier: starter.clone(),
            lift: RestrictionSource::PendingDowngrade(id)
        }
    );
    for done in [TransitionStatus::Effective, TransitionStatus::Cancelled] {
        assert_eq!(
            plan_apply_downgrade(id, done, &starter, ends, ends),
            ApplyDecision::NoLongerPending(done)
        );
    }
}

#[test]
fn every_stored_name_round_trips() {
    for k in [
        TransitionKind::Provision,
        TransitionKind::Upgrade,
        TransitionKind::Downgrade,
        TransitionKind::Lateral,
        TransitionKind::Suspension,
        TransitionKind::Reactivation,
    ] {
        assert_eq!(TransitionKind::parse(k.as_str()).unwrap(), k);
    }
    for a in [
        Action::VoiceDisable,
        Action::SlaFreeze,
        Action::ApplyDowngrade,
    ] {
        assert_eq!(Action::parse(a.as_str()).unwrap(), a);
    }
    for r in Restriction::ALL {
        assert_eq!(Restriction::parse(r.as_str()).unwrap(), r);
    }
}

#[test]
fn expiry_applies_once_at_its_time_and_never_for_a_moved_or_cleared_one() {
    let at = now();
    let early = at - chrono::Duration::seconds(1);
    assert_eq!(
        plan_expiry(EntitlementStatus::Active, Some(at), at, early),
        ExpiryDecision::NotYetDue(at)
    );
    match plan_expiry(EntitlementStatus::Suspended, Some(at), at, at) {
        ExpiryDecision::Expire { hold } => {
            assert_eq!(hold.len(), 4);
            assert!(hold.iter().all(|h| h.source == RestrictionSource::Expiry));
        }
        other => panic!("{other:?}"),
    }
    for (status, current) in [
        (EntitlementStatus::Expired, Some(at)),
        (EntitlementStatus::Active, None),
        (
            EntitlementStatus::Active,
            Some(at + chrono::Duration::days(1)),
        ),
    ] {
        assert!(
            matches!(
                plan_expiry(status, current, at, at),
                ExpiryDecision::Moot(_)
            ),
            "{status:?} {current:?}"
        );
    }
}
