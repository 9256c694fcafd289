//! Claims due jobs for one kind and hands them to that kind's apalis worker.
//!
//! A producer claims no more jobs than its kind has free slots (a semaphore of the configured
//! concurrency), so nothing claimed ever waits in memory for a slot: a job is either in the table,
//! where any replica may take it, or running here. When nothing is due it sleeps until the first
//! of:
//! - a NOTIFY for its kind (the [`crate::notifier`]), stored as a permit if it arrives while the
//!   producer is busy, so a wake-up is never lost;
//! - the next scheduled job's due time, read from the table (by the database's clock);
//! - the polling floor, which bounds the damage if a notification is lost anyway (a dropped
//!   LISTEN connection, a failover).
//!
//! [`ProducerBackend`] is the apalis [`Backend`] the kind's worker polls: a channel from this
//! producer. When the producer stops (shutdown), the channel closes and the worker drains.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::task_id::RandomId;
use apalis_core::worker::context::WorkerContext;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::executor::RunResult;
use crate::heartbeat::{HoldGuard, Holdings};
use crate::lease::{self, ClaimCommit, Claimed};

/// Claimed jobs on their way to the worker — one, or a batch of its kind's [`crate::Job::BATCH`]
/// run in one transaction — each holding its slot and its place in the heartbeat's list of held
/// jobs until its outcome is recorded (or it is handed back).
pub struct Run {
    pub(crate) claimed: Vec<Claimed>,
    pub(crate) exec: Arc<dyn ErasedExecutor>,
    pub(crate) _slots: Vec<OwnedSemaphorePermit>,
    pub(crate) _holds: Vec<HoldGuard>,
}

/// A kind's executor without its state type, so apalis sees one concrete task type.
pub(crate) trait ErasedExecutor: Send + Sync {
    fn execute(&self, batch: Vec<Claimed>) -> futures::future::BoxFuture<'_, Vec<RunResult>>;
    /// Most jobs one [`Run`] of this kind carries.
    fn batch(&self) -> usize;
}

impl<S: Send + Sync + 'static> ErasedExecutor for crate::executor::Executor<S> {
    fn execute(&self, batch: Vec<Claimed>) -> futures::future::BoxFuture<'_, Vec<RunResult>> {
        Box::pin(crate::executor::Executor::execute_batch(self, batch))
    }

    fn batch(&self) -> usize {
        self.runner.batch()
    }
}

/// The apalis task function: runs a claimed job or batch; never returns an error (which would
/// stop the worker).
pub(crate) async fn run_job(run: Run) {
    let Run {
        claimed,
        exec,
        _slots,
        _holds,
    } = run;
    let results = exec.execute(claimed).await;
    drop(_holds);
    tracing::debug!(?results, "job recorded");
}

/// Settings of one producer.
#[derive(Debug, Clone)]
pub(crate) struct ProducerConfig {
    pub kind: &'static str,
    pub worker_id: Arc<str>,
    pub poll_interval: Duration,
    pub commit: ClaimCommit,
}

pub(crate) struct Producer {
    pub pool: PgPool,
    pub config: ProducerConfig,
    pub wake: Arc<Notify>,
    pub slots: Arc<Semaphore>,
    pub exec: Arc<dyn ErasedExecutor>,
    pub holdings: Arc<Holdings>,
    pub out: mpsc::Sender<Run>,
    pub stop: CancellationToken,
}

