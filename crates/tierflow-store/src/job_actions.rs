//! What an operator does to one job — re-drive it, cancel it — as audited changes.
//!
//! The queue's [`tierflow_queue::admin`] moves the row; this module adds what tierflow requires of
//! every change: the refusal the domain imposes (a pending transition's own jobs are cancelled
//! through the transition, never alone) and an audit row with the principal, written in the same
//! transaction as the move, so a re-drive that happened is always in the trail and a refused one
//! never is. The API's `POST /v1/jobs/{id}/retry|cancel` and the operator console both come here.
//!
//! A job concerns the queue rather than one tenant, so its audit row has no tenant (like a tier
//! edit): `action` is `job.redriven` or `job.cancelled`, `subject_type` `job`, `subject_id` the
//! job's id, and `details` the kind, key and the state it left.

use sqlx::{Connection, PgConnection};
use tierflow_queue::admin::{self, AdminRefusal, JobRow};

use crate::audit::audit_columns;
use crate::{Context, StoreError};

/// Why a re-drive or cancel was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobActionRefusal {
    /// No job with that id.
    NotFound,
    /// The job is in a state the action does not apply to (its stored status).
    WrongState(String),
    /// The job carries out a pending transition: cancel the transition instead (the message
    /// says how).
    OwnedByTransition(String),
}

/// Re-drives a dead or cancelled job (due now, fresh attempts) and audits it as `job.redriven`.
pub async fn redrive(
    conn: &mut PgConnection,
    ctx: &Context,
    id: &str,
) -> Result<Result<JobRow, JobActionRefusal>, StoreError> {
    let mut tx = conn.begin().await?;
    let before = admin::get(&mut tx, id).await?;
    let moved = admin::retry(&mut tx, id).await?;
    let out = finish(&mut tx, ctx, "job.redriven", before, moved).await?;
    tx.commit().await?;
    Ok(out)
}

/// Cancels a job that has not started and audits it as `job.cancelled`; refuses a pending
/// transition's own jobs ([`crate::jobs::cancel_refusal`]).
pub async fn cancel(
    conn: &mut PgConnection,
    ctx: &Context,
    id: &str,
) -> Result<Result<JobRow, JobActionRefusal>, StoreError> {
    let mut tx = conn.begin().await?;
    let before = admin::get(&mut tx, id).await?;
    if let Some(job) = &before
        && let Some(why) = crate::jobs::cancel_refusal(&mut tx, &job.id).await?
    {
        return Ok(Err(JobActionRefusal::OwnedByTransition(why)));
    }
    let moved = admin::cancel(&mut tx, id).await?;
    let out = finish(&mut tx, ctx, "job.cancelled", before, moved).await?;
    tx.commit().await?;
    Ok(out)
}

async fn finish(
    tx: &mut PgConnection,
    ctx: &Context,
    action: &str,
    before: Option<JobRow>,
    moved: Result<JobRow, AdminRefusal>,
) -> Result<Result<JobRow, JobActionRefusal>, StoreError> {
    let row = match moved {
        Ok(row) => row,
        Err(AdminRefusal::NotFound) => return Ok(Err(JobActionRefusal::NotFound)),
        Err(AdminRefusal::WrongState(s)) => return Ok(Err(JobActionRefusal::WrongState(s))),
    };
    let details = serde_json::json!({
        "kind": row.kind,
        "key": row.key,
        "from_status": before.map(|b| b.status),
        "to_status": row.status,
    });
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES (NULL, $1, $2, $3, 'job', $4, NULL, NULL, $5, $6, $7)"
    ))
    .bind(ctx.clock.now())
    .bind(ctx.principal.name.as_str())
    .bind(action)
    .bind(&row.id)
    .bind(&details)
    .bind(ctx.principal.name.as_str())
    .bind(ctx.principal.role.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(Ok(row))
}
