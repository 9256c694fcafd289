//! The effect shared by the three jobs of a downgrade (`voice_disable`, `sla_freeze`,
//! `apply_downgrade`) — exactly once, however often the job runs.
//!
//! Each takes `now` rather than reading the context's clock: in the worker it is the database's
//! time in the job's transaction, the same clock that decided the job was due, so a worker host
//! whose clock is behind cannot find a due job early (and loop on it) nor one ahead apply early.
//!
//! Each function runs in the caller's transaction — the job's own, which also records the job
//! done, so the effect and the completion commit together — and the caller must roll it back on
//! an error (the worker's executor does, and runs these kinds in batches of
//! [`super::TRANSITION_BATCH`]). These are the fleet's hottest transactions, so each step is one
//! round trip: `apply_downgrade` locks the tenant and reads the guard in one statement, then
//! applies, records and audits in another; `voice_disable` and `sla_freeze` do all of it in one
//! (`record_enforcements`: the action row's lock is their guard), and one for a whole batch of
//! them ([`run_enforcements`], the worker's batch handler). A job that
//! runs again (a retry after a crash between commit and ack, a duplicate delivery) finds the work
//! done or no longer wanted and returns [`ActionOutcome::NoOp`] saying why; one that runs early
//! returns [`ActionOutcome::NotYetDue`] so the worker can reschedule it.
//!
//! | job               | guard                                         | effect                                         |
//! |-------------------|-----------------------------------------------|------------------------------------------------|
//! | `voice_disable`   | transition `pending`, action `scheduled`      | action `done` (voice is off from the request on; this records the enforcement for downstream) |
//! | `sla_freeze`      | transition `pending`, action `scheduled`      | action `done` (likewise for SLA, escalation, routing) |
//! | `apply_downgrade` | transition `pending`, grace ended             | tier moved, transition `effective`, its holds lifted, actions not yet run `moot` |
//!
//! A `voice_disable` or `sla_freeze` that runs after its transition became effective marks its
//! row `moot` too: no action row stays `scheduled` once its transition is effective or cancelled.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::ids::{TenantId, TierId, TransitionId};
use tierflow_domain::transition::{Action, ApplyDecision, TransitionStatus, plan_apply_downgrade};
use tierflow_queue::{BatchFuture, HandlerFuture, JobTx};

use super::{ActionOutcome, job_error, no_op, outcome};
use uuid::Uuid;

use crate::audit::{AuditEvent, Principal, audit_columns};
use crate::error::corrupt;
use crate::webhooks::{subscribed_endpoints, zip_endpoints};
use crate::{Context, StoreError, events, tenants};

/// Runs `voice_disable`, `sla_freeze` or `apply_downgrade` for a transition, in the caller's
/// transaction, at `now`: the job's time, read from the database in that transaction (the worker)
/// or from a test's clock.
pub async fn run_transition_action(
    tx: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    tenant_id: &TenantId,
    transition_id: TransitionId,
    action: Action,
) -> Result<ActionOutcome, StoreError> {
    if action == Action::ApplyDowngrade {
        return run_guarded(tx, ctx, now, tenant_id, transition_id, action).await;
    }
    let mut outcomes =
        run_enforcements(tx, ctx, now, &[(tenant_id.clone(), transition_id)], action).await?;
    outcomes
        .pop()
        .ok_or_else(|| StoreError::Corrupt("an enforcement run returned no outcome".into()))
}

