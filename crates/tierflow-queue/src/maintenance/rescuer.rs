//! Reclaims jobs whose worker died mid-run.
//!
//! A `Running` job is orphaned when its worker incarnation has not heartbeated for
//! `rescue_after`, when its live worker no longer holds it (the heartbeat lists what each worker
//! runs: a completion lost in a database crash or failover), or when it has run longer than
//! `max_run_time`. Rows still locked by a live transaction are skipped. Every round runs under
//! the maintenance leader's fence, so a deposed leader's round changes nothing. An orphan goes back to `Failed`, due at once, its attempt counted — so a job that
//! keeps killing its worker runs out of attempts and ends `Dead` instead of looping.

use std::time::Duration;

use sqlx::PgPool;

use super::elector::{Fence, lead_cte};
use crate::QueueError;

/// How often the leader looks for orphans.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// A worker silent this long is presumed dead: 6 heartbeats of 1 s, so that with a 1 s rescuer
/// interval a killed worker's jobs run elsewhere within about 8 s (the bar is 10 s).
pub const DEFAULT_RESCUE_AFTER: Duration = Duration::from_secs(6);
/// Rows rescued per statement; the rest wait for the next round.
pub const DEFAULT_BATCH: i64 = 1000;

/// Rescuer settings, checked when built.
#[derive(Debug, Clone)]
pub struct RescuerConfig {
    pub interval: Duration,
    pub rescue_after: Duration,
    /// A job running longer than this is reclaimed even if its worker heartbeats.
    pub max_run_time: Duration,
    pub batch_size: i64,
}

impl RescuerConfig {
    /// Checks the settings: no zero interval, and rescue only after several heartbeats.
    pub fn validate(&self, heartbeat: Duration) -> Result<(), String> {
        if self.interval.is_zero() || self.batch_size <= 0 {
            return Err("rescuer interval and batch size must be positive".into());
        }
        if self.rescue_after < heartbeat * 3 {
            return Err(format!(
                "rescue_after ({:?}) must be at least 3 heartbeats ({:?}), or live workers lose their jobs",
                self.rescue_after,
                heartbeat * 3
            ));
        }
        Ok(())
    }
}

/// What one rescue round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescuerOutcome {
    /// Jobs put back to run again.
    pub rescued: u64,
    /// Jobs made dead (that was their last attempt).
    pub dead: u64,
    /// Of both, those taken from a live worker that no longer held them (a lost outcome).
    pub lost: u64,
}

/// One rescue round, under the leader's `fence`: nothing happens unless that lease is live.
///
/// A `Running` row is reclaimed when
/// - its worker is gone (no row) or silent for `rescue_after` (killed, frozen, cut off), or
/// - it has run longer than `max_run_time`, or
/// - its worker is alive but no longer holds it: the worker's last heartbeat, written more than
///   `rescue_after` after the claim, does not list it. That is a job whose completion was lost —
///   a PostgreSQL crash or failover dropped its asynchronously committed transaction but not its
///   earlier claim, or the worker could not record its outcome. The margin covers a claim whose
///   rows had not reached the worker's list when that heartbeat was taken.
pub async fn run_once(
    pool: &PgPool,
    cfg: &RescuerConfig,
    fence: &Fence,
) -> Result<RescuerOutcome, QueueError> {
    let query = sqlx::query_as(concat!(
        "WITH ",
        lead_cte!(),
        ", stale AS (
            SELECT j.id,
                   CASE WHEN w.id IS NULL OR w.last_seen < now() - make_interval(secs => $4)
                        THEN 'stopped'
                        WHEN j.lock_at < now() - make_interval(secs => $5)
                        THEN 'overran'
                        ELSE 'lost' END AS why
              FROM apalis.jobs j
              LEFT JOIN apalis.workers w ON w.id = j.lock_by
             WHERE j.status = 'Running'
               AND EXISTS (SELECT 1 FROM lead)
               AND (w.id IS NULL
                    OR w.last_seen < now() - make_interval(secs => $4)
                    OR j.lock_at < now() - make_interval(secs => $5)
                    OR (j.lock_at < w.holding_at - make_interval(secs => $4)
                        AND NOT (j.id = ANY (coalesce(w.holding, '{}')))))
             ORDER BY j.lock_at
             LIMIT $6
             FOR UPDATE OF j SKIP LOCKED)
         UPDATE apalis.jobs j SET
                status = CASE WHEN j.attempts >= j.max_attempts THEN 'Dead' ELSE 'Failed' END,
                done_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
                run_at = now(), lock_by = NULL, lock_at = NULL,
                last_result = jsonb_build_object('Err', format(
                    'rescued: worker %s %s attempt %s of %s', j.lock_by,
                    CASE stale.why WHEN 'stopped' THEN 'stopped during'
                                   WHEN 'overran' THEN 'exceeded the maximum run time in'
                                   ELSE 'no longer runs it (its outcome was lost) after' END,
                    j.attempts, j.max_attempts))
           FROM stale WHERE j.id = stale.id
         RETURNING j.status, j.job_type, stale.why"
    ));
    let rows: Vec<(String, String, String)> = fence
        .bind(query)
        .bind(cfg.rescue_after.as_secs_f64())
        .bind(cfg.max_run_time.as_secs_f64())
        .bind(cfg.batch_size)
        .fetch_all(pool)
        .await?;
    for (status, kind, _) in &rows {
        metrics::counter!(crate::metrics::JOBS_RESCUED, "kind" => kind.clone()).increment(1);
        if status == "Dead" {
            metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind.clone(), "outcome" => "dead").increment(1);
        }
    }
    let count = |why: &str| rows.iter().filter(|r| r.2 == why).count() as u64;
    let dead = rows.iter().filter(|r| r.0 == "Dead").count() as u64;
    let out = RescuerOutcome {
        rescued: rows.len() as u64 - dead,
        dead,
        lost: count("lost"),
    };
    if !rows.is_empty() {
        tracing::warn!(
            rescued = out.rescued,
            dead = out.dead,
            worker_stopped = count("stopped"),
            overran = count("overran"),
            outcome_lost = out.lost,
            "rescued jobs whose worker stopped mid-run or lost their outcome"
        );
    }
    Ok(out)
}
