//! `tierflow migrate`: the queue's migrations, then tierflow's, then the canonical tiers — once,
//! however many replicas run it at the same moment.
//!
//! Everything runs on one connection holding a session-level advisory lock
//! ([`MIGRATION_LOCK`]): the second replica to arrive waits, then finds every migration applied
//! and every canonical tier present, and does nothing. Re-running is always safe.

use chrono::Utc;
use sqlx::{PgConnection, PgPool};
use tierflow_queue::schema::apalis_migrator;

use crate::{StoreError, tiers};

/// The advisory lock key that serializes migrations across replicas ("tierflow" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x7469_6572_666c_6f77;

/// The queue's migrations (apalis-postgres), re-exported for tools that hash the schema.
pub fn queue_migrator() -> sqlx::migrate::Migrator {
    apalis_migrator()
}

/// tierflow's own migrations (`migrations/` at the repository root).
pub fn tierflow_migrator() -> sqlx::migrate::Migrator {
    sqlx::migrate!("../../migrations")
}

/// What one `migrate` run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrateReport {
    /// Queue (apalis-postgres) migrations applied by this run.
    pub queue_applied: usize,
    /// tierflow migrations applied by this run.
    pub tierflow_applied: usize,
    /// Canonical tiers inserted by this run (existing ones are left as operators edited them).
    pub tiers_seeded: usize,
}

/// Applies all migrations and seeds the canonical tiers.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = migrate_locked(&mut conn).await;
    // Unlock even after a failure; if this fails too, closing the connection releases the lock.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        conn.detach();
    }
    result
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<MigrateReport, StoreError> {
    let mut report = MigrateReport::default();
    for (table, migrator, applied) in [
        (
            "apalis._sqlx_migrations",
            apalis_migrator(),
            &mut report.queue_applied,
        ),
        (
            "public._sqlx_migrations",
            tierflow_migrator(),
            &mut report.tierflow_applied,
        ),
    ] {
        let before = applied_count(conn, table).await?;
        migrator
            .run(&mut *conn)
            .await
            .map_err(|e| StoreError::Database(sqlx::Error::Migrate(Box::new(e))))?;
        *applied = applied_count(conn, table).await?.saturating_sub(before);
    }
    report.tiers_seeded = tiers::seed_canonical(conn, Utc::now()).await?;
    Ok(report)
}

async fn applied_count(conn: &mut PgConnection, table: &str) -> Result<usize, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    // The table name is one of two constants above, never input.
    let sql = match table {
        "apalis._sqlx_migrations" => "SELECT count(*) FROM apalis._sqlx_migrations WHERE success",
        _ => "SELECT count(*) FROM public._sqlx_migrations WHERE success",
    };
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut *conn).await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Whether every migration this binary knows is applied (for readiness checks).
pub async fn is_current(pool: &PgPool) -> Result<bool, StoreError> {
    let mut conn = pool.acquire().await?;
    let want = [
        ("apalis._sqlx_migrations", apalis_migrator().iter().count()),
        (
            "public._sqlx_migrations",
            tierflow_migrator().iter().count(),
        ),
    ];
    for (table, n) in want {
        if applied_count(&mut conn, table).await? < n {
            return Ok(false);
        }
    }
    Ok(true)
}
