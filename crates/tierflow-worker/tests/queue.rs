//! Queue semantics with throwaway job kinds: durable backoff, dead jobs and redrive, poison
//! payloads, panics, graceful shutdown, rescue after a crash, fencing, wake-ups that are never
//! lost, and standalone kinds completed in batches.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tierflow_queue::lease::{self, Attempt, Failed};
use tierflow_queue::maintenance::elector;
use tierflow_queue::maintenance::rescuer::{self, RescuerConfig};
use tierflow_queue::{
    Fleet, FleetConfig, HandlerFuture, Job, JobError, JobTx, NewJob, Outcome, admin, enqueue,
};
use tierflow_store::Context;

/// Always fails: a downstream that is down.
#[derive(Debug, Serialize, Deserialize)]
struct Flaky {}
impl Job for Flaky {
    const KIND: &'static str = "test_flaky";
    const MAX_ATTEMPTS: i32 = 3;
    fn backoff(failed_attempts: i32) -> Duration {
        Duration::from_millis(300 * failed_attempts as u64)
    }
}
fn flaky<'a>(_: Flaky, _: JobTx<'a>, _: &'a Context) -> HandlerFuture<'a> {
    Box::pin(async { Err(JobError::Retry("downstream answered 503".into())) })
}

/// Succeeds, after `ms` milliseconds.
#[derive(Debug, Serialize, Deserialize)]
struct Echo {
    ms: u64,
}
impl Job for Echo {
    const KIND: &'static str = "test_echo";
    const MAX_ATTEMPTS: i32 = 3;
}
fn echo<'a>(job: Echo, _: JobTx<'a>, _: &'a Context) -> HandlerFuture<'a> {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
        Ok(Outcome::Done("echoed".into()))
    })
}

/// Panics.
#[derive(Debug, Serialize, Deserialize)]
struct Panicky {}
impl Job for Panicky {
    const KIND: &'static str = "test_panicky";
    const MAX_ATTEMPTS: i32 = 5;
    fn backoff(_: i32) -> Duration {
        Duration::from_secs(60)
    }
}
fn panicky<'a>(_: Panicky, _: JobTx<'a>, _: &'a Context) -> HandlerFuture<'a> {
    Box::pin(async { panic!("boom") })
}

/// A standalone kind: no transaction; says which job it was, after `ms` milliseconds.
#[derive(Debug, Serialize, Deserialize)]
struct Tally {
    n: u32,
    ms: u64,
}
impl Job for Tally {
    const KIND: &'static str = "test_tally";
}
fn tally(job: Tally, _: &Context) -> HandlerFuture<'_> {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(job.ms)).await;
        Ok(Outcome::Done(format!("tally {}", job.n)))
    })
}

fn fleet(pool: &PgPool, config: FleetConfig) -> Fleet<Context> {
    Fleet::new(pool.clone(), system_ctx(), config)
        .register::<Flaky>(flaky)
        .register::<Echo>(echo)
        .register::<Panicky>(panicky)
        .register_standalone::<Tally>(tally)
}

async fn push<J: Job>(pool: &PgPool, job: &J) -> String {
    let mut conn = pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    enqueue(&mut conn, vec![NewJob::new(job, now).unwrap()])
        .await
        .unwrap()
        .remove(0)
        .id
}

/// `(status, attempts, lock_by, last error)` of a job.
/// Waits (up to 20 s) until every job in the table is `Done`; `what` names the wait.
async fn wait_all_done(pool: &PgPool, what: &str) {
    wait_until(Duration::from_secs(20), what, || async {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'")
                .fetch_one(pool)
                .await
                .unwrap();
        (left == 0).then_some(())
    })
    .await;
}

