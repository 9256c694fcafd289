//! Reclaims jobs whose worker died mid-run.
//!
//! A `Running` job is orphaned when its worker incarnation has not heartbeated for
//! `rescue_after`, or when it has run longer than `max_run_time` (its worker lives but lost track
//! of it, e.g. the outcome could not be written). Rows still locked by a live transaction are
//! skipped. An orphan goes back to `Failed`, due at once, its attempt counted — so a job that
//! keeps killing its worker runs out of attempts and ends `Dead` instead of looping.

use std::time::Duration;

use sqlx::PgPool;

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
    pub rescued: u64,
    pub dead: u64,
}

/// One rescue round.
pub async fn run_once(pool: &PgPool, cfg: &RescuerConfig) -> Result<RescuerOutcome, QueueError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "WITH stale AS (
            SELECT j.id FROM apalis.jobs j
              LEFT JOIN apalis.workers w ON w.id = j.lock_by
             WHERE j.status = 'Running'
               AND (w.id IS NULL
                    OR w.last_seen < now() - make_interval(secs => $1)
                    OR j.lock_at < now() - make_interval(secs => $2))
             ORDER BY j.lock_at
             LIMIT $3
             FOR UPDATE OF j SKIP LOCKED)
         UPDATE apalis.jobs j SET
                status = CASE WHEN j.attempts >= j.max_attempts THEN 'Dead' ELSE 'Failed' END,
                done_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
                run_at = now(), lock_by = NULL, lock_at = NULL,
                last_result = jsonb_build_object('Err', format(
                    'rescued: worker %s stopped during attempt %s of %s', j.lock_by, j.attempts, j.max_attempts))
           FROM stale WHERE j.id = stale.id
         RETURNING j.status, j.job_type",
    )
    .bind(cfg.rescue_after.as_secs_f64())
    .bind(cfg.max_run_time.as_secs_f64())
    .bind(cfg.batch_size)
    .fetch_all(pool)
    .await?;
    for (status, kind) in &rows {
        metrics::counter!(crate::metrics::JOBS_RESCUED, "kind" => kind.clone()).increment(1);
        if status == "Dead" {
            metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind.clone(), "outcome" => "dead").increment(1);
        }
    }
    let dead = rows.iter().filter(|(s, _)| s == "Dead").count() as u64;
    let out = RescuerOutcome {
        rescued: rows.len() as u64 - dead,
        dead,
    };
    if out != RescuerOutcome::default() {
        tracing::warn!(
            rescued = out.rescued,
            dead = out.dead,
            "rescued jobs of workers that stopped mid-run"
        );
    }
    Ok(out)
}
