//! The fleet of one worker process: a producer and an apalis worker per job kind, plus the
//! notifier, the heartbeat and (on the elected replica) the maintenance services; and the order in
//! which they stop.
//!
//! ```text
//!            NOTIFY tierflow_jobs ──▶ notifier ──wake──▶ producer(kind) ──claim (SKIP LOCKED)──▶ apalis.jobs
//!                                                           │ channel, ≤ concurrency
//!                                                           ▼
//!                                apalis Worker(kind) ──▶ executor: fence · handler · complete (one tx)
//! heartbeat ──▶ apalis.workers (last_seen, jobs held)     elector ──▶ tierflow_leadership (lease)
//!                                       rescuer, cleaner, sampler: each on its own schedule, leader only
//! ```
//!
//! The heartbeat and the elector run on a small pool of their own (the liveness pool), so jobs
//! that exhaust the job pool — waiting on a lock, say — cannot starve them and get a live worker
//! declared dead or a live leader deposed.
//!
//! If a part ends on its own (a job runner, a producer, the heartbeat after a permanent error),
//! the fleet stops as for a shutdown and says why in [`ShutdownReport::stopped_early`]: a process
//! that runs no jobs must not look healthy.
//!
//! Shutdown, one log line per step: stop claiming; let in-flight jobs finish within the drain
//! timeout; hand back whatever is still running after it; resign leadership; exit.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::executor::{
    BatchFn, Executor, Handler, HandlerFn, KindRunner, StandaloneFn, TypedRunner,
};
use crate::heartbeat::Holdings;
use crate::maintenance::cleaner::{self, CleanerConfig};
use crate::maintenance::elector::{self, ElectorConfig};
use crate::maintenance::rescuer::{self, RescuerConfig};
use crate::maintenance::sampler::Samplers;
use crate::maintenance::{Round, spawn_service};
use crate::notifier::Notifier;
use crate::producer::{Producer, ProducerBackend, ProducerConfig, run_job};
use crate::{Job, QueueError, completer, depth, heartbeat, lease};

/// How long shutdown waits for the completer to write the last finished standalone jobs.
const COMPLETER_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// A job waits at most this long for a row lock before it is put back (see
/// [`FleetConfig::lock_timeout`]); well under any job's timeout, long enough for a request's
/// transaction to finish.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections of the liveness pool, opened beside the pool a fleet is given: the heartbeat's
/// and the elector's. A process's connection budget counts them.
pub const LIVENESS_CONNECTIONS: u32 = 2;
/// Default job slots of a standalone kind: on the 2-core machine of docs/performance.md
/// ("Standalone slots"), 16 slots held no-op jobs to about 4,000/s, the round trip of a claim and
/// a batched completion being the limit; 64 held 8,500/s for ten minutes at a lower cost per job.
pub const DEFAULT_STANDALONE_CONCURRENCY: usize = 64;

/// Fleet settings. Defaults are the named constants of each part.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Jobs of one transactional kind running at once in this process (each holds a connection
    /// while it runs).
    pub concurrency: usize,
    /// Jobs of one standalone kind running at once in this process. A standalone job holds no
    /// connection while it runs, so its slots bound only the work in flight; with few of them the
    /// claim → run → batched completion round trip, not the database, sets the kind's throughput
    /// (docs/performance.md, "Standalone slots").
    pub standalone_concurrency: usize,
    /// The polling floor: an idle producer looks at the table at least this often.
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub rescuer: RescuerConfig,
    pub cleaner: CleanerConfig,
    pub elector: ElectorConfig,
    /// `lock_timeout` of a transactional job's transaction: a job that waits longer for a row
    /// lock gives up and is retried shortly, without spending an attempt.
    pub lock_timeout: Duration,
    /// How long in-flight jobs may take to finish after a stop signal.
    pub drain_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            standalone_concurrency: DEFAULT_STANDALONE_CONCURRENCY,
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            rescuer: RescuerConfig {
                interval: rescuer::DEFAULT_INTERVAL,
                rescue_after: rescuer::DEFAULT_RESCUE_AFTER,
                max_run_time: Duration::from_secs(300),
                batch_size: rescuer::DEFAULT_BATCH,
            },
            cleaner: CleanerConfig {
                retention: cleaner::DEFAULT_RETENTION,
                dead_retention: cleaner::DEFAULT_DEAD_RETENTION,
                interval: Duration::from_secs(60),
                prunes: Vec::new(),
            },
            elector: ElectorConfig::default(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl FleetConfig {
    /// The concurrency a kind's slots are cut from: [`Self::standalone_concurrency`] for a
    /// standalone kind, [`Self::concurrency`] for a transactional one.
    pub fn concurrency_for(&self, standalone: bool) -> usize {
        if standalone {
            self.standalone_concurrency
        } else {
            self.concurrency
        }
    }

    /// Checks the settings; an error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.standalone_concurrency == 0 {
            return Err("standalone concurrency must be at least 1".into());
        }
        if self.poll_interval.is_zero() || self.heartbeat_interval.is_zero() {
            return Err("poll and heartbeat intervals must be positive".into());
        }
        if self.lock_timeout.is_zero() {
            return Err("the job lock timeout must be positive".into());
        }
        self.elector.validate()?;
        self.rescuer.validate(self.heartbeat_interval)
    }
}

