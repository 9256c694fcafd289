//! `tierflow bench-worker`: a worker process running the real job kinds plus the benchmark's,
//! started by `tierflow bench` (not meant to be run by hand).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tierflow_queue::FleetConfig;
use tierflow_worker::WorkerState;

use super::kinds::{BenchNoop, BenchSleep, noop, sleep};
use crate::cli::DatabaseArgs;
use crate::commands::worker::store_context;
use crate::{database, shutdown};

#[derive(Debug, Args)]
pub struct BenchWorkerArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Jobs of each kind this process runs at once.
    #[arg(long, env = "TIERFLOW_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds without a heartbeat before another process rescues this one's jobs.
    #[arg(long, env = "TIERFLOW_RESCUE_AFTER_SECS", default_value_t = 6)]
    pub rescue_after_secs: u64,
}

pub async fn run(args: BenchWorkerArgs) -> anyhow::Result<()> {
    let size = args.db.db_pool_size.unwrap_or(args.concurrency as u32 + 6);
    let db = database::open(&args.db, size, false).await?;
    let events = crate::cli::EventArgs {
        webhook_urls: vec![],
        webhook_secret: None,
    };
    let state = Arc::new(WorkerState {
        store: store_context(&events),
        webhooks: None,
    });
    let defaults = FleetConfig::default();
    let config = FleetConfig {
        concurrency: args.concurrency,
        rescuer: tierflow_queue::maintenance::rescuer::RescuerConfig {
            rescue_after: Duration::from_secs(args.rescue_after_secs),
            ..defaults.rescuer
        },
        ..defaults
    };
    let fleet = tierflow_worker::fleet::build(db.pool.clone(), state, config)
        .register_standalone::<BenchNoop>(noop)
        .register::<BenchSleep>(sleep);
    tracing::info!(worker_id = %fleet.worker_id(), "bench worker started");
    fleet.run_until(shutdown::signal()).await;
    db.close().await;
    Ok(())
}
