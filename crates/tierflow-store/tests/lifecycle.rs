//! The timed side of transitions with an injected clock: grace periods fast-forwarded, each job's
//! effect applied once, restrictions per source, suspension combined with a downgrade.

mod common;

use chrono::Duration;
use common::*;
use tierflow_domain::transition::{Action, Target};
use tierflow_store::jobs::{ActionOutcome, run_transition_action};
use tierflow_store::{audit, tenants, transitions};

async fn run(
    f: &Fixture,
    tenant: &str,
    id: tierflow_domain::ids::TransitionId,
    a: Action,
) -> ActionOutcome {
    // Actions run in the caller's transaction (the job's, in the worker).
    let mut tx = f.pool().begin().await.unwrap();
    let outcome = run_transition_action(&mut tx, &f.ctx, f.ctx.clock.now(), &tid(tenant), id, a)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outcome
}

async fn audit_actions(f: &Fixture, tenant: &str) -> Vec<String> {
    let mut conn = f.pool().acquire().await.unwrap();
    audit::for_tenant(&mut conn, tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect()
}

/// Fast-forwarding the clock past the grace end lets `apply_downgrade` move the tier; before it,
/// the job is told to come back at the grace end; after it, a second run does nothing and says so.
#[tokio::test]
async fn grace_period_fast_forwarded_applies_the_downgrade_once() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let down = f
        .request(to_tier("acme", "starter", 7 * 24 * 3600))
        .await
        .unwrap();
    let id = down.transition.id;
    let ends = down.transition.grace_ends_at.unwrap();

    assert_eq!(
        run(&f, "acme", id, Action::ApplyDowngrade).await,
        ActionOutcome::NotYetDue { due_at: ends }
    );
    f.advance(Duration::days(7));
    let applied = run(&f, "acme", id, Action::ApplyDowngrade).await;
    assert!(
        matches!(applied, ActionOutcome::Applied { .. }),
        "{applied:?}"
    );
    match run(&f, "acme", id, Action::ApplyDowngrade).await {
        ActionOutcome::NoOp { reason } => assert!(reason.contains("already done"), "{reason}"),
        other => panic!("second run: {other:?}"),
    }

    let mut conn = f.pool().acquire().await.unwrap();
    let e = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(e.tier_id.as_str(), "starter");
    assert!(e.pending_downgrade.is_none());
    assert!(
        e.restriction_sources.is_empty(),
        "grace holds lifted: {:?}",
        e.restriction_sources
    );
    assert!(
        !e.features["voice"].value,
        "starter has no voice of its own"
    );
    let t = transitions::get(&mut conn, &tid("acme"), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status.as_str(), "effective");
    assert_eq!(t.effective_at, f.now());
    let trail = audit_actions(&f, "acme").await;
    assert_eq!(
        trail
            .iter()
            .filter(|a| *a == "action.apply_downgrade")
            .count(),
        1
    );
}

/// `voice_disable` and `sla_freeze` each record their enforcement once.
#[tokio::test]
async fn enforcement_actions_run_once() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let id = f.downgrade("acme", "starter", 3600).await;
    for a in [Action::VoiceDisable, Action::SlaFreeze] {
        assert!(matches!(
            run(&f, "acme", id, a).await,
            ActionOutcome::Applied { .. }
        ));
        assert!(matches!(
            run(&f, "acme", id, a).await,
            ActionOutcome::NoOp { .. }
        ));
    }
    let trail = audit_actions(&f, "acme").await;
    assert_eq!(
        trail,
        [
            "transition.provision",
            "transition.downgrade",
            "action.voice_disable",
            "action.sla_freeze"
        ]
    );
}

