//! `tierflow bench --sustained <duration>`: producers and workers running together for minutes,
//! against a PostgreSQL server of the benchmark's own started with production settings
//! (autovacuum on at its defaults, `synchronous_commit` on), which is how job queues fail in
//! production: dead rows piling up behind a long transaction, a table that grows while it is
//! being drained. The development server (autovacuum off) would hide all of it.
//!
//! Phases, each reported window by window (jobs/s, end-to-end latency, depth, dead tuples, table
//! and index size, WAL and CPU per job, and the machine's: its CPU busy, stolen by the hypervisor
//! and waiting for I/O, and the checkpoints so far — so a window that misses on a saturated or
//! noisy VM says so beside what the queue did):
//! 1. **search** — the offered rate of no-op jobs rises by ×1.25 per step while the workers keep
//!    up (≥ 95 % of the offered rate completed and less than a second of work left queued at
//!    the step's end; a step that fails is run once more before it counts); the last rate that
//!    kept up is the *sustainable rate* S (or `--rate`);
//! 2. **steady** — S for the whole `<duration>`, with an HTTP client asking for real tier changes
//!    at `--http-rate` beside the direct enqueuers;
//! 3. **half** — S/2 for one window: the latency a queue with headroom gives;
//! 4. **pin** — from an empty queue, at `--pressure-load` × K (K: what the steady phase's last
//!    windows completed per second), a transaction pins `xmin` for `--pressure` while four long
//!    read-only queries hold snapshots too; then the time until the backlog is back to where it
//!    was before;
//! 5. **burst** — 1.5 × K for half of `--pressure`, then the pressure load again until drained;
//! 6. **pgbench** — the same server, quiet: a minimal queue in plain SQL (INSERT, SKIP LOCKED
//!    claim, UPDATE to done, one job per client step, 16 clients) run by `pgbench` for a minute,
//!    (or the run's duration if shorter), the yardstick the queue's throughput is compared with.
//!
//! Finished jobs are kept `--retention` (5 minutes by default) rather than a week: the table
//! reaches its steady size, rate × retention, within the run, and the cleaner's deletes are part
//! of the cost measured; with a week's retention a ten-minute run measures a table that only
//! grows.
//!
//! Jobs are `bench_noop` (standalone: no transaction, success recorded by the completer) enqueued
//! by four producer tasks, each inserting what its share of the rate asks for every 10 ms;
//! end-to-end latency is `done_at − run_at` (the enqueue time). Times of the windows come from
//! the database's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tierflow_queue::{NewJob, enqueue};

use super::kinds::BenchNoop;
use super::procs::Workers;

/// Settings of a sustained run (from `tierflow bench --sustained …`).
#[derive(Debug, Clone)]
pub struct Sustained {
    pub duration: Duration,
    /// Offered rate of the steady phase; searched for when absent.
    pub rate: Option<f64>,
    /// HTTP transition requests per second beside the direct enqueuers (0: none).
    pub http_rate: f64,
    /// Length of a report window.
    pub window: Duration,
    /// How long `xmin` stays pinned in the pin phase (the burst lasts half of it).
    pub pressure: Duration,
    /// The offered rate of the pressure phases, as a fraction of the sustainable rate.
    pub pressure_load: f64,
    /// How long finished jobs are kept: the table reaches its steady size (rate × retention)
    /// within the run, and the cleaner's deletes are part of what is measured.
    pub retention: Duration,
    /// Worker processes, the concurrency of each, and its slots for the standalone (no-op) kind.
    pub workers: usize,
    pub concurrency: usize,
    pub standalone_concurrency: usize,
    pub json: bool,
}

/// Parses `90`, `90s`, `10m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write it like 90s, 10m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => return Err(format!("unknown unit `{other}` in `{s}`; use s, m or h")),
    };
    if secs == 0 {
        return Err("a sustained run lasts at least a second".into());
    }
    Ok(Duration::from_secs(secs))
}

/// The server's settings besides PostgreSQL's defaults (autovacuum and `synchronous_commit` are
/// left at theirs: on). Memory and checkpoints sized as a small production server would be.
const SERVER_CONF: &[(&str, &str)] = &[
    ("shared_buffers", "1GB"),
    ("effective_cache_size", "8GB"),
    ("max_wal_size", "4GB"),
    ("work_mem", "16MB"),
];

/// Producer tasks of the direct enqueue load, and their tick.
const PRODUCERS: usize = 4;
const TICK: Duration = Duration::from_millis(10);

