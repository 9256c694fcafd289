//! `tierflow api` (the HTTP API) and `tierflow run` (API and worker in one process).

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;
use tierflow_api::auth::Role;
use tierflow_api::{Api, ApiConfig, Token};
use tierflow_domain::transition::GracePeriod;

use super::worker::{FleetArgs, build_fleet, store_context, worker_db};
use crate::cli::{DatabaseArgs, EventArgs, OpsArgs};
use crate::{database, shutdown};

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// HTTP settings.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address the API listens on (port 0 picks a free port; the log says which).
    #[arg(long, env = "TIERFLOW_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Service tokens (transitions, overrides, reads), as `name:secret`, comma-separated. Never logged.
    #[arg(
        long = "service-token",
        env = "TIERFLOW_SERVICE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub service_tokens: Vec<String>,
    /// Admin tokens (everything, including tiers and job re-drive), as `name:secret`. Never logged.
    #[arg(
        long = "admin-token",
        env = "TIERFLOW_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "TIERFLOW_MAX_BODY_BYTES", default_value_t = ApiConfig::DEFAULT_MAX_BODY)]
    pub max_body_bytes: usize,
    /// Longest a request may take, in milliseconds; past it the answer is 503 with Retry-After.
    /// Also the API's database statement timeout.
    #[arg(long, env = "TIERFLOW_REQUEST_TIMEOUT_MS", default_value_t = ApiConfig::DEFAULT_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_timeout_ms: u64,
    /// A connection that sends no complete request headers within this many milliseconds (after
    /// opening, or idle between requests) is closed.
    #[arg(long, env = "TIERFLOW_HEADER_READ_TIMEOUT_MS", default_value_t = ApiConfig::DEFAULT_HEADER_READ_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,
    /// Most connections open at once (never more than half the file-descriptor limit); at the
    /// cap the oldest connection is closed to let a new one in.
    #[arg(long, env = "TIERFLOW_MAX_CONNECTIONS", default_value_t = ApiConfig::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Grace period of a downgrade that names none, in seconds (default 7 days).
    #[arg(long, env = "TIERFLOW_DEFAULT_GRACE_SECS", default_value_t = 7 * 24 * 3600)]
    pub default_grace_secs: i64,
}

impl HttpArgs {
    fn config(&self) -> anyhow::Result<ApiConfig> {
        let mut tokens = Vec::new();
        for (specs, role) in [
            (&self.service_tokens, Role::Service),
            (&self.admin_tokens, Role::Admin),
        ] {
            for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
                tokens.push(Token::parse(spec, role).map_err(|e| anyhow::anyhow!(e))?);
            }
        }
        if tokens.is_empty() {
            anyhow::bail!(
                "no API tokens configured; set TIERFLOW_SERVICE_TOKENS and TIERFLOW_ADMIN_TOKENS (name:secret, comma-separated)"
            );
        }
        Ok(ApiConfig {
            listen: self.listen,
            tokens,
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout(),
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            max_connections: self.max_connections as usize,
        })
    }

    fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    fn default_grace(&self) -> anyhow::Result<GracePeriod> {
        GracePeriod::from_secs(self.default_grace_secs)
            .map_err(|e| anyhow::anyhow!("TIERFLOW_DEFAULT_GRACE_SECS: {e}"))
    }
}

async fn bind(
    target: &str,
    events: &EventArgs,
    http: &HttpArgs,
    pool: sqlx::PgPool,
) -> anyhow::Result<Api> {
    events.validate()?;
    let config = http.config()?;
    let mut ctx = store_context(events);
    ctx.default_grace = http.default_grace()?;
    let api = Api::build(&config, pool, ctx)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = api.local_addr()?;
    tracing::info!(%addr, database = %target, "api listening");
    Ok(api)
}

pub async fn run_api(args: ApiArgs) -> anyhow::Result<()> {
    let db = database::open_with(
        &args.db,
        args.db.db_pool_size.unwrap_or(20),
        true,
        Some(args.http.request_timeout()),
    )
    .await?;
    let pool = db.pool.clone();
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let ops = crate::ops::start(&args.ops, pool.clone(), &stop, true).await?;
    let api = bind(&db.target, &args.events, &args.http, pool.clone()).await?;
    api.run_until(shutdown::signal()).await?;
    tracing::info!("api stopped");
    let _ = stop.send(());
    let _ = ops.await;
    db.close().await;
    Ok(())
}

/// Connections `tierflow run` adds to the worker's default pool for its API's requests.
const RUN_API_CONNECTIONS: u32 = 10;

/// API and worker in one process; a stop signal stops both, the API first. If either half ends
/// on its own (the worker side cannot heartbeat, a job runner died, the API's listener failed),
/// the other is stopped too and the command fails: half a process must not look healthy.
pub async fn run_both(args: RunArgs) -> anyhow::Result<()> {
    let fleet_config = args.fleet.fleet_config()?;
    let db = worker_db(
        &args.db,
        &fleet_config,
        Some(args.http.request_timeout()),
        RUN_API_CONNECTIONS,
    )
    .await?;
    let pool = db.pool.clone();
    let api = bind(&db.target, &args.events, &args.http, pool.clone()).await?;
    let fleet = build_fleet(pool.clone(), &args.events, &args.fleet, fleet_config)?;
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let ops = crate::ops::start(&args.ops, pool.clone(), &stop_tx, false).await?;
    let mut api_stop = stop_tx.subscribe();
    let mut fleet_stop = stop_tx.subscribe();
    let mut api_task = tokio::spawn(api.run_until(async move {
        let _ = api_stop.recv().await;
    }));
    let mut fleet_task = tokio::spawn(fleet.run_until(async move {
        let _ = fleet_stop.recv().await;
    }));
    let mut failure: Option<String> = None;
    let (mut api_done, mut fleet_done) = (None, None);
    tokio::select! {
        _ = shutdown::signal() => {}
        r = &mut api_task => {
            failure = Some(match &r {
                Ok(Ok(())) => "the API stopped on its own".to_owned(),
                Ok(Err(e)) => format!("the API failed: {e}"),
                Err(e) => format!("the API task failed: {e}"),
            });
            api_done = Some(r);
        }
        r = &mut fleet_task => {
            failure = Some(match &r {
                Ok(report) => report.stopped_early.clone().unwrap_or_else(|| "the worker stopped on its own".to_owned()),
                Err(e) => format!("the worker task failed: {e}"),
            });
            fleet_done = Some(r);
        }
    }
    if let Some(why) = &failure {
        tracing::error!(reason = %why, "one half of `tierflow run` stopped; stopping the other");
    }
    let _ = stop_tx.send(());
    let api_result = match api_done {
        Some(r) => r,
        None => api_task.await,
    };
    match api_result {
        Ok(Ok(())) => tracing::info!("api stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "api stopped with an error"),
        Err(e) => tracing::error!(error = %e, "api task failed"),
    }
    if fleet_done.is_none()
        && let Ok(report) = fleet_task.await
    {
        failure = failure.or(report.stopped_early);
    }
    let _ = ops.await;
    db.close().await;
    match failure {
        None => Ok(()),
        Some(why) => anyhow::bail!(
            "`tierflow run` stopped because one half failed: {why}; check the database's privileges and schema (`tierflow migrate`), then restart it"
        ),
    }
}
