//! Claiming jobs and recording their outcome, with fencing.
//!
//! A claim moves due rows to `Running`, stamps them with the claiming worker's incarnation id
//! (`lock_by`) and counts the attempt (`attempts + 1`). `(id, lock_by, attempts)` is the lease: every
//! later write about the job — [`fence`], [`fail`], [`reschedule`], [`complete_many`] (the
//! [`crate::completer`]'s batches) — is conditional on it, so a worker whose job was rescued and
//! re-claimed by another can no longer touch it: its late result changes nothing.
//!
//! A transactional job's success is recorded in the same transaction as its domain effect
//! ([`fence`] takes the row and marks it done first), so either both happen or neither. Failure is recorded after that transaction has rolled
//! back, in one statement that either reschedules the job with backoff (`Failed`, `run_at` moved)
//! or, after its last attempt, makes it `Dead`.
//!
//! Every write about one claimed job finds its row by primary key, and checks the lease with
//! `(status = 'Running') IS TRUE` rather than `status = 'Running'`: no index matches that form,
//! so PostgreSQL cannot serve the write from `tierflow_jobs_running_idx` (or, before migration
//! 0018, the `Running` range of `tierflow_jobs_depth_idx`), which it otherwise chose (it
//! estimates one running row). That range keeps an entry for every job claimed since the last vacuum; while a long transaction
//! pins `xmin` it grows by the claim rate, and each completion walked all of it (docs/queue.md,
//! "Lease writes go by primary key").

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{JobState, QueueError};

/// The right to work on one claimed job.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job_id: String,
    pub kind: &'static str,
    /// This attempt's number (1 for the first run).
    pub attempt: i32,
    pub max_attempts: i32,
    /// The incarnation id of the worker process holding the lease.
    pub worker_id: Arc<str>,
    /// When the job was due.
    pub run_at: DateTime<Utc>,
    /// When it was claimed (database clock, like `run_at`).
    pub claimed_at: DateTime<Utc>,
}

/// A claimed job: its lease and its payload.
#[derive(Debug)]
pub struct Claimed {
    pub lease: Lease,
    pub payload: Vec<u8>,
}

/// How a claim commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimCommit {
    /// Asynchronously (no wait for its WAL flush), the default: a claim lost in a PostgreSQL
    /// crash leaves the job `Pending`, so it is simply claimed again, and the worker that thought
    /// it held it finds its lease gone at the fence. Without this, every claim — often of a single
    /// job, as slots free one by one — waited for a disk flush.
    Async,
    /// Synchronously, for kinds that tell the outside world about a change ([`crate::Job::DURABLE_CLAIM`]:
    /// a webhook): the claim's commit waits until the WAL up to it is flushed — and, with
    /// synchronous replication, on a replica — so the change that enqueued the job (committed
    /// before, so earlier in the WAL) survives a crash or failover before anyone outside hears
    /// of it. One flush per claimed batch.
    Durable,
}

/// Claims up to `limit` due jobs of `kind` for `worker_id`, oldest due first, committing as
/// `commit` says.
pub async fn claim(
    pool: &PgPool,
    kind: &'static str,
    worker_id: &Arc<str>,
    limit: usize,
    commit: ClaimCommit,
) -> Result<Vec<Claimed>, QueueError> {
    claim_from(pool, kind, worker_id, limit, commit, None).await
}

