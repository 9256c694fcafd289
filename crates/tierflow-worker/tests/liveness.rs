//! Liveness under the faults production has, with an in-process fleet of the real job kinds: a
//! deposed maintenance leader, a completion lost by the database, a prune storm, skewed worker
//! clocks, and jobs stuck behind another session's lock. The faults that need real processes
//! or a real server crash are in `tests/e2e/faults.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tierflow_domain::{Clock, SystemClock};
use tierflow_queue::depth;
use tierflow_queue::maintenance::cleaner::{self, CleanerConfig};
use tierflow_queue::maintenance::elector;
use tierflow_queue::maintenance::rescuer::{self, RescuerConfig};
use tierflow_store::Context;

/// The fleet of every real kind over `pool`, with `config`.
fn real_fleet(
    pool: &PgPool,
    ctx: &Context,
    config: tierflow_queue::FleetConfig,
) -> tierflow_queue::Fleet<tierflow_worker::WorkerState> {
    tierflow_worker::fleet::build(pool.clone(), worker_state(ctx), config)
}

/// Marks job `id` `Running` under `worker` since `ago_secs` seconds, attempt 1: a claim whose
/// outcome never arrived.
async fn mark_running(pool: &PgPool, id: &str, worker: &str, ago_secs: f64) {
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Running', lock_by = $2, attempts = 1,
                lock_at = now() - make_interval(secs => $3)
          WHERE id = $1",
    )
    .bind(id)
    .bind(worker)
    .bind(ago_secs)
    .execute(pool)
    .await
    .unwrap();
}

/// A worker row whose last heartbeat was `silent_secs` ago, and that never beats again.
async fn ghost_worker(pool: &PgPool, id: &str, silent_secs: f64) {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen)
         VALUES ($1, 'tierflow', 'tierflow-queue', now() - make_interval(secs => $2))",
    )
    .bind(id)
    .bind(silent_secs)
    .execute(pool)
    .await
    .unwrap();
}

/// Provisions `acme` and requests a downgrade with a long grace; returns the id of its
/// `voice_disable` job (due now).
async fn acme_voice_disable_job(pool: &PgPool, ctx: &Context) -> String {
    provision(pool, ctx, "acme").await;
    let jobs = request_downgrade(pool, ctx, "acme", Duration::from_secs(3600)).await;
    job_of(&jobs, "voice_disable")
}

/// The id of the job of `kind` among `jobs` (kind, id).
fn job_of(jobs: &[(String, String)], kind: &str) -> String {
    jobs.iter()
        .find(|(k, _)| k == kind)
        .map(|(_, id)| id.clone())
        .unwrap_or_else(|| panic!("no {kind} job in {jobs:?}"))
}

