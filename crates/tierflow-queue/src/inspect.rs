//! What the operator console reads about the queue: depth, throughput and latency over the last
//! hour, one job in full, filtered lists, and the fleet (worker incarnations and the maintenance
//! lease).
//!
//! Every query here reads an index, never the whole table, however many finished jobs it keeps
//! (the console's overview is measured with a million in the README): depth reads the partial
//! indexes of unfinished and dead jobs (the metrics' own [`DEPTH_SQL`](crate::depth::DEPTH_SQL)),
//! throughput `tierflow_jobs_finished_idx` (index-only), latency at most [`LATENCY_SAMPLE`]
//! rows along that index, a list by state its state's partial index.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::QueueError;

/// How many of the latest finished jobs the latency figures are taken from: enough for a stable
/// median and 95th percentile, few enough that the heap reads stay a few milliseconds at any
/// throughput.
pub const LATENCY_SAMPLE: i64 = 1000;

/// One row of the depth query: kind, state (`due`, `scheduled`, `running`, `retrying`, `dead`),
/// jobs, and the age of the oldest due job in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DepthRow {
    pub kind: String,
    pub state: String,
    pub jobs: f64,
    pub oldest_due_secs: Option<f64>,
}

/// Queue depth by kind and state, from the metrics' depth query (an index-only scan).
pub async fn depth(conn: &mut PgConnection) -> Result<Vec<DepthRow>, QueueError> {
    let rows: Vec<(String, String, f64, Option<f64>)> = sqlx::query_as(crate::depth::DEPTH_SQL)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(kind, state, jobs, oldest_due_secs)| DepthRow {
            kind,
            state,
            jobs,
            oldest_due_secs,
        })
        .collect())
}

/// Jobs finished (done or cancelled) in each of the last 60 minutes, oldest minute first.
pub async fn throughput_last_hour(conn: &mut PgConnection) -> Result<Vec<i64>, QueueError> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT (59 - floor(extract(epoch FROM now() - done_at) / 60))::int4 AS minute, count(*)
           FROM apalis.jobs
          WHERE status IN ('Done', 'Cancelled') AND done_at > now() - interval '1 hour'
          GROUP BY 1",
    )
    .fetch_all(conn)
    .await?;
    let mut per_minute = vec![0; 60];
    for (minute, n) in rows {
        if let Some(slot) = usize::try_from(minute)
            .ok()
            .and_then(|m| per_minute.get_mut(m))
        {
            *slot += n;
        }
    }
    Ok(per_minute)
}

/// Due-to-done latency of the latest finished jobs of the last hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    /// How many jobs the figures come from (at most [`LATENCY_SAMPLE`]).
    pub jobs: i64,
    pub p50_secs: Option<f64>,
    pub p95_secs: Option<f64>,
    /// Mean latency per minute over the last hour, oldest first (`None`: no job that minute).
    pub per_minute: Vec<Option<f64>>,
}

/// Due-to-done latency (pickup delay plus run time; the claim time is cleared when a job
/// finishes) of the latest [`LATENCY_SAMPLE`] jobs done in the last hour.
pub async fn latency_last_hour(conn: &mut PgConnection) -> Result<Latency, QueueError> {
    let rows: Vec<(i32, f64)> = sqlx::query_as(
        "SELECT (59 - floor(extract(epoch FROM now() - done_at) / 60))::int4,
                greatest(extract(epoch FROM done_at - run_at), 0)::float8
           FROM apalis.jobs
          WHERE status IN ('Done', 'Cancelled') AND done_at > now() - interval '1 hour'
          ORDER BY done_at DESC LIMIT $1",
    )
    .bind(LATENCY_SAMPLE)
    .fetch_all(conn)
    .await?;
    let mut all: Vec<f64> = rows.iter().map(|r| r.1).collect();
    all.sort_by(f64::total_cmp);
    let pct =
        |p: f64| (!all.is_empty()).then(|| all[((all.len() - 1) as f64 * p).round() as usize]);
    let mut sums = vec![(0.0, 0u32); 60];
    for (minute, secs) in &rows {
        if let Some(slot) = usize::try_from(*minute).ok().and_then(|m| sums.get_mut(m)) {
            slot.0 += secs;
            slot.1 += 1;
        }
    }
    Ok(Latency {
        jobs: rows.len() as i64,
        p50_secs: pct(0.5),
        p95_secs: pct(0.95),
        per_minute: sums
            .into_iter()
            .map(|(sum, n)| (n > 0).then(|| sum / f64::from(n)))
            .collect(),
    })
}

/// One job in full, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct JobDetail {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lock_at: Option<DateTime<Utc>>,
    pub lock_by: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
    pub key: Option<String>,
    pub last_result: Option<serde_json::Value>,
    /// The stored payload bytes (JSON for every tierflow kind; a poison payload may be anything).
    pub payload: Vec<u8>,
    /// Whether `run_at` has passed (a `Pending` job is due, not scheduled).
    pub due: bool,
}

/// One job with its payload.
pub async fn job(conn: &mut PgConnection, id: &str) -> Result<Option<JobDetail>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT id, job_type AS kind, status, attempts, max_attempts, run_at, lock_at, lock_by,
                done_at, idempotency_key AS key, last_result, job AS payload, run_at <= now() AS due
           FROM apalis.jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// A stored status (`Pending`, `Running`, `Failed`, `Dead`, `Done`, `Cancelled`); none: the
    /// unfinished and dead ones.
    pub status: Option<String>,
    pub kind: Option<String>,
    /// Only these jobs (a tenant's).
    pub owned: Option<Owned>,
}

