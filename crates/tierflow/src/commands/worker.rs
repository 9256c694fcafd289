//! `tierflow worker`: one process of the worker fleet.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser as _;
use tierflow_domain::SystemClock;
use tierflow_queue::FleetConfig;
use tierflow_queue::fleet::LIVENESS_CONNECTIONS;
use tierflow_queue::maintenance::cleaner::CleanerConfig;
use tierflow_queue::maintenance::elector::ElectorConfig;
use tierflow_queue::maintenance::rescuer::RescuerConfig;
use tierflow_store::Context;

use tierflow_worker::WorkerState;
use tierflow_worker::webhook::WebhookClient;

use crate::cli::{DatabaseArgs, EventArgs, OpsArgs};
use crate::{database, shutdown};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// The job runtime's settings (shared by `worker` and `run`).
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Jobs of each transactional kind this process runs at once. A job transaction holds one of
    /// the pool's connections (see --db-pool-size); the jobs beyond it wait for one, holding
    /// their lease.
    #[arg(long, env = "TIERFLOW_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Jobs of each standalone kind (deliver_event) this process runs at once (1-10000). They
    /// hold no connection while they wait on the receiver (one briefly, to read the endpoint or
    /// record a failure), so more slots cost little; few make the claim and completion round
    /// trip the kind's ceiling.
    #[arg(long, env = "TIERFLOW_STANDALONE_CONCURRENCY",
          default_value_t = tierflow_queue::fleet::DEFAULT_STANDALONE_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub standalone_concurrency: usize,
    /// Polling floor in milliseconds: an idle worker looks for due jobs at least this often, even
    /// if a notification is lost.
    #[arg(long, env = "TIERFLOW_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "TIERFLOW_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// Seconds without a heartbeat after which a worker's running jobs are rescued by another
    /// replica (at least 3 heartbeats).
    #[arg(long, env = "TIERFLOW_RESCUE_AFTER_SECS", default_value_t = 6)]
    pub rescue_after_secs: u64,
    /// Seconds a job may run before it is reclaimed even from a live worker.
    #[arg(long, env = "TIERFLOW_MAX_RUN_TIME_SECS", default_value_t = 300)]
    pub max_run_time_secs: u64,
    /// Seconds in-flight jobs may take to finish after SIGTERM; keep it below the orchestrator's
    /// kill grace period.
    #[arg(long, env = "TIERFLOW_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Hours finished (done, cancelled) jobs are kept.
    #[arg(long, env = "TIERFLOW_RETENTION_HOURS", default_value_t = 168)]
    pub retention_hours: u64,
    /// Hours dead jobs are kept (for inspection and re-drive).
    #[arg(long, env = "TIERFLOW_DEAD_RETENTION_HOURS", default_value_t = 720)]
    pub dead_retention_hours: u64,
    /// Hours an idempotency key (and its stored response) is kept; a request repeating a key
    /// after that is a new request.
    #[arg(
        long,
        env = "TIERFLOW_IDEMPOTENCY_RETENTION_HOURS",
        default_value_t = 24
    )]
    pub idempotency_retention_hours: u64,
    /// Seconds the maintenance leader's lease lasts without renewal: a frozen or cut-off leader
    /// is replaced within it (renewed every second; at least 2).
    #[arg(long, env = "TIERFLOW_LEADER_TTL_SECS", default_value_t = 5)]
    pub leader_ttl_secs: u64,
    /// Milliseconds a job waits for a row lock before it is put back and retried a second later
    /// (the attempt is not counted).
    #[arg(long, env = "TIERFLOW_JOB_LOCK_TIMEOUT_MS", default_value_t = 5000)]
    pub job_lock_timeout_ms: u64,
    /// Seconds between the reconciler's rounds (on the maintenance leader): it re-drives the
    /// apply_downgrade job of a downgrade pending more than a minute past its grace end whose job
    /// was cancelled or lost, and reports the ones whose job is dead.
    #[arg(long, env = "TIERFLOW_RECONCILE_INTERVAL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_interval_secs: u64,
}