/// Runs `voice_disable` or `sla_freeze` (`action`) for several transitions at once, in the
/// caller's transaction, at `now`; one outcome per `(tenant, transition)`, in their order. The
/// scheduled ones are recorded by one statement for all ([`record_enforcements`]); the others
/// (already run, cancelled, unknown, or a transition named twice) go through the general path
/// one by one, which says why there is nothing to do.
pub async fn run_enforcements(
    tx: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    jobs: &[(TenantId, TransitionId)],
    action: Action,
) -> Result<Vec<ActionOutcome>, StoreError> {
    if action == Action::ApplyDowngrade {
        return Err(StoreError::Corrupt(
            "apply_downgrade is not an enforcement".into(),
        ));
    }
    // A transition named twice is recorded once; its later jobs take the general path.
    let mut first = Vec::with_capacity(jobs.len());
    let mut seen = std::collections::HashSet::with_capacity(jobs.len());
    for (i, (_, transition_id)) in jobs.iter().enumerate() {
        if seen.insert(*transition_id) {
            first.push(i);
        }
    }
    let distinct: Vec<(TenantId, TransitionId)> = first.iter().map(|&i| jobs[i].clone()).collect();
    let recorded = record_enforcements(tx, ctx, now, &distinct, action).await?;
    let mut outcomes: Vec<Option<ActionOutcome>> = vec![None; jobs.len()];
    for (&i, outcome) in first.iter().zip(recorded) {
        outcomes[i] = outcome;
    }
    let mut all = Vec::with_capacity(jobs.len());
    for ((tenant_id, transition_id), outcome) in jobs.iter().zip(outcomes) {
        all.push(match outcome {
            Some(outcome) => outcome,
            None => run_guarded(tx, ctx, now, tenant_id, *transition_id, action).await?,
        });
    }
    Ok(all)
}

