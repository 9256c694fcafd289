//! The worker process's incarnation: a unique id in `apalis.workers`, kept alive by heartbeats.
//!
//! The id is `<host>-<pid>-<random>`, new at every start, so a restart under the same host name
//! (a Kubernetes pod keeps its name across container restarts) never inherits — and never keeps
//! alive — the jobs of the process that died. The rescuer treats jobs held by an id whose
//! `last_seen` is older than its `rescue_after` as orphaned.
//!
//! Each beat also writes the ids of the jobs this process holds ([`Holdings`]: claimed and not
//! yet recorded), so the rescuer can free a `Running` row that a live worker no longer runs —
//! one whose completion a database crash or failover lost. The heartbeat runs on a connection of
//! its own (the fleet's liveness pool), so jobs that exhaust the job pool cannot starve it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::QueueError;

/// A fresh incarnation id for this process.
pub fn incarnation_id() -> Arc<str> {
    // Kubernetes sets HOSTNAME to the pod name; Linux keeps the host name in /proc.
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let random: u32 = rand::random();
    format!("{host}-{}-{random:08x}", std::process::id()).into()
}

/// The jobs this process holds: claimed, and their outcome not yet recorded.
#[derive(Debug, Default)]
pub struct Holdings {
    // std's Mutex: held to insert, remove or copy, never across an await.
    ids: Mutex<HashSet<String>>,
}

impl Holdings {
    /// Records that `job_id` is held until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, job_id: &str) -> HoldGuard {
        self.lock().insert(job_id.to_owned());
        HoldGuard {
            holdings: self.clone(),
            job_id: job_id.to_owned(),
        }
    }

    /// The ids held now.
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A held job; dropping it (the outcome is recorded, or the job was handed back) releases it.
#[derive(Debug)]
pub struct HoldGuard {
    holdings: Arc<Holdings>,
    job_id: String,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.holdings.lock().remove(&self.job_id);
    }
}

/// Registers the incarnation (it must exist before its id is written into `lock_by`).
pub async fn register(pool: &PgPool, worker_id: &str, kinds: &[&str]) -> Result<(), QueueError> {
    beat(pool, worker_id, kinds, &[]).await
}

/// One heartbeat: `last_seen`, and the jobs held, stamped with the database's time.
pub async fn beat(
    pool: &PgPool,
    worker_id: &str,
    kinds: &[&str],
    holding: &[String],
) -> Result<(), QueueError> {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen, started_at, holding, holding_at)
         VALUES ($1, 'tierflow', 'tierflow-queue', $2, now(), now(), $3, now())
         ON CONFLICT (id) DO UPDATE SET last_seen = now(), holding = $3, holding_at = now()",
    )
    .bind(worker_id)
    .bind(kinds.join(","))
    .bind(holding)
    .execute(pool)
    .await?;
    Ok(())
}

/// Refreshes `last_seen` and the held jobs every `interval` until stopped. A failed beat is
/// logged and retried at the next tick, except an error retrying cannot fix (a revoked
/// privilege, a dropped table): then it ends, saying why, and the fleet stops — a worker that
/// cannot prove it is alive would only see its jobs rescued away from it.
pub(crate) async fn run(
    pool: PgPool,
    worker_id: Arc<str>,
    kinds: Vec<&'static str>,
    holdings: Arc<Holdings>,
    interval: Duration,
    stop: CancellationToken,
) -> String {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return "the heartbeat stopped".to_owned(),
            _ = tick.tick() => {}
        }
        // Upsert: the row may have been pruned while the database was away.
        // The list is taken before the write, so it is never newer than `holding_at`.
        let holding = holdings.snapshot();
        let beat = tokio::time::timeout(
            (interval * 2).max(Duration::from_secs(2)),
            beat(&pool, &worker_id, &kinds, &holding),
        );
        match beat
            .await
            .unwrap_or_else(|_| Err(QueueError::Timeout("heartbeat")))
        {
            Ok(()) if failing => {
                tracing::info!("heartbeat restored");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if e.is_permanent() => {
                return format!("the heartbeat cannot be written: {e}");
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "heartbeat failed; jobs of this worker may be rescued by another replica if this lasts");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
