//! Prunes finished jobs after their retention, in small batches so no statement holds long locks.
//!
//! `Done` and `Cancelled` rows go after `retention`; `Dead` rows, which an operator may still want
//! to re-drive, after the longer `dead_retention`. Worker rows silent for a day and holding no job
//! go too, and the rows of every registered [`Prune`] (the application's idempotency keys).

use std::time::Duration;

use sqlx::PgPool;

use super::elector::{Fence, lead_cte};
use crate::QueueError;

/// Finished jobs are kept a week: long enough to answer "did that run?".
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Dead jobs are kept 30 days.
pub const DEFAULT_DEAD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Rows deleted per statement.
pub const BATCH: i64 = 1000;
/// Statements per round: a round deletes at most 10,000 rows (a fraction of a second), then
/// yields; the next round follows at once while rows are left ([`CleanerOutcome::more`]).
pub const MAX_BATCHES: u32 = 10;

/// Cleaner settings.
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    pub retention: Duration,
    pub dead_retention: Duration,
    pub interval: Duration,
    /// Rows of other tables to prune in the same bounded rounds (the application's own, such as
    /// idempotency keys; this crate knows only their table and time column).
    pub prunes: Vec<Prune>,
}

/// Rows of `table` whose `column` (a `timestamptz`) is older than `retention` are deleted by
/// the cleaner, in batches. `table` and `column` are identifiers written in code, never input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    pub table: &'static str,
    pub column: &'static str,
    pub retention: Duration,
}

/// What one cleaning round deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanerOutcome {
    pub finished: u64,
    pub dead: u64,
    pub workers: u64,
    /// Rows of the registered [`Prune`]s deleted.
    pub other: u64,
    /// Rows past retention were left for the next round (the round's budget ran out).
    pub more: bool,
}

/// What is left of a round's statements.
struct Budget(u32);

impl Budget {
    /// Runs `batch` (one delete of at most [`BATCH`] rows) until it deletes fewer or the budget is
    /// spent; returns the rows deleted.
    async fn drain<'a>(
        &mut self,
        mut batch: impl FnMut() -> futures::future::BoxFuture<'a, Result<u64, QueueError>>,
    ) -> Result<u64, QueueError> {
        let mut deleted = 0;
        while self.0 > 0 {
            self.0 -= 1;
            let n = batch().await?;
            deleted += n;
            if n < BATCH as u64 {
                break;
            }
        }
        Ok(deleted)
    }
}

/// One cleaning round under the leader's `fence`: at most [`MAX_BATCHES`] deletes of [`BATCH`]
/// rows, so a large backlog (a retention change, weeks of history) is pruned over many short
/// rounds instead of one long one. [`CleanerOutcome::more`] says whether rows were left.
pub async fn run_once(
    pool: &PgPool,
    cfg: &CleanerConfig,
    fence: &Fence,
) -> Result<CleanerOutcome, QueueError> {
    let mut out = CleanerOutcome::default();
    let mut budget = Budget(MAX_BATCHES);
    for (states, age, count) in [
        (&["Done", "Cancelled"][..], cfg.retention, &mut out.finished),
        (&["Dead"][..], cfg.dead_retention, &mut out.dead),
    ] {
        *count += budget
            .drain(|| {
                let query = sqlx::query(concat!(
                    "WITH ",
                    lead_cte!(),
                    " DELETE FROM apalis.jobs WHERE id IN (
                        SELECT id FROM apalis.jobs
                         WHERE status = ANY($4) AND done_at < now() - make_interval(secs => $5)
                           AND EXISTS (SELECT 1 FROM lead)
                         LIMIT $6 FOR UPDATE SKIP LOCKED)"
                ));
                let batch = fence
                    .bind_query(query)
                    .bind(states)
                    .bind(age.as_secs_f64())
                    .bind(BATCH)
                    .execute(pool);
                Box::pin(async move { Ok(batch.await?.rows_affected()) })
            })
            .await?;
    }
    for prune in &cfg.prunes {
        let sql = format!(
            concat!(
                "WITH ",
                lead_cte!(),
                " DELETE FROM {table} WHERE ctid IN (
                    SELECT ctid FROM {table}
                     WHERE {column} < now() - make_interval(secs => $4)
                       AND EXISTS (SELECT 1 FROM lead)
                     LIMIT $5 FOR UPDATE SKIP LOCKED)"
            ),
            table = prune.table,
            column = prune.column
        );
        out.other += budget
            .drain(|| {
                let batch = fence
                    .bind_query(sqlx::query(sqlx::AssertSqlSafe(sql.clone())))
                    .bind(prune.retention.as_secs_f64())
                    .bind(BATCH)
                    .execute(pool);
                Box::pin(async move { Ok(batch.await?.rows_affected()) })
            })
            .await?;
    }
    out.more = budget.0 == 0;
    let query = sqlx::query(concat!(
        "WITH ",
        lead_cte!(),
        " DELETE FROM apalis.workers w
          WHERE w.last_seen < now() - interval '1 day' AND EXISTS (SELECT 1 FROM lead)
            AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.status = 'Running' AND j.lock_by = w.id)"
    ));
    out.workers = fence.bind_query(query).execute(pool).await?.rows_affected();
    if out.finished + out.dead + out.workers + out.other > 0 {
        tracing::info!(
            finished = out.finished,
            dead = out.dead,
            workers = out.workers,
            other = out.other,
            more = out.more,
            "pruned old queue rows"
        );
    }
    Ok(out)
}
