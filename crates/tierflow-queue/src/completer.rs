//! Records the success of standalone jobs in batches: one fenced `UPDATE` for many jobs.
//!
//! A transactional job's completion commits with its domain effect, so it costs the job its own
//! transaction. A standalone job (see [`crate::executor::Handler::Standalone`]) has no effect in
//! tierflow's database to commit with, so its completion can wait a moment and share a statement
//! with others: the executor hands the lease here and waits for the answer; the completer takes
//! every completion that has arrived, writes them with one statement, and answers each. Nothing is
//! delayed on purpose: while one batch is being written the next one gathers (group commit), so
//! at low load a batch is one job and at high load it is hundreds.
//!
//! The statement is fenced per job on `(id, lock_by, attempts)` like every lease write: a job whose
//! lease was lost (rescued and re-claimed elsewhere) is not touched and its executor hears
//! [`Completion::LeaseLost`]. If the batch cannot be written (database down), it is retried with
//! backoff; if it never gets through, the executors hear [`Completion::Unrecorded`] and the
//! rescuer makes the jobs due again — a standalone job is at-least-once, as any external effect is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::QueueError;
use crate::lease::Lease;

/// Most completions written by one statement.
pub const MAX_BATCH: usize = 1_000;

/// Attempts to write a batch before giving it up to the rescuer.
const WRITE_ATTEMPTS: u32 = 8;

/// What became of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The job is `Done`.
    Recorded,
    /// The lease no longer held: someone else owns the job now.
    LeaseLost,
    /// The database could not be reached; the rescuer will make the job due again.
    Unrecorded,
}

struct Request {
    job_id: String,
    attempt: i32,
    summary: String,
    reply: oneshot::Sender<Completion>,
}

/// The executors' handle on the completer.
#[derive(Clone)]
pub(crate) struct CompleterHandle {
    tx: mpsc::Sender<Request>,
}

impl CompleterHandle {
    /// Records `lease` as done with `summary`, together with whatever else is waiting.
    pub async fn complete(&self, lease: &Lease, summary: String) -> Completion {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            job_id: lease.job_id.clone(),
            attempt: lease.attempt,
            summary,
            reply,
        };
        if self.tx.send(request).await.is_err() {
            return Completion::Unrecorded;
        }
        answer.await.unwrap_or(Completion::Unrecorded)
    }
}

/// Starts the completer of one worker incarnation; it stops when every handle is dropped, after
/// writing what it was given.
pub(crate) fn start(
    pool: PgPool,
    worker_id: Arc<str>,
) -> (CompleterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
    let task = tokio::spawn(run(pool, worker_id, rx));
    (CompleterHandle { tx }, task)
}

async fn run(pool: PgPool, worker_id: Arc<str>, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let answers = write_with_retry(&pool, &worker_id, &batch).await;
        metrics::histogram!(crate::metrics::COMPLETER_BATCH).record(batch.len() as f64);
        for (request, answer) in batch.drain(..).zip(answers) {
            let _ = request.reply.send(answer);
        }
    }
    tracing::debug!("completer stopped");
}

async fn write_with_retry(pool: &PgPool, worker_id: &str, batch: &[Request]) -> Vec<Completion> {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=WRITE_ATTEMPTS {
        match write(pool, worker_id, batch).await {
            Ok(done) => {
                return batch
                    .iter()
                    .map(|r| {
                        if done.contains(&r.job_id) {
                            Completion::Recorded
                        } else {
                            Completion::LeaseLost
                        }
                    })
                    .collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), attempt, retry_in = ?wait,
                    "could not record finished jobs; is the database reachable?");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!(
        jobs = batch.len(),
        "gave up recording finished jobs; the rescuer will make them due again"
    );
    vec![Completion::Unrecorded; batch.len()]
}

/// One fenced statement for the whole batch ([`crate::lease::complete_many`]); returns the ids
/// it completed.
async fn write(
    pool: &PgPool,
    worker_id: &str,
    batch: &[Request],
) -> Result<HashSet<String>, QueueError> {
    let done: Vec<(&str, i32, &str)> = batch
        .iter()
        .map(|r| (r.job_id.as_str(), r.attempt, r.summary.as_str()))
        .collect();
    let mut conn = pool.acquire().await?;
    Ok(crate::lease::complete_many(&mut conn, worker_id, &done)
        .await?
        .into_iter()
        .collect())
}
