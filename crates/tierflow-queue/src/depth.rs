//! Queue depth, sampled from the database by one replica and read by all.
//!
//! [`sample`] runs on the maintenance leader: index-only scans of the partial indexes of
//! unfinished and dead jobs (never a finished row, however many the table holds), with the age of
//! each kind's oldest due job, written to `tierflow_samples`. [`publish`] runs in every
//! process and turns those few rows into gauges, so every replica reports the same numbers.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::QueueError;
use crate::maintenance::elector::{Fence, lead_cte};
use crate::metrics::{OLDEST_DUE_AGE, QUEUE_JOBS, SAMPLED_AT};

/// How often the leader samples and every process refreshes its gauges.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Every state the depth gauge reports, so a state that empties reports 0, not a stale value.
pub const STATES: [&str; 5] = ["due", "scheduled", "running", "retrying", "dead"];

/// The depth query: index-only scans of the three partial indexes that hold unfinished and dead
/// jobs — the claimable index (pending and retrying, with their status), the running index (with
/// the kind) and the dead index — so it never reads a finished row (migration 0018).
pub const DEPTH_SQL: &str = "SELECT job_type,
        CASE WHEN status = 'Pending' AND run_at <= now() THEN 'due'
             WHEN status = 'Pending' THEN 'scheduled'
             ELSE 'retrying' END AS state,
        count(*)::float8 AS jobs,
        extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_due
   FROM apalis.jobs
  WHERE status IN ('Pending', 'Failed')
  GROUP BY 1, 2
 UNION ALL
 SELECT job_type, 'running', count(*)::float8, NULL FROM apalis.jobs WHERE status = 'Running' GROUP BY 1
 UNION ALL
 SELECT job_type, 'dead', count(*)::float8, NULL FROM apalis.jobs WHERE status = 'Dead' GROUP BY 1";

/// Samples depth (leader only, under its `fence`) and stores it for every process to read.
pub async fn sample(pool: &PgPool, kinds: &[&str], fence: &Fence) -> Result<(), QueueError> {
    let rows: Vec<(String, String, f64, Option<f64>)> =
        sqlx::query_as(DEPTH_SQL).fetch_all(pool).await?;
    let mut metrics = Vec::new();
    let mut oldest: std::collections::HashMap<String, f64> =
        kinds.iter().map(|k| (k.to_string(), 0.0)).collect();
    for kind in kinds {
        for state in STATES {
            let n = rows
                .iter()
                .find(|r| r.0 == *kind && r.1 == state)
                .map_or(0.0, |r| r.2);
            metrics.push((
                QUEUE_JOBS,
                serde_json::json!({"kind": kind, "state": state}),
                n,
            ));
        }
    }
    for (kind, _, _, due) in &rows {
        if let Some(age) = due {
            let e = oldest.entry(kind.clone()).or_insert(0.0);
            *e = e.max(*age);
        }
    }
    for (kind, age) in oldest {
        metrics.push((OLDEST_DUE_AGE, serde_json::json!({"kind": kind}), age));
    }
    store(pool, fence, &metrics).await
}

/// Stores samples `(metric, labels, value)` for every process to read, under the leader's
/// `fence` (a deposed leader's late sample changes nothing).
pub async fn store(
    pool: &PgPool,
    fence: &Fence,
    samples: &[(&str, serde_json::Value, f64)],
) -> Result<(), QueueError> {
    let names: Vec<&str> = samples.iter().map(|m| m.0).collect();
    let labels: Vec<serde_json::Value> = samples.iter().map(|m| m.1.clone()).collect();
    let values: Vec<f64> = samples.iter().map(|m| m.2).collect();
    let query = sqlx::query(concat!(
        "WITH ",
        lead_cte!(),
        " INSERT INTO tierflow_samples (metric, labels, value, sampled_at)
         SELECT m, l, v, now() FROM unnest($4::text[], $5::jsonb[], $6::float8[]) AS t(m, l, v)
          WHERE EXISTS (SELECT 1 FROM lead)
         ON CONFLICT (metric, labels) DO UPDATE SET value = EXCLUDED.value, sampled_at = EXCLUDED.sampled_at"
    ));
    fence
        .bind_query(query)
        .bind(&names)
        .bind(&labels)
        .bind(&values)
        .execute(pool)
        .await?;
    Ok(())
}

/// Reads the stored samples into gauges (every process).
pub async fn publish(pool: &PgPool) -> Result<(), QueueError> {
    let rows: Vec<(String, serde_json::Value, f64, f64)> = sqlx::query_as(
        "SELECT metric, labels, value, extract(epoch FROM sampled_at)::float8 FROM tierflow_samples",
    )
    .fetch_all(pool)
    .await?;
    let mut newest = 0.0f64;
    for (metric, labels, value, at) in rows {
        newest = newest.max(at);
        let labels: Vec<(String, String)> = labels
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let labels: Vec<metrics::Label> = labels
            .into_iter()
            .map(|(k, v)| metrics::Label::new(k, v))
            .collect();
        metrics::gauge!(metric, labels).set(value);
    }
    if newest > 0.0 {
        metrics::gauge!(SAMPLED_AT).set(newest);
    }
    Ok(())
}

/// Refreshes the gauges every `interval` until stopped.
pub async fn run_publisher(pool: PgPool, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = publish(&pool).await {
            tracing::debug!(error = %e, "could not read queue depth samples");
        }
    }
}
