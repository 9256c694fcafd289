//! Transitions: [`request_transition`], [`provision_tenant`], [`cancel_transition`], history.
//!
//! [`request_transition`] is the heart of tierflow. In one savepoint on the caller's connection
//! it:
//! 1. locks the tenant row (changes for one tenant are serialized) and, in the same statement,
//!    reads the tiers, the pending downgrade, the holds, the overrides and the idempotency key's
//!    stored response;
//! 2. replays the stored result if the idempotency key was seen with the same request, or
//!    refuses it if it was seen with another;
//! 3. asks [`plan_transition`] what the request changes;
//! 4. cancels the superseded pending downgrade — its row, its restriction holds, its scheduled
//!    actions and its not-yet-run jobs;
//! 5. computes the effective entitlement after the change from what step 1 read, and writes, in
//!    one statement, the new tier or status, the transition row, the new holds, the actions and
//!    their jobs (in the apalis queue table, same transaction), an audit row and the response
//!    under the idempotency key;
//! 6. emits the change's event.
//!
//! A downgrade is four round trips with the HTTP API's [`submit_transition`]: begin, step 1,
//! step 5, commit — with or without an idempotency key, whose stored response step 1 reads and
//! step 5 writes; superseding a pending downgrade adds step 4's one statement. Any error rolls
//! the savepoint back: nothing is left behind, even if the caller commits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, Row};
use tierflow_domain::effective::{EffectiveEntitlement, EntitlementState, effective_entitlement};
use tierflow_domain::ids::{Actor, IdempotencyKey, Reason, TenantId, TierId, TransitionId};
use tierflow_domain::restriction::{Hold, RestrictionSource};
use tierflow_domain::transition::{
    Action, CurrentState, EntitlementStatus, GracePeriod, PendingDowngrade, PlannedAction, Target,
    TransitionKind, TransitionPlan, TransitionStatus, plan_transition,
};
use tierflow_queue::{CancelKeys, JobRows, NewJob, count_cancelled};
use uuid::Uuid;

use crate::audit::{AuditEvent, Principal, audit_columns};
use crate::jobs::{self, ApplyDowngrade, SlaFreeze, VoiceDisable};
use crate::rows::{TransitionRecord, TransitionRow, convert, transition_columns};
use crate::{Context, StoreError, events, idempotency, tenants, tiers};

/// A request to change a tenant's tier or status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRequest {
    pub tenant_id: TenantId,
    pub target: Target,
    /// The grace of a downgrade; `None` takes the configured default.
    pub grace: Option<GracePeriod>,
    pub reason: Option<Reason>,
    pub requested_by: Actor,
    /// Makes the request safe to retry (scoped to the tenant).
    #[serde(skip)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A job scheduled by a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledJob {
    pub kind: String,
    pub job_id: String,
    pub due_at: DateTime<Utc>,
}

/// A pending downgrade cancelled by a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub transition_id: TransitionId,
    /// Ids of the jobs cancelled before they ran.
    pub cancelled_jobs: Vec<String>,
}

/// What a transition request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionOutcome {
    pub transition: TransitionRecord,
    pub jobs: Vec<ScheduledJob>,
    pub superseded: Option<Superseded>,
    pub entitlement: EffectiveEntitlement,
    /// True when this is the stored result of an earlier request with the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

const OP_TRANSITION: &str = "transition";

/// Requests a transition inside the caller's transaction (see the module doc for the steps).
pub async fn request_transition(
    conn: &mut PgConnection,
    ctx: &Context,
    req: TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    // A savepoint: an error rolls back this request and leaves the caller's transaction usable.
    commit_request(conn.begin().await?, ctx, &req).await
}

/// Requests a transition in a transaction of its own, committed before it returns — for callers
/// that have no transaction to join (the HTTP API). Same steps and guarantees as
/// [`request_transition`], two round trips fewer: no savepoint is needed, since an error drops
/// the whole transaction.
pub async fn submit_transition(
    pool: &sqlx::PgPool,
    ctx: &Context,
    req: TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    commit_request(pool.begin_with(BEGIN_GENERIC_PLANS).await?, ctx, &req).await
}