async fn row(pool: &PgPool, id: &str) -> (String, i32, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT status, attempts, lock_by, last_result->>'Err' FROM apalis.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Each failed attempt is written to the row — attempts counted, `run_at` moved by the kind's
/// backoff, the error kept — until the last one makes the job dead; a redrive runs it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_is_persisted_then_dead_then_redriven() {
    let db = db().await;
    let pool = db.pool();
    let running = start(fleet(pool, fast_config()));
    let id = push(pool, &Flaky {}).await;

    // Read the row after each failure: the next run is at most the backoff away.
    for attempt in 1..=2 {
        let (status, attempts, holder, err) =
            wait_until(Duration::from_secs(10), "a failed attempt", || async {
                let r = row(pool, &id).await;
                (r.0 == "Failed" && r.1 == attempt).then_some(r)
            })
            .await;
        assert_eq!((status.as_str(), attempts), ("Failed", attempt));
        assert_eq!(err.as_deref(), Some("downstream answered 503"));
        assert_eq!(holder, None, "released while it waits");
        let wait: f64 = sqlx::query_scalar(
            "SELECT extract(epoch FROM run_at - now())::float8 FROM apalis.jobs WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
        let backoff = 0.3 * attempt as f64;
        assert!(
            wait > 0.0 && wait <= backoff,
            "attempt {attempt}: next run in {wait}s, backoff {backoff}s"
        );
    }
    wait_for_status(pool, &id, "Dead", Duration::from_secs(10)).await;
    let (_, attempts, _, err) = row(pool, &id).await;
    assert_eq!(attempts, 3);
    assert_eq!(err.as_deref(), Some("downstream answered 503"));

    // Dead jobs are listed and never retried automatically; a redrive starts them again.
    let mut conn = pool.acquire().await.unwrap();
    let dead = admin::list(&mut conn, Some("Dead"), None, 10)
        .await
        .unwrap();
    assert_eq!(
        dead.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    let redriven = admin::retry(&mut conn, &id).await.unwrap().unwrap();
    assert_eq!(
        (redriven.status.as_str(), redriven.attempts),
        ("Pending", 0)
    );
    wait_until(
        Duration::from_secs(10),
        "the redriven job to run",
        || async { (row(pool, &id).await.1 >= 1).then_some(()) },
    )
    .await;
    assert_eq!(
        admin::retry(&mut conn, "01NOTAJOB")
            .await
            .unwrap()
            .unwrap_err(),
        admin::AdminRefusal::NotFound
    );
    running.stop().await;
}

/// An undecodable payload makes its job dead at once, and the worker goes on with the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_payload_goes_dead_without_stopping_the_worker() {
    let db = db().await;
    let pool = db.pool();
    let running = start(fleet(pool, fast_config()));
    let poison: String = sqlx::query_scalar(
        "INSERT INTO apalis.jobs (id, job_type, job, max_attempts)
         VALUES ('01POISON000000000000000000', 'test_echo', convert_to('not json', 'UTF8'), 3) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    wait_for_status(pool, &poison, "Dead", Duration::from_secs(10)).await;
    let (_, attempts, _, err) = row(pool, &poison).await;
    assert_eq!(
        attempts, 1,
        "no retries for a payload that can never decode"
    );
    assert!(err.unwrap().contains("undecodable test_echo payload"));
    let good = push(pool, &Echo { ms: 0 }).await;
    wait_for_status(pool, &good, "Done", Duration::from_secs(10)).await;
    running.stop().await;
}

/// A panicking handler fails its attempt (to be retried with backoff); the worker carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_fails_the_job_without_stopping_the_worker() {
    let db = db().await;
    let pool = db.pool();
    let running = start(fleet(pool, fast_config()));
    let id = push(pool, &Panicky {}).await;
    wait_for_status(pool, &id, "Failed", Duration::from_secs(10)).await;
    let (_, attempts, _, err) = row(pool, &id).await;
    assert_eq!(attempts, 1);
    assert_eq!(err.as_deref(), Some("handler panicked: boom"));
    let good = push(pool, &Echo { ms: 0 }).await;
    wait_for_status(pool, &good, "Done", Duration::from_secs(10)).await;
    running.stop().await;
}

/// On stop, the in-flight job finishes; jobs not started stay claimable by others, with no
/// attempt spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_and_hands_back_the_rest() {
    let db = db().await;
    let pool = db.pool();
    let mut config = fast_config();
    config.concurrency = 1;
    let running = start(fleet(pool, config));
    let mut ids = Vec::new();
    // Each job runs 2 s, well within the 5 s drain: the stop, sent as soon as the first is seen
    // running, reaches the fleet before that job ends even on a loaded machine (with 400 ms it
    // sometimes did not, and a second job started).
    for _ in 0..3 {
        ids.push(push(pool, &Echo { ms: 2000 }).await);
    }
    let first = wait_until(Duration::from_secs(10), "a job to start", || async {
        let r: Option<String> =
            sqlx::query_scalar("SELECT id FROM apalis.jobs WHERE status = 'Running'")
                .fetch_optional(pool)
                .await
                .unwrap();
        r
    })
    .await;
    running.stop().await;
    for id in &ids {
        let (status, attempts, _, _) = row(pool, id).await;
        if *id == first {
            assert_eq!((status.as_str(), attempts), ("Done", 1));
        } else {
            assert_eq!((status.as_str(), attempts), ("Pending", 0), "job {id}");
        }
    }
}

