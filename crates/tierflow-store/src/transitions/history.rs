//! Reading transitions: one by id, or a tenant's newest first, page by page.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::ids::{TenantId, TransitionId};
use uuid::Uuid;

use crate::StoreError;
use crate::rows::{TransitionRecord, TransitionRow, convert, transition_columns};

/// One of the tenant's transitions.
pub async fn get(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: TransitionId,
) -> Result<Option<TransitionRecord>, StoreError> {
    let row: Option<TransitionRow> = sqlx::query_as(concat!(
        "SELECT ",
        transition_columns!(),
        " FROM tier_transitions WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id.as_str())
    .bind(id.0)
    .fetch_optional(conn)
    .await?;
    row.map(TransitionRecord::try_from).transpose()
}

/// The tenant's transitions, newest first, `limit` at a time, starting after `before` (the
/// `(requested_at, id)` of the last row of the previous page).
pub async fn history(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    limit: i64,
    before: Option<(DateTime<Utc>, Uuid)>,
) -> Result<Vec<TransitionRecord>, StoreError> {
    let (at, id) = before.unzip();
    let rows: Vec<TransitionRow> = sqlx::query_as(concat!(
        "SELECT ",
        transition_columns!(),
        " FROM tier_transitions WHERE tenant_id = $1
           AND ($2::timestamptz IS NULL OR (requested_at, id) < ($2, $3))
         ORDER BY requested_at DESC, id DESC LIMIT $4"
    ))
    .bind(tenant_id.as_str())
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    convert(rows)
}
