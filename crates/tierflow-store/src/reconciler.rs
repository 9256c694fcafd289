//! The reconciler: finds downgrades still `pending` after their grace ended whose
//! `apply_downgrade` job will never run, and puts them back on track.
//!
//! The job that ends a grace period can be lost to the queue in ways the queue itself cannot see
//! as wrong: an operator cancelled it (before raw cancels of a transition's jobs were refused),
//! its row was pruned, it went `Done` without applying (a bug), or it went `Dead` after its last
//! attempt. The tenant then stays in grace — restrictions on, the old tier kept — with nothing to
//! finish it. Each round (on the maintenance leader, under its fence) the reconciler looks at
//! real tenants' (a test clock's tenants keep their clock's time, not the database's)
//! pending transitions more than [`STRANDED_AFTER`] past their grace end whose job is not live
//! (`Pending`, `Running` or `Failed` awaiting a retry):
//!
//! | the job is                          | the reconciler                                   |
//! |-------------------------------------|--------------------------------------------------|
//! | `Cancelled`, `Done`, another ended state | re-drives it: `Pending`, attempts reset, due now |
//! | missing (pruned)                    | enqueues a new one and points the action at it   |
//! | `Dead`                              | reports it (log, `tierflow_transitions_stranded`, the `TierflowStrandedTransitions` alert): it failed every attempt, and running it again before its cause is fixed would only fail again. An operator re-drives it (`tierflow jobs retry <id>`). |

use std::time::Duration;

use sqlx::PgPool;
use tierflow_domain::ids::{TenantId, TransitionId};
use tierflow_queue::NewJob;
use tierflow_queue::maintenance::elector::Fence;

use crate::StoreError;
use crate::jobs::ApplyDowngrade;

/// How long past its grace end a pending transition must be before its job is looked at: well
/// beyond a busy queue's normal lateness, so a job about to run is never re-driven beside it.
pub const STRANDED_AFTER: Duration = Duration::from_secs(60);

/// The default interval between rounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Transitions looked at per round; a full batch runs another round at once.
pub const BATCH: i64 = 500;

/// Pending transitions past their grace end (by more than [`STRANDED_AFTER`]) — late, whether
/// their job is live or not. Sampled into [`crate::metrics::PENDING_PAST_GRACE`].
pub const PENDING_PAST_GRACE_SQL: &str = "SELECT count(*)::float8 FROM tier_transitions t
  WHERE t.status = 'pending' AND t.grace_ends_at < now() - interval '60 seconds'
    AND NOT EXISTS (SELECT 1 FROM tenant_entitlements e
                     WHERE e.tenant_id = t.tenant_id AND e.test_clock_id IS NOT NULL)";

/// Of those, the ones whose `apply_downgrade` job is not live: stranded until the reconciler or
/// an operator acts. Sampled into [`crate::metrics::STRANDED`].
pub const STRANDED_SQL: &str = "SELECT count(*)::float8 FROM tier_transitions t
  JOIN transition_actions a ON a.transition_id = t.id AND a.action = 'apply_downgrade'
  LEFT JOIN apalis.jobs j ON j.id = a.job_id
 WHERE t.status = 'pending' AND t.grace_ends_at < now() - interval '60 seconds'
   AND (j.id IS NULL OR j.status NOT IN ('Pending', 'Running', 'Failed'))
   AND NOT EXISTS (SELECT 1 FROM tenant_entitlements e
                    WHERE e.tenant_id = t.tenant_id AND e.test_clock_id IS NOT NULL)";

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Jobs set back to `Pending` (they had been cancelled or had ended without applying).
    pub redriven: Vec<String>,
    /// New jobs enqueued for transitions whose job row was gone.
    pub reenqueued: Vec<String>,
    /// Transitions left for an operator: their job is dead. (transition id, job id)
    pub dead: Vec<(TransitionId, String)>,
    /// Whether the batch of transitions it could act on was full (run again at once).
    pub more: bool,
}

#[derive(sqlx::FromRow)]
struct Stranded {
    id: uuid::Uuid,
    tenant_id: String,
    job_id: Option<String>,
}