/// Starts a request's own transaction with generic plans for its prepared statements, in the
/// same round trip. A request's statements are few and large (a lock with seven subqueries, a
/// write with eight data-modifying `WITH` items over parameter arrays), and PostgreSQL's default
/// (`plan_cache_mode = auto`) kept choosing a custom plan for them — planning them anew on every
/// execution. Every lookup in them is by key or by a literal status, so one generic plan serves
/// every request: the HTTP section of `tierflow bench --only enqueue` went from 1,260–1,284 to
/// 1,437–1,485 requests/s in alternating runs (docs/performance.md). (`request_transition` joins
/// a caller's transaction and leaves its settings alone.)
const BEGIN_GENERIC_PLANS: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// Runs the request in `tx` (a transaction or a savepoint), counts its outcome, and commits it
/// if it succeeded.
async fn commit_request(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    ctx: &Context,
    req: &TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    let result = request_in(&mut tx, ctx, req).await;
    count(&result);
    let outcome = result?;
    tx.commit().await?;
    Ok(outcome)
}

/// Counts a request's outcome in `tierflow_transitions_total`.
fn count(result: &Result<TransitionOutcome, StoreError>) {
    let (kind, outcome) = match result {
        Ok(o) if o.replayed => (o.transition.kind.as_str(), "replayed"),
        Ok(o) => (o.transition.kind.as_str(), "accepted"),
        Err(e) if e.is_caller_error() => ("unknown", "refused"),
        Err(_) => ("unknown", "failed"),
    };
    metrics::counter!(crate::metrics::TRANSITIONS, "kind" => kind, "outcome" => outcome)
        .increment(1);
}

async fn request_in(
    conn: &mut PgConnection,
    ctx: &Context,
    req: &TransitionRequest,
) -> Result<TransitionOutcome, StoreError> {
    let target_tier = match &req.target {
        Target::Tier(id) => Some(id),
        Target::Suspend | Target::Reactivate => None,
    };
    let key = req.idempotency_key.as_ref().map(IdempotencyKey::as_str);
    let mut read = tenants::lock_for_change(conn, &req.tenant_id, target_tier, key).await?;
    // A test-clock tenant's change happens at its clock's time.
    let (ctx, now) = read.tenant.time(ctx);
    let ctx = &*ctx;
    let tenant = &read.tenant;
    let fingerprint = match key {
        Some(key) => {
            let fp = idempotency::fingerprint(OP_TRANSITION, req)?;
            let prior: Option<TransitionOutcome> =
                idempotency::check(read.prior.take(), key, OP_TRANSITION, &fp)?;
            if let Some(mut prior) = prior {
                prior.replayed = true;
                return Ok(prior);
            }
            Some(fp)
        }
        None => None,
    };

    if let (Some(id), None) = (target_tier, &read.target) {
        return Err(StoreError::UnknownTier(id.to_string()));
    }
    let pending_downgrade = read.pending.as_ref().and_then(TransitionRecord::as_pending);
    let plan = plan_transition(
        TransitionId::new(),
        CurrentState {
            tier: &read.current,
            status: tenant.status,
            pending: pending_downgrade.as_ref(),
        },
        &req.target,
        read.target.as_ref(),
        req.grace.unwrap_or(ctx.default_grace),
        now,
    )?;

    let write = Write {
        tenant,
        actor: req.requested_by.as_str(),
        principal: &ctx.principal,
        reason: req.reason.as_ref().map(Reason::as_str),
        idempotency_key: key,
        now,
    };
    let superseded = match plan.supersedes {
        Some(old) => Some(cancel_pending(conn, &write, old, Some(plan.transition_id)).await?),
        None => None,
    };
    // Everything the response says is known before the write, so the write can also store it
    // under the idempotency key.
    let staged = stage(&write, &plan)?;
    let outcome = TransitionOutcome {
        transition: staged.record.clone(),
        jobs: staged.jobs.clone(),
        superseded,
        entitlement: entitlement_after(&read, pending_downgrade.as_ref(), &plan, now)?,
        replayed: false,
    };
    let remember = match fingerprint {
        Some(fingerprint) => Some(Remember {
            fingerprint,
            response: serde_json::to_value(&outcome)
                .map_err(|e| StoreError::Corrupt(format!("response does not encode: {e}")))?,
        }),
        None => None,
    };
    write_plan(conn, &write, &plan, &staged, remember.as_ref()).await?;
    park_staged(conn, tenant, &staged).await?;
    let id = outcome.transition.id.to_string();
    let action = audit_action(plan.kind);
    events::emit(
        conn,
        ctx,
        action,
        "transition",
        &id,
        &outcome.entitlement,
        now,
    )
    .await?;
    Ok(outcome)
}

