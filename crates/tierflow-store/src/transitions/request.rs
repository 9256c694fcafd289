//! Requesting a transition: lock the tenant and read what the request needs, plan, write,
//! announce (the steps of the module doc of [`super`]).

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tierflow_domain::effective::{EffectiveEntitlement, EntitlementState, effective_entitlement};
use tierflow_domain::ids::{IdempotencyKey, Reason, TransitionId};
use tierflow_domain::restriction::{Hold, RestrictionSource};
use tierflow_domain::transition::{
    CurrentState, EntitlementStatus, PendingDowngrade, Target, TransitionPlan, TransitionStatus,
    plan_transition,
};

use super::cancel::cancel_pending;
use super::write::{Remember, Write, audit_action, park_staged, stage, write_plan};
use super::*;
use crate::rows::TransitionRecord;
use crate::{Context, StoreError, events, idempotency, tenants};

/// Requests a transition inside the caller's transaction (see the module doc for the steps).
pub async fn request_transition(
    conn: &mut PgConnection,
    ctx: &Context,
    req: TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    // A savepoint: an error rolls back this request and leaves the caller's transaction usable.
    commit_request(conn.begin().await?, ctx, &req).await
}

/// Requests a transition in a transaction of its own, committed before it returns — for callers
/// that have no transaction to join (the HTTP API). Same steps and guarantees as
/// [`request_transition`], two round trips fewer: no savepoint is needed, since an error drops
/// the whole transaction.
pub async fn submit_transition(
    pool: &sqlx::PgPool,
    ctx: &Context,
    req: TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    commit_request(pool.begin_with(BEGIN_GENERIC_PLANS).await?, ctx, &req).await
}

/// Starts a request's own transaction with generic plans for its prepared statements, in the
/// same round trip. A request's statements are few and large (a lock with seven subqueries, a
/// write with eight data-modifying `WITH` items over parameter arrays), and PostgreSQL's default
/// (`plan_cache_mode = auto`) kept choosing a custom plan for them — planning them anew on every
/// execution. Every lookup in them is by key or by a literal status, so one generic plan serves
/// every request: the HTTP section of `tierflow bench --only enqueue` went from 1,260–1,284 to
/// 1,437–1,485 requests/s in alternating runs (docs/performance.md). (`request_transition` joins
/// a caller's transaction and leaves its settings alone.)
const BEGIN_GENERIC_PLANS: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// Runs the request in `tx` (a transaction or a savepoint), counts its outcome, and commits it
/// if it succeeded.
async fn commit_request(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    ctx: &Context,
    req: &TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    let result = request_in(&mut tx, ctx, req).await;
    count(&result);
    let outcome = result?;
    tx.commit().await?;
    Ok(outcome)
}

/// Counts a request's outcome in `tierflow_transitions_total`.
fn count(result: &Result<TransitionOutcome, StoreError>) {
    let (kind, outcome) = match result {
        Ok(o) if o.replayed => (o.transition.kind.as_str(), "replayed"),
        Ok(o) => (o.transition.kind.as_str(), "accepted"),
        Err(e) if e.is_caller_error() => ("unknown", "refused"),
        Err(_) => ("unknown", "failed"),
    };
    metrics::counter!(crate::metrics::TRANSITIONS, "kind" => kind, "outcome" => outcome)
        .increment(1);
}

