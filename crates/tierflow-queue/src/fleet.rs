//! The fleet of one worker process: a producer and an apalis worker per job kind, plus the
//! notifier, the heartbeat and (on the elected replica) the maintenance services; and the order in
//! which they stop.
//!
//! ```text
//!            NOTIFY tierflow_jobs ──▶ notifier ──wake──▶ producer(kind) ──claim (SKIP LOCKED)──▶ apalis.jobs
//!                                                           │ channel, ≤ concurrency
//!                                                           ▼
//!                                apalis Worker(kind) ──▶ executor: fence · handler · complete (one tx)
//! heartbeat ──▶ apalis.workers.last_seen      elector ──▶ rescuer, cleaner (one replica)
//! ```
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

use crate::executor::{Executor, Handler, HandlerFn, KindRunner, StandaloneFn, TypedRunner};
use crate::maintenance::cleaner::{self, CleanerConfig};
use crate::maintenance::elector::Elector;
use crate::maintenance::rescuer::{self, RescuerConfig};
use crate::notifier::Notifier;
use crate::producer::{Producer, ProducerBackend, ProducerConfig, run_job};
use crate::{Job, completer, depth, heartbeat, lease};

/// How long shutdown waits for the completer to write the last finished standalone jobs.
const COMPLETER_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Fleet settings. Defaults are the named constants of each part.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Jobs of one kind running at once in this process.
    pub concurrency: usize,
    /// The polling floor: an idle producer looks at the table at least this often.
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub rescuer: RescuerConfig,
    pub cleaner: CleanerConfig,
    /// How long in-flight jobs may take to finish after a stop signal.
    pub drain_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
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
            },
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl FleetConfig {
    /// Checks the settings; an error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.poll_interval.is_zero() || self.heartbeat_interval.is_zero() {
            return Err("poll and heartbeat intervals must be positive".into());
        }
        self.rescuer.validate(self.heartbeat_interval)
    }
}

/// What a fleet did on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs this worker held but did not finish (claimed but not started, or still running at the
    /// drain timeout), handed back to the queue.
    pub handed_back: u64,
}

/// A worker process's job runtime, built with [`Fleet::register`] for every kind.
pub struct Fleet<S> {
    pool: PgPool,
    state: Arc<S>,
    config: FleetConfig,
    runners: Vec<Arc<dyn KindRunner<S>>>,
    worker_id: Arc<str>,
    samplers: Vec<(&'static str, &'static str)>,
}

