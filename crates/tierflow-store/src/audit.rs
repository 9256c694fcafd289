//! The audit trail: one row per change — who, what, when, why, from which request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::StoreError;

/// One audit row to write.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub tenant_id: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub actor: &'a str,
    /// What happened, dotted: `transition.downgrade`, `transition.cancelled`, `action.voice_disable`,
    /// `override.created`, …
    pub action: &'a str,
    pub subject_type: &'a str,
    pub subject_id: String,
    pub reason: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub details: serde_json::Value,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub tenant_id: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    pub details: serde_json::Value,
}

/// Writes one audit row.
pub async fn record(conn: &mut PgConnection, e: AuditEvent<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events
           (tenant_id, occurred_at, actor, action, subject_type, subject_id, reason, idempotency_key, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.tenant_id)
    .bind(e.occurred_at)
    .bind(e.actor)
    .bind(e.action)
    .bind(e.subject_type)
    .bind(e.subject_id)
    .bind(e.reason)
    .bind(e.idempotency_key)
    .bind(e.details)
    .execute(conn)
    .await?;
    Ok(())
}

/// A tenant's audit trail, oldest first.
pub async fn for_tenant(
    conn: &mut PgConnection,
    tenant_id: &str,
) -> Result<Vec<AuditRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, occurred_at, actor, action, subject_type, subject_id, reason,
                idempotency_key, details
           FROM audit_events WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant_id)
    .fetch_all(conn)
    .await?)
}
