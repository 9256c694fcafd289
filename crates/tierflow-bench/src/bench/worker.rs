//! `tierflow bench-worker`: a worker process running the real job kinds plus the benchmark's,
//! started by `tierflow bench` (not meant to be run by hand).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser as _;
use sqlx::PgPool;
use tierflow_queue::FleetConfig;
use tierflow_store::Context;
use tierflow_worker::WorkerState;

use super::kinds::{BenchNoop, BenchSleep, noop, sleep};

/// The bench worker's own options; the `tierflow` binary adds where the database is.
#[derive(Debug, Args)]
pub struct BenchWorkerArgs {
    /// Jobs of each transactional kind this process runs at once.
    #[arg(long, env = "TIERFLOW_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Jobs of each standalone kind (the no-op benchmark kind) this process runs at once.
    #[arg(long, env = "TIERFLOW_STANDALONE_CONCURRENCY",
          default_value_t = tierflow_queue::fleet::DEFAULT_STANDALONE_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub standalone_concurrency: usize,
    /// Seconds without a heartbeat before another process rescues this one's jobs.
    #[arg(long, env = "TIERFLOW_RESCUE_AFTER_SECS", default_value_t = 6)]
    pub rescue_after_secs: u64,
    /// Seconds finished jobs are kept before the cleaner deletes them (a week by default, as in
    /// `tierflow worker`; the sustained benchmark shortens it so the table reaches its steady
    /// size within the run).
    #[arg(long, env = "TIERFLOW_BENCH_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: u64,
}

/// Connections of a bench worker, which bound its concurrent job transactions (jobs beyond it
/// wait for a connection, holding their lease). On the 2-core machine of docs/performance.md, real
/// transition jobs drained fastest with 6–8 (4: 2.0–2.5k jobs/s; 8: 2.4–2.8k; 12: 1.9–2.0k; one
/// per job slot, 22: 1.5–2.4k; 52: 0.5–1.5k): more transactions than the database has cores to
/// run them only add lock waits and task switches. Standalone kinds hold no connection.
pub const POOL_SIZE: u32 = 8;

/// Runs the real job kinds and the benchmark's on `pool` (best opened with [`POOL_SIZE`]
/// connections unless the user said otherwise) with the store context `store`, until `shutdown`
/// completes; in-flight jobs then finish as in `tierflow worker`.
pub async fn run(
    args: BenchWorkerArgs,
    pool: PgPool,
    store: Context,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = Arc::new(WorkerState {
        store,
        webhooks: None,
        reconcile_interval: tierflow_store::reconciler::DEFAULT_INTERVAL,
    });
    let defaults = FleetConfig::default();
    let config = FleetConfig {
        concurrency: args.concurrency,
        standalone_concurrency: args.standalone_concurrency,
        rescuer: tierflow_queue::maintenance::rescuer::RescuerConfig {
            rescue_after: Duration::from_secs(args.rescue_after_secs),
            ..defaults.rescuer
        },
        cleaner: tierflow_queue::maintenance::cleaner::CleanerConfig {
            retention: Duration::from_secs(args.retention_secs),
            ..defaults.cleaner
        },
        ..defaults
    };
    let fleet = tierflow_worker::fleet::build(pool, state, config)
        .register_standalone::<BenchNoop>(noop)
        .register::<BenchSleep>(sleep);
    tracing::info!(worker_id = %fleet.worker_id(), "bench worker started");
    fleet.run_until(shutdown).await;
    Ok(())
}
