//! `expire_entitlement`: ends a tenant's entitlement at its `expires_at` (a trial, a fixed-term
//! contract). Due at the expiry. The tenant's status becomes `expired` and all four restrictions
//! are held by the source `expiry` (its other sources stay); reactivation lifts them and clears
//! the expiry; tier changes are refused while expired. A run for an expiry that was moved or
//! cleared since it was scheduled, or for a tenant already expired, does nothing; an early run
//! waits for the expiry.
//!
//! Tables: `tenant_entitlements`, `tenant_restrictions`, `audit_events`, `deliver_event` jobs.
//! Proven by `crates/tierflow-store/tests/lifecycle.rs`:
//! `an_entitlement_expires_at_its_time_and_reactivation_ends_it`, and on a test clock by
//! `tests/e2e/record.rs`: `a_test_clock_runs_a_tenants_grace_and_expiries_in_order`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tierflow_domain::ids::TenantId;
use tierflow_domain::transition::{ExpiryDecision, plan_expiry};
use tierflow_queue::{HandlerFuture, Job, JobTx};

use super::{ActionOutcome, job_error, no_op, outcome};
use crate::audit::{self, AuditEvent, Principal};
use crate::{Context, StoreError, events, tenants};

/// Expire a tenant's entitlement at `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireEntitlement {
    pub tenant_id: TenantId,
    /// The expiry this job was scheduled for; a moved expiry has a job of its own.
    pub expires_at: DateTime<Utc>,
}

impl Job for ExpireEntitlement {
    const KIND: &'static str = "expire_entitlement";
    const MAX_ATTEMPTS: i32 = 20;
    // Rare and quick (one tenant each): a slot per worker keeps its share of the connection
    // budget at one.
    const MAX_CONCURRENCY: usize = 1;
}

impl ExpireEntitlement {
    /// The job's key: one per tenant and expiry.
    pub fn key(&self) -> String {
        format!(
            "expiry:{}@{}",
            self.tenant_id,
            self.expires_at.timestamp_micros()
        )
    }
}

/// Runs one `expire_entitlement` job in the job's transaction.
pub fn handle<'a>(job: ExpireEntitlement, tx: JobTx<'a>, ctx: &'a Context) -> HandlerFuture<'a> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", job.tenant_id.as_str());
        expire_entitlement(tx.conn, ctx, tx.now, &job.tenant_id, job.expires_at)
            .await
            .map(outcome)
            .map_err(job_error)
    })
}

/// Runs `expire_entitlement` in the caller's transaction at `now`.
pub async fn expire_entitlement(
    tx: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    tenant_id: &TenantId,
    scheduled: DateTime<Utc>,
) -> Result<ActionOutcome, StoreError> {
    let tenant = tenants::lock(tx, tenant_id).await?;
    let hold = match plan_expiry(tenant.status, tenant.expires_at, scheduled, now) {
        ExpiryDecision::Moot(why) => return Ok(no_op(why)),
        ExpiryDecision::NotYetDue(at) => return Ok(ActionOutcome::NotYetDue { due_at: at }),
        ExpiryDecision::Expire { hold } => hold,
    };
    let flags: Vec<&str> = hold.iter().map(|h| h.restriction.as_str()).collect();
    let source = hold.first().map(|h| h.source.key()).unwrap_or_default();
    sqlx::query(
        "INSERT INTO tenant_restrictions (tenant_id, source, restriction, created_at)
         SELECT $1, $2, r, $3 FROM unnest($4::text[]) AS r ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id.as_str())
    .bind(&source)
    .bind(now)
    .bind(&flags)
    .execute(&mut *tx)
    .await?;
    let version = tenants::bump(
        tx,
        &tenant,
        &tenant.tier_id,
        tierflow_domain::transition::EntitlementStatus::Expired,
        now,
    )
    .await?;
    let principal = Principal::job(ExpireEntitlement::KIND);
    audit::record(
        tx,
        AuditEvent {
            tenant_id: tenant_id.as_str(),
            occurred_at: now,
            actor: &principal.name,
            action: "entitlement.expired",
            subject_type: "tenant",
            subject_id: tenant_id.to_string(),
            reason: None,
            idempotency_key: None,
            details: serde_json::json!({
                "expires_at": scheduled, "from_status": tenant.status, "held": flags,
            }),
            principal: &principal,
        },
    )
    .await?;
    events::announce_change(
        tx,
        ctx,
        &tenant.tenant_id,
        version,
        "entitlement.expired",
        "tenant",
        // Unique even for a tenant id reused after its test clock was deleted.
        &format!("{tenant_id}@{version}.{}", uuid::Uuid::now_v7()),
        now,
    )
    .await?;
    Ok(ActionOutcome::Applied {
        tenant_version: version,
    })
}
