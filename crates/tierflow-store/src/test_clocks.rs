//! Test clocks: a frozen time that attached tenants live by, advanced on demand.
//!
//! A tenant provisioned on a test clock reads and changes at the clock's time: its transitions,
//! overrides and expiry are stamped with it, and its effective entitlement is computed at it.
//! Its timed jobs (`voice_disable`, `sla_freeze`, `apply_downgrade`, `expire_override`,
//! `expire_entitlement`) are written to the queue like anyone's, but *parked*: due at
//! [`PARKED`], out of every worker's reach, with their due time in the clock's time kept in
//! `test_clock_jobs`. [`advance`] moves the clock forward and runs, one by one in due order, each
//! parked job that becomes due — in its own transaction, with the clock at the job's due time,
//! completing the queue row as a worker would — so a 7-day grace ends in one call. Events those
//! jobs emit are delivered by the workers in real time. Real tenants are never touched: only
//! rows of the clock's own tenants are parked or run.
//!
//! Stripe's test clocks (now "simulations") move billing objects only; these also drive the
//! queue. Deleting a clock deletes its tenants and everything that refers to them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};
use tierflow_domain::ids::{Actor, TenantId, TransitionId};
use tierflow_domain::transition::Action;
use tierflow_queue::NewJob;
use uuid::Uuid;

use crate::jobs::{
    ActionOutcome, ApplyDowngrade, ExpireEntitlement, ExpireOverride, SlaFreeze, VoiceDisable,
};
use crate::tenants::TenantClock;
use crate::{Context, StoreError};

/// When a parked job is due for the queue: never, in practice. Workers claim by `run_at <= now()`.
pub fn parked() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("9999-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A test clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TestClock {
    pub id: Uuid,
    pub name: String,
    /// The clock's time: its tenants' "now".
    pub frozen_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// How many tenants live by it.
    pub tenants: i64,
    /// Parked jobs of its tenants not yet run, and when the next is due in the clock's time.
    pub parked_jobs: i64,
    pub next_due_at: Option<DateTime<Utc>>,
}

/// Parks `jobs` of a test-clock tenant: their queue `run_at` becomes [`parked`]; returns their due
/// times in the clock's time, in order, for [`record_parked`] once their ids are known.
pub(crate) fn park(jobs: &mut [NewJob]) -> Vec<DateTime<Utc>> {
    jobs.iter_mut()
        .map(|j| std::mem::replace(&mut j.run_at, parked()))
        .collect()
}

/// Records parked jobs (`(job id, due time)`) of `tenant_id` on `clock`.
pub(crate) async fn record_parked(
    conn: &mut PgConnection,
    clock: &TenantClock,
    tenant_id: &TenantId,
    jobs: &[(String, DateTime<Utc>)],
) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let (ids, due): (Vec<&str>, Vec<DateTime<Utc>>) =
        jobs.iter().map(|(id, at)| (id.as_str(), *at)).unzip();
    sqlx::query(
        "INSERT INTO test_clock_jobs (job_id, clock_id, tenant_id, due_at)
         SELECT id, $1, $2, at FROM unnest($3::text[], $4::timestamptz[]) AS t(id, at)",
    )
    .bind(clock.id)
    .bind(tenant_id.as_str())
    .bind(&ids)
    .bind(&due)
    .execute(conn)
    .await?;
    Ok(())
}

/// Enqueues `jobs` for `tenant_id`, parked if the tenant lives by a test clock; returns their ids.
pub(crate) async fn enqueue_for(
    conn: &mut PgConnection,
    clock: Option<&TenantClock>,
    tenant_id: &TenantId,
    mut jobs: Vec<NewJob>,
) -> Result<Vec<String>, StoreError> {
    let due = clock.map(|_| park(&mut jobs));
    let ids: Vec<String> = tierflow_queue::enqueue(conn, jobs)
        .await?
        .into_iter()
        .map(|j| j.id)
        .collect();
    if let (Some(clock), Some(due)) = (clock, due) {
        let parked: Vec<(String, DateTime<Utc>)> = ids.iter().cloned().zip(due).collect();
        record_parked(conn, clock, tenant_id, &parked).await?;
    }
    Ok(ids)
}

const CLOCK_COLUMNS: &str = "c.id, c.name, c.frozen_time, c.created_at, c.created_by,
    (SELECT count(*) FROM tenant_entitlements e WHERE e.test_clock_id = c.id) AS tenants,
    (SELECT count(*) FROM test_clock_jobs p JOIN apalis.jobs j ON j.id = p.job_id
      WHERE p.clock_id = c.id AND j.status IN ('Pending', 'Failed')) AS parked_jobs,
    (SELECT min(p.due_at) FROM test_clock_jobs p JOIN apalis.jobs j ON j.id = p.job_id
      WHERE p.clock_id = c.id AND j.status IN ('Pending', 'Failed')) AS next_due_at";

