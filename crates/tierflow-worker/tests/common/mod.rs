//! Running a fleet in-process against a private database, and waiting for conditions instead of
//! sleeping.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tierflow_domain::SystemClock;
use tierflow_queue::fleet::ShutdownReport;
use tierflow_queue::{Fleet, FleetConfig};
use tierflow_store::Context;
use tierflow_testdb::TestDb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fleet running in the background until [`Running::stop`].
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ShutdownReport>,
    pub worker_id: Arc<str>,
}

impl Running {
    pub async fn stop(mut self) -> ShutdownReport {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

/// Starts `fleet` in the background.
pub fn start<S: Send + Sync + 'static>(fleet: Fleet<S>) -> Running {
    let (tx, rx) = oneshot::channel();
    let worker_id = fleet.worker_id();
    let task = tokio::spawn(fleet.run_until(async {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        task,
        worker_id,
    }
}

/// Fast settings for tests: short polling floor, heartbeats and rescue.
pub fn fast_config() -> FleetConfig {
    let defaults = FleetConfig::default();
    FleetConfig {
        concurrency: 8,
        poll_interval: Duration::from_millis(500),
        heartbeat_interval: Duration::from_millis(200),
        rescuer: tierflow_queue::maintenance::rescuer::RescuerConfig {
            interval: Duration::from_millis(200),
            rescue_after: Duration::from_secs(1),
            ..defaults.rescuer
        },
        drain_timeout: Duration::from_secs(5),
        ..defaults
    }
}

pub fn system_ctx() -> Arc<Context> {
    Arc::new(Context::new(Arc::new(SystemClock)))
}

/// Worker state over `ctx`, with no webhook client.
pub fn worker_state(ctx: &Context) -> Arc<tierflow_worker::WorkerState> {
    Arc::new(tierflow_worker::WorkerState {
        store: ctx.clone(),
        webhooks: None,
        reconcile_interval: tierflow_store::reconciler::DEFAULT_INTERVAL,
    })
}

/// Provisions `tenant` on professional, committed.
pub async fn provision(pool: &PgPool, ctx: &Context, tenant: &str) {
    use tierflow_domain::ids::{Actor, TenantId, TierId};
    use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
    let mut conn = pool.acquire().await.unwrap();
    provision_tenant(
        &mut conn,
        ctx,
        ProvisionRequest {
            tenant_id: TenantId::parse(tenant).unwrap(),
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

/// A downgrade of `tenant` to starter with `grace`, requested by billing.
pub fn downgrade(tenant: &str, grace: Duration) -> tierflow_store::TransitionRequest {
    use tierflow_domain::ids::{Actor, TenantId, TierId};
    use tierflow_domain::transition::{GracePeriod, Target};
    tierflow_store::TransitionRequest {
        tenant_id: TenantId::parse(tenant).unwrap(),
        target: Target::Tier(TierId::parse("starter").unwrap()),
        grace: Some(
            GracePeriod::from_duration(chrono::Duration::from_std(grace).unwrap()).unwrap(),
        ),
        reason: None,
        requested_by: Actor::parse("billing").unwrap(),
        idempotency_key: None,
    }
}

/// Requests (and commits) a downgrade of `tenant` with `grace`; returns its job ids by kind.
pub async fn request_downgrade(
    pool: &PgPool,
    ctx: &Context,
    tenant: &str,
    grace: Duration,
) -> Vec<(String, String)> {
    let mut conn = pool.acquire().await.unwrap();
    let out = tierflow_store::request_transition(&mut conn, ctx, downgrade(tenant, grace))
        .await
        .unwrap();
    out.jobs.into_iter().map(|j| (j.kind, j.job_id)).collect()
}

pub async fn db() -> TestDb {
    TestDb::new().await
}

pub use tierflow_testdb::wait_until;

/// `(status, attempts)` of a job.
pub async fn job_state(pool: &PgPool, id: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until job `id` has `status`.
pub async fn wait_for_status(pool: &PgPool, id: &str, status: &str, timeout: Duration) {
    let what = format!("job {id} to be {status}");
    wait_until(timeout, &what, || async {
        (job_state(pool, id).await.0 == status).then_some(())
    })
    .await
}
