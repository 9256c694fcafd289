//! `tierflow bench` and `tierflow bench-worker`: their command lines and their database; the
//! benchmark itself is the `tierflow-bench` crate's (`tierflow_bench::bench`).

use clap::Args;

use crate::cli::{DatabaseArgs, EventArgs};
use crate::commands::worker::store_context;
use crate::{database, shutdown};

/// No argument group of its own: the flattened options' struct, of the same name, has one.
#[derive(Debug, Args)]
#[group(skip)]
pub struct BenchArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub bench: tierflow_bench::bench::BenchArgs,
}

/// No argument group of its own: the flattened options' struct, of the same name, has one.
#[derive(Debug, Args)]
#[group(skip)]
pub struct BenchWorkerArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub worker: tierflow_bench::bench::worker::BenchWorkerArgs,
}

/// Runs a sustained benchmark (which starts its own server), or connects to the server the
/// benchmark creates its database on, and the URL its processes
/// reach that server by: DATABASE_URL's, or the embedded PostgreSQL's. SIGTERM or Ctrl-C
/// abandons either run and still cleans up what it made (its server, or its database).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // The handlers are installed before anything is started: a SIGTERM while the sustained run
    // starts its server (initdb, a few seconds) is then held until the run can clean up, instead
    // of ending the process the default way and leaving that server behind.
    let stop = shutdown::signal();
    tokio::pin!(stop);
    tokio::select! {
        biased;
        () = &mut stop => anyhow::bail!("interrupted before the benchmark started"),
        () = std::future::ready(()) => {}
    }
    if let Some(sustained) = args.bench.sustained_run() {
        return tierflow_bench::bench::sustained::run(sustained, stop).await;
    }
    let admin = database::connect(&args.db).await?;
    let base_url = match &args.db.database_url {
        Some(url) => url.clone(),
        None => format!("postgres://postgres@{}", admin.target),
    };
    let result = tierflow_bench::bench::run(args.bench, &admin.pool, &base_url, stop).await;
    admin.close().await;
    result
}

/// A bench worker: the store context of every worker (with no webhook endpoints), stopped by
/// SIGTERM or Ctrl-C like `tierflow worker`.
pub async fn run_worker(args: BenchWorkerArgs) -> anyhow::Result<()> {
    let size = args
        .db
        .db_pool_size
        .unwrap_or(tierflow_bench::bench::worker::POOL_SIZE);
    let db = database::open(&args.db, size, false).await?;
    let events = EventArgs {
        webhook_urls: vec![],
        webhook_secret: None,
    };
    let result = tierflow_bench::bench::worker::run(
        args.worker,
        db.pool.clone(),
        store_context(&events),
        shutdown::signal(),
    )
    .await;
    db.close().await;
    result
}
