//! `tierflow bench`: measures tierflow on this machine, in a database it creates and drops.
//!
//! Sections (each prints a progress line while it runs):
//! - **enqueue** — transition requests through the Rust API (one client, then several), through
//!   HTTP with 16 concurrent clients, and bulk job inserts;
//! - **drain** — N pre-enqueued no-op jobs, and the real jobs of N downgrades (each doing its
//!   domain transaction) in production order — `voice_disable`/`sla_freeze` at request time,
//!   `apply_downgrade` at grace end — with W `bench-worker` processes × concurrency C, counting
//!   the jobs that found nothing to do, and the WAL they wrote; then `pgbench -N` on the same
//!   server, the yardstick the real jobs are compared with;
//! - **pickup** — no-op jobs enqueued one by one at 100/s: claim − due, and stalls over 100 ms;
//! - **schedule** — jobs due 0.5–3 s ahead: claim − due;
//! - **rescue** — kill -9 of a worker holding jobs until they run in another process;
//! - **table growth** — the best no-op drain again with many finished rows kept in the table;
//! - **scale** — the no-op drain with 1, 2 and 4 worker processes.
//!
//! `--only drain,growth` runs some sections (their names: enqueue, drain, pickup, schedule, rescue,
//! growth, scale).
//!
//! Times come from the database (`lock_at` is the claim time, `done_at` the finish, `run_at` the
//! due time), so process start-up is not counted in drain rates.

mod kinds;
mod procs;
pub mod sustained;
pub mod worker;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::Args;
use clap::builder::TypedValueParser as _;
use serde::Serialize;
use sqlx::PgPool;
use tierflow_domain::SystemClock;
use tierflow_domain::ids::{Actor, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_queue::{NewJob, enqueue};
use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
use tierflow_store::{Context, TransitionRequest, request_transition};

use kinds::{BenchNoop, BenchSleep};
use procs::Workers;

/// The benchmark's own options; the `tierflow` binary adds where the database is.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A short run (under 2 minutes) with smaller sizes, for smoke tests.
    #[arg(long, env = "TIERFLOW_BENCH_QUICK")]
    pub quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long, env = "TIERFLOW_BENCH_JSON")]
    pub json: bool,
    /// Run only these sections (comma-separated); all when absent.
    #[arg(long, env = "TIERFLOW_BENCH_ONLY", value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Instead of the sections: producers and workers together for this long (90s, 10m, 1h)
    /// against a PostgreSQL server the benchmark starts with production settings (autovacuum
    /// on), then the pressure cases (pinned xmin, a burst) and pgbench's plain-SQL queue on the
    /// same server, reported window by window. Ignores the database options.
    #[arg(
        long,
        env = "TIERFLOW_BENCH_SUSTAINED",
        value_parser = sustained::parse_duration,
        value_name = "DURATION"
    )]
    pub sustained: Option<Duration>,
    /// Sustained: the steady phase's offered rate (jobs/s); searched for when absent.
    #[arg(long, env = "TIERFLOW_BENCH_RATE", requires = "sustained")]
    pub rate: Option<f64>,
    /// Sustained: HTTP transition requests per second beside the direct enqueues (0: none).
    #[arg(long, env = "TIERFLOW_BENCH_HTTP_RATE", default_value_t = 50.0)]
    pub http_rate: f64,
    /// Sustained: length of a report window.
    #[arg(long, env = "TIERFLOW_BENCH_WINDOW", value_parser = sustained::parse_duration, default_value = "60s")]
    pub window: Duration,
    /// Sustained: how long xmin stays pinned (the burst lasts half of it).
    #[arg(long, env = "TIERFLOW_BENCH_PRESSURE", value_parser = sustained::parse_duration, default_value = "120s")]
    pub pressure: Duration,
    /// Sustained: the pressure phases' offered rate, as a fraction of the sustainable rate.
    #[arg(long, env = "TIERFLOW_BENCH_PRESSURE_LOAD", default_value_t = 0.7)]
    pub pressure_load: f64,
    /// Sustained: how long finished jobs are kept (the table's steady size is rate × this).
    #[arg(long, env = "TIERFLOW_BENCH_RETENTION", value_parser = sustained::parse_duration, default_value = "5m")]
    pub retention: Duration,
    /// Sustained: bench-worker processes, and the concurrency of each.
    #[arg(long, env = "TIERFLOW_BENCH_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Sustained: jobs of each transactional kind a bench-worker process runs at once.
    #[arg(long, env = "TIERFLOW_BENCH_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Sustained: slots of each bench-worker process for the no-op kind, which is standalone
    /// (as `tierflow worker --standalone-concurrency`).
    #[arg(long, env = "TIERFLOW_BENCH_STANDALONE_CONCURRENCY",
          default_value_t = tierflow_queue::fleet::DEFAULT_STANDALONE_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub standalone_concurrency: usize,
}

/// A section of the benchmark (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Enqueue,
    Drain,
    Pickup,
    Schedule,
    Rescue,
    Growth,
    Scale,
}