/// The tenant's effective entitlement once `plan` is written, computed from what
/// [`tenants::lock_for_change`] read (the lock keeps it current) rather than read back: the
/// same fold [`tenants::effective`] applies to the same rows as `write_plan` leaves them.
fn entitlement_after(
    read: &tenants::ChangeContext,
    pending: Option<&PendingDowngrade>,
    plan: &TransitionPlan,
    now: DateTime<Utc>,
) -> Result<EffectiveEntitlement, StoreError> {
    let tenant = &read.tenant;
    let tier = match &read.target {
        Some(t) if t.tier_id == plan.tier_now => t,
        _ if read.current.tier_id == plan.tier_now => &read.current,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "plan moves tenant '{}' to tier '{}', which was not read",
                tenant.tenant_id, plan.tier_now
            )));
        }
    };
    let superseded = plan.supersedes.map(RestrictionSource::PendingDowngrade);
    let mut holds: Vec<Hold> = read
        .holds
        .iter()
        .filter(|h| !plan.lift.contains(&h.source) && Some(&h.source) != superseded.as_ref())
        .cloned()
        .collect();
    for h in &plan.hold {
        if !holds.contains(h) {
            holds.push(h.clone());
        }
    }
    let new_pending = match (plan.status, plan.grace_ends_at) {
        (TransitionStatus::Pending, Some(grace_ends_at)) => Some(PendingDowngrade {
            transition_id: plan.transition_id,
            to_tier: plan.to_tier.clone(),
            grace_ends_at,
        }),
        _ => None,
    };
    let pending = match (&new_pending, plan.supersedes) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => pending,
    };
    let changed = tenant.tier_id != plan.tier_now || tenant.status != plan.to_status;
    Ok(effective_entitlement(
        &EntitlementState {
            tenant_id: &tenant.tenant_id,
            tier,
            status: plan.to_status,
            effective_at: if changed { now } else { read.effective_at },
            // Reactivating an expired entitlement clears its expiry (as `write_plan` does).
            expires_at: if tenant.status == EntitlementStatus::Expired
                && plan.to_status != EntitlementStatus::Expired
            {
                None
            } else {
                tenant.expires_at
            },
            version: tenant.version + 1,
            pending,
            holds: &holds,
            overrides: &read.overrides,
        },
        now,
    ))
}

/// Who and when, shared by every write of one request.
struct Write<'a> {
    tenant: &'a tenants::LockedTenant,
    actor: &'a str,
    principal: &'a Principal,
    reason: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    now: DateTime<Utc>,
}

impl Write<'_> {
    fn audit(
        &self,
        action: &'static str,
        subject: String,
        details: serde_json::Value,
    ) -> AuditEvent<'_> {
        AuditEvent {
            tenant_id: self.tenant.tenant_id.as_str(),
            occurred_at: self.now,
            actor: self.actor,
            action,
            subject_type: "transition",
            subject_id: subject,
            reason: self.reason,
            idempotency_key: self.idempotency_key,
            details,
            principal: self.principal,
        }
    }
}

