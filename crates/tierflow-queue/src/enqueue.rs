//! Writing jobs: [`enqueue`] and [`cancel_by_keys`], always on the caller's connection.
//!
//! Both take `&mut PgConnection`; pass `&mut *tx` and the jobs commit or roll back with the
//! caller's own rows. Each call is one statement, whatever the number of jobs.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use ulid::Ulid;

use crate::{JobKey, JobState, NewJob, QueueError};

/// A job written by [`enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueuedJob {
    pub id: String,
    pub kind: String,
    pub key: Option<String>,
    pub run_at: DateTime<Utc>,
}

/// A job taken by [`cancel_by_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledJob {
    pub id: String,
    pub kind: String,
    pub key: String,
}

/// Writes `jobs` in one statement. A job whose `(kind, key)` already exists is skipped and
/// missing from the result.
pub async fn enqueue(
    conn: &mut PgConnection,
    jobs: Vec<NewJob>,
) -> Result<Vec<EnqueuedJob>, QueueError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let n = jobs.len();
    let (mut ids, mut kinds, mut payloads, mut attempts, mut run_ats, mut prios, mut keys) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for j in jobs {
        ids.push(Ulid::new().to_string());
        kinds.push(j.kind.to_owned());
        payloads.push(j.payload);
        attempts.push(j.max_attempts);
        run_ats.push(j.run_at);
        prios.push(j.priority);
        keys.push(j.key);
    }
    let rows: Vec<(String, String, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
         SELECT id, job_type, job, 'Pending', 0, max_attempts, run_at, priority, key
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int[], $5::timestamptz[], $6::int[], $7::text[])
             AS t(id, job_type, job, max_attempts, run_at, priority, key)
         ON CONFLICT (job_type, idempotency_key) DO NOTHING
         RETURNING id, job_type, idempotency_key, run_at",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&attempts)
    .bind(&run_ats)
    .bind(&prios)
    .bind(&keys)
    .fetch_all(conn)
    .await?;
    for (_, kind, _, _) in &rows {
        metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => kind.clone()).increment(1);
    }
    Ok(rows
        .into_iter()
        .map(|(id, kind, key, run_at)| EnqueuedJob {
            id,
            kind,
            key,
            run_at,
        })
        .collect())
}

/// Cancels the not-yet-started jobs with these keys (`Pending` or `Failed` awaiting retry), with
/// `reason` kept as their last result. A job already running is left alone: its handler's guard on
/// the domain row makes it a no-op.
pub async fn cancel_by_keys(
    conn: &mut PgConnection,
    keys: &[JobKey],
    reason: &str,
) -> Result<Vec<CancelledJob>, QueueError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<&str> = keys.iter().map(|k| k.kind).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "UPDATE apalis.jobs j
            SET status = $3, done_at = now(), lock_by = NULL, lock_at = NULL,
                last_result = jsonb_build_object('Err', $4::text)
           FROM unnest($1::text[], $2::text[]) AS k(job_type, key)
          WHERE j.job_type = k.job_type AND j.idempotency_key = k.key
            AND j.status = ANY($5::text[])
         RETURNING j.id, j.job_type, j.idempotency_key",
    )
    .bind(&kinds)
    .bind(&names)
    .bind(JobState::Cancelled.as_str())
    .bind(reason)
    .bind(JobState::not_started().as_slice())
    .fetch_all(conn)
    .await?;
    for (_, kind, _) in &rows {
        metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind.clone(), "outcome" => "cancelled")
            .increment(1);
    }
    Ok(rows
        .into_iter()
        .map(|(id, kind, key)| CancelledJob { id, kind, key })
        .collect())
}
