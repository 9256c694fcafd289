//! The audit trail: one row per change — who, what, when, why, from which request.
//!
//! "Who" is two things: the *actor* a request states (`requested_by`, `granted_by`; a service
//! acting for a person names them) and the *principal* that was authenticated for it (the API
//! token's name and role, the operator running the CLI, the job that acted). The actor is what the
//! caller says; the principal is what tierflow knows. Both are stored on every row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;

use crate::StoreError;

/// The columns of an audit row, for the statements that write one beside other rows (`concat!`
/// needs a literal). Their order is the order of [`AuditEvent::bind_own`] after the tenant and
/// the time.
macro_rules! audit_columns {
    () => {
        "tenant_id, occurred_at, actor, action, subject_type, subject_id, reason, idempotency_key, details, principal, principal_role"
    };
}
pub(crate) use audit_columns;

/// What kind of principal acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalRole {
    /// An API token with the service role.
    Service,
    /// An API token with the admin role.
    Admin,
    /// Someone running the `tierflow` CLI with the database's credentials.
    Operator,
    /// A job run by a worker (grace end, override expiry, …).
    Worker,
    /// Rust code calling the store inside its own transaction.
    Library,
    /// Written before principals were recorded.
    Unknown,
}

impl PrincipalRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Worker => "worker",
            Self::Library => "library",
            Self::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        [
            Self::Service,
            Self::Admin,
            Self::Operator,
            Self::Worker,
            Self::Library,
            Self::Unknown,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| StoreError::Corrupt(format!("audit row with principal role '{s}'")))
    }
}

/// Who was authenticated for a change: set by the edge that authenticated it (the API from the
/// token, the CLI from the operator's login, a job from its kind) and carried in the
/// [`Context`](crate::Context) — never taken from a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(
    description = "Who was authenticated for a change (an API token, an operator at the CLI, a job), never taken from a request body."
)]
pub struct Principal {
    /// The token's name, the operator's login, or `job:<kind>`.
    pub name: String,
    pub role: PrincipalRole,
}

impl Principal {
    pub fn new(name: impl Into<String>, role: PrincipalRole) -> Self {
        Self {
            name: name.into(),
            role,
        }
    }

    /// The job of `kind`, run by a worker.
    pub fn job(kind: &str) -> Self {
        Self::new(format!("job:{kind}"), PrincipalRole::Worker)
    }
}

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
    pub principal: &'a Principal,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Increases in the order rows were written; the next page's `cursor`.
    pub id: i64,
    #[schema(value_type = tierflow_domain::ids::TenantId)]
    pub tenant_id: String,
    pub occurred_at: DateTime<Utc>,
    /// Who the request said acted (`requested_by`, `granted_by`).
    pub actor: String,
    /// What happened, dotted: `<family>.<action>`.
    #[schema(example = "transition.downgrade")]
    pub action: String,
    /// What the row is about (`transition`, `override`, `hold`, `tier`, …) and its id.
    #[schema(example = "transition")]
    pub subject_type: String,
    pub subject_id: String,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Who was authenticated for the change (the `actor` is who the request said acted).
    pub principal: Principal,
}

impl<'a> AuditEvent<'a> {
    /// Binds the row's own fields — actor, action, subject type, subject id, reason, idempotency
    /// key, details, principal, principal role — to the next nine parameters of `q`. The tenant and the time come before
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
            .bind(self.principal.name.as_str())
            .bind(self.principal.role.as_str())
    }
}

/// Writes one audit row.
pub async fn record(conn: &mut PgConnection, e: AuditEvent<'_>) -> Result<(), StoreError> {
    let q = sqlx::query(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(e.tenant_id)
    .bind(e.occurred_at);
    e.bind_own(q).execute(conn).await?;
    Ok(())
}

/// Which of a tenant's audit rows to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only actions of this kind: `transition` matches `transition.downgrade`, …; a full action
    /// (`override.created`) matches itself.
    pub kind: Option<String>,
    /// Only rows that occurred at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows that occurred before this time.
    pub until: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    id: i64,
    tenant_id: String,
    occurred_at: DateTime<Utc>,
    actor: String,
    action: String,
    subject_type: String,
    subject_id: String,
    reason: Option<String>,
    idempotency_key: Option<String>,
    details: serde_json::Value,
    principal: String,
    principal_role: String,
}

impl TryFrom<StoredRow> for AuditRow {
    type Error = StoreError;
    fn try_from(r: StoredRow) -> Result<Self, StoreError> {
        Ok(AuditRow {
            id: r.id,
            tenant_id: r.tenant_id,
            occurred_at: r.occurred_at,
            actor: r.actor,
            action: r.action,
            subject_type: r.subject_type,
            subject_id: r.subject_id,
            reason: r.reason,
            idempotency_key: r.idempotency_key,
            details: r.details,
            principal: Principal::new(r.principal, PrincipalRole::parse(&r.principal_role)?),
        })
    }
}

/// A tenant's audit trail in the order it was written, `limit` rows after the row `after` (an
/// id from an earlier page), filtered by `filter`. Walks the `(tenant_id, id)` index.
pub async fn page(
    conn: &mut PgConnection,
    tenant_id: &str,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT id, tenant_id, occurred_at, actor, action, subject_type, subject_id, reason,
                idempotency_key, details, principal, principal_role
           FROM audit_events
          WHERE tenant_id = $1 AND id > $2
            AND ($3::text IS NULL OR action = $3 OR starts_with(action, $3 || '.'))
            AND ($4::timestamptz IS NULL OR occurred_at >= $4)
            AND ($5::timestamptz IS NULL OR occurred_at < $5)
          ORDER BY id LIMIT $6",
    )
    .bind(tenant_id)
    .bind(after.unwrap_or(0))
    .bind(filter.kind.as_deref())
    .bind(filter.since)
    .bind(filter.until)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(AuditRow::try_from).collect()
}

/// A tenant's whole audit trail, oldest first.
pub async fn for_tenant(
    conn: &mut PgConnection,
    tenant_id: &str,
) -> Result<Vec<AuditRow>, StoreError> {
    page(conn, tenant_id, &AuditFilter::default(), None, i64::MAX).await
}
