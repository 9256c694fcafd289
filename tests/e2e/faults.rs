//! The faults production has and kill -9 does not make, with real `tierflow` processes: a
//! maintenance leader frozen by SIGSTOP, PostgreSQL crashing (`pg_ctl stop -m immediate`) under
//! load, a failover to a streaming replica behind a proxy, and `tierflow run` losing its worker
//! half. The bounds each test asserts are the ones docs/queue.md states, with the production
//! defaults for heartbeats (1 s), rescue (6 s) and the leader lease (5 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tierflow_domain::SystemClock;
use tierflow_domain::ids::{Actor, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::{Context, TransitionRequest, request_transition};
use tierflow_testdb::TestDb;
use tierflow_testdb::private::PrivatePostgres;
use tierflow_testdb::proxy::TcpProxy;

use crate::fleet::{Load, assert_consistent, provision_all, wait_for_quiet_queue};
use crate::support::{WorkerProc, tierflow, wait_until};

/// The production liveness settings (the test helper's defaults are faster), a short lock wait,
/// and webhook delivery when `receiver` is given.
fn production_env(receiver: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("TIERFLOW_HEARTBEAT_INTERVAL_MS", "1000".to_owned()),
        ("TIERFLOW_RESCUE_AFTER_SECS", "6".to_owned()),
        ("TIERFLOW_JOB_LOCK_TIMEOUT_MS", "2000".to_owned()),
    ];
    if let Some(url) = receiver {
        env.push(("TIERFLOW_WEBHOOK_URLS", url.to_owned()));
        env.push((
            "TIERFLOW_WEBHOOK_SECRET",
            "whsec_dGllcmZsb3ctZmF1bHRzLXRlc3Qtc2VjcmV0LTAxMjM=".to_owned(),
        ));
    }
    env
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The holder of the maintenance lease and its term.
async fn leader(pool: &PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT leader_id, term FROM tierflow_leadership WHERE expires_at > now()")
        .fetch_optional(pool)
        .await
        .ok()?
}

/// `Running` jobs whose worker id starts with `host`.
async fn running_on(pool: &PgPool, host: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE status = 'Running' AND lock_by LIKE $1 || '-%'",
    )
    .bind(host)
    .fetch_one(pool)
    .await
    .unwrap_or(0)
}

/// A downgrade of `t<n>` to starter with `grace_ms`.
fn downgrade(n: usize, grace_ms: i64) -> TransitionRequest {
    TransitionRequest {
        tenant_id: TenantId::parse(format!("t{n}")).unwrap(),
        target: Target::Tier(TierId::parse("starter").unwrap()),
        grace: Some(GracePeriod::from_duration(chrono::Duration::milliseconds(grace_ms)).unwrap()),
        reason: None,
        requested_by: Actor::parse("billing").unwrap(),
        idempotency_key: None,
    }
}

