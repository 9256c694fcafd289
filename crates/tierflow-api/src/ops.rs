//! The operations endpoint every process serves: `/metrics` (Prometheus text), `/healthz`,
//! `/readyz`, on its own listener (`TIERFLOW_METRICS_LISTEN`), so scraping and probes never go
//! through the API's authentication or compete with its traffic.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::net::TcpListener;

/// Histogram buckets in seconds: 1 ms to 5 min, dense where pickup and job times live.
pub const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide Prometheus recorder (histograms as real histograms) and registers
/// every tierflow metric's description and the build info.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    tierflow_queue::metrics::describe();
    tierflow_store::metrics::describe();
    metrics::describe_gauge!("tierflow_build_info", "Always 1; the version is a label.");
    metrics::gauge!("tierflow_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

#[derive(Clone)]
struct OpsState {
    pool: PgPool,
    handle: PrometheusHandle,
}

/// A bound operations endpoint.
pub struct OpsServer {
    listener: TcpListener,
    router: Router,
}

impl OpsServer {
    /// Binds `addr`.
    pub async fn build(
        addr: SocketAddr,
        pool: PgPool,
        handle: PrometheusHandle,
    ) -> std::io::Result<OpsServer> {
        let listener = TcpListener::bind(addr).await?;
        let router = Router::new()
            .route("/metrics", get(render))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .with_state(OpsState { pool, handle });
        Ok(OpsServer { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; keeps the exporter's histograms trimmed meanwhile.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn render(State(s): State<OpsState>) -> impl IntoResponse {
    s.handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.handle.render(),
    )
}

async fn ready(State(s): State<OpsState>) -> (StatusCode, String) {
    match readiness(&s.pool).await {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Whether the process can serve: the database answers within 2 s and every migration this
/// binary knows is applied. `Err` says what is wrong.
pub async fn readiness(pool: &PgPool) -> Result<(), String> {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        tierflow_store::migrate::is_current(pool),
    )
    .await;
    // What is wrong, without internals (database and role names, addresses, source locations):
    // probes and callers get the class, the log gets the error.
    match check {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("migrations pending; run `tierflow migrate`".into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database refused or could not be reached");
            Err("database unreachable".into())
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer within 2 s");
            Err("database did not answer within 2 s".into())
        }
    }
}