/// [`claim`], looking only at jobs due at or after `from` when it is given.
///
/// Why: a claim walks the claimable index from its oldest entry. The entries of jobs already
/// claimed stay there, pointing at dead row versions, until vacuum removes them — and while a
/// long transaction anywhere on the server pins `xmin`, nothing can remove them, not even the
/// index scan's own clean-up. Every claim then steps over every job claimed since the pin began:
/// a queue at 1,000 jobs/s steps over 120,000 dead entries per claim two minutes into an
/// analytics query. Starting at the oldest job the producer's last claim took (the
/// [`ClaimFloor`](crate::producer)) skips them; the producer still scans from the start once
/// a second, for the jobs that became due behind the floor (a released or rescued job keeps
/// its old due time; a producer whose clock runs late inserts jobs due in the past).
pub async fn claim_from(
    pool: &PgPool,
    kind: &'static str,
    worker_id: &Arc<str>,
    limit: usize,
    commit: ClaimCommit,
    from: Option<DateTime<Utc>>,
) -> Result<Vec<Claimed>, QueueError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        job: Vec<u8>,
        attempts: i32,
        max_attempts: i32,
        run_at: DateTime<Utc>,
        claimed_at: DateTime<Utc>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "WITH next AS (
            SELECT id FROM apalis.jobs
             WHERE job_type = $1 AND status IN ('Pending', 'Failed') AND run_at <= now()
               AND run_at >= coalesce($5, '-infinity'::timestamptz)
             ORDER BY run_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE apalis.jobs j
            SET status = 'Running', lock_by = $2, lock_at = now(), attempts = j.attempts + 1
           FROM next WHERE j.id = next.id
            AND set_config('synchronous_commit', $4, true) IS NOT NULL
         RETURNING j.id, j.job, j.attempts, j.max_attempts, j.run_at, j.lock_at AS claimed_at",
    )
    .bind(kind)
    .bind(worker_id.as_ref())
    .bind(limit as i64)
    .bind(match commit {
        ClaimCommit::Async => "off",
        ClaimCommit::Durable => "on",
    })
    .bind(from)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Claimed {
            lease: Lease {
                job_id: r.id,
                kind,
                attempt: r.attempts,
                max_attempts: r.max_attempts,
                worker_id: worker_id.clone(),
                run_at: r.run_at,
                claimed_at: r.claimed_at,
            },
            payload: r.job,
        })
        .collect())
}

/// Seconds until the next job of `kind` is due (by the database's clock), if any is waiting —
/// among the jobs due at or after `from` when it is given (see [`claim_from`] for why).
pub async fn seconds_until_next_due(
    pool: &PgPool,
    kind: &str,
    from: Option<DateTime<Utc>>,
) -> Result<Option<f64>, QueueError> {
    Ok(sqlx::query_scalar(
        "SELECT extract(epoch FROM min(run_at) - now())::float8 FROM apalis.jobs
          WHERE job_type = $1 AND status IN ('Pending', 'Failed')
            AND run_at >= coalesce($2, '-infinity'::timestamptz)",
    )
    .bind(kind)
    .bind(from)
    .fetch_one(pool)
    .await?)
}

/// The settings [`fence`] and [`fence_many`] give the job's transaction (see [`fence`]), as a
/// select list; `$4` is the lock timeout, `$5` the statement timeout.
macro_rules! job_tx_settings {
    () => {
        "set_config('synchronous_commit', 'off', true),
         set_config('plan_cache_mode', 'force_generic_plan', true),
         set_config('lock_timeout', $4, true),
         set_config('statement_timeout', $5, true),
         set_config('idle_in_transaction_session_timeout', $4, true)"
    };
}

