//! `voice_disable`: Enforces "voice off" for a downgrade in grace. Voice is off in tierflow's state from the request on; this job records the enforcement (and will tell downstream systems).
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::VoiceDisable`. Tables: `tier_transitions`,
//! `transition_actions`, `tenant_entitlements`, `tenant_restrictions`, `audit_events`.
//! Proven by `crates/tierflow-worker/tests/fleet.rs` and `crates/tierflow-store/tests/lifecycle.rs`.

use sqlx::PgConnection;
use tierflow_domain::transition::Action;
use tierflow_queue::HandlerFuture;
use tierflow_store::actions::run_transition_action;
use tierflow_store::jobs::VoiceDisable;

use super::{job_error, outcome};
use crate::WorkerState;

/// Runs one `voice_disable` job in the job's transaction.
pub fn handle<'a>(
    job: VoiceDisable,
    tx: &'a mut PgConnection,
    state: &'a WorkerState,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", job.tenant_id.as_str());
        run_transition_action(
            tx,
            &state.store,
            &job.tenant_id,
            job.transition_id,
            Action::VoiceDisable,
        )
        .await
        .map(outcome)
        .map_err(job_error)
    })
}