/// The general path of all three kinds: lock the tenant, the transition and the action, read
/// the guard, and decide — or say why there is nothing to do. An `apply_downgrade` always takes
/// it; an enforcement only when its action is not `scheduled` (already run, cancelled, unknown).
async fn run_guarded(
    tx: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    tenant_id: &TenantId,
    transition_id: TransitionId,
    action: Action,
) -> Result<ActionOutcome, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Due {
        tier_id: String,
        tenant_status: String,
        version: i64,
        status: String,
        to_tier_id: String,
        grace_ends_at: Option<DateTime<Utc>>,
        action_status: String,
        endpoint_ids: Option<Vec<Uuid>>,
        endpoint_urls: Option<Vec<String>>,
    }
    // The tenant lock and the guard in one statement. All three rows are locked, not only the
    // tenant's: in READ COMMITTED a statement that waits for a row lock re-reads only the rows it
    // locks, so a transition cancelled while this job waited for the tenant would otherwise read
    // as still pending.
    // The endpoints to tell come with it (a round trip saved).
    let row: Option<Due> = sqlx::query_as(concat!(
        "SELECT te.tier_id, te.status AS tenant_status, te.version,
                t.status, t.to_tier_id, t.grace_ends_at, a.status AS action_status,
                w.ids AS endpoint_ids, w.urls AS endpoint_urls
           FROM tenant_entitlements te
           JOIN tier_transitions t ON t.tenant_id = te.tenant_id AND t.id = $1
           JOIN transition_actions a ON a.transition_id = t.id AND a.action = $3
           LEFT JOIN LATERAL ",
        subscribed_endpoints!(),
        " w ON true
          WHERE te.tenant_id = $2
          FOR UPDATE OF te, t, a"
    ))
    .bind(transition_id.0)
    .bind(tenant_id.as_str())
    .bind(action.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(due) = row else {
        // Rare: say which is missing (an unknown tenant is an error, the rest a no-op).
        tenants::lock(tx, tenant_id).await?;
        return Ok(no_op(format!(
            "transition {transition_id} does not exist or has no {action}"
        )));
    };
    let tenant = tenants::LockedTenant::parse(
        tenant_id.clone(),
        due.tier_id,
        &due.tenant_status,
        due.version,
    )?;
    let (status, to_tier) = (due.status, due.to_tier_id);
    let status = TransitionStatus::parse(&status).map_err(corrupt("transition status"))?;
    if due.action_status != "scheduled" {
        return Ok(no_op(format!("{action} already {}", due.action_status)));
    }
    let audit_details;
    // For an applied downgrade: the tier it moves to and the holds it lifts.
    let mut apply = None;
    match action {
        Action::VoiceDisable | Action::SlaFreeze => {
            if status != TransitionStatus::Pending {
                // Applied before this ran (a cancelled transition cancels its actions): the
                // enforcement it would record is moot, and its row says so.
                sqlx::query(
                    "UPDATE transition_actions SET status = 'moot', executed_at = $3
                      WHERE transition_id = $1 AND action = $2 AND status = 'scheduled'",
                )
                .bind(transition_id.0)
                .bind(action.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                return Ok(no_op(format!("transition {transition_id} is {status}")));
            }
            audit_details = serde_json::json!({ "transition_id": transition_id });
        }
        Action::ApplyDowngrade => {
            let to_tier = TierId::parse(to_tier).map_err(corrupt("transition tier"))?;
            let ends = due.grace_ends_at.ok_or_else(|| {
                StoreError::Corrupt(format!("downgrade {transition_id} has no grace end"))
            })?;
            match plan_apply_downgrade(transition_id, status, &to_tier, ends, now) {
                ApplyDecision::NoLongerPending(s) => {
                    return Ok(no_op(format!("transition {transition_id} is {s}")));
                }
                ApplyDecision::NotYetDue(due_at) => return Ok(ActionOutcome::NotYetDue { due_at }),
                ApplyDecision::Apply { to_tier, lift } => {
                    let late = (now - ends).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    metrics::histogram!(crate::metrics::GRACE_LATENESS).record(late);
                    audit_details = serde_json::json!({
                        "transition_id": transition_id, "from_tier": tenant.tier_id,
                        "to_tier": to_tier, "grace_ended_at": ends,
                        "lateness_seconds": (now - ends).num_milliseconds() as f64 / 1000.0,
                    });
                    apply = Some((to_tier, lift));
                }
            }
        }
    }
    let principal = Principal::job(action.as_str());
    let audit_action = audit_action(action);
    let audit = AuditEvent {
        tenant_id: tenant_id.as_str(),
        occurred_at: now,
        actor: &principal.name,
        action: audit_action,
        subject_type: "transition",
        subject_id: transition_id.to_string(),
        reason: None,
        idempotency_key: None,
        details: audit_details,
        principal: &principal,
    };
    // Every write of the action in one statement: the action row and its audit row, and for an
    // applied downgrade ($14) the transition made effective, its holds lifted, the tenant moved
    // to the new tier (the next version, returned) and the actions that had not run yet marked
    // moot (voice and SLA are off from the request on; nothing is left for them to record).
    let q = sqlx::query(concat!(
        "WITH effective AS (
            UPDATE tier_transitions SET status = 'effective', effective_at = $3
             WHERE id = $1 AND $14),
         lifted AS (
            DELETE FROM tenant_restrictions WHERE tenant_id = $4 AND source = $15 AND $14),
         bumped AS (
            UPDATE tenant_entitlements
               SET effective_at = CASE WHEN tier_id <> $16 THEN $3 ELSE effective_at END,
                   tier_id = $16, version = version + 1, updated_at = $3
             WHERE tenant_id = $4 AND $14
            RETURNING version),
         done AS (
            UPDATE transition_actions
               SET status = CASE WHEN action = $2 THEN 'done' ELSE 'moot' END, executed_at = $3
             WHERE transition_id = $1 AND (action = $2 OR ($14 AND status = 'scheduled'))),
         audited AS (
            INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES ($4, $3, $5, $6, $7, $8, $9, $10, $11, $12, $13))
         SELECT version FROM bumped"
    ))
    .bind(transition_id.0)
    .bind(action.as_str())
    .bind(now)
    .bind(tenant_id.as_str());
    let bumped = audit
        .bind_own(q)
        .bind(apply.is_some())
        .bind(apply.as_ref().map(|(_, lift)| lift.key()))
        .bind(apply.as_ref().map(|(to_tier, _)| to_tier.as_str()))
        .fetch_optional(&mut *tx)
        .await?;
    let version = match bumped {
        Some(row) => sqlx::Row::try_get::<i64, _>(&row, 0)?,
        None => tenant.version,
    };
    // Downstream systems learn of the enforcement (voice off, SLA frozen) or the new tier.
    events::announce_change_to(
        tx,
        ctx,
        zip_endpoints(due.endpoint_ids, due.endpoint_urls),
        &tenant.tenant_id,
        version,
        audit_action,
        "transition",
        &audit.subject_id,
        now,
    )
    .await?;
    Ok(ActionOutcome::Applied {
        tenant_version: version,
    })
}

