//! Queue depth and the console's default job list stay cheap with a million finished jobs in the
//! table: both read only the partial indexes of unfinished and dead jobs, the depth query in well
//! under 50 ms, and the counts are right.

mod common;

use std::time::Duration;

use common::*;
use tierflow_queue::depth::{DEPTH_SQL, sample};
use tierflow_queue::inspect::{JobFilter, LIST_UNFINISHED_SQL, list};

/// With 1,000,000 finished jobs, the depth query reads only the partial indexes of unfinished and
/// dead jobs (claimable, running, dead) and runs in under 50 ms; the sampled gauges count exactly
/// the unfinished jobs in each state. The console's default job list reads the same indexes.
#[tokio::test]
async fn depth_and_the_job_list_ignore_a_million_finished_jobs() {
    let db = db().await;
    let pool = db.pool();
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, run_at, done_at)
         SELECT 'done' || lpad(g::text, 22, '0'),
                (ARRAY['voice_disable', 'sla_freeze', 'apply_downgrade', 'deliver_event'])[1 + g % 4],
                '\\x7b7d'::bytea, 'Done', 1, now() - interval '2 hours', now() - interval '1 hour'
           FROM generate_series(1, 1000000) g",
    )
    .execute(pool)
    .await
    .unwrap();
    for (status, n, run_at) in [
        ("Pending", 1000, "now() - interval '1 minute'"),
        ("Pending", 200, "now() + interval '1 day'"),
        ("Dead", 50, "now() - interval '1 day'"),
        ("Failed", 30, "now() - interval '3 minutes'"),
        ("Failed", 20, "now() + interval '1 hour'"),
        ("Running", 10, "now() - interval '5 seconds'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO apalis.jobs (id, job_type, job, status, run_at)
             SELECT '{status}{n}' || lpad(g::text, 20, '0'), 'apply_downgrade', '\\x7b7d'::bytea, '{status}', {run_at}
               FROM generate_series(1, {n}) g"
        )))
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await
        .unwrap();

    // Warm once, then measure.
    sqlx::query(DEPTH_SQL).fetch_all(pool).await.unwrap();
    let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {DEPTH_SQL}"
    )))
    .fetch_one(pool)
    .await
    .unwrap();
    let text = plan.to_string();
    for index in [
        "tierflow_jobs_claimable_idx",
        "tierflow_jobs_running_idx",
        "tierflow_jobs_dead_idx",
    ] {
        assert!(
            text.contains(index),
            "the depth query must read the partial index {index}: {text}"
        );
    }
    assert!(
        !text.contains("\"Seq Scan\""),
        "no sequential scan of the jobs table: {text}"
    );
    let ms = plan[0]["Execution Time"].as_f64().unwrap();
    eprintln!("depth query over 1,001,250 rows: {ms:.2} ms");
    assert!(ms < 50.0, "depth query took {ms} ms");

    let fence =
        tierflow_queue::maintenance::elector::try_lead(pool, "test", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
    sample(pool, &["apply_downgrade", "voice_disable"], &fence)
        .await
        .unwrap();
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT labels->>'state', value FROM tierflow_samples
          WHERE metric = 'tierflow_queue_jobs' AND labels->>'kind' = 'apply_downgrade' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("dead".into(), 50.0),
            ("due".into(), 1000.0),
            ("retrying".into(), 50.0),
            ("running".into(), 10.0),
            ("scheduled".into(), 200.0)
        ]
    );
    let age: f64 = sqlx::query_scalar(
        "SELECT value FROM tierflow_samples WHERE metric = 'tierflow_queue_oldest_due_age_seconds' AND labels->>'kind' = 'apply_downgrade'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    // The oldest due job is a retrying one, due three minutes ago.
    assert!((179.0..240.0).contains(&age), "oldest due age {age}");

    // The console's default list (no state chosen): the three partial indexes, no finished row.
    let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (FORMAT JSON) {LIST_UNFINISHED_SQL}"
    )))
    .bind(None::<String>)
    .bind(None::<String>)
    .bind(None::<Vec<String>>)
    .bind(None::<Vec<String>>)
    .bind(100i64)
    .bind(None::<Vec<String>>)
    .fetch_one(pool)
    .await
    .unwrap();
    let text = plan.to_string();
    assert!(
        !text.contains("\"Seq Scan\""),
        "the job list must not scan the table: {text}"
    );
    let mut conn = pool.acquire().await.unwrap();
    let listed = list(&mut conn, &JobFilter::default(), 5_000).await.unwrap();
    assert_eq!(listed.len(), 1000 + 200 + 50 + 50 + 10);
    assert!(listed.iter().all(|r| r.status != "Done"));
    assert!(
        listed.windows(2).all(|w| w[0].run_at >= w[1].run_at),
        "most recently due first"
    );
}
