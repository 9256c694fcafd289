//! `tierflow migrate`: migrations and canonical tiers, idempotent and safe in parallel.

use clap::Args;

use crate::cli::DatabaseArgs;
use crate::database;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let db = database::connect(&args.db).await?;
    tracing::info!("applying migrations (waits if another replica is migrating)");
    let report = tierflow_store::migrate::migrate(&db.pool).await?;
    println!(
        "migrations applied: {} queue, {} tierflow; canonical tiers inserted: {}",
        report.queue_applied, report.tierflow_applied, report.tiers_seeded
    );
    db.close().await;
    Ok(())
}