/// Creates a test clock frozen at `frozen_time`.
pub async fn create(
    conn: &mut PgConnection,
    name: &str,
    frozen_time: DateTime<Utc>,
    created_by: &Actor,
    now: DateTime<Utc>,
) -> Result<TestClock, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO test_clocks (id, name, frozen_time, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(name)
    .bind(frozen_time)
    .bind(now)
    .bind(created_by.as_str())
    .execute(&mut *conn)
    .await?;
    get(conn, id)
        .await?
        .ok_or_else(|| StoreError::UnknownTestClock(id.to_string()))
}

/// A test clock, if it exists.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<TestClock>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLOCK_COLUMNS} FROM test_clocks c WHERE c.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// One job run by [`advance`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(description = "One job run by an advance of the clock.")]
pub struct RanJob {
    pub job_id: String,
    #[schema(value_type = crate::jobs::JobKind)]
    pub kind: String,
    #[schema(value_type = tierflow_domain::ids::TenantId)]
    pub tenant_id: String,
    /// When it was due, in the clock's time (the clock stood there while it ran).
    pub due_at: DateTime<Utc>,
    /// What it did: applied, or a no-op and why.
    pub outcome: String,
}

/// What advancing a clock did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Advanced {
    pub clock: TestClock,
    /// The jobs that became due and ran, in the order they ran.
    pub ran: Vec<RanJob>,
}

/// Moves the clock forward to `to`, running in due order every parked job of its tenants that
/// becomes due; each job runs in its own transaction with the clock standing at the job's due
/// time. Another advance of the same clock at the same time is refused.
pub async fn advance(
    pool: &PgPool,
    ctx: &Context,
    id: Uuid,
    to: DateTime<Utc>,
) -> Result<Advanced, StoreError> {
    // One advance per clock at a time: a transaction-scoped advisory lock, held for the whole
    // advance. The clock's time itself is written step by step outside it, so an advance cut
    // short (its request timed out, its process died) leaves the clock at the last job it ran.
    let mut guard = pool.begin().await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('tierflow test clock ' || $1::text, 0))",
    )
    .bind(id)
    .fetch_one(&mut *guard)
    .await?;
    if !locked {
        return Err(StoreError::ClockBusy(id.to_string()));
    }
    let frozen: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT frozen_time FROM test_clocks WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *guard)
            .await?;
    let frozen = frozen.ok_or_else(|| StoreError::UnknownTestClock(id.to_string()))?;
    if to < frozen {
        return Err(StoreError::ClockBackwards {
            id: id.to_string(),
            frozen,
            to,
        });
    }
    // The steps run on a second connection, taken now: with the guard's, an advance holds
    // exactly two, and never waits for a third while holding one.
    let mut work = pool.acquire().await?;
    let mut ran = Vec::new();
    let ctx = ctx.on_test_clock();
    loop {
        let next: Option<ParkedJob> = sqlx::query_as(
            "SELECT j.id AS job_id, j.job_type AS kind, j.job AS payload, p.tenant_id, p.due_at
               FROM test_clock_jobs p JOIN apalis.jobs j ON j.id = p.job_id
              WHERE p.clock_id = $1 AND p.due_at <= $2 AND j.status IN ('Pending', 'Failed')
              ORDER BY p.due_at, j.id LIMIT 1",
        )
        .bind(id)
        .bind(to)
        .fetch_optional(&mut *work)
        .await?;
        let Some(ParkedJob {
            job_id,
            kind,
            payload,
            tenant_id,
            due_at,
        }) = next
        else {
            break;
        };
        let at = due_at.max(frozen);
        sqlx::query("UPDATE test_clocks SET frozen_time = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&mut *work)
            .await?;
        let outcome = run_parked(&mut work, &ctx, &job_id, &kind, &payload, at).await?;
        let outcome = match outcome {
            ActionOutcome::NotYetDue { due_at } => {
                // Due later than recorded (say an early job whose real due time moved): park it
                // at that time and go on.
                sqlx::query("UPDATE test_clock_jobs SET due_at = $2 WHERE job_id = $1")
                    .bind(&job_id)
                    .bind(due_at)
                    .execute(&mut *work)
                    .await?;
                continue;
            }
            ActionOutcome::Applied { tenant_version } => {
                format!("applied; tenant at version {tenant_version}")
            }
            ActionOutcome::NoOp { reason } => format!("no-op: {reason}"),
        };
        ran.push(RanJob {
            job_id,
            kind,
            tenant_id,
            due_at,
            outcome,
        });
    }
    sqlx::query("UPDATE test_clocks SET frozen_time = $2 WHERE id = $1")
        .bind(id)
        .bind(to)
        .execute(&mut *work)
        .await?;
    guard.commit().await?;
    let clock = get(&mut work, id)
        .await?
        .ok_or_else(|| StoreError::UnknownTestClock(id.to_string()))?;
    Ok(Advanced { clock, ran })
}

/// The next parked job due on a clock.
#[derive(sqlx::FromRow)]
struct ParkedJob {
    job_id: String,
    kind: String,
    payload: Vec<u8>,
    tenant_id: String,
    due_at: DateTime<Utc>,
}

