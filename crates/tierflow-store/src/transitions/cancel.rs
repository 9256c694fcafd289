//! Cancelling a pending downgrade: on request ([`cancel_transition`]) or when a new request
//! supersedes it ([`cancel_pending`]).

use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, Row};
use tierflow_domain::effective::EffectiveEntitlement;
use tierflow_domain::ids::{Actor, Reason, TenantId, TransitionId};
use tierflow_domain::restriction::RestrictionSource;
use tierflow_domain::transition::TransitionStatus;
use tierflow_queue::{JobState, count_cancelled};

use super::write::Write;
use super::*;
use crate::audit::audit_columns;
use crate::rows::TransitionRecord;
use crate::{Context, StoreError, events, tenants};

/// Cancels a pending downgrade: its row, its holds, its scheduled actions and not-yet-run jobs.
/// The caller bumps the tenant's version in the same transaction (as every change under the
/// tenant lock must: [`tenants::lock_for_change`] relies on it).
pub(super) async fn cancel_pending(
    conn: &mut PgConnection,
    w: &Write<'_>,
    id: TransitionId,
    by: Option<TransitionId>,
) -> Result<Superseded, StoreError> {
    let why = match by {
        Some(by) => format!("cancelled: transition {id} superseded by {by}"),
        None => format!("cancelled: transition {id} cancelled"),
    };
    let details = serde_json::json!({ "cancelled_by": by });
    let audit = w.audit("transition.cancelled", id.to_string(), details);
    // The not-yet-run jobs, the transition, its holds, its scheduled actions and the audit row
    // (which lists the jobs cancelled) in one statement. The jobs are found by the ids their
    // action rows hold (transition jobs carry no key: `write::action_jobs`); every statement
    // item reads the actions as they were before this one, so the `actions` update does not
    // hide them.
    let q = sqlx::query(concat!(
        "WITH dropped AS (
            UPDATE apalis.jobs j
               SET status = $17, done_at = now(), lock_by = NULL, lock_at = NULL,
                   last_result = jsonb_build_object('Err', $15::text)
              FROM transition_actions a
             WHERE a.transition_id = $1 AND j.id = a.job_id AND j.status = ANY($16::text[])
            RETURNING j.id, j.job_type),
         cancelled AS (
            UPDATE tier_transitions SET status = 'cancelled', cancelled_at = $2, cancelled_by = $3
             WHERE id = $1 AND status = 'pending'),
         lifted AS (
            DELETE FROM tenant_restrictions WHERE tenant_id = $4 AND source = $5),
         actions AS (
            UPDATE transition_actions SET status = 'cancelled'
             WHERE transition_id = $1 AND status = 'scheduled'),
         audited AS (
            INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($4, $2, $6, $7, $8, $9, $10, $11, $12::jsonb || jsonb_build_object(
                'cancelled_jobs', (SELECT coalesce(jsonb_agg(id ORDER BY id), '[]'::jsonb) FROM dropped)), $13, $14))
         SELECT coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(job_type ORDER BY id), '{}')
           FROM dropped"
    ))
    .bind(id.0)
    .bind(w.now)
    .bind(by.map(|b| b.0))
    .bind(w.tenant.tenant_id.as_str())
    .bind(RestrictionSource::PendingDowngrade(id).key());
    let row = audit
        .bind_own(q)
        .bind(&why)
        .bind(JobState::not_started().to_vec())
        .bind(JobState::Cancelled.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let (cancelled_jobs, kinds): (Vec<String>, Vec<String>) = (row.try_get(0)?, row.try_get(1)?);
    count_cancelled(kinds.iter().map(String::as_str));
    Ok(Superseded {
        transition_id: id,
        cancelled_jobs,
    })
}

/// What cancelling a pending transition did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelOutcome {
    pub transition: TransitionRecord,
    /// Ids of the jobs cancelled before they ran.
    pub cancelled_jobs: Vec<String>,
    pub entitlement: EffectiveEntitlement,
}

/// Cancels a pending downgrade on request: the tenant keeps its tier and the downgrade's holds
/// are lifted.
pub async fn cancel_transition(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    transition_id: TransitionId,
    actor: &Actor,
    reason: Option<&Reason>,
) -> Result<CancelOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = tenants::lock(&mut tx, tenant_id).await?;
    let (ctx, now) = tenant.time(ctx);
    let ctx = &*ctx;
    let record = get(&mut tx, tenant_id, transition_id)
        .await?
        .ok_or_else(|| StoreError::UnknownTransition(transition_id.to_string()))?;
    if record.status != TransitionStatus::Pending {
        return Err(StoreError::TransitionNotPending {
            id: transition_id.to_string(),
            status: record.status.to_string(),
        });
    }
    let w = Write {
        tenant: &tenant,
        actor: actor.as_str(),
        principal: &ctx.principal,
        reason: reason.map(Reason::as_str),
        idempotency_key: None,
        now,
    };
    let superseded = cancel_pending(&mut tx, &w, transition_id, None).await?;
    tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    let transition = get(&mut tx, tenant_id, transition_id)
        .await?
        .ok_or_else(|| StoreError::UnknownTransition(transition_id.to_string()))?;
    let id = transition_id.to_string();
    let entitlement = events::announce(
        &mut tx,
        ctx,
        tenant_id,
        "transition.cancelled",
        "transition",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(CancelOutcome {
        transition,
        cancelled_jobs: superseded.cancelled_jobs,
        entitlement,
    })
}