/// A cancelled downgrade's jobs never apply, even if one runs anyway.
#[tokio::test]
async fn cancelled_downgrade_never_applies() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let id = f.downgrade("acme", "starter", 60).await;
    let mut conn = f.pool().acquire().await.unwrap();
    let cancelled =
        transitions::cancel_transition(&mut conn, &f.ctx, &tid("acme"), id, &actor(), None)
            .await
            .unwrap();
    assert_eq!(cancelled.cancelled_jobs.len(), 3);
    assert!(!cancelled.entitlement.restrictions.voice_disabled);
    f.advance(Duration::seconds(61));
    for a in [
        Action::VoiceDisable,
        Action::SlaFreeze,
        Action::ApplyDowngrade,
    ] {
        assert!(
            matches!(run(&f, "acme", id, a).await, ActionOutcome::NoOp { .. }),
            "{a}"
        );
    }
    let e = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(e.tier_id.as_str(), "professional");
    // Cancelling twice is refused with the reason.
    let again =
        transitions::cancel_transition(&mut conn, &f.ctx, &tid("acme"), id, &actor(), None).await;
    assert!(again.unwrap_err().to_string().contains("is cancelled"));
}

/// Suspension during grace and reactivation: lifting the suspension keeps the downgrade's
/// restrictions; applying the downgrade keeps the suspension's.
#[tokio::test]
async fn lifting_one_source_keeps_restrictions_another_holds() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let down = f.request(to_tier("acme", "starter", 3600)).await.unwrap();
    let suspended = f.request(to_status("acme", Target::Suspend)).await.unwrap();
    assert_eq!(suspended.entitlement.status.as_str(), "suspended");
    assert_eq!(
        suspended
            .entitlement
            .restriction_sources
            .values()
            .next()
            .unwrap()
            .len(),
        2
    );
    assert!(
        suspended.entitlement.pending_downgrade.is_some(),
        "downgrade keeps running"
    );

    let back = f
        .request(to_status("acme", Target::Reactivate))
        .await
        .unwrap();
    assert_eq!(back.entitlement.status.as_str(), "active");
    assert!(
        back.entitlement.restrictions.voice_disabled,
        "the downgrade still holds voice"
    );

    f.request(to_status("acme", Target::Suspend)).await.unwrap();
    f.advance(Duration::seconds(3600));
    run(&f, "acme", down.transition.id, Action::ApplyDowngrade).await;
    let mut conn = f.pool().acquire().await.unwrap();
    let e = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(e.tier_id.as_str(), "starter");
    assert_eq!(
        e.status.as_str(),
        "suspended",
        "the suspension outlives the downgrade"
    );
    assert!(e.restrictions.voice_disabled && e.restrictions.routing_degraded);
    let sources: Vec<String> = e
        .restriction_sources
        .values()
        .flatten()
        .map(|s| s.key())
        .collect();
    assert!(sources.iter().all(|s| s == "suspension"), "{sources:?}");
}

/// A zero-grace downgrade applies at once with no jobs and no holds.
#[tokio::test]
async fn zero_grace_downgrade_applies_at_once() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let out = f.request(to_tier("acme", "starter", 0)).await.unwrap();
    assert_eq!(out.transition.status.as_str(), "effective");
    assert_eq!(out.entitlement.tier_id.as_str(), "starter");
    assert!(out.jobs.is_empty());
    assert!(f.jobs().await.is_empty());
}

/// An enforcement job that waits for the tenant lock while an upgrade cancels its downgrade sees
/// the cancellation once the lock is granted: it does nothing, and voice stays as the upgrade left
/// it. (In READ COMMITTED a statement that waited re-reads only the rows it locks; the job's guard
/// must lock what it reads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_waiting_on_a_cancelling_upgrade_sees_the_cancellation() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let id = f.downgrade("acme", "starter", 3600).await;
    // The upgrade holds the tenant lock, not yet committed.
    let mut upgrade = f.pool().begin().await.unwrap();
    tierflow_store::request_transition(&mut upgrade, &f.ctx, to_tier("acme", "enterprise", 0))
        .await
        .unwrap();
    let job = {
        let (pool, ctx) = (f.pool().clone(), f.ctx.clone());
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let out = run_transition_action(
                &mut tx,
                &ctx,
                ctx.clock.now(),
                &tid("acme"),
                id,
                Action::VoiceDisable,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            out
        })
    };
    f.wait_for_one_lock_waiter("the job").await;
    upgrade.commit().await.unwrap();
    match job.await.unwrap() {
        ActionOutcome::NoOp { reason } => assert!(reason.contains("cancelled"), "{reason}"),
        other => panic!("the cancelled downgrade's job ran: {other:?}"),
    }
    let trail = audit_actions(&f, "acme").await;
    assert!(
        !trail.iter().any(|a| a == "action.voice_disable"),
        "{trail:?}"
    );
}