/// A job still running at the drain timeout is handed back, its attempt not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_hands_back_the_running_job() {
    let db = db().await;
    let pool = db.pool();
    let mut config = fast_config();
    config.drain_timeout = Duration::from_millis(200);
    let running = start(fleet(pool, config));
    let id = push(pool, &Echo { ms: 10_000 }).await;
    wait_for_status(pool, &id, "Running", Duration::from_secs(10)).await;
    let report = running.stop().await;
    assert_eq!(report.handed_back, 1);
    let (status, attempts, _, _) = row(pool, &id).await;
    assert_eq!((status.as_str(), attempts), ("Pending", 0));
}

/// Jobs held by a worker that stopped heartbeating are rescued and run by a live one; a job
/// that has already used its last attempt ends dead instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescued_jobs_run_elsewhere_and_crash_loops_end_dead() {
    let db = db().await;
    let pool = db.pool();
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, last_seen)
         VALUES ('ghost', 'tierflow', 'tierflow-queue', now() - interval '1 hour')",
    )
    .execute(pool)
    .await
    .unwrap();
    for (id, attempts) in [
        ("01RESCUE000000000000000001", 1),
        ("01RESCUE000000000000000002", 3),
    ] {
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, lock_by, lock_at)
             VALUES ($1, 'test_echo', convert_to('{\"ms\":0}', 'UTF8'), 'Running', $2, 3, 'ghost', now())",
        )
        .bind(id)
        .bind(attempts)
        .execute(pool)
        .await
        .unwrap();
    }
    let running = start(fleet(pool, fast_config()));
    wait_for_status(
        pool,
        "01RESCUE000000000000000001",
        "Done",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(row(pool, "01RESCUE000000000000000001").await.1, 2);
    wait_for_status(
        pool,
        "01RESCUE000000000000000002",
        "Dead",
        Duration::from_secs(10),
    )
    .await;
    let err = row(pool, "01RESCUE000000000000000002").await.3.unwrap();
    assert!(
        err.contains("rescued: worker ghost stopped during attempt 3 of 3"),
        "{err}"
    );
    running.stop().await;
}

