//! Temporary limit overrides: create (with its `expire_override` job) and remove.
//!
//! Both follow [`crate::request_transition`]'s pattern: a savepoint on the caller's connection,
//! the tenant lock first, an optional idempotency key, the job written in the same transaction,
//! an audit row. A new override for a type that already has an active one replaces it (the old
//! one ends as `replaced` and its expiry job is cancelled).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use tierflow_domain::effective::EffectiveEntitlement;
use tierflow_domain::ids::{Actor, IdempotencyKey, OverrideId, Reason, TenantId};
use tierflow_domain::limit_override::{
    EntitlementType, LimitOverride, OverrideReason, check_expiry, check_limit,
};
use tierflow_queue::{NewJob, cancel_by_keys};

use crate::audit::{self, AuditEvent};
use crate::jobs::{ExpireOverride, override_key};
use crate::rows::{OverrideRow, override_columns};
use crate::{Context, StoreError, events, idempotency, tenants, tiers};

/// A request for a temporary limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideRequest {
    pub tenant_id: TenantId,
    pub entitlement_type: EntitlementType,
    pub override_limit: i64,
    pub reason: OverrideReason,
    pub granted_by: Actor,
    pub expires_at: DateTime<Utc>,
    pub note: Option<Reason>,
    #[serde(skip)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What creating an override did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverrideOutcome {
    pub r#override: LimitOverride,
    /// The job that ends the override at `expires_at`.
    pub expiry_job_id: String,
    /// The active override of the same type this one replaced.
    pub replaced: Option<OverrideId>,
    pub entitlement: EffectiveEntitlement,
    /// True when this is the stored result of an earlier request with the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

const OP_OVERRIDE: &str = "override";