/// Two workers run jobs; the leader is frozen (SIGSTOP) for 60 s. The other takes the lease
/// within its TTL, and every job — the frozen worker's included — is done within 15 s of the
/// freeze. When the old leader wakes it steps down, and nothing it had in flight changes a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_changes_nothing_when_it_wakes() {
    let db = TestDb::new().await;
    let pool = db.pool().clone();
    let url = db.url();
    let ctx = Arc::new(Context::new(Arc::new(SystemClock)));
    provision_all(&pool, &ctx, 20).await;
    for n in 0..20 {
        let mut conn = pool.acquire().await.unwrap();
        request_transition(&mut conn, &ctx, downgrade(n, 100))
            .await
            .unwrap();
    }
    // Every job waits on its tenant's row until released, so both workers hold jobs.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenant_entitlements FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let env = production_env(None);
    let log = std::env::temp_dir().join(format!("tierflow-frozen-{}.log", uuid::Uuid::new_v4()));
    let mut a = WorkerProc::start_logged(&url, "node-a", &env_refs(&env), &log);
    wait_until(
        Duration::from_secs(30),
        "node-a to lead and hold jobs",
        || async {
            let lead = leader(&pool).await?;
            (lead.0.starts_with("node-a-") && running_on(&pool, "node-a").await > 0).then_some(())
        },
    )
    .await;
    let mut b = WorkerProc::start_with(&url, "node-b", &env_refs(&env));
    wait_until(Duration::from_secs(30), "node-b to hold jobs", || async {
        (running_on(&pool, "node-b").await > 0).then_some(())
    })
    .await;

    a.signal("STOP");
    let frozen = Instant::now();
    blocker.rollback().await.unwrap();

    let took_lead = wait_until(
        Duration::from_secs(30),
        "node-b to take the lease",
        || async {
            let lead = leader(&pool).await?;
            lead.0.starts_with("node-b-").then(|| frozen.elapsed())
        },
    )
    .await;
    let all_done = wait_until(Duration::from_secs(30), "every job to be done", || async {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status <> 'Done'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (open == 0).then(|| frozen.elapsed())
    })
    .await;
    eprintln!(
        "leader frozen: lease taken over after {took_lead:?}, every job done after {all_done:?}"
    );
    assert!(
        took_lead <= Duration::from_secs(10),
        "lease taken after {took_lead:?}"
    );
    assert!(
        all_done <= Duration::from_secs(15),
        "jobs done after {all_done:?}"
    );
    let rescued: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE attempts > 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        rescued > 0,
        "the frozen worker held no job; the test proves less than it says"
    );

    let snapshot = || async {
        let jobs: Vec<(String, String, i32, String)> = sqlx::query_as(
            "SELECT id, status, attempts, done_at::text FROM apalis.jobs ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        (jobs, audit, leader(&pool).await)
    };
    let before = snapshot().await;
    // The freeze lasts 60 s, as a long VM pause or a GC-like stall would.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(frozen.elapsed())).await;
    a.signal("CONT");
    wait_until(Duration::from_secs(20), "node-a to step down", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("stepping down from queue maintenance")
            .then_some(())
    })
    .await;
    // Whatever it had in flight has been tried by now: let its heartbeat show it alive again.
    wait_until(Duration::from_secs(20), "node-a to heartbeat again", || async {
        let fresh: bool = sqlx::query_scalar(
            "SELECT bool_or(last_seen > now() - interval '2 seconds') FROM apalis.workers WHERE id LIKE 'node-a-%'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        fresh.then_some(())
    })
    .await;
    assert_eq!(snapshot().await, before, "the woken leader changed rows");
    assert_consistent(&pool).await;
    assert!(a.alive() && b.alive(), "a worker exited");
    assert!(a.terminate() && b.terminate());
    let _ = std::fs::remove_file(&log);
}

/// What the crash and failover tests share: a webhook receiver, a pool and a store context for
/// the request stream, 50 tenants provisioned, and two workers with the production liveness
/// settings, their logs kept to count what the rescuers did.
struct Scene {
    receiver: Receiver,
    pool: PgPool,
    ctx: Arc<Context>,
    workers: Vec<WorkerProc>,
    logs: Vec<std::path::PathBuf>,
}

