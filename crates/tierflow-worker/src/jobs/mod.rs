//! One module per job kind. Each handler maps the store's [`ActionOutcome`] to the queue's
//! [`Outcome`], and store errors to retryable or permanent job errors.

pub mod apply_downgrade;
pub mod deliver_event;
pub mod expire_override;
pub mod sla_freeze;
pub mod voice_disable;

use tierflow_queue::{JobError, Outcome};
use tierflow_store::StoreError;
use tierflow_store::actions::ActionOutcome;

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
/// not parse) is permanent; the rest (database trouble) is retried with backoff.
pub(crate) fn job_error(e: StoreError) -> JobError {
    match e {
        StoreError::Database(_) | StoreError::Queue(_) => JobError::Retry(e.to_string()),
        other => JobError::Permanent(other.to_string()),
    }
}
