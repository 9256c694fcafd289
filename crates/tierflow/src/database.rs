//! Connecting to PostgreSQL from [`DatabaseArgs`], with errors that say where and what to do —
//! and never print the URL, which may hold a password.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::cli::DatabaseArgs;

/// Parses the URL and opens a pool of at most `--db-pool-size` (default 10) connections, waiting
/// at most the connect timeout for a first connection.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let size = args.db_pool_size.unwrap_or(10);
    let pool = lazy(args, size)?;
    pool.acquire().await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {}; check that it runs and that DATABASE_URL is right",
            target(args)
        )
    })?;
    tracing::debug!(target = %target(args), "connected to PostgreSQL");
    Ok(pool)
}

/// A pool that connects on first use (a worker started before its database waits for it).
pub fn lazy(args: &DatabaseArgs, size: u32) -> anyhow::Result<PgPool> {
    let options = options(args)?;
    Ok(PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(args.db_connect_timeout.max(1)))
        .connect_lazy_with(options))
}

/// `host:port/database`, for messages (never the password).
pub fn target(args: &DatabaseArgs) -> String {
    match options(args) {
        Ok(o) => format!(
            "{}:{}/{}",
            o.get_host(),
            o.get_port(),
            o.get_database().unwrap_or("(default)")
        ),
        Err(_) => "(unparsable DATABASE_URL)".to_owned(),
    }
}

fn options(args: &DatabaseArgs) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = args.database_url.parse().map_err(|_| {
        anyhow::anyhow!(
            "DATABASE_URL is not a PostgreSQL URL; expected postgres://user:password@host:port/database"
        )
    })?;
    Ok(options.application_name("tierflow"))
}
