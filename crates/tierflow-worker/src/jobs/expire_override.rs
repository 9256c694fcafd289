//! `expire_override`: ends a temporary limit override at its `expires_at`. Early runs are put back
//! to wait; runs for a removed, replaced or already expired override do nothing.
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::ExpireOverride`. Tables:
//! `entitlement_overrides`, `tenant_entitlements`, `audit_events`. Proven by
//! `crates/tierflow-worker/tests/fleet.rs` and `crates/tierflow-store/tests/overrides.rs`.

use tierflow_queue::{HandlerFuture, JobTx};
use tierflow_store::actions::expire_override;
use tierflow_store::jobs::ExpireOverride;

use super::{job_error, outcome};
use crate::WorkerState;

/// Runs one `expire_override` job in the job's transaction.
pub fn handle<'a>(job: ExpireOverride, tx: JobTx<'a>, state: &'a WorkerState) -> HandlerFuture<'a> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", job.tenant_id.as_str());
        expire_override(
            tx.conn,
            &state.store,
            tx.now,
            &job.tenant_id,
            job.override_id,
        )
        .await
        .map(outcome)
        .map_err(job_error)
    })
}
