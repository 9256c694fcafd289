//! Starting the operations endpoint (`/metrics`, health) beside a long-running command.

use anyhow::Context as _;
use sqlx::PgPool;
use tierflow_api::ops::{OpsServer, install_recorder};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::cli::OpsArgs;

/// Installs the metrics recorder, binds the endpoint and serves it until `stop` fires.
///
/// `publish_depth`: read the leader's queue-depth samples into gauges here (the API process; a
/// fleet does it itself).
pub async fn start(
    args: &OpsArgs,
    pool: PgPool,
    stop: &broadcast::Sender<()>,
    publish_depth: bool,
) -> anyhow::Result<JoinHandle<()>> {
    let handle = install_recorder().map_err(|e| anyhow::anyhow!(e))?;
    let server = OpsServer::build(args.metrics_listen, pool.clone(), handle)
        .await
        .with_context(|| format!("cannot listen on {} for /metrics", args.metrics_listen))?;
    tracing::info!(addr = %server.local_addr()?, "metrics listening");
    let mut rx = stop.subscribe();
    if publish_depth {
        let mut depth_rx = stop.subscribe();
        let depth_stop = tokio_util::sync::CancellationToken::new();
        let token = depth_stop.clone();
        tokio::spawn(async move {
            let _ = depth_rx.recv().await;
            token.cancel();
        });
        tokio::spawn(tierflow_queue::depth::run_publisher(
            pool,
            tierflow_queue::depth::DEFAULT_INTERVAL,
            depth_stop,
        ));
    }
    Ok(tokio::spawn(async move {
        if let Err(e) = server
            .run_until(async move {
                let _ = rx.recv().await;
            })
            .await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    }))
}