/// One report window.
#[derive(Debug, Clone, Serialize)]
struct Window {
    phase: &'static str,
    /// Seconds since the run started, at the window's end.
    at_secs: f64,
    offered_per_s: f64,
    enqueued_per_s: f64,
    completed_per_s: f64,
    /// Real transition jobs completed (from the HTTP client's changes).
    real_completed_per_s: f64,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    e2e_max_ms: f64,
    /// Jobs due and not yet claimed at the window's end.
    depth: i64,
    live_tuples: i64,
    dead_tuples: i64,
    autovacuums: i64,
    table_mb: f64,
    indexes_mb: f64,
    wal_bytes_per_job: f64,
    pg_cpu_us_per_job: f64,
    worker_cpu_us_per_job: f64,
    /// The whole machine's CPU over the window, as a share of all its cores: busy (not idle,
    /// not waiting for I/O), stolen by the hypervisor, and idle waiting for I/O. A window that
    /// misses while the host was saturated or had its CPU stolen says so here, apart from what
    /// the queue did.
    host_busy_pct: f64,
    host_steal_pct: f64,
    host_iowait_pct: f64,
    /// Checkpoints the server has completed since it started (timed and requested).
    checkpoints: i64,
    http_accepted: u64,
    http_refused: u64,
    http_errors: u64,
    http_p99_ms: f64,
}

/// A point in time the windows are measured between.
struct Mark {
    db_time: DateTime<Utc>,
    wall: Instant,
    wal_lsn: String,
    enqueued: u64,
    pg_ticks: u64,
    worker_ticks: u64,
    host: HostCpu,
    http: (u64, u64, u64),
}

/// The machine's CPU time so far, in clock ticks over all cores (`/proc/stat`'s `cpu` line).
#[derive(Debug, Clone, Copy, Default)]
struct HostCpu {
    total: u64,
    idle: u64,
    iowait: u64,
    steal: u64,
}

impl HostCpu {
    /// Zero where `/proc/stat` cannot be read (the shares are then reported as NaN).
    fn now() -> HostCpu {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return HostCpu::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return HostCpu::default();
        };
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        HostCpu {
            total: f.iter().sum(),
            idle: at(3),
            iowait: at(4),
            steal: at(7),
        }
    }

    /// Busy, stolen and I/O-wait shares (%) of the time between `self` and `later`.
    fn shares(&self, later: &HostCpu) -> (f64, f64, f64) {
        let total = later.total.saturating_sub(self.total) as f64;
        if total == 0.0 {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64 * 100.0 / total;
        let idle = d(self.idle, later.idle);
        let iowait = d(self.iowait, later.iowait);
        (100.0 - idle - iowait, d(self.steal, later.steal), iowait)
    }
}

