//! The API's listener: serves each accepted connection with limits that keep idle or slow
//! clients from starving the health checks and other callers.
//!
//! - **Header-read timeout**: a connection that does not send a request's headers within
//!   [`Limits::header_read_timeout`] — right after it opens, or while it idles between requests —
//!   is closed (hyper's HTTP/1 `header_read_timeout`).
//! - **Connection cap**: at most [`Limits::max_connections`] connections are open, and never more
//!   than half the process's file-descriptor limit (the database pool and the process need the
//!   rest). At the cap, accepting a new connection first closes the oldest one gracefully (an
//!   in-flight request on it finishes): idle attackers, who connect first and send nothing, are
//!   the first to go, and a new caller — a probe, a client — is served. Connections still
//!   closing count too: past the cap and a quarter more, new connections are dropped unserved.
//! - **Accept errors** (out of file descriptors, …) pause accepting for a moment instead of
//!   spinning, and are logged once per burst.
//!
//! Shutdown stops accepting, closes idle connections and lets in-flight requests finish. The
//! API speaks HTTP/1.1 only: its header-read timeout runs from a connection's first byte, where
//! a server that sniffs for HTTP/2 waits for the first bytes without a bound.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// The open connections, oldest first, each with the signal that closes it.
#[derive(Default)]
struct Open {
    next_id: u64,
    by_age: BTreeMap<u64, Arc<Notify>>,
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = limits.max_connections.min(fd_budget()).max(1);
    tracing::debug!(
        cap,
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        "api listener limits"
    );
    // HTTP/1.1 only: its header-read timeout runs from the first byte a connection owes, where
    // a protocol-sniffing (HTTP/1 or HTTP/2) server would wait for the first bytes unbounded.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let open = Arc::new(Mutex::new(Open::default()));
    let alive = Arc::new(AtomicUsize::new(0));
    let (stopping_tx, stopping) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                failing = false;
                stream
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot accept connections; pausing briefly (out of file descriptors?)");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Connections asked to close still count until they are gone (an in-flight request
        // finishes first): past the cap plus this slack, a new connection is dropped at once.
        if alive.load(Ordering::Relaxed) >= cap + (cap / 4).max(1) {
            drop(stream);
            continue;
        }
        let (id, close) = {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            if open.by_age.len() >= cap
                && let Some((_, oldest)) = open.by_age.pop_first()
            {
                oldest.notify_one();
            }
            open.next_id += 1;
            let close = Arc::new(Notify::new());
            let id = open.next_id;
            open.by_age.insert(id, close.clone());
            (id, close)
        };
        let (builder, router, open, mut stopping, alive) = (
            builder.clone(),
            router.clone(),
            open.clone(),
            stopping.clone(),
            alive.clone(),
        );
        alive.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let service = TowerToHyperService::new(router);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = close.notified(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = stopping.changed(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            open.lock()
                .unwrap_or_else(|p| p.into_inner())
                .by_age
                .remove(&id);
            alive.fetch_sub(1, Ordering::Relaxed);
        });
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Half the process's soft limit on open files (Linux: `/proc/self/limits`), or no bound if it
/// cannot be read.
fn fd_budget() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<usize>().ok())
        })
        .map_or(usize::MAX, |soft| soft / 2)
}