/// Grants a temporary limit and schedules its expiry.
pub async fn create_override(
    conn: &mut PgConnection,
    ctx: &Context,
    req: OverrideRequest,
) -> Result<OverrideOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = tenants::lock(&mut tx, &req.tenant_id).await?;
    // A test-clock tenant changes at its clock\'s time.
    let (ctx, now) = tenant.time(ctx);
    let ctx = &*ctx;
    let fp = match &req.idempotency_key {
        Some(key) => {
            let fp = idempotency::fingerprint(OP_OVERRIDE, &req)?;
            let t = tenant.tenant_id.as_str();
            let prior: Option<OverrideOutcome> =
                idempotency::lookup(&mut tx, t, key.as_str(), OP_OVERRIDE, &fp).await?;
            if let Some(mut prior) = prior {
                prior.replayed = true;
                return Ok(prior);
            }
            Some(fp)
        }
        None => None,
    };
    check_expiry(req.expires_at, now)?;
    check_limit(req.override_limit)?;
    let tier = tiers::get(&mut tx, &tenant.tier_id).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("tenant on missing tier '{}'", tenant.tier_id))
    })?;
    let ty = req.entitlement_type;
    let original_limit = tier.limits.get(ty.as_str()).copied().flatten();

    let replaced: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE entitlement_overrides SET status = 'replaced', ended_at = $3, ended_by = $4
          WHERE tenant_id = $1 AND entitlement_type = $2 AND status = 'active'
         RETURNING id",
    )
    .bind(tenant.tenant_id.as_str())
    .bind(ty.as_str())
    .bind(now)
    .bind(req.granted_by.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let replaced = replaced.map(OverrideId);
    if let Some(old) = replaced {
        cancel_by_keys(
            &mut tx,
            &[override_key(old)],
            "cancelled: override replaced",
        )
        .await?;
    }

    let o = LimitOverride {
        override_id: OverrideId::new(),
        entitlement_type: ty,
        original_limit,
        override_limit: req.override_limit,
        reason: req.reason,
        granted_by: req.granted_by.clone(),
        created_at: now,
        expires_at: req.expires_at,
    };
    sqlx::query(
        "INSERT INTO entitlement_overrides
           (id, tenant_id, entitlement_type, original_limit, override_limit, reason, granted_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(o.override_id.0)
    .bind(tenant.tenant_id.as_str())
    .bind(ty.as_str())
    .bind(o.original_limit)
    .bind(o.override_limit)
    .bind(o.reason.as_str())
    .bind(o.granted_by.as_str())
    .bind(now)
    .bind(o.expires_at)
    .execute(&mut *tx)
    .await?;
    let payload = ExpireOverride {
        tenant_id: tenant.tenant_id.clone(),
        override_id: o.override_id,
    };
    let key = override_key(o.override_id);
    let job = NewJob::new(&payload, o.expires_at)?.with_key(key.key);
    let expiry_job_id = crate::test_clocks::enqueue_for(
        &mut tx,
        tenant.clock.as_ref(),
        &tenant.tenant_id,
        vec![job],
    )
    .await?
    .pop()
    .ok_or_else(|| {
        StoreError::Corrupt(format!("expiry job of {} already existed", o.override_id))
    })?;
    tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    audit::record(
        &mut tx,
        AuditEvent {
            tenant_id: tenant.tenant_id.as_str(),
            occurred_at: now,
            actor: req.granted_by.as_str(),
            action: "override.created",
            subject_type: "override",
            subject_id: o.override_id.to_string(),
            reason: req.note.as_ref().map(Reason::as_str),
            idempotency_key: req.idempotency_key.as_ref().map(IdempotencyKey::as_str),
            details: serde_json::json!({
                "entitlement_type": ty.as_str(), "original_limit": o.original_limit,
                "override_limit": o.override_limit, "reason": o.reason.as_str(),
                "expires_at": o.expires_at, "replaced": replaced, "expiry_job_id": expiry_job_id,
            }),
            principal: &ctx.principal,
        },
    )
    .await?;
    let id = o.override_id.to_string();
    let entitlement = events::announce(
        &mut tx,
        ctx,
        &tenant.tenant_id,
        "override.created",
        "override",
        &id,
        now,
    )
    .await?;
    let outcome = OverrideOutcome {
        r#override: o,
        expiry_job_id,
        replaced,
        entitlement,
        replayed: false,
    };
    if let (Some(key), Some(fp)) = (&req.idempotency_key, fp) {
        let t = tenant.tenant_id.as_str();
        idempotency::save(&mut tx, t, key.as_str(), OP_OVERRIDE, &fp, &outcome, now).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// What removing an override did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoveOutcome {
    pub override_id: OverrideId,
    /// The expiry job cancelled with it.
    pub cancelled_job: Option<String>,
    pub entitlement: EffectiveEntitlement,
}

/// Ends an active override now and cancels its expiry job.
pub async fn remove_override(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    override_id: OverrideId,
    actor: &Actor,
    reason: Option<&Reason>,
) -> Result<RemoveOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = tenants::lock(&mut tx, tenant_id).await?;
    // A test-clock tenant changes at its clock\'s time.
    let (ctx, now) = tenant.time(ctx);
    let ctx = &*ctx;
    let status: Option<String> = sqlx::query_scalar(
        "SELECT status FROM entitlement_overrides WHERE id = $1 AND tenant_id = $2",
    )
    .bind(override_id.0)
    .bind(tenant_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    match status.as_deref() {
        None => return Err(StoreError::UnknownOverride(override_id.to_string())),
        Some("active") => {}
        Some(other) => {
            return Err(StoreError::OverrideNotActive {
                id: override_id.to_string(),
                status: other.to_owned(),
            });
        }
    }
    sqlx::query(
        "UPDATE entitlement_overrides SET status = 'removed', ended_at = $2, ended_by = $3 WHERE id = $1",
    )
    .bind(override_id.0)
    .bind(now)
    .bind(actor.as_str())
    .execute(&mut *tx)
    .await?;
    let cancelled = cancel_by_keys(
        &mut tx,
        &[override_key(override_id)],
        "cancelled: override removed",
    )
    .await?
    .pop()
    .map(|j| j.id);
    tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    audit::record(
        &mut tx,
        AuditEvent {
            tenant_id: tenant_id.as_str(),
            occurred_at: now,
            actor: actor.as_str(),
            action: "override.removed",
            subject_type: "override",
            subject_id: override_id.to_string(),
            reason: reason.map(Reason::as_str),
            idempotency_key: None,
            details: serde_json::json!({ "cancelled_job": cancelled }),
            principal: &ctx.principal,
        },
    )
    .await?;
    let id = override_id.to_string();
    let entitlement = events::announce(
        &mut tx,
        ctx,
        tenant_id,
        "override.removed",
        "override",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(RemoveOutcome {
        override_id,
        cancelled_job: cancelled,
        entitlement,
    })
}

/// One of the tenant's overrides with its status (`active`, `expired`, `removed`, `replaced`).
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: OverrideId,
) -> Result<Option<(LimitOverride, String)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct WithStatus {
        #[sqlx(flatten)]
        row: OverrideRow,
        status: String,
    }
    let row: Option<WithStatus> = sqlx::query_as(concat!(
        "SELECT ",
        override_columns!(),
        ", status FROM entitlement_overrides WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(id.0)
    .bind(tenant_id.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok((LimitOverride::try_from(r.row)?, r.status)))
        .transpose()
}
