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
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::task_id::RandomId;
use apalis_core::worker::context::WorkerContext;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::executor::RunResult;
use crate::heartbeat::{HoldGuard, Holdings};
use crate::lease::{self, ClaimCommit, Claimed};

/// One claimed job on its way to the worker, holding its slot and its place in the heartbeat's
/// list of held jobs until its outcome is recorded (or it is handed back).
pub struct Run {
    pub(crate) claimed: Claimed,
    pub(crate) exec: Arc<dyn ErasedExecutor>,
    pub(crate) _slot: OwnedSemaphorePermit,
    pub(crate) _hold: HoldGuard,
}

/// A kind's executor without its state type, so apalis sees one concrete task type.
pub(crate) trait ErasedExecutor: Send + Sync {
    fn execute(&self, claimed: Claimed) -> futures::future::BoxFuture<'_, RunResult>;
}

impl<S: Send + Sync + 'static> ErasedExecutor for crate::executor::Executor<S> {
    fn execute(&self, claimed: Claimed) -> futures::future::BoxFuture<'_, RunResult> {
        Box::pin(crate::executor::Executor::execute(self, claimed))
    }
}

/// The apalis task function: runs one job; never returns an error (which would stop the worker).
pub(crate) async fn run_job(run: Run) {
    let Run {
        claimed,
        exec,
        _slot,
        _hold,
    } = run;
    let result = exec.execute(claimed).await;
    drop(_hold);
    tracing::debug!(?result, "job recorded");
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
            match lease::claim(
                &self.pool,
                kind,
                &self.config.worker_id,
                wanted,
                self.config.commit,
            )
            .await
            {
                Ok(claimed) => {
                    db_backoff = Duration::from_millis(100);
                    let got = claimed.len();
                    // Held from here: the heartbeat lists these jobs from its next beat on.
                    let held: Vec<_> = claimed
                        .iter()
                        .map(|c| self.holdings.hold(&c.lease.job_id))
                        .collect();
                    for ((claimed, slot), hold) in
                        claimed.into_iter().zip(slots.drain(..)).zip(held)
                    {
                        let run = Run {
                            claimed,
                            exec: self.exec.clone(),
                            _slot: slot,
                            _hold: hold,
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
            let sleep_for = self.idle_wait().await;
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
    async fn idle_wait(&self) -> Duration {
        let floor = self.config.poll_interval;
        match lease::seconds_until_next_due(&self.pool, self.config.kind).await {
            Ok(Some(secs)) if secs <= 0.0 => Duration::from_millis(1),
            Ok(Some(secs)) => Duration::from_secs_f64(secs).min(floor),
            Ok(None) => floor,
            Err(_) => floor.min(Duration::from_secs(1)),
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