/// A plan's rows as they will be written, built before the write.
struct Staged {
    record: TransitionRecord,
    jobs: Vec<ScheduledJob>,
    job_rows: JobRows,
}

/// A response to store under the request's idempotency key, with the request's fingerprint.
struct Remember {
    fingerprint: String,
    response: serde_json::Value,
}

/// Builds the transition row and the jobs of `plan` (their ids chosen here).
fn stage(w: &Write<'_>, plan: &TransitionPlan) -> Result<Staged, StoreError> {
    let tenant_id = &w.tenant.tenant_id;
    // A first assignment comes from nowhere.
    let first = plan.kind == TransitionKind::Provision;
    let record = TransitionRecord {
        id: plan.transition_id,
        tenant_id: tenant_id.to_string(),
        kind: plan.kind,
        status: plan.status,
        from_tier: (!first).then(|| plan.from_tier.clone()),
        to_tier: plan.to_tier.clone(),
        from_status: (!first).then_some(plan.from_status),
        to_status: plan.to_status,
        reason: w.reason.map(str::to_owned),
        requested_by: w.actor.to_owned(),
        requested_at: w.now,
        effective_at: plan.effective_at,
        grace_ends_at: plan.grace_ends_at,
        cancelled_at: None,
        cancelled_by: None,
        // The lock is held: this request's change is the tenant's next version.
        tenant_version: w.tenant.version + 1,
    };
    let mut new_jobs = action_jobs(tenant_id, plan.transition_id, &plan.actions)?;
    // A test-clock tenant's jobs wait for its clock (their due times are in the plan).
    if w.tenant.clock.is_some() {
        crate::test_clocks::park(&mut new_jobs);
    }
    let job_rows = JobRows::new(new_jobs);
    let jobs = plan
        .actions
        .iter()
        .zip(job_rows.jobs())
        .map(|(a, j)| ScheduledJob {
            kind: j.kind,
            job_id: j.id,
            due_at: a.due_at,
        })
        .collect();
    Ok(Staged {
        record,
        jobs,
        job_rows,
    })
}