/// The common run of `voice_disable` and `sla_freeze` for several transitions (each named
/// once), in one statement: record each action `done` (or `moot` if its transition is no longer
/// pending), audit it, and read the tenant's version and the endpoints to tell. One entry per
/// transition, in their order: `None` where the action is not `scheduled` (or does not exist),
/// for the caller's general path to say why.
///
/// Only the action's row is locked — by the update. That is enough, because no action row stays
/// `scheduled` once its transition is effective or cancelled: a cancel or an applied downgrade
/// rewrites it in the same transaction, so an update that waited for one of them re-reads the
/// row, finds it no longer `scheduled`, and does nothing. The tenant is not locked: this changes
/// nothing of it, and its version read here only labels the event (receivers keep the newest).
/// One statement for a whole batch of jobs ([`super::TRANSITION_BATCH`]), and no row-lock
/// records in the WAL for the tenant and the transition: the fleet's commonest real jobs are its
/// cheapest. (With webhook endpoints configured, each recorded job then also reads its
/// entitlement and enqueues its deliveries: two statements more per job.)
async fn record_enforcements(
    tx: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    jobs: &[(TenantId, TransitionId)],
    action: Action,
) -> Result<Vec<Option<ActionOutcome>>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Recorded {
        status: Option<String>,
        transition_status: Option<String>,
        version: Option<i64>,
        endpoint_ids: Option<Vec<Uuid>>,
        endpoint_urls: Option<Vec<String>>,
    }
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let principal = Principal::job(action.as_str());
    let audit_action = audit_action(action);
    let transition_ids: Vec<Uuid> = jobs.iter().map(|(_, t)| t.0).collect();
    let tenant_ids: Vec<&str> = jobs.iter().map(|(t, _)| t.as_str()).collect();
    // The audit row is the one `AuditEvent` would write: the job's principal as its actor, the
    // transition as its subject and in its details.
    let rows: Vec<Recorded> = sqlx::query_as(concat!(
        "WITH j AS (
            SELECT * FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS j(transition_id, tenant_id, n)),
         recorded AS (
            UPDATE transition_actions a
               SET status = CASE WHEN t.status = 'pending' THEN 'done' ELSE 'moot' END,
                   executed_at = $3
              FROM j, tier_transitions t
             WHERE a.transition_id = j.transition_id AND a.action = $4 AND a.status = 'scheduled'
               AND t.id = a.transition_id AND t.tenant_id = j.tenant_id
            RETURNING a.transition_id, a.status, t.status AS transition_status),
         audited AS (
            INSERT INTO audit_events (",
        audit_columns!(),
        ") SELECT j.tenant_id, $3, $5, $6, 'transition', j.transition_id::text, NULL, NULL,
                  jsonb_build_object('transition_id', j.transition_id), $5, $7
               FROM recorded r JOIN j ON j.transition_id = r.transition_id
              WHERE r.status = 'done' ORDER BY j.n)
         SELECT r.status, r.transition_status, te.version,
                w.ids AS endpoint_ids, w.urls AS endpoint_urls
           FROM j
           LEFT JOIN recorded r ON r.transition_id = j.transition_id
           LEFT JOIN tenant_entitlements te ON te.tenant_id = j.tenant_id
          CROSS JOIN ",
        subscribed_endpoints!(),
        " w
          ORDER BY j.n"
    ))
    .bind(&transition_ids)
    .bind(&tenant_ids)
    .bind(now)
    .bind(action.as_str())
    .bind(principal.name.as_str())
    .bind(audit_action)
    .bind(principal.role.as_str())
    .fetch_all(&mut *tx)
    .await?;
    if rows.len() != jobs.len() {
        return Err(StoreError::Corrupt(format!(
            "{action} of {} transitions read back {} rows",
            jobs.len(),
            rows.len()
        )));
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    for ((tenant_id, transition_id), r) in jobs.iter().zip(rows) {
        let Some(status) = r.status else {
            outcomes.push(None);
            continue;
        };
        if status != "done" {
            // Defensive: a transition no longer pending left its action scheduled (rows written
            // before migration 0012). The row now says `moot`.
            outcomes.push(Some(no_op(format!(
                "transition {transition_id} is {}",
                r.transition_status.unwrap_or_default()
            ))));
            continue;
        }
        let version = r.version.ok_or_else(|| {
            StoreError::Corrupt(format!("transition {transition_id} has no tenant row"))
        })?;
        events::announce_change_to(
            tx,
            ctx,
            zip_endpoints(r.endpoint_ids, r.endpoint_urls),
            tenant_id,
            version,
            audit_action,
            "transition",
            &transition_id.to_string(),
            now,
        )
        .await?;
        outcomes.push(Some(ActionOutcome::Applied {
            tenant_version: version,
        }));
    }
    Ok(outcomes)
}