/// The statuses of a transition's action rows, by action.
async fn action_statuses(
    f: &Fixture,
    id: tierflow_domain::ids::TransitionId,
) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT action, status FROM transition_actions WHERE transition_id = $1 ORDER BY action",
    )
    .bind(id.0)
    .fetch_all(f.pool())
    .await
    .unwrap()
}

/// When `apply_downgrade` runs before `voice_disable` and `sla_freeze` (a restart across the grace
/// end), their rows are marked moot in the same statement — not left `scheduled` — and their late
/// jobs are no-ops that change nothing. Whichever order the late ones run in, nothing stays
/// scheduled.
#[tokio::test]
async fn actions_overtaken_by_the_applied_downgrade_are_moot_not_scheduled() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let down = f.request(to_tier("acme", "starter", 3600)).await.unwrap();
    let id = down.transition.id;
    f.advance(Duration::hours(2));
    let applied = run(&f, "acme", id, Action::ApplyDowngrade).await;
    assert!(
        matches!(applied, ActionOutcome::Applied { .. }),
        "{applied:?}"
    );
    assert_eq!(
        action_statuses(&f, id).await,
        [
            ("apply_downgrade".to_owned(), "done".to_owned()),
            ("sla_freeze".to_owned(), "moot".to_owned()),
            ("voice_disable".to_owned(), "moot".to_owned()),
        ]
    );
    for a in [Action::VoiceDisable, Action::SlaFreeze] {
        assert!(matches!(
            run(&f, "acme", id, a).await,
            ActionOutcome::NoOp { .. }
        ));
    }
    assert_eq!(
        audit_actions(&f, "acme").await,
        [
            "transition.provision",
            "transition.downgrade",
            "action.apply_downgrade"
        ],
        "a moot action writes no audit row"
    );

    // A row that was still `scheduled` when its late job ran (written before actions could be
    // moot) is marked by the job itself.
    let down = f.request(to_tier("acme", "free", 3600)).await.unwrap();
    let id = down.transition.id;
    run(&f, "acme", id, Action::VoiceDisable).await;
    f.advance(Duration::hours(2));
    run(&f, "acme", id, Action::ApplyDowngrade).await;
    sqlx::query("UPDATE transition_actions SET status = 'scheduled' WHERE transition_id = $1 AND action = 'sla_freeze'")
        .bind(id.0)
        .execute(f.pool())
        .await
        .unwrap();
    assert!(matches!(
        run(&f, "acme", id, Action::SlaFreeze).await,
        ActionOutcome::NoOp { .. }
    ));
    assert_eq!(
        action_statuses(&f, id).await,
        [
            ("apply_downgrade".to_owned(), "done".to_owned()),
            ("sla_freeze".to_owned(), "moot".to_owned()),
            ("voice_disable".to_owned(), "done".to_owned()),
        ]
    );
}

