//! What each job does to tierflow's state — exactly once, however often the job runs.
//!
//! Each function is one savepoint on the caller's connection: lock the tenant, lock the domain
//! row the job changes, check the work is still due, apply it, record it, audit it. A job that
//! runs again (a retry after a crash between commit and ack, a duplicate delivery) finds the work
//! done or no longer wanted and returns [`ActionOutcome::NoOp`] saying why; one that runs early
//! returns [`ActionOutcome::NotYetDue`] so the worker can reschedule it.
//!
//! | job               | guard                                         | effect                                         |
//! |-------------------|-----------------------------------------------|------------------------------------------------|
//! | `voice_disable`   | transition `pending`, action `scheduled`      | action `done` (voice is off from the request on; this records the enforcement for downstream) |
//! | `sla_freeze`      | transition `pending`, action `scheduled`      | action `done` (likewise for SLA, escalation, routing) |
//! | `apply_downgrade` | transition `pending`, grace ended             | tier moved, transition `effective`, its holds lifted |
//! | `expire_override` | override `active`, `expires_at` reached       | override `expired`                             |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use tierflow_domain::ids::{OverrideId, TenantId, TierId, TransitionId};
use tierflow_domain::transition::{Action, ApplyDecision, TransitionStatus, plan_apply_downgrade};

use crate::audit::{self, AuditEvent};
use crate::error::corrupt;
use crate::{Context, StoreError, events, restrictions, tenants};

/// What a job run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ActionOutcome {
    /// The effect was applied; the tenant is now at this version.
    Applied { tenant_version: i64 },
    /// Nothing to do, and why (already done, cancelled, superseded).
    NoOp { reason: String },
    /// Too early: run again at this time.
    NotYetDue { due_at: DateTime<Utc> },
}

fn no_op(reason: impl Into<String>) -> ActionOutcome {
    ActionOutcome::NoOp {
        reason: reason.into(),
    }
}

/// Runs `voice_disable`, `sla_freeze` or `apply_downgrade` for a transition.
pub async fn run_transition_action(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    transition_id: TransitionId,
    action: Action,
) -> Result<ActionOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let now = ctx.clock.now();
    let tenant = tenants::lock(&mut tx, tenant_id).await?;
    #[derive(sqlx::FromRow)]
    struct Due {
        status: String,
        to_tier_id: String,
        grace_ends_at: Option<DateTime<Utc>>,
        action_status: Option<String>,
    }
    let row: Option<Due> = sqlx::query_as(
        "SELECT t.status, t.to_tier_id, t.grace_ends_at, a.status AS action_status
           FROM tier_transitions t
           LEFT JOIN transition_actions a ON a.transition_id = t.id AND a.action = $3
          WHERE t.id = $1 AND t.tenant_id = $2
          FOR UPDATE OF t",
    )
    .bind(transition_id.0)
    .bind(tenant_id.as_str())
    .bind(action.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Due {
        status,
        to_tier_id: to_tier,
        grace_ends_at,
        action_status,
    }) = row
    else {
        return Ok(no_op(format!("transition {transition_id} does not exist")));
    };
    let status = TransitionStatus::parse(&status).map_err(corrupt("transition status"))?;
    match action_status.as_deref() {
        Some("scheduled") => {}
        Some(done) => return Ok(no_op(format!("{action} already {done}"))),
        None => return Ok(no_op(format!("transition {transition_id} has no {action}"))),
    }
    let audit_details;
    let version = match action {
        Action::VoiceDisable | Action::SlaFreeze => {
            if status != TransitionStatus::Pending {
                return Ok(no_op(format!("transition {transition_id} is {status}")));
            }
            audit_details = serde_json::json!({ "transition_id": transition_id });
            tenant.version
        }
        Action::ApplyDowngrade => {
            let to_tier = TierId::parse(to_tier).map_err(corrupt("transition tier"))?;
            let ends = grace_ends_at.ok_or_else(|| {
                StoreError::Corrupt(format!("downgrade {transition_id} has no grace end"))
            })?;
            match plan_apply_downgrade(transition_id, status, &to_tier, ends, now) {
                ApplyDecision::NoLongerPending(s) => {
                    return Ok(no_op(format!("transition {transition_id} is {s}")));
                }
                ApplyDecision::NotYetDue(due_at) => return Ok(ActionOutcome::NotYetDue { due_at }),
                ApplyDecision::Apply { to_tier, lift } => {
                    sqlx::query(
                        "UPDATE tier_transitions SET status = 'effective', effective_at = $2 WHERE id = $1",
                    )
                    .bind(transition_id.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    restrictions::lift(&mut tx, tenant_id, &[lift]).await?;
                    let late = (now - ends).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    metrics::histogram!(crate::metrics::GRACE_LATENESS).record(late);
                    audit_details = serde_json::json!({
                        "transition_id": transition_id, "from_tier": tenant.tier_id,
                        "to_tier": to_tier, "grace_ended_at": ends,
                        "lateness_seconds": (now - ends).num_milliseconds() as f64 / 1000.0,
                    });
                    tenants::bump(&mut tx, &tenant, &to_tier, tenant.status, now).await?
                }
            }
        }
    };
    sqlx::query(
        "UPDATE transition_actions SET status = 'done', executed_at = $3
          WHERE transition_id = $1 AND action = $2",
    )
    .bind(transition_id.0)
    .bind(action.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let actor = format!("job:{action}");
    let audit_action = match action {
        Action::VoiceDisable => "action.voice_disable",
        Action::SlaFreeze => "action.sla_freeze",
        Action::ApplyDowngrade => "action.apply_downgrade",
    };
    audit::record(
        &mut tx,
        AuditEvent {
            tenant_id: tenant_id.as_str(),
            occurred_at: now,
            actor: &actor,
            action: audit_action,
            subject_type: "transition",
            subject_id: transition_id.to_string(),
            reason: None,
            idempotency_key: None,
            details: audit_details,
        },
    )
    .await?;
    // Downstream systems learn of the enforcement (voice off, SLA frozen) or the new tier.
    let id = transition_id.to_string();
    events::announce(
        &mut tx,
        ctx,
        tenant_id,
        audit_action,
        "transition",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(ActionOutcome::Applied {
        tenant_version: version,
    })
}

/// Runs `expire_override`.
pub async fn expire_override(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    override_id: OverrideId,
) -> Result<ActionOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let now = ctx.clock.now();
    let tenant = tenants::lock(&mut tx, tenant_id).await?;
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
    let version = tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    audit::record(
        &mut tx,
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
        },
    )
    .await?;
    let id = override_id.to_string();
    events::announce(
        &mut tx,
        ctx,
        tenant_id,
        "override.expired",
        "override",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(ActionOutcome::Applied {
        tenant_version: version,
    })
}