/// Takes the job's row in `tx` if the lease still holds, and marks it `Done` there, before the
/// handler runs. `None`: the job was rescued and belongs to someone else now; do nothing.
/// `Some(now)`: the database's time in this transaction — the one clock a job's guards and
/// timestamps read, so a worker host whose clock is off cannot run a job early or loop on it.
///
/// Marking it done first saves the round trip of a separate completion: the mark commits only
/// with the handler's effect (a handler error, a panic or a timeout rolls both back), and a
/// handler that finds the job early overwrites it with [`reschedule_held`].
///
/// In the same round trip it sets, for `tx` only:
/// - asynchronous commit. That is safe because the job's domain effect and its completion commit
///   together in `tx`: if PostgreSQL crashes before the commit reaches disk, both are lost and the
///   job runs again — the worker no longer lists it as held, so the rescuer frees it within
///   `rescue_after` (its events carry the same ids, so receivers de-duplicate). It saves the WAL
///   flush that otherwise caps the fleet at one fsync per job. API requests, which callers see
///   acknowledged, keep synchronous commit.
/// - generic plans for the handler's prepared statements: PostgreSQL's default kept planning a
///   handler's large statements anew on every execution, though each looks rows up by key or by
///   a literal status, which one generic plan serves.
/// - `lock_timeout` and `statement_timeout`: a job stuck behind another session's row lock gives
///   up after `lock_timeout` and is retried ([`crate::JobError::Contended`]); no statement
///   outlives the job's own timeout on the server, where a wait abandoned by the client would
///   otherwise keep the job's row locked.
/// - `idle_in_transaction_session_timeout` (= `lock_timeout`): a worker frozen or cut off in
///   the middle of a job (SIGSTOP, a partition) would otherwise keep the job's row locked for as
///   long as its session lives, and the rescuer, which skips locked rows, could not free it. A
///   handler's statements follow each other without pause, so this never cuts a healthy job.
pub async fn fence(
    tx: &mut PgConnection,
    lease: &Lease,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<Option<DateTime<Utc>>, QueueError> {
    type Held = (DateTime<Utc>, String, String, String, String, String);
    let held: Option<Held> = sqlx::query_as(concat!(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now(), lock_by = NULL,
                last_result = '{\"Ok\": \"done\"}'
          WHERE id = $1 AND (status = 'Running') IS TRUE AND lock_by = $2 AND attempts = $3
         RETURNING now(), ",
        job_tx_settings!()
    ))
    .bind(&lease.job_id)
    .bind(lease.worker_id.as_ref())
    .bind(lease.attempt)
    .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
    .bind(format!("{}ms", statement_timeout.as_millis().max(1)))
    .fetch_optional(tx)
    .await?;
    Ok(held.map(|(now, ..)| now))
}

/// [`fence`] for a batch of jobs held by one worker, in one statement: returns the database's
/// time in `tx` and the ids of the jobs whose lease still held (now marked `Done` in `tx`); a job
/// missing from them was rescued and belongs to someone else. Sets `tx`'s commit mode and
/// timeouts as [`fence`] does (the timeouts must be the same for all, i.e. one kind's).
pub async fn fence_many(
    tx: &mut PgConnection,
    leases: &[&Lease],
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<(DateTime<Utc>, Vec<String>), QueueError> {
    // All the leases are one worker's; with none, the statement fences nothing.
    let worker_id: Option<&str> = leases.first().map(|l| l.worker_id.as_ref());
    let ids: Vec<&str> = leases.iter().map(|l| l.job_id.as_str()).collect();
    let attempts: Vec<i32> = leases.iter().map(|l| l.attempt).collect();
    // One row whatever the join finds (none when every lease was lost).
    let (now, fenced): (DateTime<Utc>, Vec<String>) = sqlx::query_as(concat!(
        "WITH fenced AS (
            UPDATE apalis.jobs j SET status = 'Done', done_at = now(), lock_by = NULL,
                   last_result = '{\"Ok\": \"done\"}'
              FROM unnest($1::text[], $2::int4[]) AS l(id, attempts)
             WHERE j.id = l.id AND (j.status = 'Running') IS TRUE AND j.lock_by = $3
               AND j.attempts = l.attempts
            RETURNING j.id)
         SELECT now(), ARRAY(SELECT id FROM fenced) FROM (SELECT ",
        job_tx_settings!(),
        ") settings"
    ))
    .bind(&ids)
    .bind(&attempts)
    .bind(worker_id)
    .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
    .bind(format!("{}ms", statement_timeout.as_millis().max(1)))
    // Planned for each batch, as the completer's batch is (`complete_many`): a plan cached
    // while the table was small would be kept as it grows.
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    Ok((now, fenced))
}

/// Marks many running jobs `Done` in one statement, each with its own summary, fenced per job
/// on its lease (`(id, attempt, summary)`, all held by `worker_id`): the
/// [`crate::completer`]'s batch. Returns the ids it completed; a job missing from them had lost
/// its lease.
pub async fn complete_many(
    conn: &mut PgConnection,
    worker_id: &str,
    done: &[(&str, i32, &str)],
) -> Result<Vec<String>, QueueError> {
    let ids: Vec<&str> = done.iter().map(|d| d.0).collect();
    let attempts: Vec<i32> = done.iter().map(|d| d.1).collect();
    let summaries: Vec<&str> = done.iter().map(|d| d.2).collect();
    Ok(sqlx::query_scalar(
        "UPDATE apalis.jobs j
            SET status = 'Done', done_at = now(), lock_by = NULL,
                last_result = jsonb_build_object('Ok', d.summary)
           FROM unnest($1::text[], $2::int4[], $3::text[]) AS d(id, attempts, summary)
          WHERE j.id = d.id AND (j.status = 'Running') IS TRUE AND j.lock_by = $4 AND j.attempts = d.attempts
         RETURNING j.id",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&summaries)
    .bind(worker_id)
    // Planned for each batch: a plan cached while the table was small (a hash join over a
    // sequential scan) would be kept as the table grows.
    .persistent(false)
    .fetch_all(conn)
    .await?)
}

/// Replaces the result of a job [`fence`]d in `tx` (a no-op's reason, for operators).
pub async fn set_summary(
    tx: &mut PgConnection,
    lease: &Lease,
    summary: &str,
) -> Result<(), QueueError> {
    sqlx::query(
        "UPDATE apalis.jobs SET last_result = jsonb_build_object('Ok', $2::text) WHERE id = $1",
    )
    .bind(&lease.job_id)
    .bind(summary)
    .execute(tx)
    .await?;
    Ok(())
}

/// Puts a job [`fence`]d in `tx` back to wait for `due_at`, without counting the attempt.
pub async fn reschedule_held(
    tx: &mut PgConnection,
    lease: &Lease,
    due_at: DateTime<Utc>,
) -> Result<(), QueueError> {
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', run_at = $2, attempts = attempts - 1,
                done_at = NULL, lock_at = NULL, last_result = NULL
          WHERE id = $1",
    )
    .bind(&lease.job_id)
    .bind(due_at)
    .execute(tx)
    .await?;
    Ok(())
}

/// Puts a running job that ran too early back to wait for `due_at`, without counting the
/// attempt (a standalone job's; a transactional one uses [`reschedule_held`]). `false`: the lease
/// no longer held and nothing changed.
pub async fn reschedule(
    conn: &mut PgConnection,
    lease: &Lease,
    due_at: DateTime<Utc>,
) -> Result<bool, QueueError> {
    let done = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', run_at = $2, attempts = attempts - 1,
                lock_by = NULL, lock_at = NULL
          WHERE id = $1 AND (status = 'Running') IS TRUE AND lock_by = $3 AND attempts = $4",
    )
    .bind(&lease.job_id)
    .bind(due_at)
    .bind(lease.worker_id.as_ref())
    .bind(lease.attempt)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What [`fail`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Failed {
    /// Rescheduled with backoff.
    Retrying { run_at: DateTime<Utc> },
    /// Attempts spent (or the error was permanent): the job is dead.
    Dead,
    /// The lease no longer held; someone else owns the job.
    LeaseLost,
}

/// How [`fail`] treats the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// It counts: `Dead` after the last one.
    Counted,
    /// It failed for what retrying can fix: `Dead` at once.
    Permanent,
    /// It never got to do its work (it waited too long for a lock): retried, not counted.
    NotCounted,
}

/// Records a failed attempt: `Failed` with `run_at = now + backoff` while attempts remain,
/// `Dead` after the last one or at once when permanent (see [`Attempt`]).
pub async fn fail(
    pool: &PgPool,
    lease: &Lease,
    error: &str,
    attempt: Attempt,
    backoff: Duration,
) -> Result<Failed, QueueError> {
    let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE apalis.jobs SET
                status = CASE WHEN $4 OR ($7 AND attempts >= max_attempts) THEN 'Dead' ELSE 'Failed' END,
                run_at = CASE WHEN $4 OR ($7 AND attempts >= max_attempts) THEN run_at
                              ELSE now() + make_interval(secs => $5) END,
                done_at = CASE WHEN $4 OR ($7 AND attempts >= max_attempts) THEN now() END,
                attempts = CASE WHEN $7 THEN attempts ELSE attempts - 1 END,
                lock_by = NULL, lock_at = NULL,
                last_result = jsonb_build_object('Err', $6::text)
          WHERE id = $1 AND (status = 'Running') IS TRUE AND lock_by = $2 AND attempts = $3
         RETURNING status, run_at",
    )
    .bind(&lease.job_id)
    .bind(lease.worker_id.as_ref())
    .bind(lease.attempt)
    .bind(attempt == Attempt::Permanent)
    .bind(backoff.as_secs_f64())
    .bind(error)
    .bind(attempt != Attempt::NotCounted)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Failed::LeaseLost,
        Some((status, _)) if status == JobState::Dead.as_str() => Failed::Dead,
        Some((_, run_at)) => Failed::Retrying { run_at },
    })
}

/// Hands back every job `worker_id` still runs (a shutdown that ran out of time): due again at
/// once, and the interrupted attempt not counted.
pub async fn release_all(pool: &PgPool, worker_id: &str) -> Result<u64, QueueError> {
    let done = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = greatest(attempts - 1, 0), run_at = now(),
                lock_by = NULL, lock_at = NULL,
                last_result = jsonb_build_object('Err', 'handed back: worker shut down before the attempt finished')
          WHERE status = 'Running' AND lock_by = $1",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
