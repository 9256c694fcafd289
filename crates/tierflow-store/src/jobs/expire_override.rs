//! `expire_override`: ends a temporary limit override at its `expires_at`. Due at the expiry; an
//! early run is put back to wait (by the database's clock); a run for a removed, replaced or
//! already expired override does nothing.
//!
//! Tables: `entitlement_overrides`, `tenant_entitlements`, `audit_events`. Proven by
//! `crates/tierflow-store/tests/overrides.rs` (effect) and `crates/tierflow-worker/tests/fleet.rs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tierflow_domain::ids::{OverrideId, TenantId};
use tierflow_queue::{HandlerFuture, Job, JobTx};

use super::{ActionOutcome, job_error, no_op, outcome};
use crate::audit::{self, AuditEvent, Principal};
use crate::{Context, StoreError, events, tenants};

/// Record an override's expiry at its `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireOverride {
    pub tenant_id: TenantId,
    pub override_id: OverrideId,
}

impl Job for ExpireOverride {
    const KIND: &'static str = "expire_override";
    const MAX_ATTEMPTS: i32 = 20;
}

/// Runs one `expire_override` job in the job's transaction.
pub fn handle<'a>(job: ExpireOverride, tx: JobTx<'a>, ctx: &'a Context) -> HandlerFuture<'a> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", job.tenant_id.as_str());
        expire_override(tx.conn, ctx, tx.now, &job.tenant_id, job.override_id)
            .await
            .map(outcome)
            .map_err(job_error)
    })
}

/// Runs `expire_override`, in the caller's transaction, at `now`: the job's time, read from the
/// database in that transaction (the worker) or from a test's clock.
pub async fn expire_override(
    tx: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    tenant_id: &TenantId,
    override_id: OverrideId,
) -> Result<ActionOutcome, StoreError> {
    let tenant = tenants::lock(tx, tenant_id).await?;
    let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT status, expires_at FROM entitlement_overrides WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(override_id.0)
    .bind(tenant_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, expires_at)) = row else {
        return Ok(no_op(format!("override {override_id} does not exist")));
    };
    if status != "active" {
        return Ok(no_op(format!("override {override_id} is {status}")));
    }
    if now < expires_at {
        return Ok(ActionOutcome::NotYetDue { due_at: expires_at });
    }
    sqlx::query(
        "UPDATE entitlement_overrides SET status = 'expired', ended_at = $2, ended_by = 'job:expire_override'
          WHERE id = $1",
    )
    .bind(override_id.0)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let version = tenants::bump(tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    audit::record(
        tx,
        AuditEvent {
            tenant_id: tenant_id.as_str(),
            occurred_at: now,
            actor: "job:expire_override",
            action: "override.expired",
            subject_type: "override",
            subject_id: override_id.to_string(),
            reason: None,
            idempotency_key: None,
            details: serde_json::json!({ "expires_at": expires_at }),
            principal: &Principal::job(ExpireOverride::KIND),
        },
    )
    .await?;
    let id = override_id.to_string();
    events::announce_change(
        tx,
        ctx,
        &tenant.tenant_id,
        version,
        "override.expired",
        "override",
        &id,
        now,
    )
    .await?;
    Ok(ActionOutcome::Applied {
        tenant_version: version,
    })
}
