//! Restriction rows, stored per source: take holds, lift a source's holds.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::ids::{TenantId, TransitionId};
use tierflow_domain::restriction::{Hold, RestrictionSource};

use crate::StoreError;

/// Takes `holds` for the tenant (a hold already taken stays as it was).
pub(crate) async fn hold(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    holds: &[Hold],
    transition_id: TransitionId,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if holds.is_empty() {
        return Ok(());
    }
    let sources: Vec<String> = holds.iter().map(|h| h.source.key()).collect();
    let flags: Vec<&str> = holds.iter().map(|h| h.restriction.as_str()).collect();
    sqlx::query(
        "INSERT INTO tenant_restrictions (tenant_id, source, restriction, transition_id, created_at)
         SELECT $1, s, r, $4, $5 FROM unnest($2::text[], $3::text[]) AS t(s, r)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id.as_str())
    .bind(&sources)
    .bind(&flags)
    .bind(transition_id.0)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Lifts every hold of these sources; holds of other sources stay.
pub(crate) async fn lift(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    sources: &[RestrictionSource],
) -> Result<u64, StoreError> {
    if sources.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = sources.iter().map(RestrictionSource::key).collect();
    let done = sqlx::query(
        "DELETE FROM tenant_restrictions WHERE tenant_id = $1 AND source = ANY($2::text[])",
    )
    .bind(tenant_id.as_str())
    .bind(&keys)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