impl Scene {
    /// Migrates the database at `url` and sets the scene on it.
    async fn start(url: &str) -> Scene {
        let migrated = tierflow(url, &["migrate"]);
        assert!(
            migrated.status.success(),
            "{}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        let receiver = Receiver::start().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .unwrap();
        let ctx =
            Arc::new(Context::new(Arc::new(SystemClock)).with_webhooks(vec![receiver.url.clone()]));
        provision_all(&pool, &ctx, 50).await;
        let env = production_env(Some(&receiver.url));
        let hosts = ["node-a", "node-b"];
        let run = uuid::Uuid::new_v4();
        let logs: Vec<_> = hosts
            .iter()
            .map(|h| std::env::temp_dir().join(format!("tierflow-faults-{run}-{h}.log")))
            .collect();
        let workers = hosts
            .iter()
            .zip(&logs)
            .map(|(h, log)| WorkerProc::start_logged(url, h, &env_refs(&env), log))
            .collect();
        Scene {
            receiver,
            pool,
            ctx,
            workers,
            logs,
        }
    }

    /// Starts the request stream (`seed`) and waits until the queue has seen 300 jobs; returns
    /// the stream's stop flag and task (its result: accepted transitions).
    async fn stream_until_busy(
        &self,
        seed: u64,
    ) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(stream(&self.pool, &self.ctx, stop.clone(), seed));
        wait_until(Duration::from_secs(30), "a busy queue", || async {
            let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
                .fetch_one(&self.pool)
                .await
                .ok()?;
            (jobs > 300).then_some(())
        })
        .await;
        (stop, load)
    }

    /// Jobs the rescuers (per their log lines) took from a live worker that had lost their
    /// outcome.
    fn lost_outcomes(&self) -> u64 {
        self.logs
            .iter()
            .filter_map(|l| std::fs::read_to_string(l).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| line.split("outcome_lost=").nth(1))
                    .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Checks every worker lived through the fault, then stops them with SIGTERM.
    fn stop_workers(&mut self) {
        for w in &mut self.workers {
            assert!(w.alive(), "a worker exited during the fault");
            assert!(w.terminate(), "a worker did not stop cleanly");
        }
        for log in &self.logs {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// A fake downstream system: answers 200 to every webhook and keeps every delivered event, by its id.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        use axum::http::HeaderMap;
        let got: Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>> = Arc::default();
        let log = got.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    // By the event's own id (the body's), which the stored job carries too;
                    // `webhook-id` is derived from it.
                    let event: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let id = event["id"].as_str().unwrap_or_default().to_owned();
                    assert!(headers.contains_key("webhook-signature"));
                    log.lock().unwrap().entry(id).or_default().push(event);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            got,
            _server: server,
        }
    }

    pub(crate) fn events(&self) -> HashMap<String, Vec<serde_json::Value>> {
        self.got.lock().unwrap().clone()
    }
}

/// A steady stream of transitions over tenants `t0`…`t49` from 4 clients until `stop`; returns
/// how many were accepted.
fn stream(
    pool: &PgPool,
    ctx: &Arc<Context>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> impl std::future::Future<Output = usize> + Send + 'static {
    let (pool, ctx) = (pool.clone(), ctx.clone());
    async move {
        let load = Load {
            tenants: 50,
            clients: 4,
            seed,
            tolerate_outages: true,
        };
        load.run(&pool, &ctx, None, Some(stop)).await
    }
}

/// The largest delay, in seconds, between when a downgrade could first be applied — its grace
/// end, or `back` (when the database accepted connections again) if that is later — and when it
/// was.
async fn worst_lateness(pool: &PgPool, back: chrono::DateTime<chrono::Utc>) -> f64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM effective_at - greatest(grace_ends_at, $1))), 0)::float8
           FROM tier_transitions WHERE kind = 'downgrade' AND status = 'effective'",
    )
    .bind(back)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A steady stream of transitions with short graces and webhook deliveries; PostgreSQL crashes