/// Writes a staged plan in one statement: tenant row, transition row, holds lifted and taken,
/// actions with their jobs, audit row, and the response under the idempotency key if given.
async fn write_plan(
    conn: &mut PgConnection,
    w: &Write<'_>,
    plan: &TransitionPlan,
    staged: &Staged,
    remember: Option<&Remember>,
) -> Result<(), StoreError> {
    let tenant_id = &w.tenant.tenant_id;
    let Staged {
        record,
        jobs,
        job_rows,
    } = staged;
    let version = record.tenant_version;
    // The superseded downgrade's holds were lifted when it was cancelled.
    let superseded = plan.supersedes.map(RestrictionSource::PendingDowngrade);
    let lift: Vec<String> = plan
        .lift
        .iter()
        .filter(|s| Some(*s) != superseded.as_ref())
        .map(RestrictionSource::key)
        .collect();

    let details = serde_json::json!({
        "from_tier": plan.from_tier, "to_tier": plan.to_tier,
        "from_status": plan.from_status, "to_status": plan.to_status,
        "status": plan.status, "grace_ends_at": plan.grace_ends_at,
        "held": plan.hold.iter().map(|h| h.restriction.as_str()).collect::<Vec<_>>(),
        "lifted": plan.lift.iter().map(RestrictionSource::key).collect::<Vec<_>>(),
        "jobs": jobs.iter().map(|j| serde_json::json!({"kind": j.kind, "job_id": j.job_id, "due_at": j.due_at})).collect::<Vec<_>>(),
        "tenant_version": version,
    });
    let audit = w.audit(
        audit_action(plan.kind),
        plan.transition_id.to_string(),
        details,
    );
    let hold_sources: Vec<String> = plan.hold.iter().map(|h| h.source.key()).collect();
    let hold_flags: Vec<&str> = plan.hold.iter().map(|h| h.restriction.as_str()).collect();
    let action_names: Vec<&str> = plan.actions.iter().map(|a| a.action.as_str()).collect();
    let action_due: Vec<DateTime<Utc>> = plan.actions.iter().map(|a| a.due_at).collect();
    let action_job_ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    // Every write of the plan in one statement (one round trip). The rows hang off `recorded`,
    // which is written only if the tenant was still at the version read under the lock. The
    // lifted and the held sources never overlap: a plan lifts other sources than the one its own
    // holds are taken under. Foreign keys between these rows are checked at the end of the
    // statement, when all exist. (A superseded downgrade is cancelled by the statement before:
    // here, whether its row or the new pending one counted first for the one-pending-per-tenant
    // index would depend on the order PostgreSQL runs the WITH items in.)
    let q = sqlx::query(concat!(
        "WITH bumped AS (
            UPDATE tenant_entitlements
               SET effective_at = CASE WHEN tier_id <> $5 OR status <> $6 THEN $2 ELSE effective_at END,
                   expires_at = CASE WHEN status = 'expired' AND $6 <> 'expired' THEN NULL ELSE expires_at END,
                   tier_id = $5, status = $6, version = $4, updated_at = $2
             WHERE tenant_id = $1 AND version = $4 - 1
            RETURNING version),
         recorded AS (
            INSERT INTO tier_transitions
              (id, tenant_id, kind, status, from_tier_id, to_tier_id, from_status, to_status, reason,
               requested_by, requested_at, effective_at, grace_ends_at, idempotency_key, tenant_version)
            SELECT $3, $1, $7, $8, $9, $10, $11, $6, $12, $13, $2, $14, $15, $16, version FROM bumped
            RETURNING tenant_version),
         lifted AS (
            DELETE FROM tenant_restrictions WHERE tenant_id = $1 AND source = ANY($17::text[])),
         held AS (
            INSERT INTO tenant_restrictions (tenant_id, source, restriction, transition_id, created_at)
            SELECT $1, s, r, $3, $2 FROM unnest($18::text[], $19::text[]) AS t(s, r), recorded
            ON CONFLICT DO NOTHING),
         acted AS (
            INSERT INTO transition_actions (transition_id, action, tenant_id, due_at, job_id)
            SELECT $3, a, $1, d, j
              FROM unnest($20::text[], $21::timestamptz[], $22::text[]) AS t(a, d, j), recorded),
         queued AS (",
        tierflow_queue::insert_jobs!("$23", "$24", "$25", "$26", "$27", "$28", "$29"),
        "),
         audited AS (
            INSERT INTO audit_events (",
        audit_columns!(),
        ") SELECT $1, $2, $30, $31, $32, $33, $34, $35, $36, $37, $38 FROM recorded),
         remembered AS (
            INSERT INTO idempotency_keys (tenant_id, idempotency_key, operation, fingerprint, response, created_at)
            SELECT $1, $16, $39, $40, $41, $2 FROM recorded WHERE $41::jsonb IS NOT NULL)
         SELECT (SELECT tenant_version FROM recorded), (SELECT count(*) FROM queued)"
    ))
    .bind(tenant_id.as_str())
    .bind(w.now)
    .bind(plan.transition_id.0)
    .bind(version)
    .bind(plan.tier_now.as_str())
    .bind(plan.to_status.as_str())
    .bind(record.kind.as_str())
    .bind(record.status.as_str())
    .bind(record.from_tier.as_ref().map(TierId::as_str))
    .bind(record.to_tier.as_str())
    .bind(record.from_status.map(EntitlementStatus::as_str))
    .bind(&record.reason)
    .bind(&record.requested_by)
    .bind(record.effective_at)
    .bind(record.grace_ends_at)
    .bind(w.idempotency_key)
    .bind(&lift)
    .bind(&hold_sources)
    .bind(&hold_flags)
    .bind(&action_names)
    .bind(&action_due)
    .bind(&action_job_ids);
    let row = audit
        .bind_own(job_rows.bind(q))
        .bind(OP_TRANSITION)
        .bind(remember.map(|r| r.fingerprint.as_str()))
        .bind(remember.map(|r| &r.response))
        .fetch_one(&mut *conn)
        .await?;
    let (written_version, queued): (Option<i64>, i64) = (row.try_get(0)?, row.try_get(1)?);
    if written_version != Some(version) {
        return Err(StoreError::Corrupt(format!(
            "transition {} of tenant '{tenant_id}' not written: the tenant was not at version {} \
             under its lock (a writer changed it without the lock)",
            plan.transition_id,
            version - 1
        )));
    }
    if queued != job_rows.len() as i64 {
        return Err(StoreError::Corrupt(format!(
            "transition {} of tenant '{tenant_id}': {queued} of its {} jobs written, the rest \
             already existed",
            plan.transition_id,
            job_rows.len()
        )));
    }
    job_rows.count_enqueued();
    Ok(())
}

/// The audit action (and event cause) of a transition kind.
fn audit_action(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Provision => "transition.provision",
        TransitionKind::Upgrade => "transition.upgrade",
        TransitionKind::Downgrade => "transition.downgrade",
        TransitionKind::Lateral => "transition.lateral",
        TransitionKind::Suspension => "transition.suspension",
        TransitionKind::Reactivation => "transition.reactivation",
    }
}

/// One job per planned action, in the actions' order, keyed by the transition.
fn action_jobs(
    tenant_id: &TenantId,
    transition_id: TransitionId,
    actions: &[PlannedAction],
) -> Result<Vec<NewJob>, StoreError> {
    let key = jobs::transition_key(transition_id);
    let mut new_jobs = Vec::with_capacity(actions.len());
    for a in actions {
        let (tenant_id, transition_id) = (tenant_id.clone(), transition_id);
        let job = match a.action {
            Action::VoiceDisable => NewJob::new(
                &VoiceDisable {
                    tenant_id,
                    transition_id,
                },
                a.due_at,
            ),
            Action::SlaFreeze => NewJob::new(
                &SlaFreeze {
                    tenant_id,
                    transition_id,
                },
                a.due_at,
            ),
            Action::ApplyDowngrade => NewJob::new(
                &ApplyDowngrade {
                    tenant_id,
                    transition_id,
                },
                a.due_at,
            ),
        }?;
        new_jobs.push(job.with_key(key.clone()));
    }
    Ok(new_jobs)
}

/// Records the parked jobs of a test-clock tenant's staged plan (see [`crate::test_clocks`]).
async fn park_staged(
    conn: &mut PgConnection,
    tenant: &tenants::LockedTenant,
    staged: &Staged,
) -> Result<(), StoreError> {
    let Some(clock) = &tenant.clock else {
        return Ok(());
    };
    let jobs: Vec<(String, DateTime<Utc>)> = staged
        .jobs
        .iter()
        .map(|j| (j.job_id.clone(), j.due_at))
        .collect();
    crate::test_clocks::record_parked(conn, clock, &tenant.tenant_id, &jobs).await
}

/// Cancels a pending downgrade: its row, its holds, its scheduled actions and not-yet-run jobs.
/// The caller bumps the tenant's version in the same transaction (as every change under the
/// tenant lock must: [`tenants::lock_for_change`] relies on it).
async fn cancel_pending(
    conn: &mut PgConnection,
    w: &Write<'_>,
    id: TransitionId,
    by: Option<TransitionId>,
) -> Result<Superseded, StoreError> {
    let why = match by {
        Some(by) => format!("cancelled: transition {id} superseded by {by}"),
        None => format!("cancelled: transition {id} cancelled"),
    };
    let keys = CancelKeys::new(&jobs::transition_job_keys(id), why);
    let details = serde_json::json!({ "cancelled_by": by });
    let audit = w.audit("transition.cancelled", id.to_string(), details);
    // The not-yet-run jobs, the transition, its holds, its scheduled actions and the audit row
    // (which lists the jobs cancelled) in one statement.
    let q = sqlx::query(concat!(
        "WITH dropped AS (",
        tierflow_queue::cancel_jobs!("$15", "$16", "$17", "$18", "$19"),
        "),
         cancelled AS (
            UPDATE tier_transitions SET status = 'cancelled', cancelled_at = $2, cancelled_by = $3
             WHERE id = $1 AND status = 'pending'),
         lifted AS (
            DELETE FROM tenant_restrictions WHERE tenant_id = $4 AND source = $5),
         actions AS (
            UPDATE transition_actions SET status = 'cancelled'
             WHERE transition_id = $1 AND status = 'scheduled'),
         audited AS (
            INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($4, $2, $6, $7, $8, $9, $10, $11, $12::jsonb || jsonb_build_object(
                'cancelled_jobs', (SELECT coalesce(jsonb_agg(id ORDER BY id), '[]'::jsonb) FROM dropped)), $13, $14))
         SELECT coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(job_type ORDER BY id), '{}')
           FROM dropped"
    ))
    .bind(id.0)
    .bind(w.now)
    .bind(by.map(|b| b.0))
    .bind(w.tenant.tenant_id.as_str())
    .bind(RestrictionSource::PendingDowngrade(id).key());
    let row = keys.bind(audit.bind_own(q)).fetch_one(&mut *conn).await?;
    let (cancelled_jobs, kinds): (Vec<String>, Vec<String>) = (row.try_get(0)?, row.try_get(1)?);
    count_cancelled(kinds.iter().map(String::as_str));
    Ok(Superseded {
        transition_id: id,
        cancelled_jobs,
    })
}