/// Audit rows of `action` (e.g. `action.voice_disable`).
async fn audits(pool: &PgPool, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = $1")
        .bind(action)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A leader whose lease lapsed and was taken over changes nothing with its old term: its rescue,
/// prune and sample rounds find no live lease; the new leader's do their work. Renewing keeps
/// the term; a takeover bumps it.
#[tokio::test]
async fn a_deposed_leader_changes_nothing() {
    let db = db().await;
    let pool = db.pool();
    let ttl = Duration::from_secs(30);
    let old = elector::try_lead(pool, "old-leader", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        elector::try_lead(pool, "new-leader", ttl)
            .await
            .unwrap()
            .is_none(),
        "a live lease is not taken"
    );
    assert_eq!(
        elector::try_lead(pool, "old-leader", ttl)
            .await
            .unwrap()
            .unwrap(),
        old,
        "a renewal keeps the term"
    );
    // The old leader freezes past its lease; another replica takes over.
    sqlx::query("UPDATE tierflow_leadership SET expires_at = now() - interval '1 second'")
        .execute(pool)
        .await
        .unwrap();
    let new = elector::try_lead(pool, "new-leader", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.term, old.term + 1);
    assert!(
        elector::try_lead(pool, "old-leader", ttl)
            .await
            .unwrap()
            .is_none()
    );

    // Work for maintenance: an orphan of a dead worker, and a finished job past retention.
    ghost_worker(pool, "ghost", 3600.0).await;
    let ctx = system_ctx();
    provision(pool, &ctx, "acme").await;
    let jobs = request_downgrade(pool, &ctx, "acme", Duration::from_secs(3600)).await;
    let (voice, sla) = (
        &job_of(&jobs, "voice_disable"),
        &job_of(&jobs, "sla_freeze"),
    );
    mark_running(pool, voice, "ghost", 60.0).await;
    sqlx::query("UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '30 days' WHERE id = $1")
        .bind(sla)
        .execute(pool)
        .await
        .unwrap();
    let rescue = RescuerConfig {
        interval: Duration::from_secs(1),
        rescue_after: Duration::from_secs(6),
        max_run_time: Duration::from_secs(300),
        batch_size: 100,
    };
    let clean = CleanerConfig {
        retention: Duration::from_secs(3600),
        dead_retention: Duration::from_secs(3600),
        interval: Duration::from_secs(60),
        prunes: Vec::new(),
    };

    let stale = rescuer::run_once(pool, &rescue, &old).await.unwrap();
    let pruned = cleaner::run_once(pool, &clean, &old).await.unwrap();
    depth::sample(pool, &["voice_disable"], &old).await.unwrap();
    assert_eq!((stale.rescued, pruned.finished), (0, 0));
    assert_eq!(job_state(pool, voice).await.0, "Running");
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM tierflow_samples")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(samples, 0, "the deposed leader wrote samples");

    let live = rescuer::run_once(pool, &rescue, &new).await.unwrap();
    let pruned = cleaner::run_once(pool, &clean, &new).await.unwrap();
    depth::sample(pool, &["voice_disable"], &new).await.unwrap();
    assert_eq!((live.rescued, pruned.finished), (1, 1));
    assert_eq!(job_state(pool, voice).await.0, "Failed");
}

/// A worker that is alive but no longer holds a `Running` job — its completion was lost (a
/// database crash dropped the asynchronously committed transaction, not the claim) — gets the
/// job rescued from it within about `rescue_after`, not after `max_run_time`; it then runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_completion_was_lost_is_rescued_from_its_live_worker() {
    let db = db().await;
    let pool = db.pool();
    let ctx = system_ctx();
    let voice = acme_voice_disable_job(pool, &ctx).await;
    // The other job due now stays out of the way.
    sqlx::query("UPDATE apalis.jobs SET run_at = now() + interval '1 hour' WHERE id <> $1")
        .bind(&voice)
        .execute(pool)
        .await
        .unwrap();

    let fleet = real_fleet(pool, &ctx, fast_config());
    let worker = fleet.worker_id();
    mark_running(pool, &voice, &worker, 0.0).await;
    let started = Instant::now();
    let running = start(fleet);
    wait_for_status(pool, &voice, "Done", Duration::from_secs(10)).await;
    let took = started.elapsed();
    eprintln!("lost completion re-run after {took:?} (rescue_after 1 s)");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(job_state(pool, &voice).await.1, 2, "rescued once, run once");
    assert_eq!(audits(pool, "action.voice_disable").await, 1);
    running.stop().await;
}

/// A prune of a million finished rows does not delay a rescue: the cleaner works in bounded
/// rounds on its own schedule, and the orphan of a dead worker is run elsewhere within the
/// rescue bound while rows past retention are still being deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_storm_does_not_delay_rescue() {
    let db = db().await;
    let pool = db.pool();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, run_at, done_at, attempts, max_attempts)
         SELECT 'PRUNE' || lpad(g::text, 21, '0'), 'voice_disable', convert_to('{}', 'UTF8'),
                'Done', now() - interval '30 days', now() - interval '30 days', 1, 10
           FROM generate_series(1, 1000000) g",
    )
    .execute(pool)
    .await
    .unwrap();
    let ctx = system_ctx();
    let voice = acme_voice_disable_job(pool, &ctx).await;
    // The worker dies now: its job becomes an orphan only after rescue_after (1 s), when the
    // cleaner is well into its million rows.
    ghost_worker(pool, "ghost", 0.0).await;
    mark_running(pool, &voice, "ghost", 0.0).await;

    let mut config = fast_config();
    config.cleaner.interval = Duration::from_millis(100);
    let started = Instant::now();
    let running = start(real_fleet(pool, &ctx, config));
    wait_for_status(pool, &voice, "Done", Duration::from_secs(20)).await;
    let took = started.elapsed();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE id LIKE 'PRUNE%'")
        .fetch_one(pool)
        .await
        .unwrap();
    eprintln!("orphan re-run after {took:?} with {left} of 1,000,000 rows still to prune");
    assert!(
        left > 0,
        "the prune finished first; the test proves nothing"
    );
    assert!(left < 1_000_000, "the cleaner never ran");
    // Rescue after 1 s of silence and the rescuer's 200 ms rounds: well under 5 s unless
    // something waits on the prune.
    assert!(took < Duration::from_secs(5), "rescue took {took:?}");
    running.stop().await;
}

/// A clock `offset` away from the real one: a worker host whose clock is off.
struct SkewedClock(chrono::Duration);

impl Clock for SkewedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        SystemClock.now() + self.0
    }
}

