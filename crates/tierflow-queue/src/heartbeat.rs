//! The worker process's incarnation: a unique id in `apalis.workers`, kept alive by heartbeats.
//!
//! The id is `<host>-<pid>-<random>`, new at every start, so a restart under the same host name
//! (a Kubernetes pod keeps its name across container restarts) never inherits — and never keeps
//! alive — the jobs of the process that died. The rescuer treats jobs held by an id whose
//! `last_seen` is older than its `rescue_after` as orphaned.

use std::sync::Arc;
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

/// Registers the incarnation (it must exist before its id is written into `lock_by`).
pub async fn register(pool: &PgPool, worker_id: &str, kinds: &[&str]) -> Result<(), QueueError> {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen, started_at)
         VALUES ($1, 'tierflow', 'tierflow-queue', $2, now(), now())
         ON CONFLICT (id) DO UPDATE SET last_seen = now()",
    )
    .bind(worker_id)
    .bind(kinds.join(","))
    .execute(pool)
    .await?;
    Ok(())
}

/// Refreshes `last_seen` every `interval` until stopped; a failed beat is logged and retried at
/// the next tick (the process never exits for it).
pub(crate) async fn run(
    pool: PgPool,
    worker_id: Arc<str>,
    kinds: Vec<&'static str>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Upsert: the row may have been pruned while the database was away.
        match register(&pool, &worker_id, &kinds).await {
            Ok(()) if failing => {
                tracing::info!("heartbeat restored");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "heartbeat failed; jobs of this worker may be rescued by another replica if this lasts");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
