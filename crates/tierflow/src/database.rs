//! Connecting to PostgreSQL from [`DatabaseArgs`], with errors that say where and what to do —
//! and never print the URL, which may hold a password.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::cli::DatabaseArgs;

/// Parses the URL and opens a pool, waiting at most the connect timeout for a first connection.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = args.database_url.parse().map_err(|_| {
        anyhow::anyhow!(
            "DATABASE_URL is not a PostgreSQL URL; expected postgres://user:password@host:port/database"
        )
    })?;
    let options = options.application_name("tierflow");
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    );
    let pool = PgPoolOptions::new()
        .max_connections(args.db_pool_size.max(1))
        .acquire_timeout(Duration::from_secs(args.db_connect_timeout.max(1)))
        .connect_with(options)
        .await
        .with_context(|| {
            format!("cannot connect to PostgreSQL at {target}; check that it runs and that DATABASE_URL is right")
        })?;
    tracing::debug!(%target, "connected to PostgreSQL");
    Ok(pool)
}
