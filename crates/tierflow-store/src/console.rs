//! What the operator console reads and writes of tierflow's own tables: its sessions, the
//! overview's domain figures, the recent audit trail (every tenant and the catalogue), a tenant's
//! overrides with their history, and sign-in/sign-out audit rows.
//!
//! Every read here walks an index (the overview's are named beside each query and checked with
//! `EXPLAIN` in the README's console section), so the console stays cheap on a large installation.
//! Sessions are rows (see `migrations/20261202000016_console_sessions.sql` for why): the cookie's
//! random id is stored only as its SHA-256, and the API token never.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::StoreError;
use crate::audit::{Principal, audit_columns};

/// A live console session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The API token's name.
    pub principal: String,
    /// `service` or `admin`.
    pub role: String,
    /// The synchronizer token every state-changing form of this session carries.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Stores a session whose cookie id hashes to `id_sha256`, living `lifetime` from now (database
/// clock), and deletes expired ones (range scan of `console_sessions_expires_idx`).
pub async fn create_session(
    conn: &mut PgConnection,
    id_sha256: &[u8; 32],
    principal: &str,
    role: &str,
    csrf_token: &str,
    lifetime: std::time::Duration,
) -> Result<DateTime<Utc>, StoreError> {
    sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar(
        "INSERT INTO console_sessions (id_sha256, principal, role, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         RETURNING expires_at",
    )
    .bind(&id_sha256[..])
    .bind(principal)
    .bind(role)
    .bind(csrf_token)
    .bind(lifetime.as_secs_f64())
    .fetch_one(conn)
    .await?)
}

/// The live (unexpired) session whose cookie id hashes to `id_sha256`.
pub async fn find_session(
    conn: &mut PgConnection,
    id_sha256: &[u8; 32],
) -> Result<Option<Session>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT principal, role, csrf_token, expires_at FROM console_sessions
          WHERE id_sha256 = $1 AND expires_at > now()",
    )
    .bind(&id_sha256[..])
    .fetch_optional(conn)
    .await?)
}

/// Ends a session (sign-out); every replica sees it gone at once.
pub async fn delete_session(
    conn: &mut PgConnection,
    id_sha256: &[u8; 32],
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = $1")
        .bind(&id_sha256[..])
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes an audit row for something an operator did that concerns no one tenant (signing in or
/// out of the console): no tenant, the principal as actor.
pub async fn record_operator_action(
    conn: &mut PgConnection,
    principal: &Principal,
    action: &str,
    subject_type: &str,
    subject_id: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES (NULL, now(), $1, $2, $3, $4, NULL, NULL, $5, $1, $6)"
    ))
    .bind(principal.name.as_str())
    .bind(action)
    .bind(subject_type)
    .bind(subject_id)
    .bind(&details)
    .bind(principal.role.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The overview's domain figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DomainOverview {
    /// Pending downgrades whose grace ends within the next hour (`tier_transitions_grace_ends_idx`).
    pub downgrades_due_next_hour: i64,
    /// Pending downgrades already past their grace end (not yet applied).
    pub downgrades_past_grace: i64,
    /// Grace ends applied in the last hour (`tier_transitions_grace_applied_idx`: a downgrade
    /// applied at its grace end is the only `effective` transition with a grace end, and its
    /// `effective_at` is when it ran).
    pub grace_ends_applied_last_hour: i64,
    /// Their lateness (apply time − grace end), in seconds: median and worst.
    pub grace_lateness_p50_secs: Option<f64>,
    pub grace_lateness_max_secs: Option<f64>,
}

/// The overview's domain figures, by the database clock.
pub async fn domain_overview(conn: &mut PgConnection) -> Result<DomainOverview, StoreError> {
    let (due, past): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE grace_ends_at > now()),
                count(*) FILTER (WHERE grace_ends_at <= now())
           FROM tier_transitions
          WHERE status = 'pending' AND grace_ends_at <= now() + interval '1 hour'",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (applied, p50, max): (i64, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM effective_at - grace_ends_at))::float8,
                max(extract(epoch FROM effective_at - grace_ends_at))::float8
           FROM tier_transitions
          WHERE status = 'effective' AND grace_ends_at IS NOT NULL
            AND effective_at > now() - interval '1 hour'",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(DomainOverview {
        downgrades_due_next_hour: due,
        downgrades_past_grace: past,
        grace_ends_applied_last_hour: applied,
        grace_lateness_p50_secs: p50,
        grace_lateness_max_secs: max,
    })
}

