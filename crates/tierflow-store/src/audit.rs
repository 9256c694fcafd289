//! The audit trail: one row per change — who, what, when, why, from which request.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;

use crate::StoreError;

/// The columns of an audit row, for the statements that write one beside other rows (`concat!`
/// needs a literal). Their order is the order of [`AuditEvent::bind_own`] after the tenant and
/// the time.
macro_rules! audit_columns {
    () => {
        "tenant_id, occurred_at, actor, action, subject_type, subject_id, reason, idempotency_key, details"
    };
}
pub(crate) use audit_columns;

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

impl<'a> AuditEvent<'a> {
    /// Binds the row's own fields — actor, action, subject type, subject id, reason, idempotency
    /// key, details — to the next seven parameters of `q`. The tenant and the time come before
    /// them: a statement that writes other rows too binds those once for all of its writes.
    pub(crate) fn bind_own<'q>(
        &'q self,
        q: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        q.bind(self.actor)
            .bind(self.action)
            .bind(self.subject_type)
            .bind(&self.subject_id)
            .bind(self.reason)
            .bind(self.idempotency_key)
            .bind(&self.details)
    }
}

/// Writes one audit row.
pub async fn record(conn: &mut PgConnection, e: AuditEvent<'_>) -> Result<(), StoreError> {
    let q = sqlx::query(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(e.tenant_id)
    .bind(e.occurred_at);
    e.bind_own(q).execute(conn).await?;
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
