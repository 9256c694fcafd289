//! What operators do with jobs: count them, list them, list the dead, re-drive, cancel.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::{JobState, QueueError};

/// One job as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobRow {
    /// A ULID for the jobs tierflow writes.
    #[schema(example = "01JDQ3V5Z8K2M4N6P8R0S2T4V6")]
    pub id: String,
    /// The job kind's name (snake_case).
    #[schema(example = "apply_downgrade")]
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub status: JobState,
    /// Attempts made so far.
    pub attempts: i32,
    pub max_attempts: i32,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    /// The worker holding it while it runs.
    pub lock_by: Option<String>,
    /// Its dedup key, if it has one (`override:<id>`, …).
    pub key: Option<String>,
    /// The last result: `{"Ok": …}` or `{"Err": …}`.
    pub last_result: Option<serde_json::Value>,
}

/// Jobs by kind and state; `due` separates claimable `Pending` jobs from scheduled ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StatsRow {
    pub kind: String,
    pub state: String,
    pub jobs: i64,
}

/// Job counts by kind and state (`due`, `scheduled`, `retrying`, `running`, `done`, `dead`,
/// `cancelled`).
pub async fn stats(conn: &mut PgConnection) -> Result<Vec<StatsRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT job_type AS kind,
                CASE WHEN status = 'Pending' AND run_at <= now() THEN 'due'
                     WHEN status = 'Pending' THEN 'scheduled'
                     WHEN status = 'Failed' THEN 'retrying'
                     ELSE lower(status) END AS state,
                count(*) AS jobs
           FROM apalis.jobs GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await?)
}

/// Jobs filtered by stored status and kind, most recently due first.
pub async fn list(
    conn: &mut PgConnection,
    status: Option<&str>,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<JobRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT id, job_type AS kind, status, attempts, max_attempts, run_at, done_at, lock_by,
                idempotency_key AS key, last_result
           FROM apalis.jobs
          WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR job_type = $2)
          ORDER BY run_at DESC LIMIT $3",
    )
    .bind(status)
    .bind(kind)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// One job.
pub async fn get(conn: &mut PgConnection, id: &str) -> Result<Option<JobRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT id, job_type AS kind, status, attempts, max_attempts, run_at, done_at, lock_by,
                idempotency_key AS key, last_result
           FROM apalis.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Why a re-drive or cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRefusal {
    NotFound,
    /// The job is in a state the action does not apply to.
    WrongState(String),
}

/// Re-drives a dead (or cancelled) job: due now, with a fresh set of attempts.
pub async fn retry(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Result<JobRow, AdminRefusal>, QueueError> {
    let updated: Option<JobRow> = sqlx::query_as(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), done_at = NULL,
                lock_by = NULL, lock_at = NULL
          WHERE id = $1 AND status IN ('Dead', 'Cancelled')
         RETURNING id, job_type AS kind, status, attempts, max_attempts, run_at, done_at, lock_by,
                   idempotency_key AS key, last_result",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    refusal_or(conn, id, updated).await
}

/// Cancels a job that has not started (`Pending` or `Failed` awaiting retry).
pub async fn cancel(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Result<JobRow, AdminRefusal>, QueueError> {
    let updated: Option<JobRow> = sqlx::query_as(
        "UPDATE apalis.jobs SET status = 'Cancelled', done_at = now(),
                last_result = jsonb_build_object('Err', 'cancelled by an operator')
          WHERE id = $1 AND status IN ('Pending', 'Failed')
         RETURNING id, job_type AS kind, status, attempts, max_attempts, run_at, done_at, lock_by,
                   idempotency_key AS key, last_result",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    refusal_or(conn, id, updated).await
}

async fn refusal_or(
    conn: &mut PgConnection,
    id: &str,
    updated: Option<JobRow>,
) -> Result<Result<JobRow, AdminRefusal>, QueueError> {
    if let Some(row) = updated {
        return Ok(Ok(row));
    }
    Ok(Err(match get(conn, id).await? {
        None => AdminRefusal::NotFound,
        Some(row) => AdminRefusal::WrongState(row.status.to_string()),
    }))
}

/// Records job `id` done with `result`, in the caller's transaction, for a job run outside a
/// worker (a test clock's advance runs its tenants' parked jobs itself): only a job no worker
/// holds (`Pending` or `Failed`) is completed; returns whether it was.
pub async fn complete_outside_worker(
    conn: &mut PgConnection,
    id: &str,
    result: &str,
) -> Result<bool, QueueError> {
    let done = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now(), attempts = attempts + 1,
                lock_by = NULL, lock_at = NULL, last_result = jsonb_build_object('Ok', $2::text)
          WHERE id = $1 AND status IN ('Pending', 'Failed')",
    )
    .bind(id)
    .bind(result)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