/// An entitlement provisioned with an expiry expires at it: an early run of its job waits, the
/// run at the expiry sets status `expired` with every restriction held by `expiry` (a pending
/// downgrade's holds stay beside it), tier changes are refused while expired, and reactivation
/// lifts only the expiry's holds and clears the expiry, after which the old job is a no-op.
#[tokio::test]
async fn an_entitlement_expires_at_its_time_and_reactivation_ends_it() {
    use tierflow_domain::restriction::RestrictionSource;
    use tierflow_store::jobs::expire_entitlement;
    use tierflow_store::transitions::{ProvisionRequest, provision_tenant};

    let f = Fixture::new().await;
    let expires_at = f.now() + Duration::days(30);
    let mut conn = f.pool().acquire().await.unwrap();
    let past = provision_tenant(
        &mut conn,
        &f.ctx,
        ProvisionRequest {
            tenant_id: tid("late"),
            tier_id: tier_id("starter"),
            reason: None,
            requested_by: actor(),
            expires_at: Some(f.now()),
            test_clock_id: None,
        },
    )
    .await;
    assert!(
        matches!(past, Err(tierflow_store::StoreError::ExpiryInPast { .. })),
        "{past:?}"
    );
    let out = provision_tenant(
        &mut conn,
        &f.ctx,
        ProvisionRequest {
            tenant_id: tid("trial"),
            tier_id: tier_id("professional"),
            reason: None,
            requested_by: actor(),
            expires_at: Some(expires_at),
            test_clock_id: None,
        },
    )
    .await
    .unwrap();
    drop(conn);
    assert_eq!(out.entitlement.expires_at, Some(expires_at));
    assert_eq!(
        out.jobs
            .iter()
            .map(|j| (j.kind.as_str(), j.due_at))
            .collect::<Vec<_>>(),
        [("expire_entitlement", expires_at)]
    );
    let down = f
        .request(to_tier("trial", "starter", 90 * 24 * 3600))
        .await
        .unwrap();

    let run = |at| {
        let f = &f;
        async move {
            let mut tx = f.pool().begin().await.unwrap();
            let o = expire_entitlement(&mut tx, &f.ctx, at, &tid("trial"), expires_at)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            o
        }
    };
    assert_eq!(
        run(f.now()).await,
        ActionOutcome::NotYetDue { due_at: expires_at }
    );
    f.advance(Duration::days(30));
    assert!(matches!(run(f.now()).await, ActionOutcome::Applied { .. }));
    let mut conn = f.pool().acquire().await.unwrap();
    let e = tenants::effective(&mut conn, &f.ctx, &tid("trial"))
        .await
        .unwrap();
    assert_eq!(e.status.as_str(), "expired");
    for sources in e.restriction_sources.values() {
        assert_eq!(
            sources,
            &[
                RestrictionSource::PendingDowngrade(down.transition.id),
                RestrictionSource::Expiry
            ]
        );
    }
    assert!(
        matches!(run(f.now()).await, ActionOutcome::NoOp { .. }),
        "once"
    );
    let refused = f.request(to_tier("trial", "enterprise", 0)).await;
    assert!(
        matches!(
            refused,
            Err(tierflow_store::StoreError::Rule(
                tierflow_domain::DomainError::Expired
            ))
        ),
        "{refused:?}"
    );

    let back = f
        .request(to_status("trial", Target::Reactivate))
        .await
        .unwrap();
    assert_eq!(back.entitlement.status.as_str(), "active");
    assert_eq!(back.entitlement.expires_at, None);
    for sources in back.entitlement.restriction_sources.values() {
        assert_eq!(
            sources,
            &[RestrictionSource::PendingDowngrade(down.transition.id)],
            "the downgrade's holds stay"
        );
    }
    let fresh = tenants::effective(&mut conn, &f.ctx, &tid("trial"))
        .await
        .unwrap();
    assert_eq!(fresh.expires_at, None);
    assert!(
        matches!(run(f.now()).await, ActionOutcome::NoOp { .. }),
        "cleared"
    );
    assert_eq!(
        audit_actions(&f, "trial").await,
        [
            "transition.provision",
            "transition.downgrade",
            "entitlement.expired",
            "transition.reactivation"
        ]
    );
}