/// Runs one parked job at `now` in a transaction of its own and completes its queue row in it.
async fn run_parked(
    conn: &mut PgConnection,
    ctx: &Context,
    job_id: &str,
    kind: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<ActionOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let decode = |e: serde_json::Error| {
        StoreError::Corrupt(format!("parked {kind} job {job_id} does not decode: {e}"))
    };
    let action =
        |tenant_id: TenantId, transition_id: TransitionId, a: Action| (tenant_id, transition_id, a);
    let outcome = match kind {
        k if k == <VoiceDisable as tierflow_queue::Job>::KIND => {
            let j: VoiceDisable = serde_json::from_slice(payload).map_err(decode)?;
            let (t, id, a) = action(j.tenant_id, j.transition_id, Action::VoiceDisable);
            crate::jobs::run_transition_action(&mut tx, ctx, now, &t, id, a).await?
        }
        k if k == <SlaFreeze as tierflow_queue::Job>::KIND => {
            let j: SlaFreeze = serde_json::from_slice(payload).map_err(decode)?;
            let (t, id, a) = action(j.tenant_id, j.transition_id, Action::SlaFreeze);
            crate::jobs::run_transition_action(&mut tx, ctx, now, &t, id, a).await?
        }
        k if k == <ApplyDowngrade as tierflow_queue::Job>::KIND => {
            let j: ApplyDowngrade = serde_json::from_slice(payload).map_err(decode)?;
            let (t, id, a) = action(j.tenant_id, j.transition_id, Action::ApplyDowngrade);
            crate::jobs::run_transition_action(&mut tx, ctx, now, &t, id, a).await?
        }
        k if k == <ExpireOverride as tierflow_queue::Job>::KIND => {
            let j: ExpireOverride = serde_json::from_slice(payload).map_err(decode)?;
            crate::jobs::expire_override(&mut tx, ctx, now, &j.tenant_id, j.override_id).await?
        }
        k if k == <ExpireEntitlement as tierflow_queue::Job>::KIND => {
            let j: ExpireEntitlement = serde_json::from_slice(payload).map_err(decode)?;
            crate::jobs::expire_entitlement(&mut tx, ctx, now, &j.tenant_id, j.expires_at).await?
        }
        other => {
            return Err(StoreError::Corrupt(format!(
                "job {job_id} of kind {other} is parked on a test clock; only a tenant's timed jobs are"
            )));
        }
    };
    if !matches!(outcome, ActionOutcome::NotYetDue { .. }) {
        let result = match &outcome {
            ActionOutcome::Applied { tenant_version } => {
                format!("applied on a test clock; tenant at version {tenant_version}")
            }
            ActionOutcome::NoOp { reason } => format!("no-op on a test clock: {reason}"),
            ActionOutcome::NotYetDue { .. } => String::new(),
        };
        tierflow_queue::admin::complete_outside_worker(&mut tx, job_id, &result).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Deletes a test clock with its tenants and every row that refers to them: transitions, their
/// actions, restrictions, overrides, idempotency keys, audit rows and queue jobs (parked or not).
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<i64, StoreError> {
    let mut tx = conn.begin().await?;
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM test_clocks WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(StoreError::UnknownTestClock(id.to_string()));
    }
    let tenants: Vec<String> = sqlx::query_scalar(
        "SELECT tenant_id FROM tenant_entitlements WHERE test_clock_id = $1
          ORDER BY tenant_id FOR UPDATE",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    // Jobs first (they refer to nothing but carry tenant ids in their payloads): parked ones by
    // the clock, the rest (event deliveries not yet made) by their event's tenant.
    for statement in [
        "DELETE FROM apalis.jobs WHERE id IN (SELECT job_id FROM test_clock_jobs WHERE clock_id = $1)",
        "DELETE FROM test_clock_jobs WHERE clock_id = $1",
    ] {
        sqlx::query(statement).bind(id).execute(&mut *tx).await?;
    }
    for statement in [
        "DELETE FROM apalis.jobs WHERE job_type = 'deliver_event' AND status <> 'Running'
            AND convert_from(job, 'UTF8')::jsonb #>> '{event,tenant_id}' = ANY($1)",
        "DELETE FROM transition_actions WHERE tenant_id = ANY($1)",
        "DELETE FROM tenant_restrictions WHERE tenant_id = ANY($1)",
        "UPDATE tier_transitions SET cancelled_by = NULL WHERE tenant_id = ANY($1)",
        "DELETE FROM tier_transitions WHERE tenant_id = ANY($1)",
        "DELETE FROM entitlement_overrides WHERE tenant_id = ANY($1)",
        "DELETE FROM idempotency_keys WHERE tenant_id = ANY($1)",
        "DELETE FROM audit_events WHERE tenant_id = ANY($1)",
        "DELETE FROM tenant_entitlements WHERE tenant_id = ANY($1)",
    ] {
        sqlx::query(statement)
            .bind(&tenants)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM test_clocks WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(tenants.len() as i64)
}
