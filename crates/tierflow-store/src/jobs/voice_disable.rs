//! `voice_disable`: enforces "voice off" for a downgrade in grace. Voice is off in tierflow's
//! state from the request on; this job records the enforcement and emits the
//! `entitlement.changed` event that tells downstream systems. Due at the request; a no-op once
//! its transition is no longer pending.
//!
//! Tables: `tier_transitions`, `transition_actions`, `tenant_entitlements`,
//! `tenant_restrictions`, `audit_events`; the effect is [`super::transition_action`]'s.
//! Proven by `crates/tierflow-store/tests/lifecycle.rs` (effect, exactly once) and
//! `crates/tierflow-worker/tests/fleet.rs` (run by the fleet, on time).

use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{TenantId, TransitionId};
use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, Job, JobTx};

use crate::Context;

/// Enforce "voice off" for a downgrade in grace. Due at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceDisable {
    pub tenant_id: TenantId,
    pub transition_id: TransitionId,
}

impl Job for VoiceDisable {
    const KIND: &'static str = "voice_disable";
    const MAX_ATTEMPTS: i32 = 10;
    const BATCH: usize = super::TRANSITION_BATCH;
}

/// Runs one `voice_disable` job in the job's transaction.
pub fn handle<'a>(job: VoiceDisable, tx: JobTx<'a>, ctx: &'a Context) -> HandlerFuture<'a> {
    super::transition_action::handle(
        job.tenant_id,
        job.transition_id,
        Action::VoiceDisable,
        tx,
        ctx,
    )
}

/// A batch of `voice_disable` jobs is recorded by one statement
/// ([`super::transition_action::handle_batch`]).
impl super::transition_action::Enforcement for VoiceDisable {
    const ACTION: Action = Action::VoiceDisable;
    fn ids(self) -> (TenantId, TransitionId) {
        (self.tenant_id, self.transition_id)
    }
}
