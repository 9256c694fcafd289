//! Picks the replica that runs maintenance: whoever holds a session-level advisory lock.
//!
//! The lock lives on a dedicated connection; if the leader dies, PostgreSQL drops its session and
//! the lock with it, and another replica takes it on its next try (every `interval`). Leadership
//! is lost the same way when the connection breaks; the leader notices on its next check.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// The advisory lock key of queue maintenance ("tfmaint" in ASCII).
pub const LEADER_LOCK: i64 = 0x0074_666d_6169_6e74;

/// Holds (or tries to hold) leadership.
pub struct Elector {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl Elector {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    /// Whether this replica leads now: keeps the lock if it still has it, tries to take it if not.
    pub async fn is_leader(&mut self) -> bool {
        if let Some(conn) = self.conn.as_mut() {
            let alive = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::query("SELECT 1").execute(&mut **conn),
            )
            .await;
            if matches!(alive, Ok(Ok(_))) {
                return true;
            }
            tracing::warn!("lost the maintenance leadership (connection broken)");
            if let Some(c) = self.conn.take() {
                c.detach();
            }
        }
        let Ok(mut conn) = self.pool.acquire().await else {
            return false;
        };
        let got: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut *conn)
            .await;
        if matches!(got, Ok(true)) {
            tracing::info!("this replica now runs queue maintenance (rescuer, cleaner)");
            self.conn = Some(conn);
            true
        } else {
            false
        }
    }

    /// Gives leadership up (on shutdown), so another replica takes over at once.
    pub async fn resign(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LEADER_LOCK)
                .execute(&mut *conn)
                .await;
            tracing::info!("resigned queue maintenance leadership");
        }
    }
}
