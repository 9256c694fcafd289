//! `apply_downgrade`: Applies a downgrade at the end of its grace period: the tier moves, the transition becomes `effective`, its restrictions are lifted. Early runs are put back to wait; runs for a cancelled or applied transition do nothing.
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::ApplyDowngrade`. Tables: `tier_transitions`,
//! `transition_actions`, `tenant_entitlements`, `tenant_restrictions`, `audit_events`.
//! Proven by `crates/tierflow-worker/tests/fleet.rs` and `crates/tierflow-store/tests/lifecycle.rs`.

use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, JobTx};
use tierflow_store::jobs::ApplyDowngrade;

use super::transition_action;
use crate::WorkerState;

/// Runs one `apply_downgrade` job in the job's transaction.
pub fn handle<'a>(job: ApplyDowngrade, tx: JobTx<'a>, state: &'a WorkerState) -> HandlerFuture<'a> {
    transition_action(
        job.tenant_id,
        job.transition_id,
        Action::ApplyDowngrade,
        tx,
        state,
    )
}