/// A set of jobs named by id or by key: a tenant's jobs, which its domain rows name (a
/// transition's action rows hold their jobs' ids; an override's expiry is keyed).
#[derive(Debug, Clone, Default)]
pub struct Owned {
    pub ids: Vec<String>,
    /// Keys, matched together with one of `kinds`.
    pub keys: Vec<String>,
    pub kinds: Vec<String>,
}

/// The condition of [`list`]'s queries that keeps only a [`JobFilter::owned`] set: `$3` its
/// keys (NULL: every job), `$4` their kinds, `$6` its ids.
macro_rules! owned_condition {
    () => {
        "($3::text[] IS NULL OR (idempotency_key = ANY($3) AND job_type = ANY($4)) OR id = ANY($6))"
    };
}

/// A row of a job list.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct JobListRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub lock_by: Option<String>,
    pub key: Option<String>,
    pub last_error: Option<String>,
}

/// One branch of [`list`]'s query over unfinished and dead jobs: the jobs in `$statuses` (a
/// literal list matching one partial index's predicate) that pass the filter, most recently due
/// first, at most `$5`.
macro_rules! unfinished_branch {
    ($statuses:literal) => {
        concat!(
            "(SELECT id, job_type AS kind, status, attempts, max_attempts, run_at, done_at, lock_by,
                     idempotency_key AS key, last_result ->> 'Err' AS last_error
                FROM apalis.jobs
               WHERE status IN (", $statuses, ") AND ($1::text IS NULL OR status = $1)
                 AND ($2::text IS NULL OR job_type = $2) AND ", owned_condition!(), "
               ORDER BY run_at DESC LIMIT $5)"
        )
    };
}

/// [`list`]'s query when no finished status is asked for (`$1`: one unfinished status or
/// none; `$2` kind, `$3`/`$4`/`$6` the owned keys, kinds and ids, `$5` limit). One branch per partial index
/// (claimable, running, dead), each naming its index's statuses literally so that even a
/// generic plan reads the index, never the finished rows (a single `status IN (…)` over all
/// four matched only the depth index, which migration 0018 dropped).
pub const LIST_UNFINISHED_SQL: &str = concat!(
    "SELECT * FROM (",
    unfinished_branch!("'Pending', 'Failed'"),
    " UNION ALL ",
    unfinished_branch!("'Running'"),
    " UNION ALL ",
    unfinished_branch!("'Dead'"),
    ") j ORDER BY run_at DESC LIMIT $5"
);

/// Jobs matching `filter`, at most `limit`: finished ones (done, cancelled, dead) most recently
/// finished first along their partial index; the others most recently due first.
pub async fn list(
    conn: &mut PgConnection,
    filter: &JobFilter,
    limit: i64,
) -> Result<Vec<JobListRow>, QueueError> {
    let finished = matches!(
        filter.status.as_deref(),
        Some("Done" | "Cancelled" | "Dead")
    );
    let owned = filter.owned.as_ref();
    let sql = if finished {
        concat!(
            "SELECT id, job_type AS kind, status, attempts, max_attempts, run_at, done_at, lock_by,
                    idempotency_key AS key, last_result ->> 'Err' AS last_error
               FROM apalis.jobs
              WHERE status = $1 AND ($2::text IS NULL OR job_type = $2) AND ",
            owned_condition!(),
            " ORDER BY done_at DESC LIMIT $5"
        )
    } else {
        LIST_UNFINISHED_SQL
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(filter.status.as_deref())
        .bind(filter.kind.as_deref())
        .bind(owned.map(|o| &o.keys))
        .bind(owned.map(|o| &o.kinds))
        .bind(limit)
        .bind(owned.map(|o| &o.ids))
        .fetch_all(conn)
        .await?)
}

/// A worker incarnation as the fleet page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: String,
    /// The kinds it runs, comma-separated.
    pub kinds: String,
    pub started_at: Option<DateTime<Utc>>,
    pub heartbeat_age_secs: f64,
    /// Jobs it holds by its last heartbeat.
    pub holding: i64,
    /// Jobs stored as `Running` under its id now.
    pub running: i64,
}

/// The worker incarnations that beat within the last `within_secs` (older ones are gone or about
/// to be pruned), most recent heartbeat first.
pub async fn workers(
    conn: &mut PgConnection,
    within_secs: f64,
) -> Result<Vec<WorkerRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT w.id, w.layers AS kinds, w.started_at,
                extract(epoch FROM now() - w.last_seen)::float8 AS heartbeat_age_secs,
                coalesce(cardinality(w.holding), 0)::int8 AS holding,
                (SELECT count(*) FROM apalis.jobs j WHERE j.status = 'Running' AND j.lock_by = w.id) AS running
           FROM apalis.workers w
          WHERE w.last_seen > now() - make_interval(secs => $1)
          ORDER BY w.last_seen DESC LIMIT 500",
    )
    .bind(within_secs)
    .fetch_all(conn)
    .await?)
}

/// A leadership lease.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LeaseRow {
    pub name: String,
    pub leader_id: String,
    pub term: i64,
    pub elected_at: DateTime<Utc>,
    /// Seconds until it expires (negative: expired, nobody leads until someone takes it).
    pub expires_in_secs: f64,
}

/// Every leadership lease (`maintenance` is the one the fleet elects).
pub async fn leases(conn: &mut PgConnection) -> Result<Vec<LeaseRow>, QueueError> {
    Ok(sqlx::query_as(
        "SELECT name, leader_id, term, elected_at,
                extract(epoch FROM expires_at - now())::float8 AS expires_in_secs
           FROM tierflow_leadership ORDER BY name",
    )
    .fetch_all(conn)
    .await?)
}