/// A worker whose clock runs 30 s behind the database, then one 30 s ahead: grace ends are
/// applied on time by the database's clock — no early apply, no loop of "not yet due" — and the
/// times they record are the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_worker_clocks_neither_apply_early_nor_loop() {
    let db = db().await;
    let pool = db.pool();
    let api = system_ctx();
    for (n, skew) in [(0, -30), (1, 30)] {
        let tenant = format!("skew{n}");
        provision(pool, &api, &tenant).await;
        let worker_ctx = Context::new(Arc::new(SkewedClock(chrono::Duration::seconds(skew))));
        let running = start(real_fleet(pool, &worker_ctx, fast_config()));
        let jobs = request_downgrade(pool, &api, &tenant, Duration::from_secs(2)).await;
        for (_, id) in &jobs {
            wait_for_status(pool, id, "Done", Duration::from_secs(15)).await;
        }
        let (late, attempts): (f64, i32) = sqlx::query_as(
            "SELECT extract(epoch FROM t.effective_at - t.grace_ends_at)::float8, j.attempts
               FROM tier_transitions t JOIN apalis.jobs j ON j.id = $2
              WHERE t.tenant_id = $1 AND t.kind = 'downgrade'",
        )
        .bind(&tenant)
        .bind(job_of(&jobs, "apply_downgrade"))
        .fetch_one(pool)
        .await
        .unwrap();
        eprintln!("worker clock {skew:+} s: applied {late:.3} s after the grace end");
        assert!(
            late >= 0.0,
            "applied {late} s before the grace ended (skew {skew})"
        );
        assert!(late < 1.0, "applied {late} s late (skew {skew})");
        assert_eq!(attempts, 1);
        running.stop().await;
    }
}

/// Jobs blocked behind another session's lock on their tenant for longer than `rescue_after` —
/// with every connection of the job pool taken by them — are not rescued away from their live
/// worker: the heartbeat has its own connection and stays fresh. Waits past `lock_timeout` put a
/// job back without spending an attempt; once the lock goes, every job runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_waiting_on_a_lock_keep_their_live_worker() {
    let db = db().await;
    let ctx = system_ctx();
    let tenants: Vec<String> = (0..2).map(|n| format!("locked{n}")).collect();
    let mut job_ids = Vec::new();
    for t in &tenants {
        provision(db.pool(), &ctx, t).await;
        job_ids.extend(
            request_downgrade(db.pool(), &ctx, t, Duration::from_millis(100))
                .await
                .into_iter()
                .map(|(_, id)| id),
        );
    }
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenant_entitlements FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    // Four connections for six jobs and eight slots per kind: the blocked jobs take them all.
    let small = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(db.options())
        .await
        .unwrap();
    let mut config = fast_config();
    config.lock_timeout = Duration::from_secs(2);
    let fleet = real_fleet(&small, &ctx, config);
    let worker = fleet.worker_id();
    let running = start(fleet);
    let pool = db.pool();

    // Hold the lock 5 s: past rescue_after (1 s) and lock_timeout (2 s), and sample meanwhile.
    let held = Instant::now();
    let mut saw_lock_timeout = false;
    while held.elapsed() < Duration::from_secs(5) {
        let (age, rescued, timed_out): (Option<f64>, i64, i64) = sqlx::query_as(
            "SELECT (SELECT extract(epoch FROM now() - last_seen)::float8 FROM apalis.workers WHERE id = $1),
                    (SELECT count(*) FROM apalis.jobs WHERE last_result->>'Err' LIKE 'rescued%'),
                    (SELECT count(*) FROM apalis.jobs WHERE last_result->>'Err' LIKE '%waited too long for a lock%')",
        )
        .bind(worker.as_ref())
        .fetch_one(pool)
        .await
        .unwrap();
        if let Some(age) = age {
            assert!(
                age < 1.0,
                "heartbeat is {age} s old while jobs wait on a lock"
            );
        }
        assert_eq!(rescued, 0, "a job was rescued from its live worker");
        saw_lock_timeout |= timed_out > 0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_lock_timeout,
        "no job gave up waiting after lock_timeout"
    );
    blocker.rollback().await.unwrap();

    for id in &job_ids {
        wait_for_status(pool, id, "Done", Duration::from_secs(15)).await;
        assert_eq!(job_state(pool, id).await.1, 1, "job {id} spent an attempt");
    }
    // Every grace end applied once; the enforcement jobs at most once each (one that runs after
    // its downgrade was applied has nothing left to do).
    let n = tenants.len() as i64;
    assert_eq!(audits(pool, "action.apply_downgrade").await, n);
    for action in ["action.voice_disable", "action.sla_freeze"] {
        assert!(audits(pool, action).await <= n, "{action} applied twice");
    }
    running.stop().await;
}