impl<S: Send + Sync + 'static> Fleet<S> {
    /// A fleet on `pool`, handing `state` to every handler.
    pub fn new(pool: PgPool, state: Arc<S>, config: FleetConfig) -> Self {
        Self {
            pool,
            state,
            config,
            runners: Vec::new(),
            worker_id: heartbeat::incarnation_id(),
            samplers: Vec::new(),
        }
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

    /// This process incarnation's id (`lock_by` of the jobs it runs).
    pub fn worker_id(&self) -> Arc<str> {
        self.worker_id.clone()
    }

    /// Runs until `shutdown` completes, then stops in order (see the module doc).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let kinds = self.kinds();
        let id = self.worker_id.clone();
        let stop_claiming = CancellationToken::new();
        let stop_services = CancellationToken::new();
        let mut services = JoinSet::new();

        self.register_until_reachable(&kinds, &stop_services).await;
        tracing::info!(worker_id = %id, kinds = ?kinds, concurrency = self.config.concurrency, "worker started");

        for kind in &kinds {
            metrics::gauge!(crate::metrics::WORKER_SLOTS, "kind" => *kind)
                .set(self.config.concurrency as f64);
            metrics::gauge!(crate::metrics::WORKER_BUSY, "kind" => *kind).set(0.0);
        }
        let mut wakers = HashMap::new();
        let mut workers = JoinSet::new();
        // The executors hold the only handles: the completer ends once they are all gone.
        let (completer, completer_task) = completer::start(self.pool.clone(), id.clone());
        for runner in &self.runners {
            let kind = runner.kind();
            let wake = Arc::new(Notify::new());
            wakers.insert(kind, wake.clone());
            let (tx, rx) = mpsc::channel(self.config.concurrency);
            let exec = Arc::new(Executor {
                pool: self.pool.clone(),
                state: self.state.clone(),
                runner: runner.clone(),
                completer: completer.clone(),
            });
            let producer = Producer {
                pool: self.pool.clone(),
                config: ProducerConfig {
                    kind,
                    worker_id: id.clone(),
                    poll_interval: self.config.poll_interval,
                },
                wake,
                slots: Arc::new(Semaphore::new(self.config.concurrency)),
                exec,
                out: tx,
                stop: stop_claiming.clone(),
            };
            services.spawn(producer.run());
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
                if let Err(e) = worker.run_until(signal).await {
                    tracing::error!(kind, error = %e, "apalis worker ended with an error");
                }
            });
        }
        drop(completer);
        services.spawn(
            Notifier {
                pool: self.pool.clone(),
                wakers,
                stop: stop_services.clone(),
            }
            .run(),
        );
        services.spawn(heartbeat::run(
            self.pool.clone(),
            id.clone(),
            kinds.clone(),
            self.config.heartbeat_interval,
            stop_services.clone(),
        ));
        services.spawn(depth::run_publisher(
            self.pool.clone(),
            depth::DEFAULT_INTERVAL,
            stop_services.clone(),
        ));
        let maintenance = tokio::spawn(maintain(
            self.pool.clone(),
            self.config.clone(),
            Samplers {
                kinds: kinds.clone(),
                sql: self.samplers.clone(),
            },
            stop_services.clone(),
        ));

        shutdown.await;
        tracing::info!("stopping: no new jobs will be claimed");
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
        let report = ShutdownReport {
            handed_back: lease::release_all(&self.pool, &id).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not hand back unfinished jobs; the rescuer will reclaim them");
                0
            }),
        };
        if report.handed_back > 0 {
            tracing::info!(
                handed_back = report.handed_back,
                "unfinished jobs handed back to the queue"
            );
        }
        stop_services.cancel();
        let _ = maintenance.await;
        while services.join_next().await.is_some() {}
        tracing::info!(worker_id = %id, "worker stopped");
        report
    }

    /// Registers the incarnation, retrying while the database is unreachable (a worker started
    /// before its database waits for it rather than crash-looping).
    async fn register_until_reachable(&self, kinds: &[&'static str], stop: &CancellationToken) {
        let mut wait = Duration::from_millis(200);
        loop {
            match heartbeat::register(&self.pool, &self.worker_id, kinds).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot register the worker; waiting for the database")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// What the leader samples for metrics.
struct Samplers {
    kinds: Vec<&'static str>,
    sql: Vec<(&'static str, &'static str)>,
}

impl Samplers {
    async fn run(&self, pool: &PgPool) {
        if let Err(e) = depth::sample(pool, &self.kinds).await {
            tracing::warn!(error = %e, "queue depth sampling failed");
        }
        for (metric, sql) in &self.sql {
            let value: Result<f64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(*sql))
                .fetch_one(pool)
                .await;
            let stored = match value {
                Ok(v) => sqlx::query(
                    "INSERT INTO tierflow_samples (metric, labels, value, sampled_at) VALUES ($1, '{}', $2, now())
                     ON CONFLICT (metric, labels) DO UPDATE SET value = EXCLUDED.value, sampled_at = EXCLUDED.sampled_at",
                )
                .bind(metric)
                .bind(v)
                .execute(pool)
                .await
                .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::warn!(metric, error = %e, "sampling failed");
            }
        }
    }
}

/// Runs the rescuer, the samplers and (less often) the cleaner while this replica leads.
async fn maintain(pool: PgPool, config: FleetConfig, samplers: Samplers, stop: CancellationToken) {
    let mut elector = Elector::new(pool.clone());
    let mut tick = tokio::time::interval(config.rescuer.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_clean = tokio::time::Instant::now();
    let mut last_sample: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !elector.is_leader().await {
            continue;
        }
        if let Err(e) = rescuer::run_once(&pool, &config.rescuer).await {
            tracing::warn!(error = %e, "rescuer round failed");
        }
        if last_sample.is_none_or(|t| t.elapsed() >= depth::DEFAULT_INTERVAL) {
            last_sample = Some(tokio::time::Instant::now());
            samplers.run(&pool).await;
        }
        if last_clean.elapsed() >= config.cleaner.interval {
            last_clean = tokio::time::Instant::now();
            if let Err(e) = cleaner::run_once(&pool, &config.cleaner).await {
                tracing::warn!(error = %e, "cleaner round failed");
            }
        }
    }
    elector.resign().await;
}