/// An audit row as the console lists it: the tenant is absent for changes that concern no one
/// tenant (tier edits, job re-drives, console sign-ins).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub tenant_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
    pub reason: Option<String>,
    pub details: serde_json::Value,
    pub principal: String,
    pub principal_role: String,
}

/// The newest audit rows, newest first: all of them, or one tenant's (`audit_events_tenant_id_idx`),
/// or those whose action is `action` or in its family (`job` matches `job.redriven`). The
/// unfiltered walk goes backwards along the primary key.
pub async fn recent_audit(
    conn: &mut PgConnection,
    tenant_id: Option<&str>,
    action: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, occurred_at, actor, action, subject_type, subject_id, reason, details,
                principal, principal_role
           FROM audit_events
          WHERE ($1::text IS NULL OR tenant_id = $1)
            AND ($2::text IS NULL OR action = $2 OR starts_with(action, $2 || '.'))
          ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(action)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Tenants whose id starts with `prefix`, in id order (the primary key), at most `limit`.
pub async fn search_tenants(
    conn: &mut PgConnection,
    prefix: &str,
    limit: i64,
) -> Result<Vec<(String, String, String)>, StoreError> {
    // `starts_with` does not use a btree in PostgreSQL 15; a range on the primary key does.
    let upper = format!("{prefix}\u{10FFFF}");
    Ok(sqlx::query_as(
        "SELECT tenant_id, tier_id, status FROM tenant_entitlements
          WHERE tenant_id >= $1 AND tenant_id < $2 ORDER BY tenant_id LIMIT $3",
    )
    .bind(prefix)
    .bind(upper)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// One of a tenant's overrides, active or ended.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OverrideEntry {
    pub id: uuid::Uuid,
    pub entitlement_type: String,
    pub original_limit: Option<i64>,
    pub override_limit: i64,
    pub reason: String,
    pub granted_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: String,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A tenant's overrides, newest first (at most `limit`).
pub async fn tenant_overrides(
    conn: &mut PgConnection,
    tenant_id: &str,
    limit: i64,
) -> Result<Vec<OverrideEntry>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, entitlement_type, original_limit, override_limit, reason, granted_by,
                created_at, expires_at, status, ended_at
           FROM entitlement_overrides WHERE tenant_id = $1
          ORDER BY created_at DESC LIMIT $2",
    )
    .bind(tenant_id)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The jobs of a tenant's latest 200 transitions and overrides: the ids its transitions' action
/// rows name, and the keys of its overrides' expiry jobs (`override:<id>`) — plus
/// `transition:<id>` for transition jobs written before they stopped carrying a key.
pub async fn tenant_jobs(
    conn: &mut PgConnection,
    tenant_id: &str,
) -> Result<tierflow_queue::inspect::Owned, StoreError> {
    let (ids, keys): (Vec<String>, Vec<String>) = sqlx::query_as(
        "WITH t AS (SELECT id FROM tier_transitions WHERE tenant_id = $1
                     ORDER BY requested_at DESC LIMIT 200)
         SELECT ARRAY(SELECT a.job_id FROM transition_actions a JOIN t ON a.transition_id = t.id
                       WHERE a.job_id IS NOT NULL),
                ARRAY(SELECT 'transition:' || id FROM t
                      UNION ALL
                      (SELECT 'override:' || id FROM entitlement_overrides WHERE tenant_id = $1
                        ORDER BY created_at DESC LIMIT 200))",
    )
    .bind(tenant_id)
    .fetch_one(conn)
    .await?;
    Ok(tierflow_queue::inspect::Owned {
        ids,
        keys,
        kinds: crate::jobs::KINDS.iter().map(|k| k.to_string()).collect(),
    })
}

/// The audit rows about one job (operators' retries and cancels), oldest first
/// (`audit_events_job_subject_idx`, partial on the type: the literal lets the planner use it).
pub async fn job_audit(
    conn: &mut PgConnection,
    job_id: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, occurred_at, actor, action, subject_type, subject_id, reason, details,
                principal, principal_role
           FROM audit_events WHERE subject_type = 'job' AND subject_id = $1
          ORDER BY id LIMIT 200",
    )
    .bind(job_id)
    .fetch_all(conn)
    .await?)
}
