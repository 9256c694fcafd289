//! Overrides: granted with their expiry job in one transaction, replaced, removed, expired by the
//! clock, replayed by key.

mod common;

use chrono::Duration;
use common::*;
use tierflow_domain::ids::{Actor, OverrideId};
use tierflow_domain::limit_override::{EntitlementType, OverrideReason};
use tierflow_store::jobs::{ActionOutcome, expire_override};
use tierflow_store::overrides::{OverrideRequest, create_override, get, remove_override};
use tierflow_store::{StoreError, tenants};

fn voice(limit: i64, f: &Fixture, hours: i64) -> OverrideRequest {
    OverrideRequest {
        tenant_id: tid("acme"),
        entitlement_type: EntitlementType::Voice,
        override_limit: limit,
        reason: OverrideReason::Incident,
        granted_by: Actor::parse("ops:alice").unwrap(),
        expires_at: f.now() + Duration::hours(hours),
        note: None,
        idempotency_key: None,
    }
}

async fn expire(f: &Fixture, id: OverrideId) -> ActionOutcome {
    // Actions run in the caller's transaction (the job's, in the worker).
    let mut tx = f.pool().begin().await.unwrap();
    let outcome = expire_override(&mut tx, &f.ctx, f.ctx.clock.now(), &tid("acme"), id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outcome
}

/// An override raises the limit at once, schedules its expiry at `expires_at`, and expires by the
/// job exactly once.
#[tokio::test]
async fn override_applies_and_expires_by_its_job() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let mut conn = f.pool().acquire().await.unwrap();
    let out = create_override(&mut conn, &f.ctx, voice(5_000, &f, 2))
        .await
        .unwrap();
    assert_eq!(out.entitlement.limits["voice"].value, Some(5_000));
    assert_eq!(out.r#override.original_limit, Some(1_000));
    assert_eq!(
        f.jobs().await,
        [(
            "expire_override".into(),
            "Pending".into(),
            f.now() + Duration::hours(2)
        )]
    );
    let id = out.r#override.override_id;
    assert!(matches!(
        expire(&f, id).await,
        ActionOutcome::NotYetDue { .. }
    ));
    f.advance(Duration::hours(2));
    assert!(matches!(
        expire(&f, id).await,
        ActionOutcome::Applied { .. }
    ));
    assert!(matches!(expire(&f, id).await, ActionOutcome::NoOp { .. }));
    let (_, status) = get(&mut conn, &tid("acme"), id).await.unwrap().unwrap();
    assert_eq!(status, "expired");
    let e = tenants::effective(&mut conn, &f.ctx, &tid("acme"))
        .await
        .unwrap();
    assert_eq!(e.limits["voice"].value, Some(1_000));
}

/// A second override of the same type replaces the first and cancels its expiry job; removing
/// an override ends it and cancels its job; removing it again is refused.
#[tokio::test]
async fn overrides_replace_and_remove() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let mut conn = f.pool().acquire().await.unwrap();
    let first = create_override(&mut conn, &f.ctx, voice(5_000, &f, 2))
        .await
        .unwrap();
    let second = create_override(&mut conn, &f.ctx, voice(7_000, &f, 4))
        .await
        .unwrap();
    assert_eq!(second.replaced, Some(first.r#override.override_id));
    assert_eq!(second.entitlement.limits["voice"].value, Some(7_000));
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Pending'")
        .fetch_one(f.pool())
        .await
        .unwrap();
    assert_eq!(live, 1);

    let id = second.r#override.override_id;
    let removed = remove_override(&mut conn, &f.ctx, &tid("acme"), id, &actor(), None)
        .await
        .unwrap();
    assert!(removed.cancelled_job.is_some());
    assert_eq!(removed.entitlement.limits["voice"].value, Some(1_000));
    let again = remove_override(&mut conn, &f.ctx, &tid("acme"), id, &actor(), None).await;
    assert!(matches!(again, Err(StoreError::OverrideNotActive { .. })));
    let unknown = remove_override(
        &mut conn,
        &f.ctx,
        &tid("acme"),
        OverrideId::new(),
        &actor(),
        None,
    )
    .await;
    assert!(matches!(unknown, Err(StoreError::UnknownOverride(_))));
}

/// Bad overrides are refused and change nothing; a keyed request replays.
#[tokio::test]
async fn bad_overrides_change_nothing_and_keys_replay() {
    let f = Fixture::new().await;
    f.provision("acme", "professional").await;
    let before = f.snapshot().await;
    let mut conn = f.pool().acquire().await.unwrap();
    for (req, says) in [
        (voice(5_000, &f, 0), "must be after now"),
        (voice(5_000, &f, 24 * 91), "at most 90 days"),
        (voice(-1, &f, 1), "cannot be negative"),
        (
            OverrideRequest {
                tenant_id: tid("nobody"),
                ..voice(1, &f, 1)
            },
            "not known",
        ),
    ] {
        let err = create_override(&mut conn, &f.ctx, req).await.unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(f.snapshot().await, before);
    }
    let mut keyed = voice(5_000, &f, 1);
    keyed.idempotency_key = key("ops-1");
    let first = create_override(&mut conn, &f.ctx, keyed.clone())
        .await
        .unwrap();
    let again = create_override(&mut conn, &f.ctx, keyed.clone())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.r#override, first.r#override);
    keyed.override_limit = 6_000;
    let conflict = create_override(&mut conn, &f.ctx, keyed).await;
    assert!(matches!(
        conflict,
        Err(StoreError::IdempotencyConflict { .. })
    ));
}

/// The console's tenant filter lists a tenant's jobs — its transitions' (named by their action
/// rows; they carry no key) and its overrides' (keyed) — and no other tenant's.
#[tokio::test]
async fn a_tenants_jobs_are_its_transitions_and_its_overrides() {
    let f = Fixture::new().await;
    for tenant in ["acme", "other"] {
        f.provision(tenant, "professional").await;
        f.request(to_tier(tenant, "starter", 3600)).await.unwrap();
    }
    let mut conn = f.pool().acquire().await.unwrap();
    create_override(&mut conn, &f.ctx, voice(5_000, &f, 2))
        .await
        .unwrap();

    let owned = tierflow_store::console::tenant_jobs(&mut conn, "acme")
        .await
        .unwrap();
    let filter = tierflow_queue::inspect::JobFilter {
        owned: Some(owned),
        ..Default::default()
    };
    let listed = tierflow_queue::inspect::list(&mut conn, &filter, 100)
        .await
        .unwrap();
    let mut kinds: Vec<&str> = listed.iter().map(|r| r.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "apply_downgrade",
            "expire_override",
            "sla_freeze",
            "voice_disable"
        ]
    );
    let others: Vec<String> =
        sqlx::query_scalar("SELECT a.job_id FROM transition_actions a WHERE a.tenant_id = 'other'")
            .fetch_all(f.pool())
            .await
            .unwrap();
    assert_eq!(others.len(), 3);
    assert!(listed.iter().all(|r| !others.contains(&r.id)), "{listed:?}");
}
