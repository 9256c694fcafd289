//! Prunes finished jobs after their retention, in small batches so no statement holds long locks.
//!
//! `Done` and `Cancelled` rows go after `retention`; `Dead` rows, which an operator may still want
//! to re-drive, after the longer `dead_retention`. Worker rows silent for a day and holding no job
//! go too.

use std::time::Duration;

use sqlx::PgPool;

use crate::QueueError;

/// Finished jobs are kept a week: long enough to answer "did that run?".
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Dead jobs are kept 30 days.
pub const DEFAULT_DEAD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Rows deleted per statement.
pub const BATCH: i64 = 1000;

/// Cleaner settings.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    pub retention: Duration,
    pub dead_retention: Duration,
    pub interval: Duration,
}

/// What one cleaning round deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanerOutcome {
    pub finished: u64,
    pub dead: u64,
    pub workers: u64,
}

/// One cleaning round: batches until nothing is left to delete.
pub async fn run_once(pool: &PgPool, cfg: &CleanerConfig) -> Result<CleanerOutcome, QueueError> {
    let mut out = CleanerOutcome::default();
    for (states, age, count) in [
        (&["Done", "Cancelled"][..], cfg.retention, &mut out.finished),
        (&["Dead"][..], cfg.dead_retention, &mut out.dead),
    ] {
        loop {
            let n = sqlx::query(
                "DELETE FROM apalis.jobs WHERE id IN (
                    SELECT id FROM apalis.jobs
                     WHERE status = ANY($1) AND done_at < now() - make_interval(secs => $2)
                     LIMIT $3 FOR UPDATE SKIP LOCKED)",
            )
            .bind(states)
            .bind(age.as_secs_f64())
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
            *count += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out.workers = sqlx::query(
        "DELETE FROM apalis.workers w
          WHERE w.last_seen < now() - interval '1 day'
            AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.status = 'Running' AND j.lock_by = w.id)",
    )
    .execute(pool)
    .await?
    .rows_affected();
    if out != CleanerOutcome::default() {
        tracing::info!(
            finished = out.finished,
            dead = out.dead,
            workers = out.workers,
            "pruned old queue rows"
        );
    }
    Ok(out)
}
