//! Runs one claimed job: decode, handle, record — inside the job's span.
//!
//! A kind's handler is one of two flavours ([`Handler`]):
//! - **transactional** — it gets the transaction that holds the job's row lock; if it returns
//!   `Ok`, the job is marked `Done` (or put back to wait, for [`Outcome::NotYetDue`]) in that same
//!   transaction, so the domain effect and the job's completion commit together (exactly once);
//! - **standalone** — its effect lies outside tierflow's database (a webhook delivery) or it has
//!   none; it runs without a transaction or a held connection, and its success is recorded by the
//!   [`crate::completer`] in batches (at least once, as any external effect).
//!
//! An `Err`, a panic or a timeout counts as a failed attempt (a transactional handler's work is
//! rolled back); an undecodable payload or [`JobError::Permanent`] makes the job dead at once.
//! Nothing a handler does ends the process.
//!
//! A transactional kind with [`Job::BATCH`] above one may get several claimed jobs at once
//! ([`Executor::execute_batch`]): one transaction fences them all in one statement
//! ([`lease::fence_many`]), runs their handlers in turn and records them with one commit, saving
//! per job a `BEGIN`, a fence, a `COMMIT` and a transaction. Any failure in it —
//! a handler's error, panic or timeout, a database error — rolls the whole batch back, and each
//! of its jobs then runs alone as above, so one job's failure is recorded against it only. A kind
//! registered with a batch handler beside its own ([`Handler::Batched`]) has the batch's jobs
//! handled by one call of it instead of one call each (a kind that can do in one statement for
//! the whole batch what its handler does for one job).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument as _;

use crate::completer::{CompleterHandle, Completion};
use crate::lease::{self, Attempt, Claimed, Failed, Lease};
use crate::{Job, QueueError};

/// What a handler did with a job it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The effect was applied.
    Done(String),
    /// Nothing to do (already done, cancelled, superseded), and why.
    NoOp(String),
    /// Too early: put the job back to wait until this time (the attempt is not counted).
    NotYetDue(DateTime<Utc>),
}

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Try again later, with backoff.
    #[error("{0}")]
    Retry(String),
    /// Try again after `after` (the other side said when, e.g. with `Retry-After`) instead of
    /// the kind's backoff; the attempt counts toward the job's attempts if `counted`.
    #[error("{message}")]
    RetryAfter {
        after: Duration,
        counted: bool,
        message: String,
    },
    /// Never retry: the job is dead at once.
    #[error("{0}")]
    Permanent(String),
    /// The job could not do its work yet: it waited longer than its `lock_timeout` for a row
    /// another session holds. Retried after [`CONTENDED_RETRY`], without spending an attempt, so
    /// contention never makes a job dead.
    #[error("{0}")]
    Contended(String),
}

/// How long a [`JobError::Contended`] job waits before it is tried again.
pub const CONTENDED_RETRY: Duration = Duration::from_secs(1);

/// What a transactional handler works with: the job's transaction, which holds its row, and the
/// database's time in it — the clock every guard ("is the grace over?") and every timestamp the
/// job writes must use, whatever the worker host's clock says.
pub struct JobTx<'a> {
    pub conn: &'a mut PgConnection,
    pub now: DateTime<Utc>,
}

/// The future a handler returns; it borrows the transaction and the shared state.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, JobError>> + Send + 'a>>;

/// A transactional handler: a plain function from a decoded payload, the job's transaction (with
/// the database's time) and the shared state.
pub type HandlerFn<J, S> = for<'a> fn(J, JobTx<'a>, &'a S) -> HandlerFuture<'a>;

/// The future a batch handler returns: one outcome per job, in the order it was given them.
pub type BatchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Outcome>, JobError>> + Send + 'a>>;

/// A transactional handler of several jobs of one kind at once, in one transaction: a plain
/// function from the decoded payloads, each with its job's span (to record fields such as
/// `tenant_id` on, as a handler alone records them on the span it runs in), the batch's
/// transaction (with the database's time) and the shared state. An `Err` fails the whole batch:
/// it is rolled back and each job runs alone.
pub type BatchFn<J, S> = for<'a> fn(Vec<(J, tracing::Span)>, JobTx<'a>, &'a S) -> BatchFuture<'a>;