/// The audit action (and event cause) of a run of `action`.
fn audit_action(action: Action) -> &'static str {
    match action {
        Action::VoiceDisable => "action.voice_disable",
        Action::SlaFreeze => "action.sla_freeze",
        Action::ApplyDowngrade => "action.apply_downgrade",
    }
}

/// The handler of one of the three kinds: runs `action` for the job's transaction in the job's
/// transaction, at the database's time.
pub(super) fn handle<'a>(
    tenant_id: TenantId,
    transition_id: TransitionId,
    action: Action,
    tx: JobTx<'a>,
    ctx: &'a Context,
) -> HandlerFuture<'a> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", tenant_id.as_str());
        run_transition_action(tx.conn, ctx, tx.now, &tenant_id, transition_id, action)
            .await
            .map(outcome)
            .map_err(job_error)
    })
}

/// A job kind that enforces one action of its transition from the request on (`voice_disable`,
/// `sla_freeze`): its payload names the tenant and the transition, and a batch of its jobs is
/// recorded by one statement ([`handle_batch`]).
pub trait Enforcement: tierflow_queue::Job {
    const ACTION: Action;
    /// The tenant and the transition the job names.
    fn ids(self) -> (TenantId, TransitionId);
}

/// The batch handler of every [`Enforcement`] kind: runs its action for each job's transition in
/// the batch's transaction, at the database's time ([`run_enforcements`]: one statement records
/// all that are scheduled).
pub fn handle_batch<'a, J: Enforcement>(
    jobs: Vec<(J, tracing::Span)>,
    tx: JobTx<'a>,
    ctx: &'a Context,
) -> BatchFuture<'a> {
    // Each job's log lines name its tenant, as a job run alone records it on its span.
    let jobs: Vec<(TenantId, TransitionId)> = jobs
        .into_iter()
        .map(|(job, span)| {
            let (tenant_id, transition_id) = job.ids();
            span.record("tenant_id", tenant_id.as_str());
            (tenant_id, transition_id)
        })
        .collect();
    Box::pin(async move {
        run_enforcements(tx.conn, ctx, tx.now, &jobs, J::ACTION)
            .await
            .map(|outcomes| outcomes.into_iter().map(outcome).collect())
            .map_err(job_error)
    })
}