/// After a rescue, the old holder's late result cannot touch the job the new holder runs.
#[tokio::test]
async fn late_result_of_a_rescued_worker_is_fenced_off() {
    let db = db().await;
    let pool = db.pool();
    let old: Arc<str> = "old-worker".into();
    let new: Arc<str> = "new-worker".into();
    for w in [&old, &new] {
        tierflow_queue::heartbeat::register(pool, w, &["test_echo"])
            .await
            .unwrap();
    }
    let id = push(pool, &Echo { ms: 0 }).await;
    let stale = lease::claim(pool, "test_echo", &old, 1, lease::ClaimCommit::Async)
        .await
        .unwrap()
        .remove(0);
    // The old worker goes silent; the rescuer reclaims; the new worker claims.
    sqlx::query(
        "UPDATE apalis.workers SET last_seen = now() - interval '1 minute' WHERE id = 'old-worker'",
    )
    .execute(pool)
    .await
    .unwrap();
    let cfg = RescuerConfig {
        interval: Duration::from_secs(1),
        rescue_after: Duration::from_secs(10),
        max_run_time: Duration::from_secs(300),
        batch_size: 100,
    };
    let fence = elector::try_lead(pool, "test-leader", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rescuer::run_once(pool, &cfg, &fence).await.unwrap().rescued,
        1
    );
    let fresh = lease::claim(pool, "test_echo", &new, 1, lease::ClaimCommit::Async)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.lease.attempt, 2);

    // The old worker's writes find no lease.
    let mut tx = pool.begin().await.unwrap();
    let timeout = Duration::from_secs(5);
    assert!(
        lease::fence(&mut tx, &stale.lease, timeout, timeout)
            .await
            .unwrap()
            .is_none()
    );
    drop(tx);
    let late = lease::fail(pool, &stale.lease, "late", Attempt::Counted, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(late, Failed::LeaseLost);
    // The new holder completes normally.
    let mut tx = pool.begin().await.unwrap();
    assert!(
        lease::fence(&mut tx, &fresh.lease, timeout, timeout)
            .await
            .unwrap()
            .is_some()
    );
    tx.commit().await.unwrap();
    assert_eq!(row(pool, &id).await.0, "Done");
}

/// A batch's fence marks done, in its transaction, only the jobs whose lease still holds: a job
/// another worker took over in the meantime (rescued, claimed again) is left to it.
#[tokio::test]
async fn a_batch_fence_takes_only_the_jobs_whose_lease_holds() {
    let db = db().await;
    let pool = db.pool();
    let worker: Arc<str> = "batch-worker".into();
    tierflow_queue::heartbeat::register(pool, &worker, &["test_echo"])
        .await
        .unwrap();
    for _ in 0..3 {
        push(pool, &Echo { ms: 0 }).await;
    }
    let claimed = lease::claim(pool, "test_echo", &worker, 3, lease::ClaimCommit::Async)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    // The third job's lease is lost: another worker holds it now, at its next attempt.
    let taken = &claimed[2].lease.job_id;
    sqlx::query(
        "UPDATE apalis.jobs SET lock_by = 'other-worker', attempts = attempts + 1 WHERE id = $1",
    )
    .bind(taken)
    .execute(pool)
    .await
    .unwrap();
    let leases: Vec<&lease::Lease> = claimed.iter().map(|c| &c.lease).collect();
    let mut tx = pool.begin().await.unwrap();
    let timeout = Duration::from_secs(5);
    let (_, mut fenced) = lease::fence_many(&mut tx, &leases, timeout, timeout)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    fenced.sort();
    let mut held = vec![
        claimed[0].lease.job_id.clone(),
        claimed[1].lease.job_id.clone(),
    ];
    held.sort();
    assert_eq!(fenced, held);
    for id in &held {
        assert_eq!(row(pool, id).await.0, "Done");
    }
    assert_eq!(row(pool, taken).await.0, "Running");
}

