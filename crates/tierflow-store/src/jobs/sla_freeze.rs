//! `sla_freeze`: enforces frozen SLA timers and escalations and degraded routing for a downgrade
//! in grace, as `voice_disable` does for voice. Due at the request.
//!
//! Tables: `tier_transitions`, `transition_actions`, `tenant_entitlements`,
//! `tenant_restrictions`, `audit_events`; the effect is [`super::transition_action`]'s.
//! Proven by `crates/tierflow-store/tests/lifecycle.rs` and `crates/tierflow-worker/tests/fleet.rs`.

use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{TenantId, TransitionId};
use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, Job, JobTx};

use crate::Context;

/// Enforce frozen SLA timers and escalations and degraded routing for a downgrade in grace.
/// Due at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaFreeze {
    pub tenant_id: TenantId,
    pub transition_id: TransitionId,
}

impl Job for SlaFreeze {
    const KIND: &'static str = "sla_freeze";
    const MAX_ATTEMPTS: i32 = 10;
    const BATCH: usize = super::TRANSITION_BATCH;
}

/// Runs one `sla_freeze` job in the job's transaction.
pub fn handle<'a>(job: SlaFreeze, tx: JobTx<'a>, ctx: &'a Context) -> HandlerFuture<'a> {
    super::transition_action::handle(job.tenant_id, job.transition_id, Action::SlaFreeze, tx, ctx)
}

/// A batch of `sla_freeze` jobs is recorded by one statement
/// ([`super::transition_action::handle_batch`]).
impl super::transition_action::Enforcement for SlaFreeze {
    const ACTION: Action = Action::SlaFreeze;
    fn ids(self) -> (TenantId, TransitionId) {
        (self.tenant_id, self.transition_id)
    }
}
