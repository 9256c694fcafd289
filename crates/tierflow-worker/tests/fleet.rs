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

/// Log lines written while a test runs, as JSON (the production format): the process's global
/// subscriber, so it sees the fleet's tasks on every runtime thread. nextest runs each test in a
/// process of its own; under `cargo test` the first caller installs it and the others share it.
fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOGS: std::sync::OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("tierflow_queue=info")
            .with_writer(move || sink.clone())
            .try_init();
        buf
    })
    .clone()
}

/// Transition jobs due together run in batches of `TRANSITION_BATCH`, one transaction each (the
/// job rows of a batch share the `xmin` of its commit), and a job that fails inside a batch does
/// not take the others with it: its batch is rolled back and each job runs alone — the failing
/// one ends dead, every other action is recorded once. A job run in a batch logs its tenant, as
/// one run alone does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_jobs_run_in_batches_and_a_failing_one_runs_alone() {
    use tierflow_domain::ids::TransitionId;
    use tierflow_queue::{NewJob, enqueue};
    use tierflow_store::jobs::{TRANSITION_BATCH, VoiceDisable};

    const TENANTS: usize = 24;
    let logs = capture_logs();
    let db = db().await;
    let ctx = system_ctx();
    // A voice_disable for a tenant that does not exist fails for good; due first, so the first
    // claim (16 jobs, all in batches of 8) takes it.
    let ghost = {
        let job = VoiceDisable {
            tenant_id: TenantId::parse("ghost").unwrap(),
            transition_id: TransitionId(uuid::Uuid::now_v7()),
        };
        let due = chrono::Utc::now() - chrono::Duration::seconds(1);
        let mut conn = db.pool().acquire().await.unwrap();
        let mut ids = enqueue(&mut conn, vec![NewJob::new(&job, due).unwrap()])
            .await
            .unwrap();
        ids.pop().unwrap().id
    };
    for i in 0..TENANTS {
        let tenant = format!("t{i}");
        provision(db.pool(), &ctx, &tenant).await;
        request_downgrade(db.pool(), &ctx, &tenant, Duration::from_secs(3600)).await;
    }
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        worker_state(&ctx),
        tierflow_queue::FleetConfig {
            concurrency: 16,
            ..fast_config()
        },
    ));
    wait_until(
        Duration::from_secs(20),
        "every due job to finish",
        || async {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM apalis.jobs
              WHERE job_type IN ('voice_disable', 'sla_freeze')
                AND status IN ('Pending', 'Failed', 'Running')",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            (left == 0).then_some(())
        },
    )
    .await;
    fleet.stop().await;

    assert_eq!(job_state(db.pool(), &ghost).await.0, "Dead");
    // Every real action done, and audited, exactly once.
    let done: Vec<(String, i64)> = sqlx::query_as(
        "SELECT job_type, count(*) FROM apalis.jobs
          WHERE job_type IN ('voice_disable', 'sla_freeze') AND status = 'Done'
          GROUP BY job_type ORDER BY job_type",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let n = TENANTS as i64;
    assert_eq!(
        done,
        [
            ("sla_freeze".to_owned(), n),
            ("voice_disable".to_owned(), n)
        ]
    );
    let audited: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT action, count(*), count(DISTINCT subject_id) FROM audit_events
          WHERE action IN ('action.voice_disable', 'action.sla_freeze')
          GROUP BY action ORDER BY action",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            ("action.sla_freeze".to_owned(), n, n),
            ("action.voice_disable".to_owned(), n, n)
        ]
    );
    // sla_freeze's jobs committed in batches, none larger than the batch size, some that size.
    let batches: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'sla_freeze'
          GROUP BY xmin::text ORDER BY 1 DESC",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        batches.first().copied(),
        Some(TRANSITION_BATCH as i64),
        "sla_freeze jobs per commit: {batches:?}"
    );
    // The first claim took the ghost and 15 others (lock_at is the claim's time; the ghost's
    // was cleared when it failed): the ghost's batch was rolled back and its 7 others committed
    // one by one, the claim's other batch committed once.
    let (first_claim, commits): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM apalis.jobs
          WHERE job_type = 'voice_disable'
            AND lock_at = (SELECT min(lock_at) FROM apalis.jobs WHERE job_type = 'voice_disable')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let batch = TRANSITION_BATCH as i64;
    assert_eq!(
        (first_claim, commits),
        (2 * batch - 1, batch),
        "jobs and commits of the first claim"
    );
    // Each job's "job finished" line names its tenant, in a batch (its batch handler records
    // it) as alone; a full batch among them.
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let finished: std::collections::HashMap<String, serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "job finished")
        .filter_map(|v| Some((v["span"]["job.id"].as_str()?.to_owned(), v)))
        .collect();
    let done: Vec<(String, String)> = sqlx::query_as(
        "SELECT j.id, a.tenant_id FROM apalis.jobs j JOIN transition_actions a ON a.job_id = j.id
          WHERE j.job_type IN ('voice_disable', 'sla_freeze') AND j.status = 'Done'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(done.len(), 2 * TENANTS);
    for (job, tenant) in &done {
        let line = finished
            .get(job)
            .unwrap_or_else(|| panic!("no \"job finished\" line for job {job}"));
        assert_eq!(line["span"]["tenant_id"], tenant.as_str(), "{line}");
    }
    let finished: Vec<&serde_json::Value> = done.iter().map(|(job, _)| &finished[job]).collect();
    assert!(
        finished.iter().any(|v| v["fields"]["batch"] == batch),
        "a full batch among the log lines"
    );
}
