//! `migrate` on an empty database: several replicas at once, then again (idempotent).

use futures::future::join_all;
use tierflow_store::migrate::{is_current, migrate};
use tierflow_store::tiers;
use tierflow_testdb::TestDb;

/// Four replicas migrating at the same moment all succeed; exactly one applies the migrations and
/// seeds the tiers; a later run does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let db = TestDb::empty().await;
    assert!(!is_current(db.pool()).await.unwrap());
    let pools: Vec<_> = (0..4)
        .map(|_| sqlx::PgPool::connect_lazy_with(db.options()))
        .collect();
    let reports = join_all(pools.iter().map(migrate)).await;
    let reports: Vec<_> = reports.into_iter().map(Result::unwrap).collect();
    assert_eq!(reports.iter().filter(|r| r.tierflow_applied > 0).count(), 1);
    assert_eq!(reports.iter().filter(|r| r.queue_applied > 0).count(), 1);
    assert_eq!(reports.iter().map(|r| r.tiers_seeded).sum::<usize>(), 4);
    assert!(is_current(db.pool()).await.unwrap());

    let again = migrate(db.pool()).await.unwrap();
    assert_eq!(
        (
            again.queue_applied,
            again.tierflow_applied,
            again.tiers_seeded
        ),
        (0, 0, 0)
    );
    let mut conn = db.pool().acquire().await.unwrap();
    let ids: Vec<String> = tiers::list(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.tier_id.to_string())
        .collect();
    assert_eq!(ids, ["free", "starter", "professional", "enterprise"]);
}

/// The queue schema tierflow builds on is exactly apalis-postgres 1.0.0's (pinned with `=` in
/// Cargo.toml): its migrations, in order, then tierflow's on top, on an empty database. A new
/// apalis release that changes them fails here before it can change the schema under tierflow's
/// own migrations (which trim and extend `apalis.jobs` and `apalis.workers`).
#[tokio::test]
async fn apalis_migrations_are_the_pinned_ones_and_tierflows_apply_on_top() {
    let db = TestDb::empty().await;
    let report = migrate(db.pool()).await.unwrap();
    let apalis: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM apalis._sqlx_migrations ORDER BY version")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(
        apalis,
        [
            20220530084123,
            20220709210445,
            20230330210841,
            20230408110421,
            20230408234928,
            20240225141841,
            20250210092135,
            20250223193249,
            20250307001101,
            20250404160441,
            20250722071207,
            20251018164839,
            20251018164912,
            20251018165007,
            20251018165033,
            20251018165056,
            20251018165121,
            20251225090252,
            20260508093314,
            20260605000000,
            20260824233636,
            20260826101335,
            20260902075949,
        ],
        "apalis-postgres's migrations changed: review them against migrations/ before bumping the pin"
    );
    assert_eq!(report.queue_applied, apalis.len());
    assert!(report.tierflow_applied > 0);
    // What tierflow's migrations add to apalis's tables is there.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'apalis' AND table_name = 'workers' AND column_name LIKE 'holding%'
          ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(columns, ["holding", "holding_at"]);
    assert!(is_current(db.pool()).await.unwrap());
}

/// Seeding never undoes an operator's edit of a canonical tier.
#[tokio::test]
async fn seeding_keeps_operator_edits() {
    let db = TestDb::new().await;
    sqlx::query("UPDATE tiers SET name = 'Pro (2026)' WHERE tier_id = 'professional'")
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    assert_eq!(
        tiers::seed_canonical(&mut conn, chrono::Utc::now())
            .await
            .unwrap(),
        0
    );
    let name: String = sqlx::query_scalar("SELECT name FROM tiers WHERE tier_id = 'professional'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(name, "Pro (2026)");
}

/// Stored tier ids stay valid without foreign keys to `tiers` because a tier is never deleted or
/// renamed, only retired: deleting, truncating and renaming are refused with a message that says what to do instead, and an
/// edit that keeps the id still works.
#[tokio::test]
async fn tiers_cannot_be_deleted_or_renamed() {
    let db = TestDb::new().await;
    for sql in [
        "DELETE FROM tiers WHERE tier_id = 'starter'",
        "UPDATE tiers SET tier_id = 'basic' WHERE tier_id = 'starter'",
        "TRUNCATE tiers CASCADE",
    ] {
        let err = sqlx::query(sql).execute(db.pool()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("set active = false"), "{sql}: {msg}");
    }
    let retired = sqlx::query(
        "UPDATE tiers SET active = false, name = 'Old starter' WHERE tier_id = 'starter'",
    )
    .execute(db.pool())
    .await
    .unwrap();
    assert_eq!(retired.rows_affected(), 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tiers")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 4);
}