async fn request_in(
    conn: &mut PgConnection,
    ctx: &Context,
    req: &TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    let target_tier = match &req.target {
        Target::Tier(id) => Some(id),
        Target::Suspend | Target::Reactivate => None,
    };
    let key = req.idempotency_key.as_ref().map(IdempotencyKey::as_str);
    let mut read = tenants::lock_for_change(conn, &req.tenant_id, target_tier, key).await?;
    // A test-clock tenant's change happens at its clock's time.
    let (ctx, now) = read.tenant.time(ctx);
    let ctx = &*ctx;
    let tenant = &read.tenant;
    let fingerprint = match key {
        Some(key) => {
            let fp = idempotency::fingerprint(OP_TRANSITION, req)?;
            let prior: Option<TransitionOutcome> =
                idempotency::check(read.prior.take(), key, OP_TRANSITION, &fp)?;
            if let Some(mut prior) = prior {
                prior.replayed = true;
                return Ok(prior);
            }
            Some(fp)
        }
        None => None,
    };

    if let (Some(id), None) = (target_tier, &read.target) {
        return Err(StoreError::UnknownTier(id.to_string()));
    }
    let pending_downgrade = read.pending.as_ref().and_then(TransitionRecord::as_pending);
    let plan = plan_transition(
        TransitionId::new(),
        CurrentState {
            tier: &read.current,
            status: tenant.status,
            pending: pending_downgrade.as_ref(),
        },
        &req.target,
        read.target.as_ref(),
        req.grace.unwrap_or(ctx.default_grace),
        now,
    )?;

    let write = Write {
        tenant,
        actor: req.requested_by.as_str(),
        principal: &ctx.principal,
        reason: req.reason.as_ref().map(Reason::as_str),
        idempotency_key: key,
        now,
    };
    let superseded = match plan.supersedes {
        Some(old) => Some(cancel_pending(conn, &write, old, Some(plan.transition_id)).await?),
        None => None,
    };
    // Everything the response says is known before the write, so the write can also store it
    // under the idempotency key.
    let staged = stage(&write, &plan)?;
    let outcome = TransitionOutcome {
        transition: staged.record.clone(),
        jobs: staged.jobs.clone(),
        superseded,
        entitlement: entitlement_after(&read, pending_downgrade.as_ref(), &plan, now)?,
        replayed: false,
    };
    let remember = match fingerprint {
        Some(fingerprint) => Some(Remember {
            fingerprint,
            response: serde_json::to_value(&outcome)
                .map_err(|e| StoreError::Corrupt(format!("response does not encode: {e}")))?,
        }),
        None => None,
    };
    write_plan(conn, &write, &plan, &staged, remember.as_ref()).await?;
    park_staged(conn, tenant, &staged).await?;
    let id = outcome.transition.id.to_string();
    let action = audit_action(plan.kind);
    events::emit(
        conn,
        ctx,
        action,
        "transition",
        &id,
        &outcome.entitlement,
        now,
    )
    .await?;
    Ok(outcome)
}

/// The tenant's effective entitlement once `plan` is written, computed from what
/// [`tenants::lock_for_change`] read (the lock keeps it current) rather than read back: the
/// same fold [`tenants::effective`] applies to the same rows as `write_plan` leaves them.
fn entitlement_after(
    read: &tenants::ChangeContext,
    pending: Option<&PendingDowngrade>,
    plan: &TransitionPlan,
    now: DateTime<Utc>,
) -> Result<EffectiveEntitlement, StoreError> {
    let tenant = &read.tenant;
    let tier = match &read.target {
        Some(t) if t.tier_id == plan.tier_now => t,
        _ if read.current.tier_id == plan.tier_now => &read.current,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "plan moves tenant '{}' to tier '{}', which was not read",
                tenant.tenant_id, plan.tier_now
            )));
        }
    };
    let superseded = plan.supersedes.map(RestrictionSource::PendingDowngrade);
    let mut holds: Vec<Hold> = read
        .holds
        .iter()
        .filter(|h| !plan.lift.contains(&h.source) && Some(&h.source) != superseded.as_ref())
        .cloned()
        .collect();
    for h in &plan.hold {
        if !holds.contains(h) {
            holds.push(h.clone());
        }
    }
    let new_pending = match (plan.status, plan.grace_ends_at) {
        (TransitionStatus::Pending, Some(grace_ends_at)) => Some(PendingDowngrade {
            transition_id: plan.transition_id,
            to_tier: plan.to_tier.clone(),
            grace_ends_at,
        }),
        _ => None,
    };
    let pending = match (&new_pending, plan.supersedes) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => pending,
    };
    let changed = tenant.tier_id != plan.tier_now || tenant.status != plan.to_status;
    Ok(effective_entitlement(
        &EntitlementState {
            tenant_id: &tenant.tenant_id,
            tier,
            status: plan.to_status,
            effective_at: if changed { now } else { read.effective_at },
            // Reactivating an expired entitlement clears its expiry (as `write_plan` does).
            expires_at: if tenant.status == EntitlementStatus::Expired
                && plan.to_status != EntitlementStatus::Expired
            {
                None
            } else {
                tenant.expires_at
            },
            version: tenant.version + 1,
            pending,
            holds: &holds,
            overrides: &read.overrides,
        },
        now,
    ))
}
