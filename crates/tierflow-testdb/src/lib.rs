//! A fresh, migrated PostgreSQL database per test, cloned from a template.
//!
//! [`TestDb::new`] connects to the server named by `TIERFLOW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), makes sure a migrated template database exists
//! for the current migrations (its name carries a hash of them), and creates
//! `tierflow_test_<uuid>` from it with `CREATE DATABASE … TEMPLATE`, which takes a fraction of
//! running the migrations. The copy is dropped when the `TestDb` is dropped, so tests run in
//! parallel and in any order without seeing each other's rows.
//!
//! The template is built under an advisory lock and published by renaming it into place, so
//! parallel test processes build it once and never clone a half-migrated one.

pub mod private;
pub mod proxy;

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `timeout`: what
/// tests use instead of sleeping.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The server tests use when `TIERFLOW_TEST_DATABASE_URL` is unset.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A private database for one test.
pub struct TestDb {
    name: String,
    admin: PgConnectOptions,
    options: PgConnectOptions,
    pool: PgPool,
}

impl TestDb {
    /// Creates a fresh migrated database with the canonical tiers seeded.
    ///
    /// Panics with a clear message when PostgreSQL is unreachable: a test cannot run without it.
    pub async fn new() -> TestDb {
        let url =
            std::env::var("TIERFLOW_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let admin: PgConnectOptions = url.parse().unwrap_or_else(|e| {
            panic!("TIERFLOW_TEST_DATABASE_URL {url:?} is not a PostgreSQL URL: {e}")
        });
        let admin = admin.application_name("tierflow-testdb");
        let template = ensure_template(&admin).await;
        Self::create(admin, Some(template)).await
    }

    async fn create(admin: PgConnectOptions, template: Option<String>) -> TestDb {
        let name = format!("tierflow_test_{}", Uuid::new_v4().simple());
        let mut conn = connect(&admin).await;
        match template {
            Some(t) => exec(&mut conn, &format!("CREATE DATABASE {name} TEMPLATE {t}")).await,
            None => exec(&mut conn, &format!("CREATE DATABASE {name}")).await,
        }
        conn.close().await.ok();
        let options = admin.clone().database(&name).application_name(&name);
        let pool = PgPoolOptions::new()
            .max_connections(60)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("connect to test database {name}: {e}"));
        TestDb {
            name,
            admin,
            options,
            pool,
        }
    }

    /// Creates a fresh, empty database (no migrations), for tests of `migrate` itself.
    pub async fn empty() -> TestDb {
        let url =
            std::env::var("TIERFLOW_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let admin: PgConnectOptions = url.parse().unwrap_or_else(|e| {
            panic!("TIERFLOW_TEST_DATABASE_URL {url:?} is not a PostgreSQL URL: {e}")
        });
        Self::create(admin.application_name("tierflow-testdb"), None).await
    }

    /// A pool on the test database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Connect options for the test database (for a second pool: a "restart").
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// The URL of the test database, for a child process's `DATABASE_URL`.
    pub fn url(&self) -> String {
        let o = &self.options;
        format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            o.get_host(),
            o.get_port(),
            self.name
        )
    }

    /// The database's name (also the `application_name` of its connections).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which is blocked until this returns, so the pool
        // cannot be closed gracefully here (a connection still on its way back to the pool would
        // wait forever). `WITH (FORCE)` ends the pool's sessions instead, from a runtime of our own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("tierflow-testdb: could not drop {}", self.name);
        }
    }
}

async fn connect(opts: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(opts).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach PostgreSQL at {}:{} ({e}); start it (bash .ci/run does) or set TIERFLOW_TEST_DATABASE_URL",
            opts.get_host(),
            opts.get_port()
        )
    })
}

/// Runs `sql`, retrying for a few seconds while PostgreSQL still counts a just-closed session
/// as connected to the database involved (`CREATE DATABASE … TEMPLATE`, `RENAME`).
async fn exec(conn: &mut PgConnection, sql: &str) {
    let mut tries = 0;
    loop {
        match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return,
            Err(e) if tries < 50 && e.to_string().contains("being accessed by other users") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

/// The template's name: a hash of every migration's checksum, so a schema change gets a new one.
fn template_name() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    let q = tierflow_store::migrate::tierflow_migrator();
    let a = tierflow_store::migrate::queue_migrator();
    for m in a.iter().chain(q.iter()) {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("tierflow_template_{h:016x}")
}

async fn ensure_template(admin: &PgConnectOptions) -> String {
    let template = template_name();
    let mut conn = connect(admin).await;
    exec(&mut conn, "SELECT pg_advisory_lock(7411)").await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("look up template: {e}"));
    if !exists {
        let building = format!("{template}_building");
        exec(
            &mut conn,
            &format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
        )
        .await;
        exec(&mut conn, &format!("CREATE DATABASE {building}")).await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin.clone().database(&building))
            .await
            .unwrap_or_else(|e| panic!("connect to {building}: {e}"));
        tierflow_store::migrate::migrate(&pool)
            .await
            .unwrap_or_else(|e| panic!("migrate template {building}: {e}"));
        pool.close().await;
        exec(
            &mut conn,
            &format!("ALTER DATABASE {building} RENAME TO {template}"),
        )
        .await;
    }
    exec(&mut conn, "SELECT pg_advisory_unlock(7411)").await;
    conn.close().await.ok();
    template
}
