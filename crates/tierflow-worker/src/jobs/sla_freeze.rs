//! `sla_freeze`: Enforces frozen SLA timers and escalations and degraded routing for a downgrade in grace, as `voice_disable` does for voice.
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::SlaFreeze`. Tables: `tier_transitions`,
//! `transition_actions`, `tenant_entitlements`, `tenant_restrictions`, `audit_events`.
//! Proven by `crates/tierflow-worker/tests/fleet.rs` and `crates/tierflow-store/tests/lifecycle.rs`.

use sqlx::PgConnection;
use tierflow_domain::transition::Action;
use tierflow_queue::HandlerFuture;
use tierflow_store::actions::run_transition_action;
use tierflow_store::jobs::SlaFreeze;

use super::{job_error, outcome};
use crate::WorkerState;

/// Runs one `sla_freeze` job in the job's transaction.
pub fn handle<'a>(
    job: SlaFreeze,
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
            Action::SlaFreeze,
        )
        .await
        .map(outcome)
        .map_err(job_error)
    })
}
