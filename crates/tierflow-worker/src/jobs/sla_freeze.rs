//! `sla_freeze`: Enforces frozen SLA timers and escalations and degraded routing for a downgrade in grace, as `voice_disable` does for voice.
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::SlaFreeze`. Tables: `tier_transitions`,
//! `transition_actions`, `tenant_entitlements`, `tenant_restrictions`, `audit_events`.
//! Proven by `crates/tierflow-worker/tests/fleet.rs` and `crates/tierflow-store/tests/lifecycle.rs`.

use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, JobTx};
use tierflow_store::jobs::SlaFreeze;

use super::transition_action;
use crate::WorkerState;

/// Runs one `sla_freeze` job in the job's transaction.
pub fn handle<'a>(job: SlaFreeze, tx: JobTx<'a>, state: &'a WorkerState) -> HandlerFuture<'a> {
    transition_action(
        job.tenant_id,
        job.transition_id,
        Action::SlaFreeze,
        tx,
        state,
    )
}
