//! The worker fleet as operators run it: several `tierflow worker` processes on one database,
//! killed with kill -9 and restarted under the same host name, and a database that restarts.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tierflow_domain::SystemClock;
use tierflow_domain::ids::{Actor, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
use tierflow_store::{Context, StoreError, TransitionRequest, request_transition};
use tierflow_testdb::TestDb;
use tierflow_testdb::private::PrivatePostgres;

use crate::support::{WorkerProc, tierflow, wait_until};

const TIERS: [&str; 4] = ["free", "starter", "professional", "enterprise"];

/// A small deterministic generator (xorshift), so a failing run can be replayed.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) async fn provision_all(pool: &PgPool, ctx: &Context, tenants: usize) {
    let mut conn = pool.acquire().await.unwrap();
    for t in 0..tenants {
        provision_tenant(
            &mut conn,
            ctx,
            ProvisionRequest {
                tenant_id: TenantId::parse(format!("t{t}")).unwrap(),
                tier_id: TierId::parse("professional").unwrap(),
                reason: None,
                requested_by: Actor::parse("billing").unwrap(),
                expires_at: None,
                test_clock_id: None,
            },
        )
        .await
        .unwrap();
    }
}

/// Requests `n` random transitions over `tenants` tenants from `clients` concurrent clients, with
/// graces of 0–1.5 s; returns how many were accepted.
async fn request_many(
    pool: &PgPool,
    ctx: &Arc<Context>,
    n: usize,
    tenants: usize,
    clients: usize,
    seed: u64,
) -> usize {
    let load = Load {
        tenants,
        clients,
        seed,
        tolerate_outages: false,
    };
    load.run(pool, ctx, Some(n), None).await
}

/// A stream of random transitions (tier changes with graces of 0–1.5 s, now and then a suspension
/// or reactivation) over tenants `t0`…, from concurrent clients.
pub(crate) struct Load {
    pub tenants: usize,
    pub clients: usize,
    pub seed: u64,
    /// Requests that fail for a database outage are dropped (a client would retry); otherwise
    /// any error but a rule refusal fails the test.
    pub tolerate_outages: bool,
}

impl Load {
    /// Sends `n` requests (or until `stop`); returns how many were accepted (committed).
    pub async fn run(
        &self,
        pool: &PgPool,
        ctx: &Arc<Context>,
        n: Option<usize>,
        stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> usize {
        let mut tasks = Vec::new();
        for c in 0..self.clients {
            let (pool, ctx, stop) = (pool.clone(), ctx.clone(), stop.clone());
            let (tenants, clients, tolerate) = (self.tenants, self.clients, self.tolerate_outages);
            let mut rng = Rng(self.seed + c as u64 * 7919 + 1);
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0;
                let mut i = c;
                while n.is_none_or(|n| i < n)
                    && !stop
                        .as_ref()
                        .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
                {
                    let req = random_request(&mut rng, i % tenants);
                    i += clients;
                    let mut tx = match pool.begin().await {
                        Ok(tx) => tx,
                        Err(_) if tolerate => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        Err(_) => continue,
                    };
                    match request_transition(&mut tx, &ctx, req).await {
                        Ok(_) => {
                            if tx.commit().await.is_ok() {
                                accepted += 1;
                            }
                        }
                        Err(StoreError::Rule(_)) => {}
                        Err(_) if tolerate => {}
                        Err(e) => panic!("request failed: {e}"),
                    }
                }
                accepted
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    }
}

fn random_request(rng: &mut Rng, tenant: usize) -> TransitionRequest {
    let target = match rng.below(20) {
        0 => Target::Suspend,
        1 => Target::Reactivate,
        _ => Target::Tier(TierId::parse(TIERS[rng.below(4) as usize]).unwrap()),
    };
    let grace_ms = [0, 200, 500, 1000, 1500][rng.below(5) as usize];
    TransitionRequest {
        tenant_id: TenantId::parse(format!("t{tenant}")).unwrap(),
        target,
        grace: Some(GracePeriod::from_duration(chrono::Duration::milliseconds(grace_ms)).unwrap()),
        reason: None,
        requested_by: Actor::parse("billing").unwrap(),
        idempotency_key: None,
    }
}

/// Waits until no job is left to run: every job is done, dead or cancelled.
pub(crate) async fn wait_for_quiet_queue(pool: &PgPool, timeout: Duration) {
    wait_until(timeout, "every job to finish", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE status IN ('Pending', 'Failed', 'Running')",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tier_transitions WHERE status = 'pending'")
                .fetch_one(pool)
                .await
                .ok()?;
        (open == 0 && pending == 0).then_some(())
    })
    .await;
}