/// A standalone handler: a plain function from a decoded payload and the shared state.
pub type StandaloneFn<J, S> = for<'a> fn(J, &'a S) -> HandlerFuture<'a>;

/// A kind's handler: one of the two flavours of the module doc, the transactional one with or
/// without a batch handler.
pub enum Handler<J, S> {
    Transactional(HandlerFn<J, S>),
    /// Transactional, with a second handler for a batch ([`Job::BATCH`]) that does in a few
    /// statements what the first does job by job; the first still runs a job alone (a claim of
    /// one, or a batch that failed).
    Batched(HandlerFn<J, S>, BatchFn<J, S>),
    Standalone(StandaloneFn<J, S>),
}

/// What the worker records after a run, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum RunResult {
    Done,
    NoOp,
    Rescheduled,
    Retrying,
    Dead,
    LeaseLost,
    /// Recording the outcome failed (database down); the rescuer will reclaim the job.
    Unrecorded,
}

impl RunResult {
    /// The `outcome` label of `tierflow_jobs_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            RunResult::Done => "success",
            RunResult::NoOp => "noop",
            RunResult::Rescheduled => "rescheduled",
            RunResult::Retrying => "retry",
            RunResult::Dead => "dead",
            RunResult::LeaseLost => "lease_lost",
            RunResult::Unrecorded => "unrecorded",
        }
    }
}

/// A job kind's runner: decodes its payload and calls its handler.
pub(crate) trait KindRunner<S>: Send + Sync {
    fn kind(&self) -> &'static str;
    fn timeout(&self) -> Duration;
    fn backoff(&self, failed_attempts: i32) -> Duration;
    /// True for a standalone handler, which is called with no transaction.
    fn standalone(&self) -> bool;
    /// How this kind's claims commit ([`Job::DURABLE_CLAIM`]).
    fn claim_commit(&self) -> crate::lease::ClaimCommit;
    /// Jobs of this kind run at once in a process whose concurrency is `concurrency`.
    fn slots(&self, concurrency: usize) -> usize;
    /// Most jobs of this kind one transaction runs together ([`Job::BATCH`]; 1 if standalone).
    fn batch(&self) -> usize;
    fn call<'a>(
        &'a self,
        payload: &'a [u8],
        tx: Option<JobTx<'a>>,
        state: &'a S,
    ) -> HandlerFuture<'a>;
    /// Calls the batch handler, if the kind has one, on `payloads` (each with its job's span).
    fn call_batch<'a>(
        &'a self,
        payloads: Vec<(&'a [u8], tracing::Span)>,
        tx: JobTx<'a>,
        state: &'a S,
    ) -> Option<BatchFuture<'a>>;
}

pub(crate) struct TypedRunner<J: Job, S> {
    pub handler: Handler<J, S>,
}

impl<J: Job, S: Send + Sync + 'static> KindRunner<S> for TypedRunner<J, S> {
    fn kind(&self) -> &'static str {
        J::KIND
    }

    fn timeout(&self) -> Duration {
        J::TIMEOUT
    }

    fn backoff(&self, failed_attempts: i32) -> Duration {
        J::backoff(failed_attempts)
    }

    fn standalone(&self) -> bool {
        matches!(self.handler, Handler::Standalone(_))
    }

    fn slots(&self, concurrency: usize) -> usize {
        concurrency.min(J::MAX_CONCURRENCY).max(1)
    }

    fn batch(&self) -> usize {
        if self.standalone() {
            1
        } else {
            J::BATCH.max(1)
        }
    }

    fn claim_commit(&self) -> crate::lease::ClaimCommit {
        if J::DURABLE_CLAIM {
            crate::lease::ClaimCommit::Durable
        } else {
            crate::lease::ClaimCommit::Async
        }
    }

    fn call<'a>(
        &'a self,
        payload: &'a [u8],
        tx: Option<JobTx<'a>>,
        state: &'a S,
    ) -> HandlerFuture<'a> {
        let job = match serde_json::from_slice::<J>(payload) {
            Ok(job) => job,
            Err(e) => {
                let message = format!("undecodable {} payload: {e}", J::KIND);
                return Box::pin(async move { Err(JobError::Permanent(message)) });
            }
        };
        match (&self.handler, tx) {
            (Handler::Transactional(handler) | Handler::Batched(handler, _), Some(tx)) => {
                handler(job, tx, state)
            }
            (Handler::Standalone(handler), None) => handler(job, state),
            // The executor picks the path from `standalone()`; this cannot be reached.
            _ => Box::pin(async { Err(JobError::Permanent("handler flavour mismatch".into())) }),
        }
    }

    fn call_batch<'a>(
        &'a self,
        payloads: Vec<(&'a [u8], tracing::Span)>,
        tx: JobTx<'a>,
        state: &'a S,
    ) -> Option<BatchFuture<'a>> {
        let Handler::Batched(_, handler) = &self.handler else {
            return None;
        };
        let jobs: Result<Vec<(J, tracing::Span)>, String> = payloads
            .into_iter()
            .map(|(p, span)| {
                serde_json::from_slice::<J>(p)
                    .map(|job| (job, span))
                    .map_err(|e| format!("undecodable {} payload: {e}", J::KIND))
            })
            .collect();
        Some(match jobs {
            Ok(jobs) => handler(jobs, tx, state),
            // The batch fails; alone, the undecodable job is made dead.
            Err(message) => Box::pin(async move { Err(JobError::Permanent(message)) }),
        })
    }
}

