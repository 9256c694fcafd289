//! One module per job kind. Each handler maps the store's [`ActionOutcome`] to the queue's
//! [`Outcome`], and store errors to retryable or permanent job errors.

pub mod apply_downgrade;
pub mod deliver_event;
pub mod expire_override;
pub mod sla_freeze;
pub mod voice_disable;

use tierflow_domain::ids::{TenantId, TransitionId};
use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, JobError, JobTx, Outcome};
use tierflow_store::StoreError;
use tierflow_store::actions::{ActionOutcome, run_transition_action};

use crate::WorkerState;

/// The body shared by the three transition-action kinds: the store applies `action` once.
pub(crate) fn transition_action<'a>(
    tenant_id: TenantId,
    transition_id: TransitionId,
    action: Action,
    tx: JobTx<'a>,
    state: &'a WorkerState,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", tenant_id.as_str());
        run_transition_action(
            tx.conn,
            &state.store,
            tx.now,
            &tenant_id,
            transition_id,
            action,
        )
        .await
        .map(outcome)
        .map_err(job_error)
    })
}

/// The queue outcome of a store action.
pub(crate) fn outcome(o: ActionOutcome) -> Outcome {
    match o {
        ActionOutcome::Applied { tenant_version } => {
            Outcome::Done(format!("applied; tenant at version {tenant_version}"))
        }
        ActionOutcome::NoOp { reason } => Outcome::NoOp(reason),
        ActionOutcome::NotYetDue { due_at } => Outcome::NotYetDue(due_at),
    }
}

/// A store error as a job error: what retrying cannot fix (the tenant is gone, stored data does
/// not parse) is permanent; a wait for a row lock past the job's `lock_timeout` (SQLSTATE 55P03)
/// is contention, retried soon without spending an attempt; the rest (database trouble) is
/// retried with backoff.
pub(crate) fn job_error(e: StoreError) -> JobError {
    match e {
        StoreError::Database(sqlx::Error::Database(ref db))
            if db.code().as_deref() == Some("55P03") =>
        {
            JobError::Contended(format!("waited too long for a lock: {e}"))
        }
        StoreError::Database(_) | StoreError::Queue(_) => JobError::Retry(e.to_string()),
        other => JobError::Permanent(other.to_string()),
    }
}