/// While a long transaction pins `xmin`, every job claimed since keeps a dead entry in the
/// running index (before migration 0018, also in the depth index's `Running` range), which
/// nothing may remove. The lease writes —
/// the fence, a reschedule and the completer's batch — find their rows by primary key and never
/// walk that range, even with statistics that say almost no job is running (which made
/// PostgreSQL prefer the partial indexes). Counted with PostgreSQL's own per-index counters for
/// the writing transaction.
#[tokio::test]
async fn lease_writes_go_by_primary_key_while_xmin_is_pinned() {
    let db = db().await;
    let pool = db.pool();
    let worker: Arc<str> = "pinned-worker".into();
    let mut conn = pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    let jobs = (0..1_000)
        .map(|_| NewJob::new(&Echo { ms: 0 }, now).unwrap())
        .collect();
    enqueue(&mut conn, jobs).await.unwrap();
    // Statistics from before any claim: no job is running.
    sqlx::query("ANALYZE apalis.jobs")
        .execute(&mut *conn)
        .await
        .unwrap();

    // The pin: a REPEATABLE READ transaction with an xid, open until the end of the test.
    let mut pin = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *pin)
        .await
        .unwrap();
    sqlx::query("SELECT txid_current()")
        .execute(&mut *pin)
        .await
        .unwrap();

    // 900 jobs claimed and completed under the pin: 900 dead `Running` entries.
    let claim = |n| lease::claim(pool, "test_echo", &worker, n, lease::ClaimCommit::Async);
    for _ in 0..9 {
        let claimed = claim(100).await.unwrap();
        let done: Vec<(&str, i32, &str)> = claimed
            .iter()
            .map(|c| (c.lease.job_id.as_str(), c.lease.attempt, "done"))
            .collect();
        let completed = lease::complete_many(&mut conn, &worker, &done)
            .await
            .unwrap();
        assert_eq!(completed.len(), 100);
    }
    let last = claim(100).await.unwrap();
    assert_eq!(last.len(), 100);

    // One transaction of lease writes on the last 100, with its own index counters.
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let timeout = Duration::from_secs(5);
    assert!(
        lease::fence(&mut tx, &last[0].lease, timeout, timeout)
            .await
            .unwrap()
            .is_some()
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(
        lease::reschedule(&mut tx, &last[1].lease, later)
            .await
            .unwrap()
    );
    let done: Vec<(&str, i32, &str)> = last[2..]
        .iter()
        .map(|c| (c.lease.job_id.as_str(), c.lease.attempt, "done"))
        .collect();
    let completed = lease::complete_many(&mut tx, &worker, &done).await.unwrap();
    assert_eq!(completed.len(), 98);
    let (running_range, by_key): (i64, i64) = sqlx::query_as(
        "SELECT pg_stat_get_xact_tuples_returned('apalis.tierflow_jobs_running_idx'::regclass),
                pg_stat_get_xact_numscans('apalis.jobs_pkey'::regclass)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        running_range, 0,
        "a lease write read the Running range of a partial index"
    );
    assert!(by_key > 0, "the lease writes used the primary key");
    pin.rollback().await.unwrap();
}

/// With the polling floor pushed out to a minute, only NOTIFY and the producer's own due-time
/// timer can wake it: 60 jobs enqueued one by one, some due at once and some shortly after, all
/// start within 250 ms of their due time — a lost wake-up would cost up to a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeups_are_never_lost() {
    let db = db().await;
    let pool = db.pool();
    let mut config = fast_config();
    config.poll_interval = Duration::from_secs(60);
    let running = start(fleet(pool, config));
    wait_until(Duration::from_secs(5), "the worker to register", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.workers")
            .fetch_one(pool)
            .await
            .unwrap();
        (n > 0).then_some(())
    })
    .await;
    let mut conn = pool.acquire().await.unwrap();
    for i in 0..60u64 {
        let due = chrono::Utc::now() + chrono::Duration::milliseconds(((i % 3) * 150) as i64);
        enqueue(&mut conn, vec![NewJob::new(&Echo { ms: 0 }, due).unwrap()])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(i % 7)).await;
    }
    wait_all_done(pool, "all jobs to finish").await;
    let worst: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM lock_at - run_at))::float8 FROM apalis.jobs",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(worst < 0.25, "a job started {worst}s after its due time");
    running.stop().await;
}