/// The console's grace lateness counts each downgrade applied in the last hour once, as its
/// run's time minus its grace end — and nothing else that became effective (the provision).
#[tokio::test]
async fn the_overview_reports_applied_grace_ends_and_their_lateness() {
    let f = Fixture::new().await;
    // The overview's hour is the database's: bring the fixture's clock to ten minutes ago.
    f.advance(chrono::Utc::now() - f.now() - Duration::minutes(10));
    f.provision("acme", "professional").await;
    let down = f.request(to_tier("acme", "starter", 60)).await.unwrap();
    let id = down.transition.id;
    f.advance(Duration::seconds(90));
    let applied = run(&f, "acme", id, Action::ApplyDowngrade).await;
    assert!(
        matches!(applied, ActionOutcome::Applied { .. }),
        "{applied:?}"
    );

    let mut conn = f.pool().acquire().await.unwrap();
    let o = tierflow_store::console::domain_overview(&mut conn)
        .await
        .unwrap();
    assert_eq!(o.grace_ends_applied_last_hour, 1, "{o:?}");
    let late = o.grace_lateness_max_secs.expect("a lateness");
    assert!(
        (late - 30.0).abs() < 0.01,
        "applied 30 s after its grace end: {o:?}"
    );
    assert_eq!(o.grace_lateness_p50_secs, o.grace_lateness_max_secs);
    assert_eq!(o.downgrades_past_grace, 0, "{o:?}");
}

/// A batch of enforcements (the worker's batch handler) records every scheduled one, with the
/// same audit row a job alone writes, and says why for the rest: a transition named twice in the
/// batch, an action already run, a cancelled transition.
#[tokio::test]
async fn a_batch_of_enforcements_records_each_once_and_explains_the_rest() {
    let f = Fixture::new().await;
    let mut ids = Vec::new();
    for tenant in ["a", "b", "c", "d"] {
        f.provision(tenant, "professional").await;
        ids.push(f.downgrade(tenant, "starter", 3600).await);
    }
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    // c's voice_disable already ran alone; d's downgrade was cancelled.
    assert!(matches!(
        run(&f, "c", c, Action::VoiceDisable).await,
        ActionOutcome::Applied { .. }
    ));
    let mut conn = f.pool().acquire().await.unwrap();
    transitions::cancel_transition(&mut conn, &f.ctx, &tid("d"), d, &actor(), None)
        .await
        .unwrap();

    let jobs = [
        (tid("a"), a),
        (tid("b"), b),
        (tid("a"), a),
        (tid("c"), c),
        (tid("d"), d),
    ];
    let mut tx = f.pool().begin().await.unwrap();
    let outcomes = tierflow_store::jobs::run_enforcements(
        &mut tx,
        &f.ctx,
        f.now(),
        &jobs,
        Action::VoiceDisable,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert!(
        matches!(outcomes[0], ActionOutcome::Applied { .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], ActionOutcome::Applied { .. }),
        "{outcomes:?}"
    );
    for (i, why) in [
        (2, "already done"),
        (3, "already done"),
        (4, "already cancelled"),
    ] {
        match &outcomes[i] {
            ActionOutcome::NoOp { reason } => assert!(reason.contains(why), "{i}: {reason}"),
            other => panic!("{i}: {other:?}"),
        }
    }
    // One audit row per recorded enforcement, as the one a job alone writes (c's).
    let rows: Vec<(String, String, String, serde_json::Value, String, String)> = sqlx::query_as(
        "SELECT tenant_id, actor, subject_id, details, principal, principal_role FROM audit_events
          WHERE action = 'action.voice_disable' ORDER BY tenant_id",
    )
    .fetch_all(f.pool())
    .await
    .unwrap();
    let expected: Vec<_> = [("a", a), ("b", b), ("c", c)]
        .into_iter()
        .map(|(t, id)| {
            (
                t.to_owned(),
                "job:voice_disable".to_owned(),
                id.to_string(),
                serde_json::json!({ "transition_id": id }),
                "job:voice_disable".to_owned(),
                "worker".to_owned(),
            )
        })
        .collect();
    assert_eq!(rows, expected);
}
