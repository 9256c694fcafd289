//! `apply_downgrade`: applies a downgrade at the end of its grace period: the tier moves, the
//! transition becomes `effective`, its restrictions are lifted. Due at the grace end; an early
//! run is put back to wait (by the database's clock); a run for a cancelled or applied transition
//! does nothing.
//!
//! Tables: `tier_transitions`, `transition_actions`, `tenant_entitlements`,
//! `tenant_restrictions`, `audit_events`; the effect is [`super::transition_action`]'s.
//! Proven by `crates/tierflow-store/tests/lifecycle.rs`, `crates/tierflow-worker/tests/fleet.rs`
//! and, under faults, `tests/e2e/faults.rs`.

use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{TenantId, TransitionId};
use tierflow_domain::transition::Action;
use tierflow_queue::{HandlerFuture, Job, JobTx};

use crate::Context;

/// Apply a downgrade at the end of its grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyDowngrade {
    pub tenant_id: TenantId,
    pub transition_id: TransitionId,
}

impl Job for ApplyDowngrade {
    const KIND: &'static str = "apply_downgrade";
    // A missed grace end is a billing error; keep trying longer than for the others.
    const MAX_ATTEMPTS: i32 = 20;
    const BATCH: usize = super::TRANSITION_BATCH;
}

/// Runs one `apply_downgrade` job in the job's transaction.
pub fn handle<'a>(job: ApplyDowngrade, tx: JobTx<'a>, ctx: &'a Context) -> HandlerFuture<'a> {
    super::transition_action::handle(
        job.tenant_id,
        job.transition_id,
        Action::ApplyDowngrade,
        tx,
        ctx,
    )
}
