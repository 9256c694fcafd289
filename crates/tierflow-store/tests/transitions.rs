//! `request_transition` against the real PostgreSQL: atomicity, the jobs it writes, supersession,
//! serialization, idempotency, and a restart.

mod common;

use std::collections::BTreeSet;

use chrono::Duration;
use common::*;
use tierflow_domain::DomainError;
use tierflow_domain::transition::{Target, TransitionKind, TransitionStatus};
use tierflow_store::jobs::ApplyDowngrade;
use tierflow_store::{StoreError, request_transition, tenants};

/// A request whose transaction rolls back leaves no transition, restriction, audit row or job.
#[tokio::test]
async fn rolled_back_request_leaves_nothing() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let before = f.snapshot().await;

    let mut tx = f.pool().begin().await.unwrap();
    let out = request_transition(&mut tx, &f.ctx, to_tier("acme", "starter", 3600))
        .await
        .unwrap();
    assert_eq!(out.jobs.len(), 3, "the request itself succeeded");
    tx.rollback().await.unwrap();

    assert_eq!(f.snapshot().await, before);
}

/// A committed downgrade with grace G leaves exactly its three jobs, due now, now and now + G,
/// under their explicit kind names.
#[tokio::test]
async fn downgrade_with_grace_leaves_exactly_three_jobs() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let grace = 3 * 24 * 3600;
    let out = f.request(to_tier("acme", "starter", grace)).await.unwrap();
    let now = f.now();

    assert_eq!(out.transition.kind, TransitionKind::Downgrade);
    assert_eq!(out.transition.status, TransitionStatus::Pending);
    assert_eq!(
        out.transition.grace_ends_at,
        Some(now + Duration::seconds(grace))
    );
    let jobs = f.jobs().await;
    assert_eq!(
        jobs,
        vec![
            ("sla_freeze".into(), "Pending".into(), now),
            ("voice_disable".into(), "Pending".into(), now),
            (
                "apply_downgrade".into(),
                "Pending".into(),
                now + Duration::seconds(grace)
            ),
        ]
    );
    // The payload decodes into the kind's type and names the transition.
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT job FROM apalis.jobs WHERE job_type = 'apply_downgrade'")
            .fetch_one(f.pool())
            .await
            .unwrap();
    let job: ApplyDowngrade = serde_json::from_slice(&payload).unwrap();
    assert_eq!(job.transition_id, out.transition.id);
    // Voice is off at once, and so are SLA timers, escalation and priority routing.
    let e = &out.entitlement;
    assert!(e.restrictions.voice_disabled && e.restrictions.sla_frozen);
    assert!(e.restrictions.escalation_frozen && e.restrictions.routing_degraded);
    assert!(!e.features["voice"].value);
    assert_eq!(
        e.tier_id.as_str(),
        "professional",
        "tier holds until grace end"
    );
}