impl Producer {
    /// Claims and hands out jobs until `stop` fires; then closes the channel.
    pub async fn run(self) {
        let kind = self.config.kind;
        let mut db_backoff = Duration::from_millis(100);
        let mut floor = ClaimFloor::default();
        loop {
            // Wait for a free slot before claiming anything.
            let first = tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let mut slots = vec![first];
            while let Ok(p) = self.slots.clone().try_acquire_owned() {
                slots.push(p);
            }
            let wanted = slots.len();
            let from = floor.from(Instant::now());
            match lease::claim_from(
                &self.pool,
                kind,
                &self.config.worker_id,
                wanted,
                self.config.commit,
                from,
            )
            .await
            {
                Ok(claimed) => {
                    db_backoff = Duration::from_millis(100);
                    floor.claimed(
                        from,
                        claimed.iter().map(|c| c.lease.run_at).min(),
                        Instant::now(),
                    );
                    let got = claimed.len();
                    // Held from here: the heartbeat lists these jobs from its next beat on.
                    let held: Vec<_> = claimed
                        .iter()
                        .map(|c| self.holdings.hold(&c.lease.job_id))
                        .collect();
                    let per_run = self.exec.batch().max(1);
                    let mut claimed = claimed.into_iter();
                    let mut held = held.into_iter();
                    loop {
                        let batch: Vec<Claimed> = claimed.by_ref().take(per_run).collect();
                        if batch.is_empty() {
                            break;
                        }
                        let n = batch.len();
                        let run = Run {
                            claimed: batch,
                            exec: self.exec.clone(),
                            _slots: slots.drain(..n).collect(),
                            _holds: held.by_ref().take(n).collect(),
                        };
                        if self.out.send(run).await.is_err() {
                            return; // the worker is gone
                        }
                    }
                    drop(slots);
                    if got == wanted {
                        continue; // there may be more due right now
                    }
                }
                Err(e) => {
                    drop(slots);
                    tracing::warn!(kind, error = %e, retry_in = ?db_backoff, "claim failed; is the database reachable?");
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(db_backoff) => {}
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            let sleep_for = self.idle_wait(floor.from(Instant::now())).await;
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
        tracing::debug!(kind, "producer stopped");
    }

    /// How long to sleep when nothing is due: until the next scheduled job, at most the floor.
    async fn idle_wait(&self, from: Option<DateTime<Utc>>) -> Duration {
        let floor = self.config.poll_interval;
        match lease::seconds_until_next_due(&self.pool, self.config.kind, from).await {
            Ok(Some(secs)) if secs <= 0.0 => Duration::from_millis(1),
            Ok(Some(secs)) => Duration::from_secs_f64(secs).min(floor),
            Ok(None) => floor,
            Err(_) => floor.min(Duration::from_secs(1)),
        }
    }
}

/// How often a producer's claim scans the claimable jobs from the oldest, not from its floor.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// How far behind the oldest job of its last claim a producer's next claim starts. A job's due
/// time is usually taken when its transaction starts and it becomes visible at commit, so jobs
/// due just before the floor keep appearing after the claim that set it: enqueued by a
/// concurrent transaction that committed later. Measured without it (4 producers enqueueing
/// 4,000 jobs/s): p99 pickup 0.7–0.8 s, the full scan's second; with it, those are claimed at
/// once. Under a pinned `xmin` a claim steps over the dead entries of this window only.
const FLOOR_MARGIN: chrono::Duration = chrono::Duration::milliseconds(250);

/// Where a producer's claims start: [`FLOOR_MARGIN`] before the due time of the oldest job its
/// last claim took, so a claim does not step over the index entries of jobs already claimed
/// (see [`lease::claim_from`]); and, once per [`FULL_SCAN_EVERY`], from the oldest job, for the
/// jobs that became due further behind. Those wait up to about that long more than others (up to
/// the polling floor more when the queue is otherwise idle, since the idle wait looks from the
/// floor too).
#[derive(Debug, Default)]
struct ClaimFloor {
    floor: Option<DateTime<Utc>>,
    last_full: Option<Instant>,
}

impl ClaimFloor {
    /// Where the next claim starts: `None` for a full scan.
    fn from(&self, now: Instant) -> Option<DateTime<Utc>> {
        match self.last_full {
            Some(at) if now.duration_since(at) < FULL_SCAN_EVERY => {
                self.floor.map(|f| f - FLOOR_MARGIN)
            }
            _ => None,
        }
    }

    /// Records a claim that started at `from` and took jobs whose oldest was due at `oldest`.
    fn claimed(
        &mut self,
        from: Option<DateTime<Utc>>,
        oldest: Option<DateTime<Utc>>,
        now: Instant,
    ) {
        if from.is_none() {
            self.last_full = Some(now);
        }
        if let Some(oldest) = oldest {
            self.floor = Some(oldest);
        }
    }
}

/// The apalis backend of one kind: the receiving end of its producer's channel.
pub struct ProducerBackend {
    pub(crate) rx: mpsc::Receiver<Run>,
}

/// Never constructed: the producer backend does not fail.
#[derive(Debug, thiserror::Error)]
#[error("producer backend error")]
pub struct ProducerBackendError;

impl Backend for ProducerBackend {
    type Task = Task<Run>;
    type Error = ProducerBackendError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|run| run.map(|r| Ok(Task::new(r))))
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for ProducerBackend {
    type Args = Run;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = tower_layer::Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        tower_layer::Identity::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn claims_start_at_the_floor_and_scan_from_the_oldest_once_a_second() {
        let t0 = Instant::now();
        let mut floor = ClaimFloor::default();
        // The first claim scans everything.
        assert_eq!(floor.from(t0), None);
        floor.claimed(None, Some(at(10)), t0);
        // The next ones start a margin before the oldest job the last claim took.
        assert_eq!(
            floor.from(t0 + Duration::from_millis(10)),
            Some(at(10) - FLOOR_MARGIN)
        );
        floor.claimed(Some(at(10)), Some(at(12)), t0 + Duration::from_millis(10));
        assert_eq!(
            floor.from(t0 + Duration::from_millis(20)),
            Some(at(12) - FLOOR_MARGIN)
        );
        // A claim that took nothing keeps the floor.
        floor.claimed(Some(at(12)), None, t0 + Duration::from_millis(20));
        assert_eq!(
            floor.from(t0 + Duration::from_millis(30)),
            Some(at(12) - FLOOR_MARGIN)
        );
        // A second after the last full scan, the next claim is one again; a job found behind
        // the floor (a released one, due long ago) moves the floor back to it.
        let later = t0 + FULL_SCAN_EVERY;
        assert_eq!(floor.from(later), None);
        floor.claimed(None, Some(at(1)), later);
        assert_eq!(floor.from(later), Some(at(1) - FLOOR_MARGIN));
        // A full scan that takes nothing keeps the floor and restarts the second.
        let again = later + FULL_SCAN_EVERY;
        floor.claimed(None, None, again);
        assert_eq!(
            floor.from(again + Duration::from_millis(1)),
            Some(at(1) - FLOOR_MARGIN)
        );
    }
}
