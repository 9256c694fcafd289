//! The tier catalogue: seed the canonical tiers, list and read tiers, and [`put`] a tier as an
//! audited, versioned change announced to its tenants.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tierflow_domain::ids::{Actor, TierId};
use tierflow_domain::tier::{Tier, canonical_tiers};
use tierflow_queue::{NewJob, enqueue};

use crate::audit::audit_columns;
use crate::jobs::TierFanout;
use crate::rows::{TierRow, convert, tier_columns};
use crate::{Context, StoreError};

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

/// What putting a tier did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierEdit {
    pub tier: Tier,
    /// Whether the tier is new.
    pub created: bool,
    /// The catalogue's version after this change.
    pub catalog_version: i64,
    /// The first `tier_fanout` job, which announces the change to the tier's tenants whose
    /// entitlement it changed; absent when nothing a tenant sees changed (or the tier is new).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout_job: Option<String>,
}

/// Creates or replaces a tier (an operator's `PUT /v1/tiers/{id}`), as a change: the tier takes
/// the catalogue's next version, the edit is audited with the tier before and after, and, if
/// what tenants see changed (name, category, features, limits), a [`TierFanout`] job carries it
/// to the tier's tenants in batches. Retiring a tier (`active: false`) is an edit like any other;
/// transitions to a retired tier are refused.
pub async fn put(
    conn: &mut PgConnection,
    ctx: &Context,
    t: &Tier,
    actor: &Actor,
) -> Result<TierEdit, StoreError> {
    let mut tx = conn.begin().await?;
    let now = ctx.clock.now();
    let before: Option<TierRow> = sqlx::query_as(concat!(
        "SELECT ",
        tier_columns!(),
        " FROM tiers WHERE tier_id = $1 FOR UPDATE"
    ))
    .bind(t.tier_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let before = before.map(Tier::try_from).transpose()?;
    let catalog_version: i64 = sqlx::query_scalar(
        "INSERT INTO tiers (tier_id, name, category, rank, active, features, limits, metadata, created_at, updated_at, catalog_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, nextval('tier_catalog_version'))
         ON CONFLICT (tier_id) DO UPDATE SET name = EXCLUDED.name, category = EXCLUDED.category,
             rank = EXCLUDED.rank, active = EXCLUDED.active, features = EXCLUDED.features,
             limits = EXCLUDED.limits, metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at,
             catalog_version = EXCLUDED.catalog_version
         RETURNING catalog_version",
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
    .fetch_one(&mut *tx)
    .await?;
    let seen_by_tenants = |b: &Tier| {
        (&b.name, b.category, &b.features, &b.limits)
            != (&t.name, t.category, &t.features, &t.limits)
    };
    let fanout = match &before {
        Some(b) if seen_by_tenants(b) => {
            let job = TierFanout {
                tier_id: t.tier_id.clone(),
                catalog_version,
                before: b.clone(),
                after: None,
                actor: actor.to_string(),
                principal: ctx.principal.clone(),
            };
            let key = job.key();
            enqueue(&mut tx, vec![NewJob::new(&job, now)?.with_key(key)])
                .await?
                .pop()
                .map(|j| j.id)
        }
        _ => None,
    };
    let action = match (&before, t.active) {
        (None, _) => "tier.created",
        (Some(b), false) if b.active => "tier.retired",
        (Some(_), _) => "tier.edited",
    };
    let subject = t.tier_id.to_string();
    let details = serde_json::json!({
        "before": before, "after": t, "catalog_version": catalog_version, "fanout_job": fanout,
    });
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES (NULL, $1, $2, $3, 'tier', $4, NULL, NULL, $5, $6, $7)"
    ))
    .bind(now)
    .bind(actor.as_str())
    .bind(action)
    .bind(&subject)
    .bind(&details)
    .bind(&ctx.principal.name)
    .bind(ctx.principal.role.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(TierEdit {
        tier: t.clone(),
        created: before.is_none(),
        catalog_version,
        fanout_job: fanout,
    })
}