/// The direct enqueue load: producer tasks that insert `rate` no-op jobs per second between
/// them; the rate can change while they run.
struct Load {
    /// Offered jobs/s × 1000.
    rate_milli: Arc<AtomicU64>,
    enqueued: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    async fn start(pool: &PgPool) -> anyhow::Result<Load> {
        let rate_milli = Arc::new(AtomicU64::new(0));
        let enqueued = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..PRODUCERS {
            let mut conn = pool.acquire().await?.detach();
            let (rate_milli, enqueued, stop) = (rate_milli.clone(), enqueued.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // Jobs owed so far (fractional), at this producer's share of the rate.
                let mut owed = 0.0f64;
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let now = Instant::now();
                    let rate = rate_milli.load(Ordering::Relaxed) as f64 / 1000.0;
                    owed += rate / PRODUCERS as f64 * (now - last).as_secs_f64();
                    last = now;
                    let n = owed.floor() as usize;
                    if n == 0 {
                        continue;
                    }
                    owed -= n as f64;
                    let due = Utc::now();
                    let jobs = (0..n)
                        .map(|_| NewJob::new(&BenchNoop {}, due))
                        .collect::<Result<Vec<_>, _>>()?;
                    enqueue(&mut conn, jobs).await?;
                    enqueued.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        Ok(Load {
            rate_milli,
            enqueued,
            stop,
            tasks,
        })
    }

    fn set_rate(&self, per_s: f64) {
        self.rate_milli
            .store((per_s * 1000.0) as u64, Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Fails if a producer has stopped (on an error, which it then says).
    async fn check(&mut self) -> anyhow::Result<()> {
        if let Some(i) = self.tasks.iter().position(|t| t.is_finished()) {
            let task = self.tasks.remove(i);
            task.await
                .context("a producer task panicked")?
                .context("a producer stopped")?;
            bail!("a producer task stopped");
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}

/// The HTTP client: real tier changes over `tierflow api`, paced.
struct HttpLoad {
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    latencies: Arc<std::sync::Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpLoad {
    fn start(base: String, token: String, rate: f64, tenants: usize) -> HttpLoad {
        let load = HttpLoad {
            accepted: Default::default(),
            refused: Default::default(),
            errors: Default::default(),
            latencies: Default::default(),
            stop: Default::default(),
            task: None,
        };
        if rate <= 0.0 {
            return load;
        }
        let (accepted, refused, errors, latencies, stop) = (
            load.accepted.clone(),
            load.refused.clone(),
            load.errors.clone(),
            load.latencies.clone(),
            load.stop.clone(),
        );
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                // Tenant k % T, its turn k / T of the cycle: every request a real change.
                let tier = super::CYCLE[(k / tenants) % 4];
                let url = format!("{base}/v1/tenants/s{}/transitions", k % tenants);
                k += 1;
                let (http, token) = (http.clone(), token.clone());
                let (accepted, refused, errors, latencies) = (
                    accepted.clone(),
                    refused.clone(),
                    errors.clone(),
                    latencies.clone(),
                );
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = http
                        .post(url)
                        .bearer_auth(token)
                        .json(&serde_json::json!({"tier_id": tier, "grace_seconds": 3600}))
                        .send()
                        .await;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(201) => accepted.fetch_add(1, Ordering::Relaxed),
                        Ok(409 | 422) => refused.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    if let Ok(mut l) = latencies.lock() {
                        l.push(ms);
                    }
                });
            }
        });
        HttpLoad {
            task: Some(task),
            ..load
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// The p99 of the requests since the last call, in ms.
    fn take_p99(&self) -> f64 {
        let mut l = self
            .latencies
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        l.sort_by(f64::total_cmp);
        super::percentile(&l, 0.99)
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// CPU time, in clock ticks, of a process (`utime + stime`, and with `children` also the
/// `cutime + cstime` of its exited children), and its parent.
fn cpu_ticks(pid: u32, children: bool) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ppid = f.get(1)?.parse().ok()?;
    let own = n(11) + n(12);
    Some((if children { own + n(13) + n(14) } else { own }, ppid))
}

/// CPU ticks of the PostgreSQL server: the postmaster with its exited children, and every live
/// child (backends, autovacuum, WAL writer, checkpointer…).
fn server_ticks(postmaster: u32) -> u64 {
    let mut total = cpu_ticks(postmaster, true).map_or(0, |(t, _)| t);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((t, ppid)) = cpu_ticks(pid, false)
                && ppid == postmaster
            {
                total += t;
            }
        }
    }
    total
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// How often a window reads the jobs finished so far.
const SLICE: Duration = Duration::from_secs(5);
/// A slice read while the window runs stops this long before the database's now: a completion
/// stamps `done_at` when its transaction starts and is seen only once it commits.
const SETTLE: Duration = Duration::from_secs(2);

/// The jobs finished in a window, read slice by slice (every [`SLICE`]) while it runs: the
/// no-op jobs' end-to-end latencies and the real jobs' count. At 8,500 jobs/s a minute's window
/// finishes 510,000 jobs; reading them all at its end took 1.0–1.3 s, with parallel workers,
/// on the very server being measured — a burst at every window's end that the next window's
/// latencies felt. Read in slices, the same reads are spread over the window, and the
/// percentiles stay exact (computed here over every latency).
struct Finished {
    noop_e2e_ms: Vec<f64>,
    real: i64,
    /// Everything finished before this has been read.
    upto: DateTime<Utc>,
}

impl Finished {
    fn since(from: DateTime<Utc>) -> Finished {
        Finished {
            noop_e2e_ms: Vec::new(),
            real: 0,
            upto: from,
        }
    }

    /// Reads what finished up to [`SETTLE`] before the database's now.
    async fn read_settled(&mut self, pool: &PgPool) -> anyhow::Result<()> {
        let settle = chrono::Duration::from_std(SETTLE)?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(pool)
            .await?;
        self.read_until(pool, now - settle).await
    }

    /// Reads what finished from where the last read stopped up to `until`.
    async fn read_until(&mut self, pool: &PgPool, until: DateTime<Utc>) -> anyhow::Result<()> {
        if until <= self.upto {
            return Ok(());
        }
        let (e2e, real): (Vec<f64>, i64) = sqlx::query_as(
            "SELECT coalesce(array_agg(extract(epoch FROM done_at - run_at)::float8 * 1000)
                                 FILTER (WHERE job_type = 'bench_noop'), '{}'),
                    count(*) FILTER (WHERE job_type <> 'bench_noop')
               FROM apalis.jobs
              WHERE status = 'Done' AND done_at >= $1 AND done_at < $2",
        )
        .bind(self.upto)
        .bind(until)
        .fetch_one(pool)
        .await?;
        self.noop_e2e_ms.extend(e2e);
        self.real += real;
        self.upto = until;
        Ok(())
    }
}

/// Everything a sustained run has running.
struct Run {
    pool: PgPool,
    postmaster: u32,
    workers: Workers,
    load: Load,
    http: HttpLoad,
    started: Instant,
    ticks_per_s: f64,
    windows: Vec<Window>,
    json: bool,
}

impl Run {
    fn progress(&self, line: impl AsRef<str>) {
        super::progress(self.started, line);
    }

    async fn mark(&self) -> anyhow::Result<Mark> {
        let (db_time, wal_lsn): (DateTime<Utc>, String) =
            sqlx::query_as("SELECT clock_timestamp(), pg_current_wal_lsn()::text")
                .fetch_one(&self.pool)
                .await?;
        let worker_ticks = self
            .workers
            .pids()
            .into_iter()
            .filter_map(|p| cpu_ticks(p, true))
            .map(|(t, _)| t)
            .sum();
        Ok(Mark {
            db_time,
            wall: Instant::now(),
            wal_lsn,
            enqueued: self.load.enqueued.load(Ordering::Relaxed),
            pg_ticks: server_ticks(self.postmaster),
            worker_ticks,
            host: HostCpu::now(),
            http: self.http.counts(),
        })
    }

    /// Jobs due and not yet claimed.
    async fn depth(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs
              WHERE status IN ('Pending', 'Failed') AND run_at <= now()",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Runs for `length` at the current offered rate, checking the producers and workers, and
    /// measures the window from `from` to its end. The jobs finished in the window are read
    /// slice by slice while it runs ([`Finished`]).
    async fn window(
        &mut self,
        phase: &'static str,
        from: Mark,
        length: Duration,
    ) -> anyhow::Result<(Window, Mark)> {
        let end = from.wall + length;
        let mut finished = Finished::since(from.db_time);
        let mut sliced = Instant::now();
        while Instant::now() < end {
            self.workers.check()?;
            self.load.check().await?;
            if sliced.elapsed() >= SLICE {
                finished.read_settled(&self.pool).await?;
                sliced = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200).min(end - Instant::now())).await;
        }
        let to = self.mark().await?;
        finished.read_until(&self.pool, to.db_time).await?;
        let w = self.measure(phase, &from, &to, finished).await?;
        self.print(&w);
        self.windows.push(w.clone());
        Ok((w, to))
    }

    async fn measure(
        &self,
        phase: &'static str,
        from: &Mark,
        to: &Mark,
        finished: Finished,
    ) -> anyhow::Result<Window> {
        let secs = (to.wall - from.wall).as_secs_f64().max(1e-3);
        let mut e2e = finished.noop_e2e_ms;
        e2e.sort_by(f64::total_cmp);
        let noop = e2e.len() as i64;
        let real = finished.real;
        let (live, dead, autovacuums, table, indexes, checkpoints): (i64, i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT n_live_tup, n_dead_tup, autovacuum_count,
                        pg_relation_size(relid), pg_indexes_size(relid),
                        (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)
                   FROM pg_stat_user_tables WHERE relid = 'apalis.jobs'::regclass",
            )
            .fetch_one(&self.pool)
            .await?;
        let wal: f64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::float8")
            .bind(&from.wal_lsn)
            .bind(&to.wal_lsn)
            .fetch_one(&self.pool)
            .await?;
        let jobs = (noop + real).max(1) as f64;
        let us = |ticks: u64| ticks as f64 / self.ticks_per_s * 1e6 / jobs;
        let depth = self.depth().await?;
        let (host_busy_pct, host_steal_pct, host_iowait_pct) = from.host.shares(&to.host);
        Ok(Window {
            phase,
            at_secs: self.started.elapsed().as_secs_f64(),
            offered_per_s: self.load.rate(),
            enqueued_per_s: (to.enqueued - from.enqueued) as f64 / secs,
            completed_per_s: noop as f64 / secs,
            real_completed_per_s: real as f64 / secs,
            e2e_p50_ms: super::percentile(&e2e, 0.5),
            e2e_p99_ms: super::percentile(&e2e, 0.99),
            e2e_max_ms: e2e.last().copied().unwrap_or(f64::NAN),
            depth,
            live_tuples: live,
            dead_tuples: dead,
            autovacuums,
            table_mb: table as f64 / 1048576.0,
            indexes_mb: indexes as f64 / 1048576.0,
            wal_bytes_per_job: wal / jobs,
            pg_cpu_us_per_job: us(to.pg_ticks.saturating_sub(from.pg_ticks)),
            worker_cpu_us_per_job: us(to.worker_ticks.saturating_sub(from.worker_ticks)),
            host_busy_pct,
            host_steal_pct,
            host_iowait_pct,
            checkpoints,
            http_accepted: to.http.0 - from.http.0,
            http_refused: to.http.1 - from.http.1,
            http_errors: to.http.2 - from.http.2,
            http_p99_ms: self.http.take_p99(),
        })
    }

    /// A window's line: on stdout, or with `--json` (whose document is stdout) on stderr, as
    /// progress.
    fn print(&self, w: &Window) {
        let line = format!(
            "{:<7} {:>7.0} {:>7.0} {:>8.0} {:>6.0} {:>7.1} {:>7.1} {:>7.0} {:>8} {:>9} {:>9} {:>3} {:>7.1} {:>7.1} {:>6.0} {:>6.0} {:>6.0} {:>5.0} {:>4.1} {:>4.1} {:>3} {:>5}/{}/{} {:>6.1}",
            w.phase,
            w.at_secs,
            w.offered_per_s,
            w.completed_per_s,
            w.real_completed_per_s,
            w.e2e_p50_ms,
            w.e2e_p99_ms,
            w.e2e_max_ms,
            w.depth,
            w.live_tuples,
            w.dead_tuples,
            w.autovacuums,
            w.table_mb,
            w.indexes_mb,
            w.wal_bytes_per_job,
            w.pg_cpu_us_per_job,
            w.worker_cpu_us_per_job,
            w.host_busy_pct,
            w.host_steal_pct,
            w.host_iowait_pct,
            w.checkpoints,
            w.http_accepted,
            w.http_refused,
            w.http_errors,
            w.http_p99_ms,
        );
        self.out(line);
    }

    fn out(&self, line: String) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn header(&self) {
        let line = format!(
            "{:<7} {:>7} {:>7} {:>8} {:>6} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>3} {:>7} {:>7} {:>6} {:>6} {:>6} {:>5} {:>4} {:>4} {:>3} {:>11} {:>6}",
            "PHASE",
            "AT_S",
            "OFFER/s",
            "DONE/s",
            "REAL/s",
            "P50_ms",
            "P99_ms",
            "MAX_ms",
            "DEPTH",
            "LIVE",
            "DEAD",
            "AV",
            "TBL_MB",
            "IDX_MB",
            "WAL_B",
            "PG_us",
            "WK_us",
            "BUSY%",
            "ST%",
            "IO%",
            "CK",
            "HTTP ok/r/e",
            "H_p99"
        );
        self.out(line);
    }

    /// After a pressure phase that left `backlog`: waits up to 300 s for the queue to be back to
    /// `settled`, says how long it took, and returns it (`None`: longer).
    async fn recover(
        &mut self,
        what: &str,
        backlog: i64,
        settled: i64,
    ) -> anyhow::Result<Option<f64>> {
        let took = self.until_depth(settled, Duration::from_secs(300)).await?;
        self.progress(format!(
            "{what}: backlog {backlog} back to ≤ {settled} in {}",
            took.map_or("more than 300 s".into(), |t| format!("{t:.1} s"))
        ));
        Ok(took)
    }

    /// Waits (producers at the current rate) until at most `depth` jobs are queued, up to
    /// `limit`; the time it took, or `None` if it did not get there.
    async fn until_depth(&mut self, depth: i64, limit: Duration) -> anyhow::Result<Option<f64>> {
        let t = Instant::now();
        while t.elapsed() < limit {
            self.workers.check()?;
            self.load.check().await?;
            if self.depth().await? <= depth {
                return Ok(Some(t.elapsed().as_secs_f64()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(None)
    }
}

/// Figures of the whole run, against the targets.
#[derive(Debug, Default, Serialize)]
struct Summary {
    sustainable_per_s: f64,
    steady_completed_per_s: f64,
    steady_first_window_per_s: f64,
    steady_last_window_per_s: f64,
    steady_max_dead_to_live: f64,
    /// Jobs due and unclaimed at the steady phase's end: bounded, or growing.
    steady_last_depth: i64,
    /// Whether the steady phase kept up with its offered rate: completed at least 95 % of it on
    /// average and ended with less than a second's worth of jobs queued.
    steady_held: bool,
    steady_wal_bytes_per_job: f64,
    steady_pg_cpu_us_per_job: f64,
    steady_worker_cpu_us_per_job: f64,
    half_rate_e2e_p99_ms: f64,
    pin_completed_per_s: f64,
    pin_clean_completed_per_s: f64,
    pin_backlog: i64,
    pin_recovery_secs: Option<f64>,
    burst_backlog: i64,
    burst_recovery_secs: Option<f64>,
    pgbench_jobs_per_s: f64,
}

/// Runs the sustained benchmark on a private server it starts and removes at the end — also
/// when `stop` (SIGTERM, Ctrl-C) completes first: the run is abandoned, its `bench-worker`
/// processes and API process are stopped, and so is the server, so no PostgreSQL is left
/// running on a temporary folder.
pub async fn run(s: Sustained, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("tierflow-sustained-{:08x}", super::rand_u32()));
    super::progress(
        started,
        format!(
            "starting a private PostgreSQL in {} (autovacuum on, synchronous_commit on, {})",
            dir.display(),
            SERVER_CONF
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let server = tierflow_pg::Server::start_with(&dir, SERVER_CONF)
        .context("start the benchmark's PostgreSQL server")?;
    let result = tokio::select! {
        r = run_on(&s, &server, started) => r,
        () = stop => Err(anyhow::anyhow!(
            "interrupted: the run was abandoned and its private server stopped"
        )),
    };
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_on(
    s: &Sustained,
    server: &tierflow_pg::Server,
    started: Instant,
) -> anyhow::Result<()> {
    server.ensure_database("bench")?;
    let url = server.url("bench");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await
        .context("connect to the benchmark's server")?;
    tierflow_store::migrate::migrate(&pool).await?;
    let postmaster = server
        .postmaster_pid()
        .context("the benchmark's server has no postmaster pid")?;

    // HTTP: tenants on professional, the bench twin tier for lateral moves, an API process.
    let tenants = 2000;
    let (mut api, base, token) = if s.http_rate > 0.0 {
        let ctx = tierflow_store::Context::new(Arc::new(tierflow_domain::SystemClock));
        super::add_twin_tier(&pool, &ctx).await?;
        super::provision_tenants(&pool, &ctx, "s", tenants).await?;
        let (api, base, token) = super::spawn_api(&url).await?;
        (Some(api), base, token)
    } else {
        (None, String::new(), String::new())
    };

    let workers = Workers::start_with(
        &url,
        s.workers,
        s.concurrency,
        &[
            (
                "TIERFLOW_BENCH_RETENTION_SECS",
                s.retention.as_secs().to_string(),
            ),
            (
                "TIERFLOW_STANDALONE_CONCURRENCY",
                s.standalone_concurrency.to_string(),
            ),
        ],
    )?;
    let load = Load::start(&pool).await?;
    let http = HttpLoad::start(base, token, s.http_rate, tenants);
    let mut run = Run {
        pool: pool.clone(),
        postmaster,
        workers,
        load,
        http,
        started,
        ticks_per_s: clock_ticks_per_second(),
        windows: Vec::new(),
        json: s.json,
    };
    run.progress(format!(
        "{} bench-worker process(es) × concurrency {} ({} slots for the no-op kind); {PRODUCERS} producer tasks; HTTP {} requests/s over {tenants} tenants; finished jobs kept {:?}",
        s.workers, s.concurrency, s.standalone_concurrency, s.http_rate, s.retention
    ));
    run.header();
    let mut summary = Summary::default();

    // ── 1. search ──
    let step = s.window.min(Duration::from_secs(30));
    let sustainable = match s.rate {
        Some(r) => r,
        None => {
            let mut rate = 1000.0;
            let mut best: Option<f64> = None;
            // A step that fails is tried once more before it counts: a checkpoint or an
            // autovacuum run during one step is not the limit of the queue.
            let mut retried = false;
            loop {
                run.load.set_rate(rate);
                // A few seconds to settle at the new rate, then the measured step.
                tokio::time::sleep(Duration::from_secs(3)).await;
                let from = run.mark().await?;
                let (w, _) = run.window("search", from, step).await?;
                let kept_up =
                    w.completed_per_s >= 0.95 * rate && (w.depth as f64) <= rate.max(200.0);
                if kept_up {
                    best = Some(rate);
                    rate *= 1.25;
                    retried = false;
                } else if !retried {
                    retried = true;
                } else if best.is_some() || rate <= 50.0 {
                    break;
                } else {
                    rate /= 2.0;
                    retried = false;
                }
                // Back to empty before the next step, so a step's backlog is its own.
                run.load.set_rate(0.0);
                run.until_depth(50, Duration::from_secs(120)).await?;
                if rate > 50_000.0 {
                    break;
                }
            }
            best.context("no rate of 50 jobs/s or more kept up")?
        }
    };
    summary.sustainable_per_s = sustainable;
    run.progress(format!("sustainable rate: {sustainable:.0} jobs/s"));

    // ── 2. steady ──
    run.load.set_rate(sustainable);
    let mut from = run.mark().await?;
    let windows = (s.duration.as_secs_f64() / s.window.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let first_steady = run.windows.len();
    for _ in 0..windows {
        let (_, next) = run.window("steady", from, s.window).await?;
        from = next;
    }
    let steady: Vec<Window> = run.windows[first_steady..].to_vec();
    summary.steady_completed_per_s =
        steady.iter().map(|w| w.completed_per_s).sum::<f64>() / steady.len() as f64;
    summary.steady_first_window_per_s = steady.first().map_or(0.0, |w| w.completed_per_s);
    summary.steady_last_window_per_s = steady.last().map_or(0.0, |w| w.completed_per_s);
    summary.steady_max_dead_to_live = steady
        .iter()
        .map(|w| w.dead_tuples as f64 / (w.live_tuples.max(1)) as f64)
        .fold(0.0, f64::max);
    let mean = |f: fn(&Window) -> f64| steady.iter().map(f).sum::<f64>() / steady.len() as f64;
    summary.steady_wal_bytes_per_job = mean(|w| w.wal_bytes_per_job);
    summary.steady_last_depth = steady.last().map_or(0, |w| w.depth);
    summary.steady_pg_cpu_us_per_job = mean(|w| w.pg_cpu_us_per_job);
    summary.steady_worker_cpu_us_per_job = mean(|w| w.worker_cpu_us_per_job);
    summary.steady_held = summary.steady_completed_per_s >= 0.95 * sustainable
        && (summary.steady_last_depth as f64) < sustainable;
    run.progress(if summary.steady_held {
        format!("steady: kept up with {sustainable:.0} jobs/s")
    } else {
        format!(
            "steady: did NOT keep up with {sustainable:.0} jobs/s: {:.0} completed per second on \
             average, {} queued at the end; the cost per job grows with the table (finished jobs \
             are kept --retention), so a rate found by short search steps may not hold: give a \
             lower --rate",
            summary.steady_completed_per_s, summary.steady_last_depth
        )
    });

    // ── 3. half ──
    run.load.set_rate(sustainable / 2.0);
    run.until_depth(50, Duration::from_secs(60)).await?;
    let from = run.mark().await?;
    let (w, _) = run.window("half", from, s.window).await?;
    summary.half_rate_e2e_p99_ms = w.e2e_p99_ms;

    // ── 4. pin ──
    // The pressure phases start from an empty queue, at a fraction of what the steady phase
    // completed (not of the offered rate, which it may not have kept up with).
    let kept: Vec<f64> = steady
        .iter()
        .rev()
        .take(3)
        .map(|w| w.completed_per_s)
        .collect();
    let kept = kept.iter().sum::<f64>() / kept.len().max(1) as f64;
    let base = s.pressure_load * kept;
    run.load.set_rate(0.0);
    if run
        .until_depth(100, Duration::from_secs(600))
        .await?
        .is_none()
    {
        run.progress(
            "the steady phase's backlog did not drain within 600 s; pressure phases start with it",
        );
    }
    run.load.set_rate(base);
    let from = run.mark().await?;
    let (clean, from) = run.window("clean", from, s.window.min(s.pressure)).await?;
    let settled = clean.depth.max(100);
    summary.pin_clean_completed_per_s = clean.completed_per_s;
    run.progress(format!(
        "pin: xmin pinned for {:?} (a REPEATABLE READ transaction with an xid) and four long read-only queries, at {base:.0} jobs/s",
        s.pressure
    ));
    let pin = pin_xmin(&url, s.pressure).await?;
    let (w, _) = run.window("pin", from, s.pressure).await?;
    pin.await.context("the pinning task panicked")??;
    summary.pin_completed_per_s = w.completed_per_s;
    summary.pin_backlog = w.depth;
    summary.pin_recovery_secs = run.recover("pin released", w.depth, settled).await?;

    // ── 5. burst ──
    run.load.set_rate(kept * 1.5);
    let from = run.mark().await?;
    let (w, _) = run.window("burst", from, s.pressure / 2).await?;
    run.load.set_rate(base);
    summary.burst_backlog = w.depth;
    summary.burst_recovery_secs = run.recover("burst over", w.depth, settled).await?;

    // Everything stops before the yardstick runs on the quiet server.
    let Run {
        workers: mut procs,
        load,
        http,
        windows,
        ..
    } = run;
    load.stop().await?;
    http.stop().await;
    procs.stop();
    if let Some(api) = api.as_mut() {
        api.stop();
    }
    pool.close().await;

    // ── 6. pgbench ──
    let length = s.duration.min(Duration::from_secs(60));
    super::progress(
        started,
        format!(
            "pgbench: INSERT + SKIP LOCKED claim + UPDATE to done, 16 clients, {} s",
            length.as_secs()
        ),
    );
    summary.pgbench_jobs_per_s = pgbench_queue(server, 16, length).await?;

    if s.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "settings": {
                    "duration_secs": s.duration.as_secs(), "window_secs": s.window.as_secs(),
                    "workers": s.workers, "concurrency": s.concurrency,
                    "standalone_concurrency": s.standalone_concurrency,
                    "http_rate": s.http_rate, "pressure_secs": s.pressure.as_secs(),
                    "retention_secs": s.retention.as_secs(),
                    "pressure_load": s.pressure_load,
                    "server": SERVER_CONF,
                },
                "windows": windows,
                "summary": summary,
            }))?
        );
    } else {
        println!("\n{}", serde_json::to_string_pretty(&summary)?);
        println!(
            "\nqueue vs pgbench: {:.2}× (steady {:.0} jobs/s, pgbench {:.0} jobs/s)",
            summary.steady_completed_per_s / summary.pgbench_jobs_per_s.max(1e-9),
            summary.steady_completed_per_s,
            summary.pgbench_jobs_per_s
        );
    }
    Ok(())
}

/// Pins `xmin` for `hold`: a REPEATABLE READ transaction that has taken its snapshot and an xid,
/// and four read-only queries that each hold a snapshot for half of it, staggered, reading the
/// whole jobs table. Returns when everything has started; the task ends when all are released.
async fn pin_xmin(
    url: &str,
    hold: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    use sqlx::{ConnectOptions, Connection};
    // These statements are slow on purpose: not a warning each.
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::ZERO);
    let mut pin = sqlx::PgConnection::connect_with(&options).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut pin)
        .await?;
    sqlx::query("SELECT txid_current()")
        .execute(&mut pin)
        .await?;
    let mut readers = Vec::new();
    for i in 0..4u32 {
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let half = hold.as_secs_f64() / 2.0;
        readers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(half * f64::from(i) / 4.0)).await;
            sqlx::query("SELECT count(*), pg_sleep($1) FROM apalis.jobs")
                .bind(half)
                .execute(&mut conn)
                .await?;
            anyhow::Ok(())
        }));
    }
    Ok(tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::query("ROLLBACK").execute(&mut pin).await?;
        for r in readers {
            r.await??;
        }
        Ok(())
    }))
}