/// An upgrade during grace cancels the pending downgrade and its scheduled jobs in the same
/// transaction: another session sees all of it at commit, none of it before.
#[tokio::test]
async fn upgrade_during_grace_cancels_pending_downgrade_atomically() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let down = f.request(to_tier("acme", "starter", 3600)).await.unwrap();

    let mut tx = f.pool().begin().await.unwrap();
    let up = request_transition(&mut tx, &f.ctx, to_tier("acme", "enterprise", 0))
        .await
        .unwrap();
    let superseded = up.superseded.clone().expect("the downgrade was superseded");
    assert_eq!(superseded.transition_id, down.transition.id);
    assert_eq!(superseded.cancelled_jobs.len(), 3);

    // Before commit, another session still sees the downgrade pending with live jobs.
    let outside: Vec<(String,)> =
        sqlx::query_as("SELECT status FROM apalis.jobs WHERE status = 'Pending'")
            .fetch_all(f.pool())
            .await
            .unwrap();
    assert_eq!(outside.len(), 3);
    tx.commit().await.unwrap();

    let status: (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT status, cancelled_by FROM tier_transitions WHERE id = $1")
            .bind(down.transition.id.0)
            .fetch_one(f.pool())
            .await
            .unwrap();
    assert_eq!(status, ("cancelled".into(), Some(up.transition.id.0)));
    let states: BTreeSet<String> = f.jobs().await.into_iter().map(|j| j.1).collect();
    assert_eq!(states, BTreeSet::from(["Cancelled".to_string()]));
    // The outcome and the audit trail name exactly the downgrade's jobs.
    let down_jobs: BTreeSet<String> = down.jobs.iter().map(|j| j.job_id.clone()).collect();
    let named: BTreeSet<String> = superseded.cancelled_jobs.iter().cloned().collect();
    assert_eq!(named, down_jobs);
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_events WHERE action = 'transition.cancelled' AND subject_id = $1",
    )
    .bind(down.transition.id.to_string())
    .fetch_one(f.pool())
    .await
    .unwrap();
    let audited: BTreeSet<String> =
        serde_json::from_value(details["cancelled_jobs"].clone()).unwrap();
    assert_eq!(audited, down_jobs);
    assert_eq!(details["cancelled_by"], up.transition.id.to_string());
    let e = up.entitlement;
    assert_eq!(e.tier_id.as_str(), "enterprise");
    assert!(
        !e.restrictions.voice_disabled,
        "the downgrade's holds are lifted"
    );
    assert!(e.pending_downgrade.is_none());
    let restrictions: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_restrictions")
        .fetch_one(f.pool())
        .await
        .unwrap();
    assert_eq!(restrictions, 0);
}

/// A second downgrade replaces the first: one pending, the first cancelled with its jobs.
#[tokio::test]
async fn second_downgrade_replaces_the_first() {
    let f = Fixture::new().await;
    f.provision("acme", "enterprise").await;
    let first = f
        .request(to_tier("acme", "professional", 3600))
        .await
        .unwrap();
    let second = f.request(to_tier("acme", "starter", 60)).await.unwrap();
    assert_eq!(
        second.superseded.as_ref().map(|s| s.transition_id),
        Some(first.transition.id)
    );
    let pending = second.entitlement.pending_downgrade.unwrap();
    assert_eq!(pending.transition_id, second.transition.id);
    assert_eq!(pending.to_tier.as_str(), "starter");
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Pending'")
        .fetch_one(f.pool())
        .await
        .unwrap();
    assert_eq!(live, 3, "only the second downgrade's jobs remain");
    // Its holds are the only ones: exactly four rows, all from the second downgrade.
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT source FROM tenant_restrictions")
            .fetch_all(f.pool())
            .await
            .unwrap();
    assert_eq!(sources, [format!("downgrade:{}", second.transition.id)]);
}

/// 50 concurrent requests for one tenant serialize: versions form an unbroken chain, each
/// transition starts from the tier the previous one left, and the final state is the last
/// committed request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_serialize_without_lost_updates() {
    let f = Fixture::new().await;
    let first = f.provision("acme", "starter").await;
    let targets = ["free", "starter", "professional", "enterprise"];
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (pool, ctx) = (f.pool().clone(), f.ctx.clone());
        let target = targets[i % targets.len()];
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let out = request_transition(&mut tx, &ctx, to_tier("acme", target, 600)).await;
            if out.is_ok() {
                tx.commit().await.unwrap();
            }
            out
        }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(out) => ok.push(out),
            Err(StoreError::Rule(DomainError::AlreadyOnTier(_))) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(ok.len() >= 25, "most requests applied ({} did)", ok.len());
    ok.sort_by_key(|o| o.transition.tenant_version);
    let versions: Vec<i64> = ok.iter().map(|o| o.transition.tenant_version).collect();
    let expected: Vec<i64> = (1..=ok.len() as i64)
        .map(|v| v + first.transition.tenant_version)
        .collect();
    assert_eq!(versions, expected, "no two requests saw the same version");
    // Each request started from the tier the previous one left the tenant on.
    let mut tier = first.entitlement.tier_id.clone();
    for o in &ok {
        assert_eq!(o.transition.from_tier.as_ref(), Some(&tier));
        tier = o.entitlement.tier_id.clone();
    }
    let last = ok.last().unwrap();
    let mut conn = f.pool().acquire().await.unwrap();
    let now_state = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(now_state.tier_id, last.entitlement.tier_id);
    assert_eq!(now_state.version, last.transition.tenant_version);
    assert_eq!(
        now_state.pending_downgrade,
        last.entitlement.pending_downgrade
    );
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tier_transitions WHERE status = 'pending'")
            .fetch_one(f.pool())
            .await
            .unwrap();
    assert!(pending <= 1);
}