/// Everything an execution needs, shared by one kind's executions.
pub(crate) struct Executor<S> {
    pub pool: PgPool,
    pub state: Arc<S>,
    pub runner: Arc<dyn KindRunner<S>>,
    pub completer: CompleterHandle,
    /// `lock_timeout` of the job's transaction.
    pub lock_timeout: Duration,
}

impl<S: Send + Sync + 'static> Executor<S> {
    /// Runs one claimed job to a recorded outcome.
    pub async fn execute(&self, claimed: Claimed) -> RunResult {
        let kind = claimed.lease.kind;
        let span = job_span(&claimed.lease);
        record_pickup(&claimed.lease);
        let busy = metrics::gauge!(crate::metrics::WORKER_BUSY, "kind" => kind);
        busy.increment(1.0);
        let started = std::time::Instant::now();
        let result = self.execute_inner(claimed).instrument(span).await;
        busy.decrement(1.0);
        metrics::histogram!(crate::metrics::JOB_DURATION, "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        crate::metrics::finished(kind, result.outcome());
        result
    }

    /// Runs claimed jobs of this kind to recorded outcomes, in one transaction if there are
    /// several (see the module doc); the results are in the order of `batch`.
    pub async fn execute_batch(&self, batch: Vec<Claimed>) -> Vec<RunResult> {
        if batch.len() > 1
            && !self.runner.standalone()
            && let Some(results) = self.execute_together(&batch).await
        {
            return results;
        }
        // Alone, and side by side as jobs claimed one by one would run: one that waits out a
        // database outage in its retry loop must not hold back the others.
        futures::future::join_all(batch.into_iter().map(|claimed| self.execute(claimed))).await
    }

    /// [`Executor::execute_batch`]'s one transaction, with the metrics and logs of each job;
    /// `None` if it was rolled back (nothing recorded, no metric counted).
    async fn execute_together(&self, batch: &[Claimed]) -> Option<Vec<RunResult>> {
        let kind = self.runner.kind();
        let n = batch.len();
        let busy = metrics::gauge!(crate::metrics::WORKER_BUSY, "kind" => kind);
        busy.increment(n as f64);
        let started = std::time::Instant::now();
        let spans: Vec<tracing::Span> = batch.iter().map(|c| job_span(&c.lease)).collect();
        let results = self.run_together(batch, &spans).await;
        busy.decrement(n as f64);
        let results = results?;
        let elapsed = started.elapsed().as_secs_f64();
        for ((claimed, span), result) in batch.iter().zip(&spans).zip(&results) {
            record_pickup(&claimed.lease);
            // Each job's duration is the batch's: its effect committed with the last one's.
            metrics::histogram!(crate::metrics::JOB_DURATION, "kind" => kind).record(elapsed);
            crate::metrics::finished(kind, result.outcome());
            span.in_scope(|| tracing::info!(elapsed, ?result, batch = n, "job finished"));
        }
        Some(results)
    }

    /// Fences the jobs of `batch` and handles each (inside its own span) in one transaction, and
    /// commits; `None`, the transaction rolled back, at the first failure.
    async fn run_together(
        &self,
        batch: &[Claimed],
        spans: &[tracing::Span],
    ) -> Option<Vec<RunResult>> {
        let mut tx = self.pool.begin().await.ok()?;
        let timeout = self.runner.timeout();
        let leases: Vec<&Lease> = batch.iter().map(|c| &c.lease).collect();
        // All the batch's fences in one statement; each job then runs at the same database time.
        let (now, fenced) =
            match lease::fence_many(&mut tx, &leases, self.lock_timeout, timeout).await {
                Ok(fenced) => fenced,
                Err(error) => {
                    tracing::info!(%error, kind = self.runner.kind(), batch = batch.len(),
                        "a batch could not be fenced: each of its jobs runs alone");
                    let _ = tx.rollback().await;
                    return None;
                }
            };
        if let Some(results) = self
            .run_batch_handler(&mut tx, batch, spans, now, &fenced)
            .await
        {
            let Some(results) = results else {
                // A rollback that fails leaves the connection to the pool, which discards it.
                let _ = tx.rollback().await;
                return None;
            };
            tx.commit().await.ok()?;
            return Some(results);
        }
        let mut results = Vec::with_capacity(batch.len());
        for (claimed, span) in batch.iter().zip(spans) {
            let lease = &claimed.lease;
            let ran = async {
                if !fenced.contains(&lease.job_id) {
                    tracing::warn!("lease lost before the job ran: another worker owns it now");
                    return Ok(RunResult::LeaseLost);
                }
                let job_tx = JobTx { conn: &mut tx, now };
                let call = self
                    .runner
                    .call(&claimed.payload, Some(job_tx), &self.state);
                let outcome = guarded(timeout, call).await.map_err(|e| e.to_string())?;
                record_held(&mut tx, lease, outcome)
                    .await
                    .map_err(|e| e.to_string())
            }
            .instrument(span.clone())
            .await;
            match ran {
                Ok(result) => results.push(result),
                Err(error) => {
                    span.in_scope(|| {
                        tracing::info!(%error, batch = batch.len(),
                            "failed in a batch: the batch is rolled back and each of its jobs runs alone")
                    });
                    // A rollback that fails leaves the connection to the pool, which discards it.
                    let _ = tx.rollback().await;
                    return None;
                }
            }
        }
        tx.commit().await.ok()?;
        Some(results)
    }

    /// [`Executor::run_together`] with the kind's batch handler: one call for every job whose
    /// lease held, then each one's outcome recorded in its span. `None` if the kind has no batch
    /// handler; `Some(None)` at a failure (the caller rolls back).
    async fn run_batch_handler(
        &self,
        tx: &mut PgConnection,
        batch: &[Claimed],
        spans: &[tracing::Span],
        now: DateTime<Utc>,
        fenced: &[String],
    ) -> Option<Option<Vec<RunResult>>> {
        let held: Vec<(&Claimed, &tracing::Span)> = batch
            .iter()
            .zip(spans)
            .filter(|(c, _)| fenced.contains(&c.lease.job_id))
            .collect();
        let payloads = held
            .iter()
            .map(|(c, span)| (c.payload.as_slice(), (*span).clone()))
            .collect();
        let call = self
            .runner
            .call_batch(payloads, JobTx { conn: tx, now }, &self.state)?;
        // The handler's own log lines name the batch; each job's span gets its fields from it.
        let batch_span = tracing::info_span!(
            "job_batch",
            job.kind = self.runner.kind(),
            jobs = held.len()
        );
        let outcomes = match guarded(self.runner.timeout(), call)
            .instrument(batch_span)
            .await
        {
            Ok(outcomes) if outcomes.len() == held.len() => outcomes,
            Ok(outcomes) => {
                tracing::warn!(
                    kind = self.runner.kind(),
                    jobs = held.len(),
                    outcomes = outcomes.len(),
                    "a batch handler returned a wrong number of outcomes: each job runs alone"
                );
                return Some(None);
            }
            Err(error) => {
                tracing::info!(%error, kind = self.runner.kind(), batch = batch.len(),
                    "a batch failed: it is rolled back and each of its jobs runs alone");
                return Some(None);
            }
        };
        let mut outcomes = outcomes.into_iter();
        let mut results = Vec::with_capacity(batch.len());
        for (claimed, span) in batch.iter().zip(spans) {
            if !fenced.contains(&claimed.lease.job_id) {
                span.in_scope(|| {
                    tracing::warn!("lease lost before the job ran: another worker owns it now")
                });
                results.push(RunResult::LeaseLost);
                continue;
            }
            let Some(outcome) = outcomes.next() else {
                return Some(None);
            };
            match record_held(tx, &claimed.lease, outcome)
                .instrument(span.clone())
                .await
            {
                Ok(result) => results.push(result),
                Err(error) => {
                    span.in_scope(|| tracing::info!(%error, batch = batch.len(),
                        "failed in a batch: the batch is rolled back and each of its jobs runs alone"));
                    return Some(None);
                }
            }
        }
        Some(Some(results))
    }

    async fn execute_inner(&self, claimed: Claimed) -> RunResult {
        let Claimed { lease, payload } = claimed;
        let started = std::time::Instant::now();
        let run = if self.runner.standalone() {
            self.run_standalone(&lease, &payload).await
        } else {
            self.run_transactional(&lease, &payload).await
        };
        let outcome = match run {
            Ok(result) => result,
            Err(RunError::LeaseLost) => {
                tracing::warn!("lease lost before the job ran: another worker owns it now");
                return RunResult::LeaseLost;
            }
            Err(RunError::Job(e)) => Err(e),
            Err(RunError::Queue(e)) => Err(JobError::Retry(format!("database: {e}"))),
        };
        let elapsed = started.elapsed().as_secs_f64();
        match outcome {
            Ok(result) => {
                tracing::info!(elapsed, ?result, "job finished");
                result
            }
            Err(e) => self.record_failure(&lease, e, elapsed).await,
        }
    }

    /// Begins the job's transaction, fences the lease (which marks the job done), calls the
    /// handler under a timeout and a panic guard, and on success commits the effect with the
    /// completion.
    async fn run_transactional(
        &self,
        lease: &Lease,
        payload: &[u8],
    ) -> Result<Result<RunResult, JobError>, RunError> {
        let mut tx = self.pool.begin().await.map_err(QueueError::from)?;
        // The fence also marks the job done, sets this transaction's commit mode and timeouts,
        // and reads the database's time (see `lease::fence`).
        let timeout = self.runner.timeout();
        let Some(now) = lease::fence(&mut tx, lease, self.lock_timeout, timeout).await? else {
            return Err(RunError::LeaseLost);
        };
        let job_tx = JobTx { conn: &mut tx, now };
        let call = self.runner.call(payload, Some(job_tx), &self.state);
        let outcome = match guarded(timeout, call).await {
            Err(e) => return Err(RunError::Job(e)),
            Ok(outcome) => outcome,
        };
        let recorded = record_held(&mut tx, lease, outcome).await?;
        tx.commit().await.map_err(QueueError::from)?;
        Ok(Ok(recorded))
    }

    /// Calls a standalone handler under a timeout and a panic guard, then has the completer
    /// record its success (fenced, batched with other jobs').
    async fn run_standalone(
        &self,
        lease: &Lease,
        payload: &[u8],
    ) -> Result<Result<RunResult, JobError>, RunError> {
        let call = self.runner.call(payload, None, &self.state);
        let (summary, result) = match guarded(self.runner.timeout(), call).await {
            Err(e) => return Err(RunError::Job(e)),
            Ok(Outcome::Done(summary)) => (summary, RunResult::Done),
            Ok(Outcome::NoOp(reason)) => {
                tracing::info!(%reason, "nothing to do");
                (format!("no-op: {reason}"), RunResult::NoOp)
            }
            Ok(Outcome::NotYetDue(at)) => {
                tracing::info!(due_at = %at, "ran early; rescheduled");
                let mut conn = self.pool.acquire().await.map_err(QueueError::from)?;
                return Ok(Ok(if lease::reschedule(&mut conn, lease, at).await? {
                    RunResult::Rescheduled
                } else {
                    RunResult::LeaseLost
                }));
            }
        };
        Ok(Ok(match self.completer.complete(lease, summary).await {
            Completion::Recorded => result,
            Completion::LeaseLost => {
                tracing::warn!("job ran but its lease was lost: another worker owns it now");
                RunResult::LeaseLost
            }
            Completion::Unrecorded => RunResult::Unrecorded,
        }))
    }

    /// Records a failed attempt, retrying the write while the database is unreachable; if it
    /// never gets through, the rescuer reclaims the job once its run time has passed.
    async fn record_failure(&self, lease: &Lease, e: JobError, elapsed: f64) -> RunResult {
        let (attempt, backoff) = match e {
            JobError::Permanent(_) => (Attempt::Permanent, Duration::ZERO),
            JobError::Retry(_) => (Attempt::Counted, self.runner.backoff(lease.attempt)),
            JobError::RetryAfter {
                after,
                counted: true,
                ..
            } => (Attempt::Counted, after),
            JobError::RetryAfter { after, .. } => (Attempt::NotCounted, after),
            JobError::Contended(_) => (
                Attempt::NotCounted,
                CONTENDED_RETRY.mul_f64(0.8 + 0.4 * rand::random::<f64>()),
            ),
        };
        let message = e.to_string();
        let mut wait = Duration::from_millis(100);
        for _ in 0..8 {
            match lease::fail(&self.pool, lease, &message, attempt, backoff).await {
                Ok(Failed::Retrying { run_at }) => {
                    tracing::warn!(error = %message, elapsed, %run_at, "attempt failed; will retry");
                    return RunResult::Retrying;
                }
                Ok(Failed::Dead) => {
                    tracing::error!(error = %message, elapsed, max_attempts = lease.max_attempts,
                        "job is dead; re-drive it with `tierflow jobs retry {}`", lease.job_id);
                    return RunResult::Dead;
                }
                Ok(Failed::LeaseLost) => {
                    tracing::warn!(error = %message, "attempt failed but the lease was lost; nothing recorded");
                    return RunResult::LeaseLost;
                }
                Err(db) => {
                    tracing::warn!(error = %db, "could not record the failed attempt; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        RunResult::Unrecorded
    }
}

/// A job's span: every line logged while it runs carries its id, kind and attempt.
fn job_span(lease: &Lease) -> tracing::Span {
    tracing::info_span!(
        "job",
        job.id = %lease.job_id,
        job.kind = lease.kind,
        job.attempt = lease.attempt,
        tenant_id = tracing::field::Empty,
    )
}

/// Records how long a job waited between its due time and its claim.
fn record_pickup(lease: &Lease) {
    let pickup = (lease.claimed_at - lease.run_at)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    metrics::histogram!(crate::metrics::PICKUP_DELAY, "kind" => lease.kind).record(pickup.max(0.0));
}

/// Records a transactional handler's outcome in the job's transaction, whose fence already
/// marked the job done: a no-op keeps its reason, an early run goes back to wait.
async fn record_held(
    tx: &mut PgConnection,
    lease: &Lease,
    outcome: Outcome,
) -> Result<RunResult, QueueError> {
    Ok(match outcome {
        Outcome::Done(summary) => {
            tracing::debug!(%summary, "applied");
            RunResult::Done
        }
        Outcome::NoOp(reason) => {
            tracing::info!(%reason, "nothing to do");
            lease::set_summary(tx, lease, &format!("no-op: {reason}")).await?;
            RunResult::NoOp
        }
        Outcome::NotYetDue(at) => {
            tracing::info!(due_at = %at, "ran early; rescheduled");
            lease::reschedule_held(tx, lease, at).await?;
            RunResult::Rescheduled
        }
    })
}

/// Awaits a handler's future under `timeout`, turning a panic or a timeout into a retryable error.
async fn guarded<T>(
    timeout: Duration,
    call: Pin<Box<dyn Future<Output = Result<T, JobError>> + Send + '_>>,
) -> Result<T, JobError> {
    match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Err(_) => Err(JobError::Retry(format!("timed out after {timeout:?}"))),
        Ok(Err(panic)) => Err(JobError::Retry(format!(
            "handler panicked: {}",
            panic_message(&*panic)
        ))),
        Ok(Ok(r)) => r,
    }
}

enum RunError {
    LeaseLost,
    Job(JobError),
    Queue(QueueError),
}

impl From<QueueError> for RunError {
    fn from(e: QueueError) -> Self {
        RunError::Queue(e)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