/// Sizes of one run.
#[derive(Debug, Clone, Serialize)]
struct Sizes {
    rust_requests: usize,
    http_requests: usize,
    bulk_jobs: usize,
    drain_jobs: usize,
    real_downgrades: usize,
    pickup_runs: usize,
    pickup_jobs: usize,
    schedule_jobs: usize,
    rescue_trials: usize,
    finished_rows: usize,
    scale_jobs: usize,
    pgbench_scale: u32,
    pgbench_secs: u32,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                rust_requests: 300,
                http_requests: 600,
                bulk_jobs: 20_000,
                drain_jobs: 10_000,
                real_downgrades: 1_000,
                pickup_runs: 1,
                pickup_jobs: 200,
                schedule_jobs: 100,
                rescue_trials: 1,
                finished_rows: 100_000,
                scale_jobs: 5_000,
                pgbench_scale: 2,
                pgbench_secs: 5,
            }
        } else {
            Sizes {
                rust_requests: 2_000,
                http_requests: 5_000,
                bulk_jobs: 100_000,
                drain_jobs: 20_000,
                real_downgrades: 6_000,
                pickup_runs: 10,
                pickup_jobs: 500,
                schedule_jobs: 500,
                rescue_trials: 3,
                finished_rows: 1_000_000,
                scale_jobs: 20_000,
                pgbench_scale: 10,
                pgbench_secs: 20,
            }
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
struct Figure {
    section: &'static str,
    what: String,
    value: f64,
    unit: &'static str,
    how: String,
}

struct Bench {
    pool: PgPool,
    url: String,
    ctx: Context,
    started: Instant,
    figures: Vec<Figure>,
}

/// A progress line on stderr, with the seconds since `started`.
fn progress(started: Instant, line: impl AsRef<str>) {
    eprintln!(
        "[{:>6.1}s] {}",
        started.elapsed().as_secs_f64(),
        line.as_ref()
    );
}

impl Bench {
    fn progress(&self, line: impl AsRef<str>) {
        progress(self.started, line);
    }

    fn record(
        &mut self,
        section: &'static str,
        what: impl Into<String>,
        value: f64,
        unit: &'static str,
        how: impl Into<String>,
    ) {
        let f = Figure {
            section,
            what: what.into(),
            value,
            unit,
            how: how.into(),
        };
        self.progress(format!(
            "  {} / {}: {:.2} {}",
            f.section, f.what, f.value, f.unit
        ));
        self.figures.push(f);
    }

    async fn clear_jobs(&self) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE apalis.jobs")
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM apalis.workers")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Starts `n` bench-worker processes with concurrency `c`.
    fn workers(&self, n: usize, c: usize) -> anyhow::Result<Workers> {
        Workers::start(&self.url, n, c)
    }

    async fn enqueue_noops(&self, n: usize, due: chrono::DateTime<Utc>) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
            let jobs = chunk
                .iter()
                .map(|_| NewJob::new(&BenchNoop {}, due))
                .collect::<Result<Vec<_>, _>>()?;
            enqueue(&mut conn, jobs).await?;
        }
        Ok(())
    }

    /// Waits until no job of `kinds` is left to run; fails at once if one of `workers` died.
    async fn wait_drained(
        &self,
        workers: &mut Workers,
        kinds: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            workers.check()?;
            // Polled 20 times a second while the workers drain, so it must cost the server next
            // to nothing: each EXISTS reads one of the partial indexes. A count over the three
            // statuses matches neither and scans the table — 5 ms of the server's CPU per poll
            // with 100k finished rows, a tenth of a core taken from the drain it measures.
            let busy: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM apalis.jobs
                                 WHERE job_type = ANY($1) AND status IN ('Pending', 'Failed'))
                     OR EXISTS (SELECT 1 FROM apalis.jobs
                                 WHERE job_type = ANY($1) AND status = 'Running')",
            )
            .bind(kinds)
            .fetch_one(&self.pool)
            .await?;
            if !busy {
                return Ok(());
            }
            if Instant::now() > deadline {
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM apalis.jobs
                      WHERE job_type = ANY($1) AND status IN ('Pending', 'Failed', 'Running')",
                )
                .bind(kinds)
                .fetch_one(&self.pool)
                .await?;
                bail!("{left} jobs still not done after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Jobs per second between the first claim and the last finish of `kinds`.
    async fn drain_rate(&self, kinds: &[&str]) -> anyhow::Result<f64> {
        let (n, secs) = self.drain_span(kinds).await?;
        Ok(n as f64 / secs)
    }

    /// The real jobs of `n` downgrades for new tenants named `<prefix><i>`, run in production
    /// order with `w` processes × `c`: the downgrades are requested with an hour's grace, so
    /// `voice_disable` and `sla_freeze` are due at once and drain first; then the grace end is
    /// moved to now (what waiting out the hour would do) and the `apply_downgrade` jobs drain.
    /// Every job then does its work; any that finds nothing to do is counted as a no-op.
    async fn drain_real(
        &mut self,
        prefix: &str,
        n: usize,
        workers: RealWorkers,
    ) -> anyhow::Result<RealDrain> {
        self.clear_jobs().await?;
        provision(self, prefix, n).await?;
        {
            let mut conn = self.pool.acquire().await?;
            for i in 0..n {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                request_transition(
                    &mut tx,
                    &self.ctx,
                    request(format!("{prefix}{i}"), "starter", 3600)?,
                )
                .await?;
                tx.commit().await?;
            }
        }
        let wal_start = self.wal_lsn().await?;
        let mut procs = match workers {
            RealWorkers::Bench(w, c) => self.workers(w, c)?,
            RealWorkers::Production => Workers::start_production(&self.url)?,
        };
        let at_request = ["voice_disable", "sla_freeze"];
        self.wait_drained(&mut procs, &at_request, Duration::from_secs(300))
            .await?;
        let first = self.drain_span(&at_request).await?;
        // WAL of the drains only: not of the bench's own fast-forward between them.
        let wal_first_end = self.wal_lsn().await?;
        let mut wal = self.wal_between(&wal_start, &wal_first_end).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE tier_transitions SET grace_ends_at = now() - interval '1 second'
              WHERE status = 'pending' AND tenant_id LIKE $1 || '%'",
        )
        .bind(prefix)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE apalis.jobs SET run_at = now() WHERE job_type = 'apply_downgrade' AND status = 'Pending'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let wal_second = self.wal_lsn().await?;
        self.wait_drained(&mut procs, &["apply_downgrade"], Duration::from_secs(300))
            .await?;
        let wal_second_end = self.wal_lsn().await?;
        wal += self.wal_between(&wal_second, &wal_second_end).await?;
        let wal_records = self
            .wal_records(&[(&wal_start, &wal_first_end), (&wal_second, &wal_second_end)])
            .await;
        let second = self.drain_span(&["apply_downgrade"]).await?;
        procs.stop();
        let real = ["voice_disable", "sla_freeze", "apply_downgrade"];
        let no_ops: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = ANY($1) AND status = 'Done'
                AND last_result ->> 'Ok' LIKE 'no-op%'",
        )
        .bind(&real[..])
        .fetch_one(&self.pool)
        .await?;
        Ok(RealDrain {
            jobs: first.0 + second.0,
            secs: first.1 + second.1,
            no_ops,
            wal_bytes: wal,
            wal_records,
        })
    }

    /// The server's current WAL position.
    async fn wal_lsn(&self) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await?)
    }

    /// WAL bytes written on the whole server between two positions.
    async fn wal_between(&self, from: &str, to: &str) -> anyhow::Result<f64> {
        Ok(
            sqlx::query_scalar("SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::float8")
                .bind(from)
                .bind(to)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The WAL of `spans` by record type (resource manager/record, bytes with full-page images
    /// apart), largest first, read with `pg_walinspect`; `None` where the extension cannot be
    /// created (PostgreSQL's contrib package missing, or not a superuser): the total alone is
    /// then reported.
    async fn wal_records(&self, spans: &[(&str, &str)]) -> Option<Vec<WalRecords>> {
        let mut conn = self.pool.acquire().await.ok()?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            .execute(&mut *conn)
            .await
            .ok()?;
        // pg_walinspect reads only flushed WAL, and the jobs committed asynchronously: wait for
        // the WAL writer (it flushes every 200 ms by default) to pass the last span.
        let last = spans.last()?.1;
        for _ in 0..50 {
            let flushed: bool =
                sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn")
                    .bind(last)
                    .fetch_one(&mut *conn)
                    .await
                    .ok()?;
            if flushed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut by_kind: std::collections::BTreeMap<(String, String), WalRecords> =
            Default::default();
        for (from, to) in spans {
            // Each record under the relation its first block belongs to (a B-tree insert under
            // its index, a heap update under its table); records without blocks (commits) and
            // blocks of other databases under "-".
            let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
                "SELECT coalesce(pg_filenode_relation(
                            CASE WHEN m[1]::oid = d.dattablespace THEN 0 ELSE m[1]::oid END,
                            m[3]::oid)::regclass::text, '-'),
                        w.resource_manager || '/' || w.record_type,
                        count(*), sum(w.record_length - w.fpi_length)::int8, sum(w.fpi_length)::int8
                   FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) w
                   CROSS JOIN (SELECT oid, dattablespace FROM pg_database
                                WHERE datname = current_database()) d
                   LEFT JOIN LATERAL regexp_match(w.block_ref, 'rel (\\d+)/(\\d+)/(\\d+)') m
                     ON m[2]::oid IN (d.oid, 0)
                  GROUP BY 1, 2",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&mut *conn)
            .await
            .ok()?;
            for (relation, kind, count, record, fpi) in rows {
                let e = by_kind
                    .entry((relation.clone(), kind.clone()))
                    .or_insert(WalRecords {
                        relation,
                        kind,
                        ..Default::default()
                    });
                e.count += count;
                e.record_bytes += record;
                e.fpi_bytes += fpi;
            }
        }
        Some(by_kind.into_values().collect())
    }

    /// `pgbench -N` (its built-in TPC-B-like script without the updates of the small tables)
    /// with 16 clients for `secs` on this benchmark's server, in the benchmark's database
    /// (scale `scale`): the yardstick for real jobs, each a transaction of a few reads and
    /// writes. Transactions per second, as pgbench reports them.
    async fn pgbench_n(&self, scale: u32, secs: u32) -> anyhow::Result<f64> {
        pgbench(&["-i", "-q", "-s", &scale.to_string(), &self.url]).await?;
        let secs = secs.to_string();
        let out = pgbench(&["-N", "-n", "-c", "16", "-j", "2", "-T", &secs, &self.url]).await?;
        // "tps = 4123.456789 (without initial connection time)"
        out.lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no tps in pgbench's output: {out}"))
    }

    /// Finished jobs of `kinds` and the seconds from the first claim to the last finish.
    async fn drain_span(&self, kinds: &[&str]) -> anyhow::Result<(i64, f64)> {
        let (n, secs): (i64, f64) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM max(done_at) - min(lock_at))::float8 FROM apalis.jobs
              WHERE job_type = ANY($1) AND status = 'Done'",
        )
        .bind(kinds)
        .fetch_one(&self.pool)
        .await?;
        Ok((n, secs.max(1e-6)))
    }

    /// Drains `n` no-op jobs with `w` processes × `c`; returns jobs/s.
    async fn drain_noops(&mut self, n: usize, w: usize, c: usize) -> anyhow::Result<f64> {
        self.clear_jobs().await?;
        self.enqueue_noops(n, Utc::now()).await?;
        let mut procs = self.workers(w, c)?;
        self.wait_drained(&mut procs, &["bench_noop"], Duration::from_secs(300))
            .await?;
        procs.stop();
        self.drain_rate(&["bench_noop"]).await
    }
}