/// The same key and request replays the first result (marked); the same key with another request
/// is a conflict; neither writes anything.
#[tokio::test]
async fn idempotent_replay_and_conflict() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let mut req = to_tier("acme", "starter", 3600);
    req.idempotency_key = key("billing-7f3a");
    let first = f.request(req.clone()).await.unwrap();
    assert!(!first.replayed);
    let after_first = f.snapshot().await;

    f.advance(Duration::seconds(5));
    let again = f.request(req.clone()).await.unwrap();
    assert!(again.replayed);
    // The whole first response comes back: transition, jobs, entitlement as of then.
    assert_eq!(
        tierflow_store::TransitionOutcome {
            replayed: false,
            ..again
        },
        first
    );
    assert_eq!(f.snapshot().await, after_first);

    // An upgrade that supersedes the downgrade replays with what it cancelled.
    let mut up = to_tier("acme", "enterprise", 0);
    up.idempotency_key = key("billing-8c01");
    let upgraded = f.request(up.clone()).await.unwrap();
    assert!(upgraded.superseded.is_some());
    let after_upgrade = f.snapshot().await;
    let replayed = tierflow_store::submit_transition(f.pool(), &f.ctx, up)
        .await
        .unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.superseded, upgraded.superseded);
    assert_eq!(replayed.entitlement, upgraded.entitlement);
    assert_eq!(f.snapshot().await, after_upgrade);

    let mut other = to_tier("acme", "free", 3600);
    other.idempotency_key = key("billing-7f3a");
    let err = f.request(other).await.unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("use a new key"), "{err}");
    assert_eq!(f.snapshot().await, after_upgrade);

    // The key is scoped per tenant: another tenant may use it.
    f.provision("globex", "professional").await;
    let mut theirs = to_tier("globex", "starter", 3600);
    theirs.idempotency_key = key("billing-7f3a");
    assert!(!f.request(theirs).await.unwrap().replayed);
}

/// State read back through a new pool (a restarted process) is unchanged.
#[tokio::test]
async fn state_survives_a_restart() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let out = f.request(to_tier("acme", "starter", 3600)).await.unwrap();
    f.pool().close().await;

    let pool = sqlx::PgPool::connect_with(f.db.options()).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let read = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(read, out.entitlement);
}

/// Every error a caller can cause is typed, says what to do, and changes nothing.
#[tokio::test]
async fn caller_errors_are_typed_and_change_nothing() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    sqlx::query("INSERT INTO tiers (tier_id, name, category, rank, active) VALUES ('legacy', 'Legacy', 'paid', 5, false)")
        .execute(f.pool())
        .await
        .unwrap();
    let mut keyed = to_tier("acme", "starter", 60);
    keyed.idempotency_key = key("k1");
    f.request(keyed).await.unwrap();
    let before = f.snapshot().await;

    let mut conflict = to_tier("acme", "free", 60);
    conflict.idempotency_key = key("k1");
    let cases = [
        (to_tier("nobody", "starter", 0), "not known"),
        (
            to_tier("acme", "platinum", 0),
            "tier 'platinum' is not known",
        ),
        (to_tier("acme", "legacy", 0), "inactive"),
        (to_tier("acme", "professional", 0), "already on tier"),
        (to_status("acme", Target::Reactivate), "not suspended"),
        (conflict, "already used"),
    ];
    for (req, says) in cases {
        let err = f.request(req.clone()).await.unwrap_err();
        assert!(err.is_caller_error(), "{err}");
        assert!(err.to_string().contains(says), "{req:?}: {err}");
        assert_eq!(f.snapshot().await, before, "{req:?} changed something");
    }
    // Negative and over-limit graces never become a request: they fail to parse.
    for bad in [-1, 91 * 24 * 3600] {
        let json = format!(
            r#"{{"tenant_id":"acme","target":{{"type":"tier","tier_id":"starter"}},"grace":{bad},"reason":null,"requested_by":"billing"}}"#
        );
        let err = serde_json::from_str::<tierflow_store::TransitionRequest>(&json).unwrap_err();
        assert!(err.to_string().contains("grace_seconds"), "{err}");
    }
}

