//! The real job kinds run by an in-process fleet against PostgreSQL: pickup, schedule precision,
//! exactly-once effects, cancelled work.

mod common;

use std::time::Duration;

use common::*;
use tierflow_domain::ids::{Actor, TenantId};
use tierflow_store::transitions::cancel_transition;
use tierflow_store::{request_transition, tenants};

/// A downgrade's three jobs run: the two due now at once, `apply_downgrade` when the grace ends —
/// each within 50 ms of its due time — and the tenant ends on the lower tier with one audit row
/// per action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_jobs_run_on_time_and_apply_once() {
    let db = db().await;
    let ctx = system_ctx();
    provision(db.pool(), &ctx, "acme").await;
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        worker_state(&ctx),
        fast_config(),
    ));

    let mut conn = db.pool().acquire().await.unwrap();
    let out = request_transition(&mut conn, &ctx, downgrade("acme", Duration::from_secs(2)))
        .await
        .unwrap();
    drop(conn);
    for job in &out.jobs {
        wait_for_status(db.pool(), &job.job_id, "Done", Duration::from_secs(10)).await;
    }
    // start − due, by the database's clock (lock_at is the claim time, kept after completion).
    let lateness: Vec<(String, f64)> = sqlx::query_as(
        "SELECT job_type, extract(epoch FROM lock_at - run_at)::float8 FROM apalis.jobs ORDER BY job_type",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    for (kind, late) in &lateness {
        assert!(*late >= 0.0, "{kind} started {late}s before its due time");
        // Jobs due "now" are due at the request's start; they can start only after its commit.
        let bound = if kind == "apply_downgrade" {
            0.050
        } else {
            1.0
        };
        assert!(*late <= bound, "{kind} started {late}s after its due time");
    }
    let mut conn = db.pool().acquire().await.unwrap();
    let e = tenants::effective(&mut conn, &ctx, &TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    assert_eq!(e.tier_id.as_str(), "starter");
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE action LIKE 'action.%' ORDER BY action",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "action.apply_downgrade",
            "action.sla_freeze",
            "action.voice_disable"
        ]
    );
    fleet.stop().await;
}

/// A downgrade cancelled before its grace ends never applies, although the fleet is running past
/// the due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_downgrade_job_never_applies() {
    let db = db().await;
    let ctx = system_ctx();
    provision(db.pool(), &ctx, "acme").await;
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        worker_state(&ctx),
        fast_config(),
    ));
    let mut conn = db.pool().acquire().await.unwrap();
    let out = request_transition(
        &mut conn,
        &ctx,
        downgrade("acme", Duration::from_millis(800)),
    )
    .await
    .unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let actor = Actor::parse("support").unwrap();
    cancel_transition(&mut conn, &ctx, &tenant, out.transition.id, &actor, None)
        .await
        .unwrap();
    let ends = out.transition.grace_ends_at.unwrap();
    // Wait (by the database's clock) until well past the grace end.
    wait_until(Duration::from_secs(5), "the grace end to pass", || async {
        let past: bool = sqlx::query_scalar("SELECT now() > $1::timestamptz + interval '300 ms'")
            .bind(ends)
            .fetch_one(db.pool())
            .await
            .unwrap();
        past.then_some(())
    })
    .await;
    let e = tenants::effective(&mut conn, &ctx, &tenant).await.unwrap();
    assert_eq!(e.tier_id.as_str(), "professional");
    // voice_disable and sla_freeze were due at once and may have run before the cancel; the
    // grace-end job must not have.
    let apply: String =
        sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE job_type = 'apply_downgrade'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(apply, "Cancelled");
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'action.apply_downgrade'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(applied, 0);
    fleet.stop().await;
}