/// One round under `fence`: nothing is changed if this replica no longer leads.
pub async fn run_once(pool: &PgPool, fence: &Fence) -> Result<Reconciled, StoreError> {
    let mut tx = pool.begin().await?;
    if !fence.hold(&mut tx).await? {
        return Ok(Reconciled::default());
    }
    // SKIP LOCKED: a transition a request or its job holds right now is not stranded.
    let stranded: Vec<Stranded> = sqlx::query_as(
        "SELECT t.id, t.tenant_id, j.id AS job_id
           FROM tier_transitions t
           JOIN transition_actions a ON a.transition_id = t.id AND a.action = 'apply_downgrade'
           LEFT JOIN apalis.jobs j ON j.id = a.job_id
          WHERE t.status = 'pending' AND t.grace_ends_at < now() - make_interval(secs => $1)
            AND (j.id IS NULL OR j.status NOT IN ('Pending', 'Running', 'Failed', 'Dead'))
            AND NOT EXISTS (SELECT 1 FROM tenant_entitlements e
                             WHERE e.tenant_id = t.tenant_id AND e.test_clock_id IS NOT NULL)
          ORDER BY t.grace_ends_at
          LIMIT $2
          FOR UPDATE OF t, a SKIP LOCKED",
    )
    .bind(STRANDED_AFTER.as_secs_f64())
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Reconciled {
        more: stranded.len() as i64 >= BATCH,
        ..Reconciled::default()
    };
    let mut redrive = Vec::new();
    for s in stranded {
        let transition = TransitionId(s.id);
        match s.job_id {
            Some(job) => redrive.push(job),
            None => {
                let tenant_id = TenantId::parse(s.tenant_id)
                    .map_err(crate::error::corrupt("transition tenant"))?;
                let job = NewJob::new(
                    &ApplyDowngrade {
                        tenant_id,
                        transition_id: transition,
                    },
                    chrono::Utc::now(),
                )?;
                // Unkeyed, as the request's own jobs are: the action row, locked here, names it.
                let new = tierflow_queue::enqueue(&mut tx, vec![job])
                    .await?
                    .pop()
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "the re-enqueued apply_downgrade of transition {transition} was not written"
                        ))
                    })?;
                sqlx::query(
                    "UPDATE transition_actions SET job_id = $2
                      WHERE transition_id = $1 AND action = 'apply_downgrade'",
                )
                .bind(transition.0)
                .bind(&new.id)
                .execute(&mut *tx)
                .await?;
                out.reenqueued.push(new.id);
            }
        }
    }
    if !redrive.is_empty() {
        out.redriven = sqlx::query_scalar(
            "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), done_at = NULL,
                    lock_by = NULL, lock_at = NULL
              WHERE id = ANY($1) AND status NOT IN ('Pending', 'Running', 'Failed', 'Dead')
             RETURNING id",
        )
        .bind(&redrive)
        .fetch_all(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // The dead ones are reported, not touched: read without a lock, and never a reason to run
    // again at once (they would be found again).
    let dead: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT t.id, j.id FROM tier_transitions t
           JOIN transition_actions a ON a.transition_id = t.id AND a.action = 'apply_downgrade'
           JOIN apalis.jobs j ON j.id = a.job_id
          WHERE t.status = 'pending' AND t.grace_ends_at < now() - make_interval(secs => $1)
            AND j.status = 'Dead'
          ORDER BY t.grace_ends_at LIMIT $2",
    )
    .bind(STRANDED_AFTER.as_secs_f64())
    .bind(BATCH)
    .fetch_all(pool)
    .await?;
    out.dead = dead
        .into_iter()
        .map(|(t, job)| (TransitionId(t), job))
        .collect();
    let (redriven, reenqueued) = (out.redriven.len(), out.reenqueued.len());
    if redriven + reenqueued > 0 {
        metrics::counter!(crate::metrics::RECONCILED).increment((redriven + reenqueued) as u64);
        tracing::warn!(
            redriven,
            reenqueued,
            jobs = ?[out.redriven.as_slice(), out.reenqueued.as_slice()].concat(),
            "downgrades pending past their grace end had no live apply_downgrade job; put back on the queue"
        );
    }
    Ok(out)
}