/// The yardstick: a queue in plain SQL run by `pgbench` with `clients` clients for `length`, in
/// a database of its own on the same server. Each client step inserts a job, claims the oldest
/// pending one with `FOR UPDATE SKIP LOCKED` and marks it done: three statements, three commits,
/// as a naive queue does. Jobs/s is counted from the table (jobs marked done), not from pgbench's
/// transactions.
async fn pgbench_queue(
    server: &tierflow_pg::Server,
    clients: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    server.ensure_database("pgbench_queue")?;
    let url = server.url("pgbench_queue");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE queue (
           id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL,
           status text NOT NULL DEFAULT 'pending', run_at timestamptz NOT NULL DEFAULT now(),
           done_at timestamptz);
         CREATE INDEX queue_pending ON queue (run_at) WHERE status = 'pending';",
    )
    .execute(&pool)
    .await?;
    let script =
        std::env::temp_dir().join(format!("tierflow-pgbench-{:08x}.sql", super::rand_u32()));
    std::fs::write(
        &script,
        "INSERT INTO queue (kind, payload) VALUES ('noop', '{}');\n\
         WITH c AS (UPDATE queue SET status = 'running' WHERE id = (SELECT id FROM queue WHERE status = 'pending' ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id) SELECT coalesce(max(id), 0) AS id FROM c \\gset\n\
         UPDATE queue SET status = 'done', done_at = clock_timestamp() WHERE id = :id;\n",
    )?;
    let (clients, secs) = (clients.to_string(), length.as_secs().to_string());
    let script_path = script.display().to_string();
    let ran = super::pgbench(&[
        "-n",
        "-c",
        &clients,
        "-j",
        "2",
        "-T",
        &secs,
        "-f",
        &script_path,
        &url,
    ])
    .await;
    let _ = std::fs::remove_file(&script);
    ran?;
    let (done, secs): (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM max(done_at) - min(done_at))::float8, 0)
           FROM queue WHERE status = 'done'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(done as f64 / secs.max(1e-3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