/// What a fleet did on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs this worker held but did not finish (claimed but not started, or still running at the
    /// drain timeout), handed back to the queue.
    pub handed_back: u64,
    /// Set when the fleet stopped because a part of it ended on its own, not because it was told
    /// to: what ended and why. The process should exit with an error.
    pub stopped_early: Option<String>,
}

/// A worker process's job runtime, built with [`Fleet::register`] for every kind.
pub struct Fleet<S> {
    pool: PgPool,
    /// The heartbeat's and the elector's connections, apart from the jobs'.
    liveness: PgPool,
    state: Arc<S>,
    config: FleetConfig,
    runners: Vec<Arc<dyn KindRunner<S>>>,
    worker_id: Arc<str>,
    samplers: Vec<(&'static str, &'static str)>,
    services: Vec<MaintenanceService>,
}

/// One round of a maintenance service registered with [`Fleet::maintain`]: given the pool and
/// the leader's fence, it does a bounded amount of work and says whether more is left.
pub type MaintenanceRound = Arc<
    dyn Fn(
            PgPool,
            elector::Fence,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, QueueError>> + Send>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct MaintenanceService {
    name: &'static str,
    interval: Duration,
    round: MaintenanceRound,
}

impl<S: Send + Sync + 'static> Fleet<S> {
    /// A fleet on `pool`, handing `state` to every handler.
    pub fn new(pool: PgPool, state: Arc<S>, config: FleetConfig) -> Self {
        let liveness = sqlx::postgres::PgPoolOptions::new()
            .max_connections(LIVENESS_CONNECTIONS)
            .acquire_timeout(config.heartbeat_interval.max(Duration::from_secs(1)))
            .connect_lazy_with((*pool.connect_options()).clone());
        Self {
            pool,
            liveness,
            state,
            config,
            runners: Vec::new(),
            worker_id: heartbeat::incarnation_id(),
            samplers: Vec::new(),
            services: Vec::new(),
        }
    }

    /// Adds a maintenance service of the fleet's user (e.g. the store's reconciler): like the
    /// rescuer and the cleaner it runs every `interval` on the replica that holds the maintenance
    /// lease, at once again while a round reports more left, and must make its writes under the
    /// fence it is given ([`elector::Fence::hold`]).
    pub fn maintain(
        mut self,
        name: &'static str,
        interval: Duration,
        round: MaintenanceRound,
    ) -> Self {
        self.services.push(MaintenanceService {
            name,
            interval,
            round,
        });
        self
    }

    /// Adds a gauge the maintenance leader samples with `sql` (one `float8` row) alongside queue
    /// depth, e.g. the number of active overrides.
    pub fn sample_sql(mut self, metric: &'static str, sql: &'static str) -> Self {
        self.samplers.push((metric, sql));
        self
    }

    /// Registers the transactional handler of kind `J`: it runs in the job's transaction and its
    /// effect commits with the job's completion (see [`crate::executor`]).
    pub fn register<J: Job>(mut self, handler: HandlerFn<J, S>) -> Self {
        self.runners.push(Arc::new(TypedRunner {
            handler: Handler::Transactional(handler),
        }));
        self
    }

    /// Registers the transactional handler of kind `J` with a batch handler beside it: a claim of
    /// several jobs of `J` ([`Job::BATCH`]) runs them with one call of `batch` in one
    /// transaction; `handler` runs a job alone (a claim of one, or each job of a batch that
    /// failed). The two must have the same effect.
    pub fn register_batched<J: Job>(
        mut self,
        handler: HandlerFn<J, S>,
        batch: BatchFn<J, S>,
    ) -> Self {
        self.runners.push(Arc::new(TypedRunner {
            handler: Handler::Batched(handler, batch),
        }));
        self
    }

    /// Registers the standalone handler of kind `J`: for work with no effect in tierflow's
    /// database (a webhook delivery). It holds no connection while it runs, and its completion is
    /// batched with other jobs' by the [`crate::completer`].
    pub fn register_standalone<J: Job>(mut self, handler: StandaloneFn<J, S>) -> Self {
        self.runners.push(Arc::new(TypedRunner {
            handler: Handler::Standalone(handler),
        }));
        self
    }

    /// The kinds registered so far.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.runners.iter().map(|r| r.kind()).collect()
    }

    /// Job slots of one kind in this process: its share of the concurrency that applies to it
    /// (standalone or transactional), capped by the kind's own limit.
    fn slots(&self, runner: &dyn KindRunner<S>) -> usize {
        runner.slots(self.config.concurrency_for(runner.standalone()))
    }

    /// This process incarnation's id (`lock_by` of the jobs it runs).
    pub fn worker_id(&self) -> Arc<str> {
        self.worker_id.clone()
    }

    /// Runs until `shutdown` completes — or a part of the fleet ends on its own — then stops in
    /// order (see the module doc).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let kinds = self.kinds();
        let id = self.worker_id.clone();
        let stop_claiming = CancellationToken::new();
        let stop_services = CancellationToken::new();
        // Parts whose end, before a shutdown, stops the fleet; each says how it ended.
        let mut parts: JoinSet<String> = JoinSet::new();

        tokio::pin!(shutdown);
        // A stop signal ends the wait for the database too.
        let registered = tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("stopped before the worker could register");
                return ShutdownReport::default();
            }
            r = self.register_until_reachable(&kinds) => r,
        };
        if let Err(e) = registered {
            tracing::error!(error = %e, "cannot register this worker; it will run no jobs");
            return ShutdownReport {
                handed_back: 0,
                stopped_early: Some(format!("cannot register the worker: {e}")),
            };
        }
        tracing::info!(worker_id = %id, kinds = ?kinds, concurrency = self.config.concurrency,
            standalone_concurrency = self.config.standalone_concurrency, "worker started");

        for runner in &self.runners {
            let kind = runner.kind();
            metrics::gauge!(crate::metrics::WORKER_SLOTS, "kind" => kind)
                .set(self.slots(runner.as_ref()) as f64);
            metrics::gauge!(crate::metrics::WORKER_BUSY, "kind" => kind).set(0.0);
        }
        let holdings = Arc::new(Holdings::default());
        let mut wakers = HashMap::new();
        let mut workers = JoinSet::new();
        // The executors hold the only handles: the completer ends once they are all gone.
        let (completer, completer_task) = completer::start(self.pool.clone(), id.clone());
        for runner in &self.runners {
            let kind = runner.kind();
            let slots = self.slots(runner.as_ref());
            let wake = Arc::new(Notify::new());
            wakers.insert(kind, wake.clone());
            let (tx, rx) = mpsc::channel(slots);
            let exec = Arc::new(Executor {
                pool: self.pool.clone(),
                state: self.state.clone(),
                runner: runner.clone(),
                completer: completer.clone(),
                lock_timeout: self.config.lock_timeout,
            });
            let producer = Producer {
                pool: self.pool.clone(),
                config: ProducerConfig {
                    kind,
                    worker_id: id.clone(),
                    poll_interval: self.config.poll_interval,
                    commit: runner.claim_commit(),
                },
                wake,
                slots: Arc::new(Semaphore::new(slots)),
                exec,
                holdings: holdings.clone(),
                out: tx,
                stop: stop_claiming.clone(),
            };
            parts.spawn(async move {
                producer.run().await;
                format!("the {kind} producer ended")
            });
            let worker = WorkerBuilder::new(format!("{kind}@{id}"))
                .backend(ProducerBackend { rx })
                .build(run_job);
            // The worker stops taking tasks when claiming stops, then waits for its in-flight
            // tasks; jobs left in the channel were claimed but never started, and are handed back
            // below.
            let stop = stop_claiming.clone();
            workers.spawn(async move {
                let signal = async move {
                    stop.cancelled().await;
                    Ok::<(), std::io::Error>(())
                };
                match worker.run_until(signal).await {
                    Ok(()) => format!("the {kind} job runner ended"),
                    Err(e) => format!("the {kind} job runner ended with an error: {e}"),
                }
            });
        }
        drop(completer);
        let notifier = Notifier {
            pool: self.pool.clone(),
            wakers,
            stop: stop_services.clone(),
        };
        parts.spawn(async move {
            notifier.run().await;
            "the notification listener ended".to_owned()
        });
        parts.spawn(heartbeat::run(
            self.liveness.clone(),
            id.clone(),
            kinds.clone(),
            holdings,
            self.config.heartbeat_interval,
            stop_services.clone(),
        ));
        let mut background = JoinSet::new();
        background.spawn(depth::run_publisher(
            self.pool.clone(),
            depth::DEFAULT_INTERVAL,
            stop_services.clone(),
        ));
        let (leadership, elector_task) = elector::start(
            self.liveness.clone(),
            id.clone(),
            self.config.elector.clone(),
            stop_services.clone(),
        );
        self.spawn_maintenance(&mut background, leadership, &kinds, &stop_services);

        let stopped_early = tokio::select! {
            _ = &mut shutdown => None,
            Some(ended) = workers.join_next() => Some(ended.unwrap_or_else(|e| format!("a job runner failed: {e}"))),
            Some(ended) = parts.join_next() => Some(ended.unwrap_or_else(|e| format!("a fleet task failed: {e}"))),
        };
        match &stopped_early {
            None => tracing::info!("stopping: no new jobs will be claimed"),
            Some(why) => tracing::error!(
                reason = %why,
                "a part of the worker stopped on its own; stopping the worker (no new jobs will be claimed)"
            ),
        }
        stop_claiming.cancel();
        let drained = tokio::time::timeout(self.config.drain_timeout, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_ok() {
            tracing::info!("in-flight jobs finished");
        } else {
            workers.abort_all();
            while workers.join_next().await.is_some() {}
            tracing::warn!(timeout = ?self.config.drain_timeout, "drain timeout reached; interrupting the jobs still running");
        }
        // Standalone jobs that finished are written before anything is handed back, so that a
        // finished job is not run again. The producers and workers have dropped their handles.
        if tokio::time::timeout(COMPLETER_FLUSH_TIMEOUT, completer_task)
            .await
            .is_err()
        {
            tracing::warn!("finished jobs not yet recorded at shutdown; they will run again");
        }
        // Whatever this incarnation still holds never finished here: claimed but not started, or
        // cut off by the drain timeout. Hand it back so another replica runs it at once.
        let handed_back = lease::release_all(&self.pool, &id)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not hand back unfinished jobs; the rescuer will reclaim them");
                0
            });
        if handed_back > 0 {
            tracing::info!(handed_back, "unfinished jobs handed back to the queue");
        }
        stop_services.cancel();
        let _ = elector_task.await;
        while background.join_next().await.is_some() {}
        while parts.join_next().await.is_some() {}
        // Its users are gone; a connection lost mid-statement must not hold the exit up.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.liveness.close()).await;
        tracing::info!(worker_id = %id, "worker stopped");
        ShutdownReport {
            handed_back,
            stopped_early,
        }
    }

    /// Starts the maintenance services, each on its own schedule; they act only while this
    /// replica holds the lease.
    fn spawn_maintenance(
        &self,
        set: &mut JoinSet<()>,
        leadership: elector::Leadership,
        kinds: &[&'static str],
        stop: &CancellationToken,
    ) {
        let (pool, cfg) = (self.pool.clone(), self.config.rescuer.clone());
        spawn_service(
            set,
            "rescuer",
            leadership.clone(),
            cfg.interval,
            stop.clone(),
            move |fence| {
                let (pool, cfg) = (pool.clone(), cfg.clone());
                async move {
                    let out = rescuer::run_once(&pool, &cfg, &fence).await?;
                    // A full batch: there may be more orphans.
                    let full = (out.rescued + out.dead) as i64 >= cfg.batch_size;
                    Ok(Round::more_left_if(full))
                }
            },
        );
        let (pool, cfg) = (self.pool.clone(), self.config.cleaner.clone());
        spawn_service(
            set,
            "cleaner",
            leadership.clone(),
            cfg.interval,
            stop.clone(),
            move |fence| {
                let (pool, cfg) = (pool.clone(), cfg.clone());
                async move {
                    let out = cleaner::run_once(&pool, &cfg, &fence).await?;
                    Ok(Round::more_left_if(out.more))
                }
            },
        );
        for service in &self.services {
            let (pool, round) = (self.pool.clone(), service.round.clone());
            spawn_service(
                set,
                service.name,
                leadership.clone(),
                service.interval,
                stop.clone(),
                move |fence| {
                    let fut = round(pool.clone(), fence);
                    async move { Ok(Round::more_left_if(fut.await?)) }
                },
            );
        }
        let pool = self.pool.clone();
        let samplers = Arc::new(Samplers {
            kinds: kinds.to_vec(),
            sql: self.samplers.clone(),
        });
        spawn_service(
            set,
            "sampler",
            leadership,
            depth::DEFAULT_INTERVAL,
            stop.clone(),
            move |fence| {
                let (pool, samplers) = (pool.clone(), samplers.clone());
                async move {
                    samplers.run_once(&pool, &fence).await?;
                    Ok(Round::Finished)
                }
            },
        );
    }

    /// Registers the incarnation, retrying while the database is unreachable (a worker started
    /// before its database waits for it rather than crash-looping). An error retrying cannot fix
    /// (no such table, no privilege, bad credentials) is returned.
    async fn register_until_reachable(&self, kinds: &[&'static str]) -> Result<(), QueueError> {
        let mut wait = Duration::from_millis(200);
        loop {
            match heartbeat::register(&self.liveness, &self.worker_id, kinds).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_permanent() => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot register the worker; waiting for the database")
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}