/// A request to give a new tenant its first tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    pub tenant_id: TenantId,
    pub tier_id: TierId,
    pub reason: Option<Reason>,
    pub requested_by: Actor,
    /// When the entitlement expires (an `expire_entitlement` job is scheduled for it).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The test clock the tenant lives by (see [`crate::test_clocks`]).
    #[serde(default)]
    pub test_clock_id: Option<Uuid>,
}

/// Creates a tenant on `tier_id`, recorded as a `provision` transition.
pub async fn provision_tenant(
    conn: &mut PgConnection,
    ctx: &Context,
    req: ProvisionRequest,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    // On a test clock, the tenant's life starts at the clock's time.
    let now = match req.test_clock_id {
        Some(id) => {
            sqlx::query_scalar("SELECT frozen_time FROM test_clocks WHERE id = $1 FOR SHARE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownTestClock(id.to_string()))?
        }
        None => ctx.clock.now(),
    };
    if let Some(at) = req.expires_at.filter(|at| *at <= now) {
        return Err(StoreError::ExpiryInPast {
            expires_at: at,
            now,
        });
    }
    let tier = tiers::get(&mut tx, &req.tier_id)
        .await?
        .ok_or_else(|| StoreError::UnknownTier(req.tier_id.to_string()))?;
    if !tier.active {
        return Err(tierflow_domain::DomainError::InactiveTier(tier.tier_id.to_string()).into());
    }
    let inserted = sqlx::query(
        "INSERT INTO tenant_entitlements
           (tenant_id, tier_id, status, effective_at, version, created_at, updated_at, expires_at, test_clock_id)
         VALUES ($1, $2, 'active', $3, 0, $3, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(req.tenant_id.as_str())
    .bind(req.tier_id.as_str())
    .bind(now)
    .bind(req.expires_at)
    .bind(req.test_clock_id)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::TenantExists(req.tenant_id.to_string()));
    }
    let tenant = tenants::lock(&mut tx, &req.tenant_id).await?;
    let plan = TransitionPlan {
        transition_id: TransitionId::new(),
        kind: TransitionKind::Provision,
        status: TransitionStatus::Effective,
        from_tier: req.tier_id.clone(),
        to_tier: req.tier_id.clone(),
        from_status: EntitlementStatus::Active,
        to_status: EntitlementStatus::Active,
        effective_at: now,
        grace_ends_at: None,
        tier_now: req.tier_id.clone(),
        supersedes: None,
        lift: vec![],
        hold: vec![],
        actions: vec![],
    };
    let w = Write {
        tenant: &tenant,
        actor: req.requested_by.as_str(),
        principal: &ctx.principal,
        reason: req.reason.as_ref().map(Reason::as_str),
        idempotency_key: None,
        now,
    };
    let staged = stage(&w, &plan)?;
    write_plan(&mut tx, &w, &plan, &staged, None).await?;
    let Staged {
        record: transition,
        mut jobs,
        ..
    } = staged;
    if let Some(expires_at) = req.expires_at {
        jobs.push(schedule_expiry(&mut tx, &tenant, expires_at).await?);
    }
    let id = transition.id.to_string();
    let (ctx, _) = tenant.time(ctx);
    let entitlement = events::announce(
        &mut tx,
        &ctx,
        &tenant.tenant_id,
        "transition.provision",
        "transition",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(TransitionOutcome {
        transition,
        jobs,
        superseded: None,
        entitlement,
        replayed: false,
    })
}

/// What cancelling a pending transition did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOutcome {
    pub transition: TransitionRecord,
    pub cancelled_jobs: Vec<String>,
    pub entitlement: EffectiveEntitlement,
}

/// Cancels a pending downgrade on request: the tenant keeps its tier and the downgrade's holds
/// are lifted.
pub async fn cancel_transition(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    transition_id: TransitionId,
    actor: &Actor,
    reason: Option<&Reason>,
) -> Result<CancelOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = tenants::lock(&mut tx, tenant_id).await?;
    let (ctx, now) = tenant.time(ctx);
    let ctx = &*ctx;
    let record = get(&mut tx, tenant_id, transition_id)
        .await?
        .ok_or_else(|| StoreError::UnknownTransition(transition_id.to_string()))?;
    if record.status != TransitionStatus::Pending {
        return Err(StoreError::TransitionNotPending {
            id: transition_id.to_string(),
            status: record.status.to_string(),
        });
    }
    let w = Write {
        tenant: &tenant,
        actor: actor.as_str(),
        principal: &ctx.principal,
        reason: reason.map(Reason::as_str),
        idempotency_key: None,
        now,
    };
    let superseded = cancel_pending(&mut tx, &w, transition_id, None).await?;
    tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    let transition = get(&mut tx, tenant_id, transition_id)
        .await?
        .ok_or_else(|| StoreError::UnknownTransition(transition_id.to_string()))?;
    let id = transition_id.to_string();
    let entitlement = events::announce(
        &mut tx,
        ctx,
        tenant_id,
        "transition.cancelled",
        "transition",
        &id,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(CancelOutcome {
        transition,
        cancelled_jobs: superseded.cancelled_jobs,
        entitlement,
    })
}

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

/// Schedules the `expire_entitlement` job of `tenant` for `expires_at` (parked on its test clock
/// if it has one) and returns it.
pub(crate) async fn schedule_expiry(
    conn: &mut PgConnection,
    tenant: &tenants::LockedTenant,
    expires_at: DateTime<Utc>,
) -> Result<ScheduledJob, StoreError> {
    let job = jobs::ExpireEntitlement {
        tenant_id: tenant.tenant_id.clone(),
        expires_at,
    };
    let key = job.key();
    let ids = crate::test_clocks::enqueue_for(
        conn,
        tenant.clock.as_ref(),
        &tenant.tenant_id,
        vec![NewJob::new(&job, expires_at)?.with_key(key)],
    )
    .await?;
    let job_id = ids.into_iter().next().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the expiry job of tenant '{}' at {expires_at} already existed",
            tenant.tenant_id
        ))
    })?;
    Ok(ScheduledJob {
        kind: <jobs::ExpireEntitlement as tierflow_queue::Job>::KIND.to_owned(),
        job_id,
        due_at: expires_at,
    })
}
