//! Writing jobs: [`enqueue`] and [`cancel_by_keys`], always on the caller's connection, and
//! [`insert_jobs!`] + [`JobRows`] and [`cancel_jobs!`] + [`CancelKeys`] for a caller that writes
//! or cancels its jobs inside a statement of its own.
//!
//! Both take `&mut PgConnection`; pass `&mut *tx` and the jobs commit or roll back with the
//! caller's own rows. Each call is one statement, whatever the number of jobs.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
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

/// The `INSERT` of a [`JobRows`] batch into `apalis.jobs`, for use as a data-modifying `WITH`
/// item inside a caller's own statement (so its jobs cost no round trip of their own), or alone
/// as [`enqueue()`] uses it. The arguments are the seven placeholders, in [`JobRows::bind`]'s
/// order: `insert_jobs!("$1", "$2", "$3", "$4", "$5", "$6", "$7")`. A job whose
/// `(kind, key)` already exists is skipped; each written job returns its id, kind, key and due
/// time.
#[macro_export]
macro_rules! insert_jobs {
    ($ids:literal, $kinds:literal, $payloads:literal, $max_attempts:literal, $run_ats:literal, $prios:literal, $keys:literal) => {
        concat!(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, idempotency_key)
             SELECT id, job_type, job, 'Pending', 0, max_attempts, run_at, priority, key
               FROM unnest(", $ids, "::text[], ", $kinds, "::text[], ", $payloads, "::bytea[], ",
            $max_attempts, "::int[], ", $run_ats, "::timestamptz[], ", $prios, "::int[], ", $keys, "::text[])
                 AS t(id, job_type, job, max_attempts, run_at, priority, key)
             ON CONFLICT (job_type, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id, job_type, idempotency_key, run_at"
        )
    };
}

/// Jobs as the columns of one [`insert_jobs!`], their ids chosen here (ULIDs) so that the caller
/// knows them before the statement runs.
#[derive(Debug, Clone, Default)]
pub struct JobRows {
    ids: Vec<String>,
    kinds: Vec<&'static str>,
    payloads: Vec<Vec<u8>>,
    max_attempts: Vec<i32>,
    run_ats: Vec<DateTime<Utc>>,
    prios: Vec<i32>,
    keys: Vec<Option<String>>,
}

impl JobRows {
    /// Gives each job its id.
    pub fn new(jobs: Vec<NewJob>) -> Self {
        let mut rows = JobRows::default();
        for j in jobs {
            rows.ids.push(Ulid::new().to_string());
            rows.kinds.push(j.kind);
            rows.payloads.push(j.payload);
            rows.max_attempts.push(j.max_attempts);
            rows.run_ats.push(j.run_at);
            rows.prios.push(j.priority);
            rows.keys.push(j.key);
        }
        rows
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The jobs as they will be written, in the order given to [`JobRows::new`].
    pub fn jobs(&self) -> impl Iterator<Item = EnqueuedJob> + '_ {
        (0..self.len()).map(|i| EnqueuedJob {
            id: self.ids[i].clone(),
            kind: self.kinds[i].to_owned(),
            key: self.keys[i].clone(),
            run_at: self.run_ats[i],
        })
    }

    /// Binds the seven columns, in [`insert_jobs!`]'s order, as the query's next parameters.
    pub fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.ids)
            .bind(&self.kinds)
            .bind(&self.payloads)
            .bind(&self.max_attempts)
            .bind(&self.run_ats)
            .bind(&self.prios)
            .bind(&self.keys)
    }

    /// Counts every job of the batch in `tierflow_jobs_enqueued_total`; call it once the
    /// statement that wrote them has succeeded and wrote them all.
    pub fn count_enqueued(&self) {
        for kind in &self.kinds {
            metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => *kind).increment(1);
        }
    }
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
    let rows = JobRows::new(jobs);
    let written = rows
        .bind(sqlx::query(insert_jobs!(
            "$1", "$2", "$3", "$4", "$5", "$6", "$7"
        )))
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect::<Result<Vec<(String, String, Option<String>, DateTime<Utc>)>, sqlx::Error>>()?;
    for (_, kind, _, _) in &written {
        metrics::counter!(crate::metrics::JOBS_ENQUEUED, "kind" => kind.clone()).increment(1);
    }
    Ok(written
        .into_iter()
        .map(|(id, kind, key, run_at)| EnqueuedJob {
            id,
            kind,
            key,
            run_at,
        })
        .collect())
}

/// The `UPDATE` that cancels the not-yet-started jobs (`Pending`, or `Failed` awaiting retry)
/// with a [`CancelKeys`] batch's keys, keeping its reason as their last result — for use as a
/// data-modifying `WITH` item inside a caller's statement, or alone as [`cancel_by_keys`] uses
/// it. The arguments are the five placeholders, in [`CancelKeys::bind`]'s order. Each cancelled
/// job returns its id, kind and key.
#[macro_export]
macro_rules! cancel_jobs {
    ($kinds:literal, $keys:literal, $cancelled:literal, $reason:literal, $not_started:literal) => {
        concat!(
            "UPDATE apalis.jobs j
                SET status = ",
            $cancelled,
            ", done_at = now(), lock_by = NULL, lock_at = NULL,
                    last_result = jsonb_build_object('Err', ",
            $reason,
            "::text)
               FROM unnest(",
            $kinds,
            "::text[], ",
            $keys,
            "::text[]) AS k(job_type, key)
              WHERE j.job_type = k.job_type AND j.idempotency_key = k.key
                AND j.status = ANY(",
            $not_started,
            "::text[])
             RETURNING j.id, j.job_type, j.idempotency_key"
        )
    };
}

/// The keys of jobs to cancel, and why, as the parameters of one [`cancel_jobs!`].
#[derive(Debug, Clone)]
pub struct CancelKeys {
    kinds: Vec<&'static str>,
    keys: Vec<String>,
    reason: String,
}

impl CancelKeys {
    pub fn new(keys: &[JobKey], reason: impl Into<String>) -> Self {
        CancelKeys {
            kinds: keys.iter().map(|k| k.kind).collect(),
            keys: keys.iter().map(|k| k.key.clone()).collect(),
            reason: reason.into(),
        }
    }

    /// Binds the five parameters, in [`cancel_jobs!`]'s order, as the query's next parameters.
    pub fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.kinds)
            .bind(&self.keys)
            .bind(JobState::Cancelled.as_str())
            .bind(&self.reason)
            .bind(JobState::not_started().to_vec())
    }
}

/// Counts cancelled jobs, by kind, in `tierflow_jobs_finished_total`; call it once the statement
/// that cancelled them has succeeded.
pub fn count_cancelled<'a>(kinds: impl IntoIterator<Item = &'a str>) {
    for kind in kinds {
        metrics::counter!(crate::metrics::JOBS_FINISHED, "kind" => kind.to_owned(), "outcome" => "cancelled")
            .increment(1);
    }
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
    let batch = CancelKeys::new(keys, reason);
    let rows = batch
        .bind(sqlx::query(cancel_jobs!("$1", "$2", "$3", "$4", "$5")))
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<(String, String, String)>, sqlx::Error>>()?;
    count_cancelled(rows.iter().map(|(_, kind, _)| kind.as_str()));
    Ok(rows
        .into_iter()
        .map(|(id, kind, key)| CancelledJob { id, kind, key })
        .collect())
}
