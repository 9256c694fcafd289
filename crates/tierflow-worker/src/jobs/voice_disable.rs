//! `voice_disable`: Enforces "voice off" for a downgrade in grace. Voice is off in tierflow's state from the request on; this job records the enforcement and emits the `entitlement.changed` event that tells downstream systems.
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::VoiceDisable`. Tables: `tier_transitions`,
//! `transition_actions`, `tenant_entitlements`, `tenant_restrictions`, `audit_events`.
//! Proven by `crates/tierflow-worker/tests/fleet.rs` and `crates/tierflow-store/tests/lifecycle.rs`.

use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, JobTx};
use tierflow_store::jobs::VoiceDisable;

use super::transition_action;
use crate::WorkerState;

/// Runs one `voice_disable` job in the job's transaction.
pub fn handle<'a>(job: VoiceDisable, tx: JobTx<'a>, state: &'a WorkerState) -> HandlerFuture<'a> {
    transition_action(
        job.tenant_id,
        job.transition_id,
        Action::VoiceDisable,
        tx,
        state,
    )
}