/// What a real-job drain did: jobs finished, seconds spent draining them (both phases), and how
/// many found nothing to do.
struct RealDrain {
    jobs: i64,
    secs: f64,
    no_ops: i64,
    /// WAL written on the server while the jobs drained.
    wal_bytes: f64,
    /// The same WAL by record type, where `pg_walinspect` is available.
    wal_records: Option<Vec<WalRecords>>,
}

/// Who runs the real-job drain.
#[derive(Debug, Clone, Copy)]
enum RealWorkers {
    /// `n` bench-worker processes × concurrency `c` (its pool of [`worker::POOL_SIZE`]).
    Bench(usize, usize),
    /// One `tierflow worker` with the production defaults.
    Production,
}

impl RealWorkers {
    fn label(self) -> String {
        match self {
            RealWorkers::Bench(w, c) => format!("{w} × {c}"),
            RealWorkers::Production => "tierflow worker defaults".to_string(),
        }
    }
}

/// WAL of one record type (`Heap/UPDATE`, `Btree/INSERT_LEAF`, …) over a span.
#[derive(Debug, Default)]
struct WalRecords {
    /// The table or index the record changed (its first block's), "-" for none.
    relation: String,
    kind: String,
    count: i64,
    record_bytes: i64,
    /// Full-page images: the first change to a page after a checkpoint writes the whole page.
    fpi_bytes: i64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the machine's `pgbench` (beside the PostgreSQL server binaries, else on `PATH`) with
/// `args`; its standard output, or an error with its standard error.
async fn pgbench(args: &[&str]) -> anyhow::Result<String> {
    let bin = tierflow_pg::find_bin()
        .map(|b| b.join("pgbench"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "pgbench".into());
    let out = tokio::process::Command::new(&bin)
        .args(args)
        .output()
        .await
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "pgbench {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let path = base[after_scheme..].find('/').map(|i| i + after_scheme);
    let root = path.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

impl BenchArgs {
    /// The settings of a sustained run, when one is asked for (`--sustained`): it starts its own
    /// server, so the caller need not connect to one.
    pub fn sustained_run(&self) -> Option<sustained::Sustained> {
        self.sustained.map(|duration| sustained::Sustained {
            duration,
            rate: self.rate,
            http_rate: self.http_rate,
            window: self.window,
            pressure: self.pressure,
            pressure_load: self.pressure_load,
            retention: self.retention,
            workers: self.workers,
            concurrency: self.concurrency,
            standalone_concurrency: self.standalone_concurrency,
            json: self.json,
        })
    }
}

/// Runs the benchmark. `admin` is a connection pool to the server, used to create the benchmark's
/// database and drop it at the end; `base_url` is a URL of that server (its database part is
/// replaced by the benchmark's), handed to the `bench-worker` and `api` processes it starts.
/// When `stop` (SIGTERM, Ctrl-C) completes first, the run is abandoned — the processes it
/// started are stopped — and its database is still dropped.
pub async fn run(
    args: BenchArgs,
    admin: &PgPool,
    base_url: &str,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let sizes = Sizes::new(args.quick);
    let name = format!("tierflow_bench_{:08x}", rand_u32());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin)
        .await?;
    let url = with_database(base_url, &name);
    let sections = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(30)
            .connect(&url)
            .await?;
        tierflow_store::migrate::migrate(&pool).await?;
        let ctx = Context::new(Arc::new(SystemClock));
        let mut b = Bench {
            pool,
            url: url.clone(),
            ctx,
            started,
            figures: Vec::new(),
        };
        b.progress(format!(
            "tierflow bench ({}) in database {name}",
            if args.quick { "quick" } else { "full" }
        ));
        let machine = machine(&b.pool).await?;
        run_sections(&mut b, &sizes, &args.only).await?;
        b.pool.close().await;
        Ok::<_, anyhow::Error>((machine, b.figures))
    };
    let result = tokio::select! {
        r = sections => r,
        () = stop => Err(anyhow::anyhow!(
            "interrupted: the run was abandoned and its database {name} dropped"
        )),
    };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(admin)
    .await;
    let (machine, figures) = result?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"machine": machine, "sizes": sizes, "figures": figures})
            )?
        );
    } else {
        println!("\n{machine:#}\nsizes: {}\n", serde_json::to_string(&sizes)?);
        println!(
            "{:<14} {:<46} {:>12} {:<8} HOW",
            "SECTION", "WHAT", "VALUE", "UNIT"
        );
        for f in &figures {
            println!(
                "{:<14} {:<46} {:>12.2} {:<8} {}",
                f.section, f.what, f.value, f.unit, f.how
            );
        }
        println!("\ntotal time {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

async fn machine(pool: &PgPool) -> anyhow::Result<serde_json::Value> {
    let pg: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(pool)
        .await?;
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Ok(serde_json::json!({
        "tierflow": env!("CARGO_PKG_VERSION"),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (mem_kb as f64 / 1048576.0 * 10.0).round() / 10.0,
        "postgresql": pg,
        "date": Utc::now().to_rfc3339(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    }))
}

async fn provision(b: &Bench, prefix: &str, n: usize) -> anyhow::Result<()> {
    provision_tenants(&b.pool, &b.ctx, prefix, n).await
}

/// Provisions tenants `<prefix>0` … on `professional`.
async fn provision_tenants(
    pool: &PgPool,
    ctx: &Context,
    prefix: &str,
    n: usize,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    for i in 0..n {
        provision_tenant(
            &mut conn,
            ctx,
            ProvisionRequest {
                tenant_id: TenantId::parse(format!("{prefix}{i}"))?,
                tier_id: TierId::parse("professional")?,
                reason: None,
                requested_by: Actor::parse("bench")?,
                expires_at: None,
                test_clock_id: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// The targets each enqueue tenant is sent in turn, from `professional`: a downgrade with grace
/// (a pending downgrade created), a lateral move to `professional-b` — a copy of professional
/// at the same rank that the bench adds — (the pending downgrade cancelled, the tier changed),
/// a downgrade again, a lateral move back: every request a real change that creates or cancels
/// a pending downgrade, and the cycle ends where it began.
const CYCLE: [&str; 4] = ["starter", "professional-b", "starter", "professional"];

/// Adds `professional-b`, professional's twin at the same rank, for [`CYCLE`]'s lateral moves.
async fn add_lateral_tier(b: &Bench) -> anyhow::Result<()> {
    add_twin_tier(&b.pool, &b.ctx).await
}

async fn add_twin_tier(pool: &PgPool, ctx: &Context) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut twin = tierflow_store::tiers::get(&mut conn, &TierId::parse("professional")?)
        .await?
        .context("the professional tier is seeded")?;
    twin.tier_id = TierId::parse("professional-b")?;
    twin.name = "Professional (bench twin)".into();
    tierflow_store::tiers::put(&mut conn, ctx, &twin, &Actor::parse("bench")?).await?;
    Ok(())
}

/// Requests by outcome: accepted changes, refusals by reason, errors.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    refused: std::collections::BTreeMap<String, usize>,
    errors: usize,
}

impl Tally {
    fn count<T>(&mut self, result: &Result<T, tierflow_store::StoreError>) {
        match result {
            Ok(_) => self.accepted += 1,
            Err(e) if e.is_caller_error() => {
                let reason = e.to_string();
                let reason = reason.split(';').next().unwrap_or_default().to_owned();
                *self.refused.entry(reason).or_default() += 1;
            }
            Err(_) => self.errors += 1,
        }
    }

    fn add(&mut self, other: Tally) {
        self.accepted += other.accepted;
        self.errors += other.errors;
        for (reason, n) in other.refused {
            *self.refused.entry(reason).or_default() += n;
        }
    }

    /// `N accepted changes, M refused (reason: k, …), E errors`.
    fn describe(&self) -> String {
        let refused: usize = self.refused.values().sum();
        let reasons: Vec<String> = self
            .refused
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        format!(
            "{} accepted changes, {refused} refused{}, {} errors",
            self.accepted,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            },
            self.errors
        )
    }
}

fn request(tenant: String, tier: &str, grace_secs: i64) -> anyhow::Result<TransitionRequest> {
    Ok(TransitionRequest {
        tenant_id: TenantId::parse(tenant)?,
        target: Target::Tier(TierId::parse(tier)?),
        grace: Some(GracePeriod::from_secs(grace_secs)?),
        reason: None,
        requested_by: Actor::parse("bench")?,
        idempotency_key: None,
    })
}

async fn run_sections(b: &mut Bench, s: &Sizes, only: &[Section]) -> anyhow::Result<()> {
    let want = |section: Section| only.is_empty() || only.contains(&section);
    // ── enqueue: Rust API ──
    if want(Section::Enqueue) {
        b.progress("enqueue: transition requests through the Rust API");
        add_lateral_tier(b).await?;
        provision(b, "r", 200).await?;
        let mut lat = Vec::new();
        let mut tally = Tally::default();
        let t0 = Instant::now();
        let mut conn = b.pool.acquire().await?;
        for i in 0..s.rust_requests {
            let req = request(format!("r{}", i % 200), CYCLE[(i / 200) % 4], 3600)?;
            let t = Instant::now();
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            tally.count(&request_transition(&mut tx, &b.ctx, req).await);
            tx.commit().await?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        drop(conn);
        let rate = tally.accepted as f64 / t0.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        b.record(
            "enqueue",
            "Rust API, 1 client",
            rate,
            "changes/s",
            format!(
                "{} requests: {}; p50 {:.2} ms, p99 {:.2} ms",
                s.rust_requests,
                tally.describe(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            ),
        );
        let t0 = Instant::now();
        let clients = 8;
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (pool, ctx, n) = (b.pool.clone(), b.ctx.clone(), s.rust_requests);
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                // Each tenant's cycle goes on where the 1-client run left it.
                for i in (n + c..2 * n).step_by(clients) {
                    let req = request(format!("r{}", i % 200), CYCLE[(i / 200) % 4], 3600)?;
                    let mut tx = pool.begin().await?;
                    let result = request_transition(&mut tx, &ctx, req).await;
                    if result.is_ok() {
                        tx.commit().await?;
                    }
                    tally.count(&result);
                }
                anyhow::Ok(tally)
            }));
        }
        let mut tally = Tally::default();
        for t in tasks {
            tally.add(t.await??);
        }
        b.record(
            "enqueue",
            "Rust API, 8 concurrent clients",
            tally.accepted as f64 / t0.elapsed().as_secs_f64(),
            "changes/s",
            format!(
                "{} requests over 200 tenants: {}",
                s.rust_requests,
                tally.describe()
            ),
        );

        // ── enqueue: HTTP ──
        b.progress("enqueue: transition requests over HTTP, 16 clients");
        http_section(b, s).await?;

        // ── enqueue: bulk ──
        b.clear_jobs().await?;
        let t0 = Instant::now();
        b.enqueue_noops(s.bulk_jobs, Utc::now() + chrono::Duration::days(1))
            .await?;
        b.record(
            "enqueue",
            "bulk insert (batches of 5,000)",
            s.bulk_jobs as f64 / t0.elapsed().as_secs_f64(),
            "jobs/s",
            format!("{} jobs", s.bulk_jobs),
        );
    }

    // ── drain: no-op ──
    let mut noop_best = None;
    if want(Section::Drain) {
        let mut best: f64 = 0.0;
        let mut best_config = (1, 16);
        // Here `c` is the no-op kind's slot count too (`Workers::start`): 16 as transactional kinds
        // have by default, and 128. The no-op kind is standalone (it holds no connection while it
        // runs), so a process can run many at once and the completer writes bigger batches.
        for (w, c) in [(1, 16), (2, 16), (1, 128), (2, 128)] {
            b.progress(format!(
                "drain: {} no-op jobs, {w} process(es) × concurrency {c}",
                s.drain_jobs
            ));
            let rate = b.drain_noops(s.drain_jobs, w, c).await?;
            if rate > best {
                best = rate;
                best_config = (w, c);
            }
            b.record(
                "drain",
                format!("no-op, {w} × {c}"),
                rate,
                "jobs/s",
                format!("{} jobs, first claim → last done", s.drain_jobs),
            );
        }
        noop_best = Some((best, best_config));

        // ── drain: real transition jobs ──
        let mut best_real: f64 = 0.0;
        let configs = [
            RealWorkers::Bench(1, 16),
            RealWorkers::Bench(2, 16),
            RealWorkers::Production,
        ];
        for (n, workers) in configs.into_iter().enumerate() {
            let label = workers.label();
            b.progress(format!(
                "drain: jobs of {} downgrades (domain transactions), {label}",
                s.real_downgrades
            ));
            let d = b
                .drain_real(&format!("d{n}-"), s.real_downgrades, workers)
                .await?;
            b.record(
                "drain",
                format!("real transition jobs, {label}"),
                d.jobs as f64 / d.secs,
                "jobs/s",
                format!(
                    "{} jobs in production order (voice_disable and sla_freeze at request, then apply_downgrade at grace end), {} of them no-ops",
                    d.jobs, d.no_ops
                ),
            );
            b.record(
                "drain",
                format!("WAL per real transition job, {label}"),
                d.wal_bytes / d.jobs.max(1) as f64,
                "B/job",
                "WAL written on the server while they drained (pg_current_wal_lsn), per job",
            );
            if let Some(records) = &d.wal_records {
                let per_job = |bytes: i64| bytes as f64 / d.jobs.max(1) as f64;
                let fpi: i64 = records.iter().map(|r| r.fpi_bytes).sum();
                let top = |key: fn(&WalRecords) -> &str| -> String {
                    let mut by: std::collections::BTreeMap<&str, (i64, i64, i64)> =
                        Default::default();
                    for r in records {
                        let e = by.entry(key(r)).or_default();
                        e.0 += r.count;
                        e.1 += r.record_bytes;
                        e.2 += r.fpi_bytes;
                    }
                    let mut by: Vec<_> = by.into_iter().collect();
                    by.sort_by_key(|(_, (_, rec, fpi))| std::cmp::Reverse(rec + fpi));
                    let top: Vec<String> = by
                        .iter()
                        .take(10)
                        .map(|(name, (count, rec, fpi))| {
                            format!(
                                "{name} {:.0} B ({:.1} records{})",
                                per_job(rec + fpi),
                                *count as f64 / d.jobs.max(1) as f64,
                                if *fpi > 0 {
                                    format!(", {:.0} B of page images", per_job(*fpi))
                                } else {
                                    String::new()
                                }
                            )
                        })
                        .collect();
                    top.join("; ")
                };
                b.record(
                    "drain",
                    format!("WAL per real job in full-page images, {label}"),
                    per_job(fpi),
                    "B/job",
                    format!(
                        "pg_walinspect, per job, largest first, by record type: {}; by relation: {}",
                        top(|r| &r.kind),
                        top(|r| &r.relation)
                    ),
                );
            } else {
                b.progress(
                    "  (no WAL breakdown: pg_walinspect could not be created or read; it needs \
                     PostgreSQL's contrib modules and a superuser)",
                );
            }
            best_real = best_real.max(d.jobs as f64 / d.secs);
        }
        let (scale, secs) = (s.pgbench_scale, s.pgbench_secs);
        b.progress(format!(
            "drain: pgbench -N, 16 clients, {secs} s, scale {scale}, same server"
        ));
        let tps = b.pgbench_n(scale, secs).await?;
        b.record(
            "drain",
            "pgbench -N, 16 clients",
            tps,
            "tps",
            format!(
                "pgbench's built-in simple-update script, scale {scale}, {secs} s, on this server"
            ),
        );
        b.record(
            "drain",
            "real jobs vs pgbench -N",
            best_real / tps,
            "×",
            "the better real-job drain above, over pgbench -N's transactions/s",
        );
    }

    // ── pickup latency at 100 jobs/s ──
    if want(Section::Pickup) {
        b.clear_jobs().await?;
        let mut procs = b.workers(1, 16)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut all = Vec::new();
        let mut stalls = 0;
        let mut worst_run_p99: f64 = 0.0;
        for run in 0..s.pickup_runs {
            b.progress(format!(
                "pickup: run {}/{} — {} jobs at 100/s",
                run + 1,
                s.pickup_runs,
                s.pickup_jobs
            ));
            sqlx::query("TRUNCATE apalis.jobs").execute(&b.pool).await?;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut conn = b.pool.acquire().await?;
            for _ in 0..s.pickup_jobs {
                tick.tick().await;
                enqueue(&mut conn, vec![NewJob::new(&BenchNoop {}, Utc::now())?]).await?;
            }
            drop(conn);
            b.wait_drained(&mut procs, &["bench_noop"], Duration::from_secs(60))
                .await?;
            let mut ms: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM lock_at - run_at)::float8 * 1000 FROM apalis.jobs WHERE job_type = 'bench_noop'",
        )
        .fetch_all(&b.pool)
        .await?;
            ms.sort_by(f64::total_cmp);
            stalls += ms.iter().filter(|m| **m > 100.0).count();
            worst_run_p99 = worst_run_p99.max(percentile(&ms, 0.99));
            all.extend(ms);
        }
        procs.stop();
        all.sort_by(f64::total_cmp);
        let how = format!(
            "{} runs × {} jobs, enqueued one by one at 100/s; claim − due",
            s.pickup_runs, s.pickup_jobs
        );
        b.record("pickup", "p50", percentile(&all, 0.5), "ms", how.clone());
        b.record("pickup", "p95", percentile(&all, 0.95), "ms", how.clone());
        b.record("pickup", "p99", percentile(&all, 0.99), "ms", how.clone());
        b.record(
            "pickup",
            "max",
            all.last().copied().unwrap_or(f64::NAN),
            "ms",
            how.clone(),
        );
        b.record(
            "pickup",
            "worst run's p99",
            worst_run_p99,
            "ms",
            how.clone(),
        );
        b.record("pickup", "stalls over 100 ms", stalls as f64, "jobs", how);
    }

    // ── schedule precision ──
    if want(Section::Schedule) {
        b.progress(format!(
            "schedule: {} jobs due 0.5–3 s ahead",
            s.schedule_jobs
        ));
        b.clear_jobs().await?;
        let mut procs = b.workers(1, 16)?;
        {
            let mut conn = b.pool.acquire().await?;
            let jobs = (0..s.schedule_jobs)
                .map(|i| {
                    NewJob::new(
                        &BenchNoop {},
                        Utc::now()
                            + chrono::Duration::milliseconds(
                                500 + (i as i64 * 2500) / s.schedule_jobs as i64,
                            ),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            enqueue(&mut conn, jobs).await?;
        }
        b.wait_drained(&mut procs, &["bench_noop"], Duration::from_secs(60))
            .await?;
        procs.stop();
        let mut ms: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM lock_at - run_at)::float8 * 1000 FROM apalis.jobs WHERE job_type = 'bench_noop'",
    )
    .fetch_all(&b.pool)
    .await?;
        ms.sort_by(f64::total_cmp);
        let how = format!(
            "{} jobs due 0.5–3 s after enqueue; claim − due",
            s.schedule_jobs
        );
        b.record("schedule", "p50", percentile(&ms, 0.5), "ms", how.clone());
        b.record("schedule", "p99", percentile(&ms, 0.99), "ms", how.clone());
        b.record(
            "schedule",
            "max",
            ms.last().copied().unwrap_or(f64::NAN),
            "ms",
            how,
        );
    }

    // ── rescue after kill -9 ──
    if want(Section::Rescue) {
        let mut rescues = Vec::new();
        for trial in 0..s.rescue_trials {
            b.progress(format!(
                "rescue: trial {}/{} — kill -9 a worker holding 4 jobs",
                trial + 1,
                s.rescue_trials
            ));
            b.clear_jobs().await?;
            let mut victim = b.workers(1, 4)?;
            {
                let mut conn = b.pool.acquire().await?;
                let jobs = (0..4)
                    .map(|_| NewJob::new(&BenchSleep { ms: 60_000 }, Utc::now()))
                    .collect::<Result<Vec<_>, _>>()?;
                enqueue(&mut conn, jobs).await?;
            }
            wait_for(
                &b.pool,
                "SELECT count(*) FROM apalis.jobs WHERE status = 'Running'",
                4,
                Duration::from_secs(30),
            )
            .await?;
            let mut rescuer = b.workers(1, 4)?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let killed = Instant::now();
            victim.kill9(0);
            wait_for(
                &b.pool,
                "SELECT count(*) FROM apalis.jobs WHERE status = 'Running' AND attempts = 2",
                4,
                Duration::from_secs(60),
            )
            .await?;
            rescues.push(killed.elapsed().as_secs_f64());
            rescuer.kill_all();
        }
        rescues.sort_by(f64::total_cmp);
        b.record(
            "rescue",
            "kill -9 → running elsewhere (max)",
            rescues.last().copied().unwrap_or(f64::NAN),
            "s",
            format!(
                "{} trial(s), 4 jobs held, default rescue_after 6 s, rescuer every 1 s",
                s.rescue_trials
            ),
        );
    }

    // ── table growth ──
    // The empty-table and the grown-table drains run back to back, three of each (medians), so
    // that this machine's drift over minutes does not read as an effect of the table's size.
    if want(Section::Growth) {
        let (w, c) = noop_best.map_or((2, 128), |(_, config)| config);
        let mut empty = Vec::new();
        for run in 1..=3 {
            b.progress(format!(
                "table growth: empty table, drain {run}/3 of {} no-op jobs, {w} × {c}",
                s.drain_jobs
            ));
            empty.push(b.drain_noops(s.drain_jobs, w, c).await?);
        }
        b.progress(format!(
            "table growth: inserting {} finished rows",
            s.finished_rows
        ));
        b.clear_jobs().await?;
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, run_at, lock_at, done_at)
             SELECT 'old' || lpad(g::text, 23, '0'), 'bench_old', '\\x7b7d'::bytea, 'Done', 1,
                    now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
               FROM generate_series(1, $1) g",
        )
        .bind(s.finished_rows as i64)
        .execute(&b.pool)
        .await?;
        sqlx::query("VACUUM ANALYZE apalis.jobs")
            .execute(&b.pool)
            .await?;
        // The bulk load's dirty pages are written now, not by a checkpoint during the drain: the
        // figure is about a big table, not about a big load a moment ago.
        sqlx::query("CHECKPOINT").execute(&b.pool).await?;
        let mut grown = Vec::new();
        for run in 1..=3 {
            b.progress(format!(
                "table growth: beside them, drain {run}/3 of {} no-op jobs",
                s.drain_jobs
            ));
            sqlx::query("DELETE FROM apalis.jobs WHERE job_type = 'bench_noop'")
                .execute(&b.pool)
                .await?;
            sqlx::query("DELETE FROM apalis.workers")
                .execute(&b.pool)
                .await?;
            b.enqueue_noops(s.drain_jobs, Utc::now()).await?;
            let mut procs = b.workers(w, c)?;
            b.wait_drained(&mut procs, &["bench_noop"], Duration::from_secs(300))
                .await?;
            procs.stop();
            grown.push(b.drain_rate(&["bench_noop"]).await?);
        }
        empty.sort_by(f64::total_cmp);
        grown.sort_by(f64::total_cmp);
        let (empty, grown) = (empty[1], grown[1]);
        b.record(
            "table growth",
            format!("no-op drain, {} finished rows kept", s.finished_rows),
            grown,
            "jobs/s",
            format!(
                "{w} × {c}, median of 3; {:.0} % of the empty-table median ({empty:.0} jobs/s) measured just before",
                grown / empty * 100.0
            ),
        );
    }

    // ── scale ──
    if want(Section::Scale) {
        for (w, c) in [(1, 64), (2, 64), (4, 64)] {
            b.progress(format!(
                "scale: {} no-op jobs with {w} process(es) × {c}",
                s.scale_jobs
            ));
            let rate = b.drain_noops(s.scale_jobs, w, c).await?;
            b.record(
                "scale",
                format!("{w} process(es) × {c}"),
                rate,
                "jobs/s",
                format!("{} jobs", s.scale_jobs),
            );
        }
    }
    Ok(())
}