impl FleetArgs {
    pub fn fleet_config(&self) -> anyhow::Result<FleetConfig> {
        let config = FleetConfig {
            concurrency: self.concurrency,
            standalone_concurrency: self.standalone_concurrency,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            rescuer: RescuerConfig {
                rescue_after: Duration::from_secs(self.rescue_after_secs),
                max_run_time: Duration::from_secs(self.max_run_time_secs),
                ..FleetConfig::default().rescuer
            },
            cleaner: CleanerConfig {
                retention: Duration::from_secs(self.retention_hours * 3600),
                dead_retention: Duration::from_secs(self.dead_retention_hours * 3600),
                prunes: vec![tierflow_store::idempotency::prune_rule(
                    Duration::from_secs(self.idempotency_retention_hours * 3600),
                )],
                ..FleetConfig::default().cleaner
            },
            elector: ElectorConfig {
                ttl: Duration::from_secs(self.leader_ttl_secs),
                ..ElectorConfig::default()
            },
            lock_timeout: Duration::from_millis(self.job_lock_timeout_ms),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
        };
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid worker settings: {e}"))?;
        Ok(config)
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.fleet.fleet_config()?;
    args.events.validate()?;
    let db = worker_db(&args.db, &config, None, 0).await?;
    let pool = db.pool.clone();
    tracing::info!(database = %db.target, "starting worker");
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let ops = crate::ops::start(&args.ops, pool.clone(), &stop, false).await?;
    let fleet = build_fleet(pool.clone(), &args.events, &args.fleet, config)?;
    let report = fleet.run_until(shutdown::signal()).await;
    let _ = stop.send(());
    let _ = ops.await;
    db.close().await;
    match report.stopped_early {
        None => Ok(()),
        Some(why) => anyhow::bail!(
            "the worker stopped on its own: {why}; check the database's privileges and schema (`tierflow migrate`), then restart it"
        ),
    }
}

/// Connections a worker's running jobs share when `--db-pool-size` is not given. Job
/// transactions beyond a few per database core only add lock waits and task switches: on the
/// 2-core machine of docs/performance.md ("Defaults that fit"), `TIERFLOW_CONCURRENCY` 16 with
/// 8–14 job connections drained real transition jobs 1.3–1.8× as fast as the former default
/// (concurrency 4, one connection per job slot). Jobs beyond it wait for a connection while
/// holding their lease.
pub const DEFAULT_JOB_CONNECTIONS: u32 = 12;

/// The database for a fleet: a connection for each running job up to
/// [`DEFAULT_JOB_CONNECTIONS`], plus 4 for the producers' claims and LISTEN, plus
/// `api_connections` when the process serves the API too (`tierflow run`). Of the
/// process's `--db-pool-size`, [`LIVENESS_CONNECTIONS`] go to the fleet's own pool for the
/// heartbeat and the maintenance lease (so jobs cannot starve them); the rest is the pool opened
/// here.
///
/// `statement_timeout` is the connections' default (`tierflow run`'s API needs one; a job
/// transaction sets its kind's own).
pub async fn worker_db(
    db: &DatabaseArgs,
    config: &FleetConfig,
    statement_timeout: Option<Duration>,
    api_connections: u32,
) -> anyhow::Result<database::Db> {
    let slots = tierflow_store::jobs::job_slots(config.concurrency) as u32;
    let size = db
        .db_pool_size
        .unwrap_or(slots.min(DEFAULT_JOB_CONNECTIONS) + 4 + api_connections);
    anyhow::ensure!(
        size > LIVENESS_CONNECTIONS,
        "--db-pool-size {size} is too small for a worker: it needs more than {LIVENESS_CONNECTIONS} (the heartbeat's and the maintenance lease's), and a few for running jobs (the default is {})",
        DEFAULT_JOB_CONNECTIONS + 4
    );
    tracing::debug!(
        pool_size = size,
        liveness = LIVENESS_CONNECTIONS,
        "worker pools"
    );
    database::open_with(db, size - LIVENESS_CONNECTIONS, true, statement_timeout).await
}

/// The fleet with every job kind, delivering events as configured.
pub fn build_fleet(
    pool: sqlx::PgPool,
    events: &EventArgs,
    fleet: &FleetArgs,
    config: FleetConfig,
) -> anyhow::Result<tierflow_queue::Fleet<WorkerState>> {
    let store = store_context(events);
    let webhooks = Some(WebhookClient::new(pool.clone(), events.secret()?)?);
    tracing::info!(
        environment_endpoints = events.webhook_urls.len(),
        "webhook delivery configured (managed endpoints are read from the database)"
    );
    let state = Arc::new(WorkerState {
        store,
        webhooks,
        reconcile_interval: Duration::from_secs(fleet.reconcile_interval_secs),
    });
    Ok(tierflow_worker::fleet::build(pool, state, config))
}

/// The store context every process uses: the wall clock and the webhook endpoints.
pub fn store_context(events: &EventArgs) -> Context {
    Context::new(Arc::new(SystemClock)).with_webhooks(events.webhook_urls.clone())
}
