//! The database a command uses: `DATABASE_URL`, or — without it — an embedded PostgreSQL run
//! from this machine's server binaries in a data folder that persists between runs.
//!
//! Errors say where and what to do, and never print the URL, which may hold a password.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::cli::DatabaseArgs;

/// A pooled connection idle this long is pinged before use (see [`open`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// An open database: the pool and, in embedded mode, the server it runs on (stopped on drop,
/// unless another tierflow process started it).
pub struct Db {
    pub pool: PgPool,
    /// `host:port/database`, for messages.
    pub target: String,
    embedded: Option<tierflow_pg::Server>,
}

/// How long closing the pool may wait for connections still in use.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Db {
    /// Closes the pool, then stops an embedded server this process started.
    ///
    /// Closing waits for connections still checked out; after a stall (a process frozen past its
    /// statements' timeouts, a database that went away mid-statement) one may never come back,
    /// and an exiting process must not hang on it.
    pub async fn close(mut self) {
        if tokio::time::timeout(CLOSE_TIMEOUT, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?CLOSE_TIMEOUT, "database connections still in use at exit; closing them anyway");
        }
        if let Some(mut server) = self.embedded.take() {
            tokio::task::spawn_blocking(move || server.stop())
                .await
                .ok();
        }
    }
}

/// Opens the database with at most `size` connections. `lazy`: do not wait for a first
/// connection (a worker started before its database waits for it instead of failing).
pub async fn open(args: &DatabaseArgs, size: u32, lazy: bool) -> anyhow::Result<Db> {
    open_with(args, size, lazy, None).await
}

/// [`open`], with `statement_timeout` as the default of every connection if given.
pub async fn open_with(
    args: &DatabaseArgs,
    size: u32,
    lazy: bool,
    statement_timeout: Option<Duration>,
) -> anyhow::Result<Db> {
    let (url, embedded) = match &args.database_url {
        Some(url) => (url.clone(), None),
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            let server =
                tokio::task::spawn_blocking(move || -> anyhow::Result<tierflow_pg::Server> {
                    let server = tierflow_pg::Server::start(&dir)?;
                    server.ensure_database("tierflow")?;
                    Ok(server)
                })
                .await??;
            tracing::info!(data_dir = %server.data_dir().display(), port = server.port(),
                "no DATABASE_URL: using the embedded PostgreSQL");
            (server.url("tierflow"), Some(server))
        }
    };
    let options: PgConnectOptions = url.parse().map_err(|_| {
        anyhow::anyhow!(
            "DATABASE_URL is not a PostgreSQL URL; expected postgres://user:password@host:port/database"
        )
    })?;
    let mut options = options.application_name("tierflow");
    if let Some(t) = statement_timeout {
        options = options.options([("statement_timeout", format!("{}ms", t.as_millis()))]);
    }
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default)")
    );
    let pool = PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(args.db_connect_timeout.max(1)))
        // sqlx pings every connection it hands out by default: one extra round trip per job and
        // per request. Like HikariCP's alive-bypass window, ping only a connection that sat idle
        // long enough to have been cut (a failover, an idle timeout); a busy connection proves
        // itself by being used, and a job or request that meets a broken one fails and retries.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options);
    if !lazy || embedded.is_some() {
        pool.acquire().await.with_context(|| {
            format!("cannot connect to PostgreSQL at {target}; check that it runs and that DATABASE_URL is right")
        })?;
    }
    if embedded.is_some() {
        // The embedded database is tierflow's own: keep it migrated, so a first run just works.
        let report = tierflow_store::migrate::migrate(&pool).await?;
        if report.tierflow_applied + report.queue_applied > 0 {
            tracing::info!(?report, "migrated the embedded database");
        }
    }
    tracing::debug!(%target, "database ready");
    Ok(Db {
        pool,
        target,
        embedded,
    })
}

/// Opens the database with the configured pool size (default 10), waiting for a connection.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<Db> {
    open(args, args.db_pool_size.unwrap_or(10), false).await
}

/// `$XDG_DATA_HOME/tierflow/postgres`, or `~/.local/share/tierflow/postgres`; as root
/// `/var/lib/tierflow/postgres` (the server then runs as the `postgres` user, which must be able
/// to reach the folder — a home folder usually is closed to it).
pub fn default_data_dir() -> PathBuf {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if root && std::env::var_os("XDG_DATA_HOME").is_none() {
        return PathBuf::from("/var/lib/tierflow/postgres");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("tierflow/postgres")
}