/// Retention: finished jobs past their age are pruned, dead ones only after the longer dead
/// retention; recent and unfinished jobs stay.
#[tokio::test]
async fn cleaner_prunes_by_state_and_age() {
    use tierflow_queue::maintenance::cleaner::{self, CleanerConfig};
    let db = db().await;
    let pool = db.pool();
    for (i, (status, age_hours)) in [
        ("Done", 3),
        ("Done", 0),
        ("Cancelled", 3),
        ("Dead", 3),
        ("Dead", 30),
        ("Pending", 100),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, run_at, done_at)
             VALUES ($1, 'test_echo', convert_to('{}', 'UTF8'), $2, now(),
                     CASE WHEN $2 = 'Pending' THEN NULL ELSE now() - make_interval(hours => $3) END)",
        )
        .bind(format!("01CLEAN{i:019}"))
        .bind(status)
        .bind(age_hours)
        .execute(pool)
        .await
        .unwrap();
    }
    let cfg = CleanerConfig {
        retention: Duration::from_secs(3600),
        dead_retention: Duration::from_secs(24 * 3600),
        interval: Duration::from_secs(60),
        prunes: Vec::new(),
    };
    let fence = elector::try_lead(pool, "test-leader", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let out = cleaner::run_once(pool, &cfg, &fence).await.unwrap();
    assert_eq!((out.finished, out.dead, out.more), (2, 1, false));
    let left: Vec<(String,)> = sqlx::query_as("SELECT status FROM apalis.jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let left: Vec<&str> = left.iter().map(|(s,)| s.as_str()).collect();
    assert_eq!(left, ["Done", "Dead", "Pending"]);
}

/// Standalone jobs are recorded done by the completer, several per statement, each with its own
/// result: 400 jobs end `Done` after one attempt with the summary their own handler returned, and
/// they share fewer `done_at` stamps (one per statement) than there are jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_jobs_are_completed_in_batches() {
    let db = db().await;
    let pool = db.pool();
    let mut config = fast_config();
    config.standalone_concurrency = 64;
    let mut conn = pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    let jobs = (0..400)
        .map(|n| NewJob::new(&Tally { n, ms: 0 }, now).unwrap())
        .collect();
    enqueue(&mut conn, jobs).await.unwrap();
    drop(conn);
    let running = start(fleet(pool, config));
    wait_all_done(pool, "every tally job done").await;
    running.stop().await;
    let (wrong, retried, held, statements): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE last_result->>'Ok' <> 'tally ' || (convert_from(job, 'UTF8')::jsonb->>'n')),
                count(*) FILTER (WHERE attempts <> 1),
                count(*) FILTER (WHERE lock_by IS NOT NULL),
                count(DISTINCT done_at)
           FROM apalis.jobs",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((wrong, retried, held), (0, 0, 0));
    assert!(
        statements < 200,
        "400 jobs were recorded by {statements} statements; expected batches"
    );
}

/// A standalone kind's slots come from `standalone_concurrency`, a transactional kind's from
/// `concurrency`: with 2 and 6, twelve slow tally jobs (standalone) run six at a time while six
/// slow echo jobs (transactional) run two at a time — never more, as the claimed rows show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_kinds_have_their_own_slot_count() {
    let db = db().await;
    let pool = db.pool();
    let mut config = fast_config();
    config.concurrency = 2;
    config.standalone_concurrency = 6;
    let mut conn = pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    let tallies = (0..12)
        .map(|n| NewJob::new(&Tally { n, ms: 3_000 }, now).unwrap())
        .collect();
    enqueue(&mut conn, tallies).await.unwrap();
    let echoes = (0..6)
        .map(|_| NewJob::new(&Echo { ms: 3_000 }, now).unwrap())
        .collect();
    enqueue(&mut conn, echoes).await.unwrap();
    drop(conn);
    let running = start(fleet(pool, config));
    // Samples the running rows of each kind, keeping the most seen at once; returns the jobs
    // not yet done.
    let most = std::cell::Cell::new((0i64, 0i64));
    let seen = &most;
    let sample = move || async move {
        let (tally, echo, left): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE job_type = 'test_tally' AND status = 'Running'),
                    count(*) FILTER (WHERE job_type = 'test_echo' AND status = 'Running'),
                    count(*) FILTER (WHERE status <> 'Done')
               FROM apalis.jobs",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let (t, e) = seen.get();
        seen.set((t.max(tally), e.max(echo)));
        (tally, echo, left)
    };
    wait_until(
        Duration::from_secs(20),
        "six tally and two echo jobs running at once",
        move || async move {
            let (tally, echo, _) = sample().await;
            (tally == 6 && echo == 2).then_some(())
        },
    )
    .await;
    // Sampled on to the end: no later wave takes more.
    wait_until(
        Duration::from_secs(40),
        "every job done",
        move || async move { (sample().await.2 == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        most.get(),
        (6, 2),
        "most tally and echo jobs running at once"
    );
    running.stop().await;
}

/// A standalone job whose lease is taken while it runs (rescued, re-claimed elsewhere) finishes,
/// but the completer's fenced write leaves the new holder's row alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_completion_is_fenced_by_the_lease() {
    let db = db().await;
    let pool = db.pool();
    // The new holder is alive (registered, and not stale within the test).
    tierflow_queue::heartbeat::register(pool, "another-worker", &["test_tally"])
        .await
        .unwrap();
    let mut config = fast_config();
    config.rescuer.rescue_after = Duration::from_secs(30);
    let running = start(fleet(pool, config));
    let id = push(pool, &Tally { n: 7, ms: 600 }).await;
    wait_for_status(pool, &id, "Running", Duration::from_secs(10)).await;
    sqlx::query(
        "UPDATE apalis.jobs SET lock_by = 'another-worker', attempts = attempts + 1 WHERE id = $1",
    )
    .bind(&id)
    .execute(pool)
    .await
    .unwrap();
    // Graceful shutdown waits for the handler and the completer's last write.
    running.stop().await;
    let (status, attempts, holder, _) = row(pool, &id).await;
    assert_eq!(
        (status.as_str(), attempts, holder.as_deref()),
        ("Running", 2, Some("another-worker"))
    );
}

