//! The tier catalogue: seed the canonical tiers, list and read tiers.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::ids::TierId;
use tierflow_domain::tier::{Tier, canonical_tiers};

use crate::StoreError;
use crate::rows::{TierRow, convert, tier_columns};

/// Inserts the canonical tiers that are missing; returns how many were inserted. Existing tiers,
/// including edited canonical ones, are left alone, so seeding is idempotent and never undoes an
/// operator's change.
pub async fn seed_canonical(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut inserted = 0;
    for t in canonical_tiers() {
        inserted += insert_if_missing(conn, &t, now).await?;
    }
    Ok(inserted)
}

async fn insert_if_missing(
    conn: &mut PgConnection,
    t: &Tier,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let done = sqlx::query(
        "INSERT INTO tiers (tier_id, name, category, rank, active, features, limits, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (tier_id) DO NOTHING",
    )
    .bind(t.tier_id.as_str())
    .bind(&t.name)
    .bind(t.category.as_str())
    .bind(t.rank)
    .bind(t.active)
    .bind(to_json(&t.features)?)
    .bind(to_json(&t.limits)?)
    .bind(&t.metadata)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() as usize)
}

/// Every tier, by rank then id.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Tier>, StoreError> {
    let rows: Vec<TierRow> = sqlx::query_as(concat!(
        "SELECT ",
        tier_columns!(),
        " FROM tiers ORDER BY rank, tier_id"
    ))
    .fetch_all(conn)
    .await?;
    convert(rows)
}

/// One tier, if it exists.
pub async fn get(conn: &mut PgConnection, id: &TierId) -> Result<Option<Tier>, StoreError> {
    let row: Option<TierRow> = sqlx::query_as(concat!(
        "SELECT ",
        tier_columns!(),
        " FROM tiers WHERE tier_id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(Tier::try_from).transpose()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(v).map_err(|e| StoreError::Corrupt(format!("tier does not encode: {e}")))
}

/// Creates or replaces a tier (an operator's `PUT /v1/tiers/{id}`); returns whether it was
/// created. Tenants on the tier see the new features and limits at once.
pub async fn upsert(
    conn: &mut PgConnection,
    t: &Tier,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let created: bool = sqlx::query_scalar(
        "INSERT INTO tiers (tier_id, name, category, rank, active, features, limits, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (tier_id) DO UPDATE SET name = EXCLUDED.name, category = EXCLUDED.category,
             rank = EXCLUDED.rank, active = EXCLUDED.active, features = EXCLUDED.features,
             limits = EXCLUDED.limits, metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
         RETURNING (xmax = 0)",
    )
    .bind(t.tier_id.as_str())
    .bind(&t.name)
    .bind(t.category.as_str())
    .bind(t.rank)
    .bind(t.active)
    .bind(to_json(&t.features)?)
    .bind(to_json(&t.limits)?)
    .bind(&t.metadata)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(created)
}