async fn wait_for(
    pool: &PgPool,
    sql: &'static str,
    want: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        if n >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("waited {timeout:?} for `{sql}` to reach {want} (it is {n})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `url` answers 200.
async fn wait_http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if matches!(http.get(url).send().await, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` transition requests from `clients` concurrent clients over 500 tenants, alternating
/// downgrade and upgrade per tenant (`offset` continues the alternation); latencies in ms and the
/// number of unexpected answers.
async fn post_transitions(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    clients: usize,
    n: usize,
    offset: usize,
) -> anyhow::Result<(Vec<f64>, Tally)> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut tally = Tally::default();
            for i in (offset + c..offset + n).step_by(clients) {
                let tier = CYCLE[(i / 500) % 4];
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/tenants/h{}/transitions", i % 500))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"tier_id": tier, "grace_seconds": 3600}))
                    .send()
                    .await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                match r.map(|r| r.status().as_u16()) {
                    Ok(201) => tally.accepted += 1,
                    Ok(status @ (409 | 422)) => {
                        *tally.refused.entry(format!("HTTP {status}")).or_default() += 1
                    }
                    _ => tally.errors += 1,
                }
            }
            (lat, tally)
        }));
    }
    let mut lat = Vec::new();
    let mut tally = Tally::default();
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        tally.add(e);
    }
    Ok((lat, tally))
}

async fn http_section(b: &mut Bench, s: &Sizes) -> anyhow::Result<()> {
    provision(b, "h", 500).await?;
    let (mut server, base, token) = spawn_api(&b.url).await?;
    let http = reqwest::Client::new();
    let clients = 16;
    // Warm-up, not measured: the server's pool opens its connections and each connection
    // prepares its statements, as in a server that has been running for a while.
    let warm = 20 * clients;
    post_transitions(&http, &base, &token, clients, warm, 0).await?;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM tier_transitions")
        .fetch_one(&b.pool)
        .await?;
    let t0 = Instant::now();
    let (mut lat, tally) =
        post_transitions(&http, &base, &token, clients, s.http_requests, warm).await?;
    let rate = tally.accepted as f64 / t0.elapsed().as_secs_f64();
    server.stop();
    // Every accepted request is a transition row: the database agrees with the count.
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM tier_transitions")
        .fetch_one(&b.pool)
        .await?;
    anyhow::ensure!(
        (written - before) as usize == tally.accepted,
        "the HTTP section counted {} accepted changes but {} transitions were written",
        tally.accepted,
        written - before
    );
    lat.sort_by(f64::total_cmp);
    let how = format!(
        "{} POST /v1/tenants/…/transitions over 500 tenants: {} (each a transition row)",
        s.http_requests,
        tally.describe()
    );
    b.record(
        "enqueue",
        "HTTP, 16 clients",
        rate,
        "changes/s",
        how.clone(),
    );
    b.record(
        "enqueue",
        "HTTP, 16 clients, p50",
        percentile(&lat, 0.5),
        "ms",
        how.clone(),
    );
    b.record(
        "enqueue",
        "HTTP, 16 clients, p99",
        percentile(&lat, 0.99),
        "ms",
        how,
    );
    Ok(())
}

/// Starts a `tierflow api` process on `url`'s database with a fresh service token, and waits
/// until it answers: the process, its base URL and the token. The API runs as its own process,
/// as deployed, so the load generator's work is not scheduled on the server's runtime.
async fn spawn_api(url: &str) -> anyhow::Result<(procs::Process, String, String)> {
    let token = format!("bench-{:08x}{:08x}", rand_u32(), rand_u32());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = procs::Process::new(
        Command::new(std::env::current_exe()?)
            .arg("api")
            .env("DATABASE_URL", url)
            .env("TIERFLOW_LISTEN", format!("127.0.0.1:{port}"))
            .env("TIERFLOW_METRICS_LISTEN", "127.0.0.1:0")
            .env("TIERFLOW_SERVICE_TOKENS", format!("bench:{token}"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start a `tierflow api` process")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(30)).await;
    if let Err(e) = ready {
        server.stop();
        return Err(e);
    }
    Ok((server, base, token))
}

/// Random bits from the operating system (through a v4 UUID).
fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_in_urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app", "b"),
            "postgres://u:p@h:5432/b"
        );
        assert_eq!(
            with_database("postgres://u@h/app?sslmode=require", "b"),
            "postgres://u@h/b?sslmode=require"
        );
        assert_eq!(with_database("postgres://u@h:1", "b"), "postgres://u@h:1/b");
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
    }
}