/// Idempotency keys are kept for their retention, then pruned by the cleaner in its bounded
/// rounds (a registered prune, under the leader's fence); a request repeating a pruned key is a
/// new request, while a key still within its retention replays.
#[tokio::test]
async fn idempotency_keys_are_pruned_after_their_retention() {
    use tierflow_domain::ids::IdempotencyKey;
    use tierflow_queue::maintenance::cleaner::{self, CleanerConfig};
    use tierflow_store::idempotency::{DEFAULT_RETENTION, prune_rule};
    let db = db().await;
    let pool = db.pool();
    let ctx = system_ctx();
    let keyed = |tenant: &str, key: &str| {
        let mut req = downgrade(tenant, Duration::from_secs(3600));
        req.idempotency_key = Some(IdempotencyKey::parse(key).unwrap());
        req
    };
    let mut conn = pool.acquire().await.unwrap();
    for tenant in ["acme", "beta"] {
        provision(pool, &ctx, tenant).await;
    }
    let first = tierflow_store::request_transition(&mut conn, &ctx, keyed("acme", "k-old"))
        .await
        .unwrap();
    let again = tierflow_store::request_transition(&mut conn, &ctx, keyed("acme", "k-old"))
        .await
        .unwrap();
    assert!(again.replayed && again.transition.id == first.transition.id);
    tierflow_store::request_transition(&mut conn, &ctx, keyed("beta", "k-new"))
        .await
        .unwrap();
    // acme's key is a day and an hour old.
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE tenant_id = 'acme'",
    )
    .execute(pool)
    .await
    .unwrap();

    let cfg = CleanerConfig {
        retention: Duration::from_secs(7 * 24 * 3600),
        dead_retention: Duration::from_secs(30 * 24 * 3600),
        interval: Duration::from_secs(60),
        prunes: vec![prune_rule(DEFAULT_RETENTION)],
    };
    let fence = elector::try_lead(pool, "test-leader", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let out = cleaner::run_once(pool, &cfg, &fence).await.unwrap();
    assert_eq!(out.other, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["k-new"]);

    let after = tierflow_store::request_transition(&mut conn, &ctx, keyed("acme", "k-old"))
        .await
        .unwrap();
    assert!(!after.replayed, "a pruned key replayed");
    assert_ne!(
        after.transition.id, first.transition.id,
        "a pruned key is a new request"
    );
    let replay = tierflow_store::request_transition(&mut conn, &ctx, keyed("beta", "k-new"))
        .await
        .unwrap();
    assert!(replay.replayed, "a key within its retention replays");
}
