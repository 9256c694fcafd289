//! Listens for `tierflow_jobs` notifications and wakes the producer of the kind named.
//!
//! One LISTEN connection per process. Each producer has a [`Notify`]; `notify_one` stores a
//! permit when the producer is not waiting, so a notification that arrives while it is claiming
//! is not lost. When the connection drops (a restart, a failover, `pg_terminate_backend`), the
//! notifier wakes every producer — notifications may have been missed — and reconnects with
//! capped backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The channel the queue's triggers notify (see `migrations/*_queue_wakeups.sql`).
pub const CHANNEL: &str = "tierflow_jobs";

pub(crate) struct Notifier {
    pub pool: PgPool,
    pub wakers: HashMap<&'static str, Arc<Notify>>,
    pub stop: CancellationToken,
}

impl Notifier {
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        while !self.stop.is_cancelled() {
            match self.listen().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "LISTEN connection lost; producers fall back to polling until it is back");
                }
            }
            self.wake_all();
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Listens until stopped (`Ok`) or the connection fails (`Err`).
    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        tracing::debug!("listening on {CHANNEL}");
        // Anything may have been inserted while we were not listening.
        self.wake_all();
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                n = listener.try_recv() => match n? {
                    Some(n) => {
                        if let Some(w) = self.wakers.get(n.payload()) {
                            w.notify_one();
                        }
                    }
                    // The connection was lost; recv would reconnect silently, but producers must
                    // hear about the gap.
                    None => return Err(sqlx::Error::PoolClosed),
                },
            }
        }
    }

    fn wake_all(&self) {
        for w in self.wakers.values() {
            w.notify_one();
        }
    }
}