/// (`-m immediate`: acknowledged asynchronous job commits are lost, their claims are not) and
/// restarts. Every job reaches a terminal state and every due grace end is applied within 15 s
/// of the server accepting connections again; nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_under_load_strands_no_job() {
    // The WAL writer flushes asynchronous commits every 1 s here (default 200 ms): the window of
    // acknowledged job completions a crash loses is wider, so the fault this test is about — a
    // job left `Running` by a live worker that saw it done — happens in most runs.
    let pg = PrivatePostgres::start_with(&[("wal_writer_delay", "1s")]);
    let url = pg.url("postgres");
    let mut scene = Scene::start(&url).await;
    let (pool, ctx) = (scene.pool.clone(), scene.ctx.clone());

    let (stop, load) = scene.stream_until_busy(5).await;
    // A burst, as a billing run makes; the crash comes while its jobs are being completed, when
    // no request's synchronous commit flushes the workers' asynchronous ones.
    let burst = Load {
        tenants: 50,
        clients: 8,
        seed: 9,
        tolerate_outages: false,
    };
    stop.store(true, Ordering::Relaxed);
    let mut accepted = load.await.unwrap();
    accepted += burst.run(&pool, &ctx, Some(200), None).await;
    pg.stop_immediate();
    // The server stays down for a second, as a crash-restart or a node reboot takes at least.
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_again();
    let back = chrono::Utc::now();
    // The stream goes on for two seconds after the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(stream(&pool, &ctx, stop.clone(), 6));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    accepted += load.await.unwrap();

    wait_for_quiet_queue(&pool, Duration::from_secs(60)).await;
    let worst = worst_lateness(&pool, back).await;
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE attempts > 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    eprintln!(
        "crash under load: {accepted} transitions accepted, {} events delivered, {again} jobs run more than once, {} rescued from a live worker that lost their outcome; worst grace-end lateness {worst:.2} s",
        scene.receiver.events().len(),
        scene.lost_outcomes()
    );
    assert!(worst <= 15.0, "a grace end was applied {worst:.2} s late");
    assert_consistent(&pool).await;
    scene.stop_workers();
}

/// `tierflow run` whose worker half can no longer work — its role lost the right to write
/// heartbeats, as a botched grant would do — stops within seconds with a non-zero exit and a
/// message saying which half failed, instead of serving the API with no jobs running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_when_its_worker_half_fails() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let role = format!("tf_half_{}", uuid::Uuid::new_v4().simple());
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'half-dead-test'"),
        format!("GRANT USAGE ON SCHEMA apalis, public TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA apalis, public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA apalis, public TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    }
    let opts = db.options();
    let url = format!(
        "postgres://{role}:half-dead-test@{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or_default()
    );
    let (mut child, log) = spawn_logged("run", &url, &[("TIERFLOW_HEARTBEAT_INTERVAL_MS", "200")]);
    wait_for_line(&log, "worker started").await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "REVOKE INSERT, UPDATE ON apalis.workers FROM {role}"
    )))
    .execute(pool)
    .await
    .unwrap();
    let revoked = Instant::now();
    let status = wait_for_exit(
        &mut child,
        "`tierflow run` after its worker half lost its privileges",
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "tierflow run exited {status} {:?} after the revoke",
        revoked.elapsed()
    );
    assert!(!status.success(), "exited successfully: {text}");
    assert!(revoked.elapsed() < Duration::from_secs(10));
    assert!(text.contains("one half failed"), "{text}");
    assert!(text.contains("heartbeat"), "{text}");
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    }
    let _ = std::fs::remove_file(&log);
}