/// The invariants a run must leave behind.
pub(crate) async fn assert_consistent(pool: &PgPool) {
    // Every job finished, and a job that did not succeed says why.
    let unexplained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs
          WHERE status NOT IN ('Done', 'Dead', 'Cancelled')
             OR (status IN ('Dead', 'Cancelled') AND coalesce(last_result->>'Err', '') = '')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(unexplained, 0, "jobs left running or dead without a reason");
    let dead: Vec<(String, String)> = sqlx::query_as(
        "SELECT job_type, last_result->>'Err' FROM apalis.jobs WHERE status = 'Dead'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        dead.is_empty(),
        "no job should exhaust its attempts here: {dead:?}"
    );

    // Every action's effect happened exactly once: one audit row per action done, none otherwise.
    let mismatched: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT a.transition_id::text, a.action, count(e.id)
           FROM transition_actions a
           LEFT JOIN audit_events e ON e.subject_id = a.transition_id::text AND e.action = 'action.' || a.action
          GROUP BY a.transition_id, a.action, a.status
         HAVING count(e.id) <> CASE WHEN a.status = 'done' THEN 1 ELSE 0 END",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        mismatched.is_empty(),
        "actions not applied exactly once: {mismatched:?}"
    );
    // Every applied downgrade was applied by its job: its action is done.
    let not_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tier_transitions t JOIN transition_actions a
             ON a.transition_id = t.id AND a.action = 'apply_downgrade'
          WHERE t.status = 'effective' AND a.status <> 'done'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(not_done, 0);
    // No action is left `scheduled` once its transition is effective or cancelled.
    let stale: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.id::text, t.status, a.action FROM tier_transitions t
           JOIN transition_actions a ON a.transition_id = t.id
          WHERE t.status <> 'pending' AND a.status = 'scheduled'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(stale.is_empty(), "actions left scheduled: {stale:?}");

    // Every tenant's tier is the one its last effective tier change left it on.
    let wrong: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT e.tenant_id, e.tier_id, last.to_tier_id FROM tenant_entitlements e
           JOIN LATERAL (
             SELECT to_tier_id FROM tier_transitions t
              WHERE t.tenant_id = e.tenant_id AND t.status = 'effective'
                AND t.kind IN ('provision', 'upgrade', 'downgrade', 'lateral')
              ORDER BY t.effective_at DESC, t.tenant_version DESC LIMIT 1) last ON true
          WHERE e.tier_id <> last.to_tier_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        wrong.is_empty(),
        "tenants not on their last effective tier: {wrong:?}"
    );
}

/// Three worker processes run 2,000 mixed transitions for 200 tenants while workers are killed
/// with kill -9 and restarted under the same host names: every job ends done (or cancelled when
/// superseded), every action applies exactly once, every tenant ends on its last effective tier,
/// and nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_survives_kill_9_and_same_name_restarts() {
    let db = TestDb::new().await;
    let pool = db.pool().clone();
    let ctx = Arc::new(Context::new(Arc::new(SystemClock)));
    provision_all(&pool, &ctx, 200).await;

    let url = db.url();
    let hosts = ["node-a", "node-b", "node-c"];
    let mut workers: Vec<WorkerProc> = hosts.iter().map(|h| WorkerProc::start(&url, h)).collect();

    let requests = tokio::spawn({
        let (pool, ctx) = (pool.clone(), ctx.clone());
        async move { request_many(&pool, &ctx, 2000, 200, 8, 42).await }
    });
    // Kill and restart workers while requests are flowing, waiting each time until the queue
    // shows work in flight so the kill lands mid-job when it can.
    for round in 0..5 {
        let victim = round % hosts.len();
        for _ in 0..100 {
            let running: i64 =
                sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE status = 'Running'")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
            if running > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(150 + 100 * round as u64)).await;
        workers[victim].kill9();
        workers[victim] = WorkerProc::start(&url, hosts[victim]);
    }
    let accepted = requests.await.unwrap();
    assert!(accepted > 1000, "only {accepted} requests were accepted");

    wait_for_quiet_queue(&pool, Duration::from_secs(90)).await;
    for w in &mut workers {
        assert!(w.alive(), "a worker exited on its own");
    }
    assert_consistent(&pool).await;
    let rescued: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE attempts > 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    eprintln!("accepted {accepted} transitions; {rescued} jobs needed more than one attempt");
    for w in &mut workers {
        assert!(w.terminate(), "a worker did not stop cleanly on SIGTERM");
    }
}

/// Workers survive their connections being killed (`pg_terminate_backend`) and a PostgreSQL
/// restart mid-run, reconnect by themselves, and finish every job afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_killed_connections_and_a_database_restart() {
    let pg = PrivatePostgres::start();
    let url = pg.url("postgres");
    let migrated = tierflow(&url, &["migrate"]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let ctx = Arc::new(Context::new(Arc::new(SystemClock)));
    provision_all(&pool, &ctx, 50).await;
    let mut workers = vec![
        WorkerProc::start(&url, "node-a"),
        WorkerProc::start(&url, "node-b"),
    ];

    // Downgrades with graces of up to 1.5 s: many jobs come due across the outages below.
    let first = request_many(&pool, &ctx, 200, 50, 4, 7).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'tierflow' AND pid <> pg_backend_pid()) k",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(killed > 0, "the workers' connections were found and killed");
    pg.restart();
    pool.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    let second = request_many(&pool, &ctx, 200, 50, 4, 11).await;
    assert!(first + second > 100);

    wait_for_quiet_queue(&pool, Duration::from_secs(60)).await;
    for w in &mut workers {
        assert!(w.alive(), "a worker exited during the outage");
    }
    assert_consistent(&pool).await;
    for w in &mut workers {
        assert!(w.terminate());
    }
}
