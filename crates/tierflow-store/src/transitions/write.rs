//! Staging a plan's rows and writing them in one statement.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use tierflow_domain::ids::{TenantId, TierId, TransitionId};
use tierflow_domain::restriction::RestrictionSource;
use tierflow_domain::transition::{
    Action, EntitlementStatus, PlannedAction, TransitionKind, TransitionPlan,
};
use tierflow_queue::{JobRows, NewJob};

use super::*;
use crate::audit::{AuditEvent, Principal, audit_columns};
use crate::jobs::{ApplyDowngrade, SlaFreeze, VoiceDisable};
use crate::rows::TransitionRecord;
use crate::{StoreError, tenants};

/// Who and when, shared by every write of one request.
pub(super) struct Write<'a> {
    pub(super) tenant: &'a tenants::LockedTenant,
    pub(super) actor: &'a str,
    pub(super) principal: &'a Principal,
    pub(super) reason: Option<&'a str>,
    pub(super) idempotency_key: Option<&'a str>,
    pub(super) now: DateTime<Utc>,
}

impl Write<'_> {
    pub(super) fn audit(
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
pub(super) struct Staged {
    pub(super) record: TransitionRecord,
    pub(super) jobs: Vec<ScheduledJob>,
    pub(super) job_rows: JobRows,
}

/// A response to store under the request's idempotency key, with the request's fingerprint.
pub(super) struct Remember {
    pub(super) fingerprint: String,
    pub(super) response: serde_json::Value,
}

/// Builds the transition row and the jobs of `plan` (their ids chosen here).
pub(super) fn stage(w: &Write<'_>, plan: &TransitionPlan) -> Result<Staged, StoreError> {
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
pub(super) async fn write_plan(
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
    // Every write of the plan in one statement (one round trip). Its first item, `c`, names each
    // scalar parameter once, in bind order; the rest of the statement reads `c.<name>`, and the
    // row sets `h` (holds taken) and `a` (actions) name their columns the same way. The job
    // rows are the seven columns of `insert_jobs!`, bound by `JobRows::bind`, last.
    //
    // The rows hang off `recorded`, which is written only if the tenant was still at the
    // version read under the lock. The lifted and the held sources never overlap: a plan lifts
    // other sources than the one its own holds are taken under. Foreign keys between these rows
    // are checked at the end of the statement, when all exist. (A superseded downgrade is
    // cancelled by the statement before: here, whether its row or the new pending one counted
    // first for the one-pending-per-tenant index would depend on the order PostgreSQL runs the
    // WITH items in.) Parameters, not a `jsonb` document per row set: the same statement with
    // its values as `jsonb_to_record` row sets measured 4–7 % fewer requests/s (docs/performance.md).
    let q = sqlx::query(concat!(
        "WITH c AS (
            SELECT $1::text AS tenant_id, $2::timestamptz AS now, $3::uuid AS transition_id,
                   $4::bigint AS version, $5::text AS tier_now, $6::text AS to_status,
                   $7::text AS kind, $8::text AS status, $9::text AS from_tier, $10::text AS to_tier,
                   $11::text AS from_status, $12::text AS reason, $13::text AS requested_by,
                   $14::timestamptz AS effective_at, $15::timestamptz AS grace_ends_at,
                   $16::text AS idempotency_key, $17::text[] AS lift,
                   $18::text AS audit_action, $19::jsonb AS audit_details, $20::text AS principal,
                   $21::text AS principal_role, $22::text AS operation, $23::text AS fingerprint,
                   $24::jsonb AS response),
         h AS (SELECT * FROM unnest($25::text[], $26::text[]) AS h(source, restriction)),
         a AS (SELECT * FROM unnest($27::text[], $28::timestamptz[], $29::text[]) AS a(action, due_at, job_id)),
         bumped AS (
            UPDATE tenant_entitlements e
               SET effective_at = CASE WHEN e.tier_id <> c.tier_now OR e.status <> c.to_status
                                       THEN c.now ELSE e.effective_at END,
                   expires_at = CASE WHEN e.status = 'expired' AND c.to_status <> 'expired'
                                     THEN NULL ELSE e.expires_at END,
                   tier_id = c.tier_now, status = c.to_status, version = c.version, updated_at = c.now
              FROM c
             WHERE e.tenant_id = c.tenant_id AND e.version = c.version - 1
            RETURNING e.version),
         recorded AS (
            INSERT INTO tier_transitions
              (id, tenant_id, kind, status, from_tier_id, to_tier_id, from_status, to_status, reason,
               requested_by, requested_at, effective_at, grace_ends_at, idempotency_key, tenant_version)
            SELECT c.transition_id, c.tenant_id, c.kind, c.status, c.from_tier, c.to_tier,
                   c.from_status, c.to_status, c.reason, c.requested_by, c.now, c.effective_at,
                   c.grace_ends_at, c.idempotency_key, bumped.version
              FROM c, bumped
            RETURNING tenant_version),
         lifted AS (
            DELETE FROM tenant_restrictions r USING c
             WHERE r.tenant_id = c.tenant_id AND r.source = ANY(c.lift)),
         held AS (
            INSERT INTO tenant_restrictions (tenant_id, source, restriction, transition_id, created_at)
            SELECT c.tenant_id, h.source, h.restriction, c.transition_id, c.now FROM c, recorded, h
            ON CONFLICT DO NOTHING),
         acted AS (
            INSERT INTO transition_actions (transition_id, action, tenant_id, due_at, job_id)
            SELECT c.transition_id, a.action, c.tenant_id, a.due_at, a.job_id FROM c, recorded, a),
         queued AS (",
        tierflow_queue::insert_jobs!("$30", "$31", "$32", "$33", "$34", "$35", "$36"),
        "),
         audited AS (
            INSERT INTO audit_events (",
        audit_columns!(),
        ") SELECT c.tenant_id, c.now, c.requested_by, c.audit_action, 'transition',
                  c.transition_id::text, c.reason, c.idempotency_key, c.audit_details, c.principal,
                  c.principal_role
              FROM c, recorded),
         remembered AS (
            INSERT INTO idempotency_keys (tenant_id, idempotency_key, operation, fingerprint, response, created_at)
            SELECT c.tenant_id, c.idempotency_key, c.operation, c.fingerprint, c.response, c.now
              FROM c, recorded WHERE c.response IS NOT NULL)
         SELECT (SELECT tenant_version FROM recorded), (SELECT count(*) FROM queued)"
    ))
    .bind(tenant_id.as_str()) // tenant_id
    .bind(w.now) // now
    .bind(plan.transition_id.0) // transition_id
    .bind(version) // version
    .bind(plan.tier_now.as_str()) // tier_now
    .bind(plan.to_status.as_str()) // to_status
    .bind(record.kind.as_str()) // kind
    .bind(record.status.as_str()) // status
    .bind(record.from_tier.as_ref().map(TierId::as_str)) // from_tier
    .bind(record.to_tier.as_str()) // to_tier
    .bind(record.from_status.map(EntitlementStatus::as_str)) // from_status
    .bind(&record.reason) // reason
    .bind(&record.requested_by) // requested_by
    .bind(record.effective_at) // effective_at
    .bind(record.grace_ends_at) // grace_ends_at
    .bind(w.idempotency_key) // idempotency_key
    .bind(&lift) // lift
    .bind(audit.action) // audit_action
    .bind(&audit.details) // audit_details
    .bind(audit.principal.name.as_str()) // principal
    .bind(audit.principal.role.as_str()) // principal_role
    .bind(OP_TRANSITION) // operation
    .bind(remember.map(|r| r.fingerprint.as_str())) // fingerprint
    .bind(remember.map(|r| &r.response)) // response
    .bind(&hold_sources) // h.source
    .bind(&hold_flags) // h.restriction
    .bind(&action_names) // a.action
    .bind(&action_due) // a.due_at
    .bind(&action_job_ids); // a.job_id
    let row = job_rows.bind(q).fetch_one(&mut *conn).await?;
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
pub(super) fn audit_action(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Provision => "transition.provision",
        TransitionKind::Upgrade => "transition.upgrade",
        TransitionKind::Downgrade => "transition.downgrade",
        TransitionKind::Lateral => "transition.lateral",
        TransitionKind::Suspension => "transition.suspension",
        TransitionKind::Reactivation => "transition.reactivation",
    }
}

/// One job per planned action, in the actions' order.
///
/// The jobs carry no key: each action's row names its job (`transition_actions.job_id`), and a
/// cancel or the reconciler finds the job by that id. A key would cost every transition job an
/// entry in `tierflow_jobs_key_idx` at each of its three writes (insert, claim, completion: none
/// is a HOT update) — about 135 bytes of WAL each — and protect nothing: a transition's jobs are
/// written once, in the request's own statement, under a new transition id.
pub(super) fn action_jobs(
    tenant_id: &TenantId,
    transition_id: TransitionId,
    actions: &[PlannedAction],
) -> Result<Vec<NewJob>, StoreError> {
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
        new_jobs.push(job);
    }
    Ok(new_jobs)
}

/// Records the parked jobs of a test-clock tenant's staged plan (see [`crate::test_clocks`]).
pub(super) async fn park_staged(
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