/// An error inside the caller's transaction rolls back only tierflow's savepoint: the caller's
/// own writes survive and can commit.
#[tokio::test]
async fn an_error_leaves_the_callers_transaction_usable() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let before = f.snapshot().await;
    let mut tx = f.pool().begin().await.unwrap();
    sqlx::query("CREATE TABLE caller_rows (n int)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = request_transition(&mut tx, &f.ctx, to_tier("acme", "professional", 0)).await;
    assert!(err.is_err());
    sqlx::query("INSERT INTO caller_rows VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM caller_rows")
        .fetch_one(f.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(f.snapshot().await, before);
}

/// The entitlement a request returns is computed, not read back; it must equal what a read
/// after the commit returns, through every kind of change: with an override active, a pending
/// downgrade taking holds, one replacing it, a suspension over it, a reactivation, an upgrade
/// cancelling it, a downgrade applied at once — through both entry points.
#[tokio::test]
async fn each_outcome_states_the_entitlement_read_after_it() {
    use tierflow_domain::ids::Actor;
    use tierflow_domain::limit_override::{EntitlementType, OverrideReason};
    use tierflow_store::overrides::{OverrideRequest, create_override};

    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let mut conn = f.pool().acquire().await.unwrap();
    create_override(
        &mut conn,
        &f.ctx,
        OverrideRequest {
            tenant_id: tid("acme"),
            entitlement_type: EntitlementType::Voice,
            override_limit: 5_000,
            reason: OverrideReason::Incident,
            granted_by: Actor::parse("ops:alice").unwrap(),
            expires_at: f.now() + Duration::hours(2),
            note: None,
            idempotency_key: None,
        },
    )
    .await
    .unwrap();
    let steps = [
        to_tier("acme", "starter", 3600),
        to_tier("acme", "free", 7200),
        to_status("acme", Target::Suspend),
        to_status("acme", Target::Reactivate),
        to_tier("acme", "enterprise", 0),
        to_tier("acme", "professional", 0),
        to_tier("acme", "starter", 600),
    ];
    for (i, req) in steps.into_iter().enumerate() {
        f.advance(Duration::seconds(1));
        let what = format!("{:?}", req.target);
        let out = if i % 2 == 0 {
            f.request(req).await
        } else {
            tierflow_store::submit_transition(f.pool(), &f.ctx, req).await
        }
        .unwrap_or_else(|e| panic!("step {i} ({what}): {e}"));
        let read = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
            .await
            .unwrap();
        assert_eq!(out.entitlement, read, "step {i} ({what})");
    }
}

/// A request that waits for the tenant's lock sees what the holder committed: here an upgrade
/// queued behind an uncommitted downgrade cancels that downgrade once it commits, rather than
/// planning from a read taken before it.
#[tokio::test]
async fn request_waiting_for_the_tenant_lock_sees_what_it_waited_for() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let mut downgrade = f.pool().begin().await.unwrap();
    let pending = request_transition(&mut downgrade, &f.ctx, to_tier("acme", "starter", 3600))
        .await
        .unwrap()
        .transition
        .id;
    let upgrade = {
        let (pool, ctx) = (f.pool().clone(), f.ctx.clone());
        tokio::spawn(async move {
            tierflow_store::submit_transition(&pool, &ctx, to_tier("acme", "enterprise", 0)).await
        })
    };
    f.wait_for_one_lock_waiter("the upgrade").await;
    downgrade.commit().await.unwrap();
    let out = upgrade.await.unwrap().unwrap();
    assert_eq!(
        out.superseded.as_ref().map(|s| s.transition_id),
        Some(pending),
        "the upgrade did not see the downgrade it waited for"
    );
    assert_eq!(out.entitlement.pending_downgrade, None);
    assert_eq!(
        out.entitlement.version, 3,
        "provision 1, downgrade 2, upgrade 3"
    );
    let mut conn = f.pool().acquire().await.unwrap();
    let read = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(out.entitlement, read);
}
