//! `tierflow demo`: its command line and its database; the demo itself is the `tierflow-bench`
//! crate's (`tierflow_bench::demo`).

use clap::Args;

use crate::cli::DatabaseArgs;
use crate::database;

/// No argument group of its own: the flattened options' struct, of the same name, has one.
#[derive(Debug, Args)]
#[group(skip)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub demo: tierflow_bench::demo::DemoArgs,
}

/// Opens the database (the embedded PostgreSQL unless DATABASE_URL is set) and runs the demo on
/// it.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let db = database::open(&args.db, tierflow_bench::demo::POOL_SIZE, false).await?;
    let result = tierflow_bench::demo::run(args.demo, &db.pool, &db.target).await;
    db.close().await;
    result
}
