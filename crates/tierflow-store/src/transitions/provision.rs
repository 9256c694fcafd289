//! Provisioning: a new tenant's first tier, recorded as a `provision` transition, and the
//! expiry it may carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use tierflow_domain::ids::{Actor, Reason, TenantId, TierId, TransitionId};
use tierflow_domain::transition::{
    EntitlementStatus, TransitionKind, TransitionPlan, TransitionStatus,
};
use tierflow_queue::NewJob;
use uuid::Uuid;

use super::write::{Staged, Write, stage, write_plan};
use super::*;
use crate::jobs;
use crate::{Context, StoreError, events, tenants, tiers};

/// A request to give a new tenant its first tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    pub tenant_id: TenantId,
    pub tier_id: TierId,
    pub reason: Option<Reason>,
    pub requested_by: Actor,
    /// When the entitlement expires (an `expire_entitlement` job is scheduled for it).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The test clock the tenant lives by (see [`crate::test_clocks`]).
    #[serde(default)]
    pub test_clock_id: Option<Uuid>,
}

/// Creates a tenant on `tier_id`, recorded as a `provision` transition.
pub async fn provision_tenant(
    conn: &mut PgConnection,
    ctx: &Context,
    req: ProvisionRequest,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    // On a test clock, the tenant's life starts at the clock's time.
    let now = match req.test_clock_id {
        Some(id) => {
            sqlx::query_scalar("SELECT frozen_time FROM test_clocks WHERE id = $1 FOR SHARE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownTestClock(id.to_string()))?
        }
        None => ctx.clock.now(),
    };
    if let Some(at) = req.expires_at.filter(|at| *at <= now) {
        return Err(StoreError::ExpiryInPast {
            expires_at: at,
            now,
        });
    }
    let tier = tiers::get(&mut tx, &req.tier_id)
        .await?
        .ok_or_else(|| StoreError::UnknownTier(req.tier_id.to_string()))?;
    if !tier.active {
        return Err(tierflow_domain::DomainError::InactiveTier(tier.tier_id.to_string()).into());
    }
    let inserted = sqlx::query(
        "INSERT INTO tenant_entitlements
           (tenant_id, tier_id, status, effective_at, version, created_at, updated_at, expires_at, test_clock_id)
         VALUES ($1, $2, 'active', $3, 0, $3, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(req.tenant_id.as_str())
    .bind(req.tier_id.as_str())
    .bind(now)
    .bind(req.expires_at)
    .bind(req.test_clock_id)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::TenantExists(req.tenant_id.to_string()));
    }
    let tenant = tenants::lock(&mut tx, &req.tenant_id).await?;
    let plan = TransitionPlan {
        transition_id: TransitionId::new(),
        kind: TransitionKind::Provision,
        status: TransitionStatus::Effective,
        from_tier: req.tier_id.clone(),
        to_tier: req.tier_id.clone(),
        from_status: EntitlementStatus::Active,
        to_status: EntitlementStatus::Active,
        effective_at: now,
        grace_ends_at: None,
        tier_now: req.tier_id.clone(),
        supersedes: None,
        lift: vec![],
        hold: vec![],
        actions: vec![],
    };
    let w = Write {
        tenant: &tenant,
        actor: req.requested_by.as_str(),
        principal: &ctx.principal,
        reason: req.reason.as_ref().map(Reason::as_str),
        idempotency_key: None,
        now,
    };
    let staged = stage(&w, &plan)?;
    write_plan(&mut tx, &w, &plan, &staged, None).await?;
    let Staged {
        record: transition,
        mut jobs,
        ..
    } = staged;
    if let Some(expires_at) = req.expires_at {
        jobs.push(schedule_expiry(&mut tx, &tenant, expires_at).await?);
    }
    let id = transition.id.to_string();
    let (ctx, _) = tenant.time(ctx);
    let entitlement = events::announce(
        &mut tx,
        &ctx,
        &tenant.tenant_id,
        "transition.provision",
        "transition",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(TransitionOutcome {
        transition,
        jobs,
        superseded: None,
        entitlement,
        replayed: false,
    })
}

/// Schedules the `expire_entitlement` job of `tenant` for `expires_at` (parked on its test clock
/// if it has one) and returns it.
pub(crate) async fn schedule_expiry(
    conn: &mut PgConnection,
    tenant: &tenants::LockedTenant,
    expires_at: DateTime<Utc>,
) -> Result<ScheduledJob, StoreError> {
    let job = jobs::ExpireEntitlement {
        tenant_id: tenant.tenant_id.clone(),
        expires_at,
    };
    let key = job.key();
    let ids = crate::test_clocks::enqueue_for(
        conn,
        tenant.clock.as_ref(),
        &tenant.tenant_id,
        vec![NewJob::new(&job, expires_at)?.with_key(key)],
    )
    .await?;
    let job_id = ids.into_iter().next().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the expiry job of tenant '{}' at {expires_at} already existed",
            tenant.tenant_id
        ))
    })?;
    Ok(ScheduledJob {
        kind: <jobs::ExpireEntitlement as tierflow_queue::Job>::KIND.to_owned(),
        job_id,
        due_at: expires_at,
    })
}