/// A primary with a synchronous streaming replica, the fleet and the request stream reaching it
/// through a TCP proxy (the Kubernetes Service). Under load the primary crashes (`-m
/// immediate`), the replica is promoted and the proxy pointed at it: every job reaches a terminal
/// state and every due grace end is applied within 15 s of the promotion, nothing is applied
/// twice, and every event a receiver got is one the new primary has — the delivery job that
/// carried it is there, with the same event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_strands_no_job_and_announces_no_lost_change() {
    let primary = PrivatePostgres::start_primary();
    let standby = PrivatePostgres::start_standby(&primary);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&primary.url("postgres"))
        .await
        .unwrap();
    // Synchronous replication from here on (CloudNativePG: `minSyncReplicas: 1`): a commit that
    // waits for its flush also waits for the replica's.
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::query(sql).execute(&admin).await.unwrap();
    }
    admin.close().await;
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = TcpProxy::start(addr(primary.port())).await;
    let url = format!("postgres://postgres@{}/postgres", proxy.addr());
    let mut scene = Scene::start(&url).await;
    let pool = scene.pool.clone();
    let (stop, load) = scene.stream_until_busy(21).await;

    primary.stop_immediate();
    standby.promote();
    proxy.retarget(addr(standby.port())).await;
    let promoted = chrono::Utc::now();
    // The stream goes on for two seconds against the new primary.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = load.await.unwrap();

    wait_for_quiet_queue(&pool, Duration::from_secs(60)).await;
    let worst = worst_lateness(&pool, promoted).await;
    let events = scene.receiver.events();
    let mut missing = Vec::new();
    let mut different = Vec::new();
    for (id, delivered) in &events {
        let stored: Option<serde_json::Value> = sqlx::query_scalar(
            "SELECT convert_from(job, 'UTF8')::jsonb -> 'event' FROM apalis.jobs
              WHERE job_type = 'deliver_event' AND convert_from(job, 'UTF8')::jsonb -> 'event' ->> 'id' = $1
              LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        match stored {
            None => missing.push(id.clone()),
            Some(stored) if delivered.iter().any(|d| *d != stored) => different.push(id.clone()),
            Some(_) => {}
        }
    }
    eprintln!(
        "failover: {accepted} transitions accepted, {} distinct events delivered, {} jobs rescued from a live worker that lost their outcome; worst grace-end lateness {worst:.2} s after the promotion",
        events.len(),
        scene.lost_outcomes()
    );
    assert!(
        missing.is_empty(),
        "events delivered for changes the new primary lacks: {missing:?}"
    );
    assert!(
        different.is_empty(),
        "events delivered unlike the new primary's: {different:?}"
    );
    assert!(worst <= 15.0, "a grace end was applied {worst:.2} s late");
    assert_consistent(&pool).await;
    scene.stop_workers();
}

/// `tierflow run` and `tierflow worker` whose database has been unreachable since they started
/// (waiting for it, not crash-looping) stop on SIGTERM at once, with success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_processes_waiting_for_an_unreachable_database() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/tierflow");
    for cmd in ["run", "worker"] {
        let (mut child, log) = spawn_logged(cmd, &url, &[("TIERFLOW_DB_CONNECT_TIMEOUT", "1")]);
        wait_for_line(&log, "waiting for the database").await;
        let sent = Instant::now();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let status = wait_for_exit(&mut child, &format!("`tierflow {cmd}` after SIGTERM")).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!(
            "tierflow {cmd}: {status} {:?} after SIGTERM",
            sent.elapsed()
        );
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "`tierflow {cmd}` took {:?}",
            sent.elapsed()
        );
        assert!(status.success(), "tierflow {cmd}: {status}\n{text}");
        let _ = std::fs::remove_file(&log);
    }
}

/// Starts `tierflow <cmd>` (run or worker) on `url` with the API's test tokens and `env`, its log
/// (stderr) in a file of its own.
fn spawn_logged(
    cmd: &str,
    url: &str,
    env: &[(&str, &str)],
) -> (std::process::Child, std::path::PathBuf) {
    let log = std::env::temp_dir().join(format!("tierflow-{cmd}-{}.log", uuid::Uuid::new_v4()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .arg(cmd)
        .env("DATABASE_URL", url)
        .env("TIERFLOW_LISTEN", "127.0.0.1:0")
        .env("TIERFLOW_METRICS_LISTEN", "127.0.0.1:0")
        .env("TIERFLOW_SERVICE_TOKENS", "billing:svc-secret-0123456789")
        .env("TIERFLOW_ADMIN_TOKENS", "ops:adm-secret-0123456789")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// Waits until the log file `log` holds `line`.
async fn wait_for_line(log: &std::path::Path, line: &str) {
    wait_until(Duration::from_secs(30), line, || async {
        let text = std::fs::read_to_string(log).ok()?;
        text.contains(line).then_some(())
    })
    .await
}

/// Waits (at most 30 s) for `child` to exit; `what` names the wait in the failure.
async fn wait_for_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running after 30 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
