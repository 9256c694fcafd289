//! The jobs tierflow enqueues, one module per kind: its payload, its policy (the `Job` impl:
//! permanent kind name, attempts, backoff, timeout), its handler and the effect it has on
//! tierflow's state, with the tests that prove it named in the module doc. Adding a kind is a
//! module here and one registration line in `tierflow_worker::fleet`.
//!
//! | kind | due | attempts | effect |
//! |---|---|---|---|
//! | [`voice_disable`] | at the request | 10 | records the enforcement of "voice off", announces it |
//! | [`sla_freeze`] | at the request | 10 | likewise for SLA, escalation, routing |
//! | [`apply_downgrade`] | at the grace end | 20 | moves the tier, makes the transition effective |
//! | [`expire_override`] | at the override's expiry | 20 | ends the override |
//! | [`expire_entitlement`] | at the tenant's `expires_at` | 20 | status `expired`, every restriction held by `expiry` |
//! | [`deliver_event`] | with the change | 14 | POSTs one event (handler in `tierflow-worker`) |
//! | [`tier_fanout`] | with a tier edit, then one per batch | 20 | announces the edit to the tier's tenants whose entitlement it changed |
//!
//! Every handler reads "now" from the job's transaction ([`tierflow_queue::JobTx::now`], the
//! database's clock), never from the host.
//!
//! A job whose domain row does not name it has a key, unique within its kind, by which
//! superseded work is cancelled (`override:<id>` for an override's expiry). The three transition
//! actions carry none: each action row names its job (`transition_actions.job_id`), and their
//! cancel finds them by that id (docs/queue.md).

pub mod apply_downgrade;
pub mod deliver_event;
pub mod expire_entitlement;
pub mod expire_override;
pub mod sla_freeze;
pub mod tier_fanout;
pub mod transition_action;
pub mod voice_disable;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tierflow_domain::ids::OverrideId;
use tierflow_domain::transition::Action;
use tierflow_queue::{Job, JobError, JobKey, Outcome};

pub use apply_downgrade::ApplyDowngrade;
pub use deliver_event::DeliverEvent;
pub use expire_entitlement::{ExpireEntitlement, expire_entitlement};
pub use expire_override::{ExpireOverride, expire_override};
pub use sla_freeze::SlaFreeze;
pub use tier_fanout::TierFanout;
pub use transition_action::{run_enforcements, run_transition_action};
pub use voice_disable::VoiceDisable;

use crate::StoreError;

/// What a job run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ActionOutcome {
    /// The effect was applied; the tenant is now at this version.
    Applied { tenant_version: i64 },
    /// Nothing to do, and why (already done, cancelled, superseded).
    NoOp { reason: String },
    /// Too early: run again at this time.
    NotYetDue { due_at: DateTime<Utc> },
}

fn no_op(reason: impl Into<String>) -> ActionOutcome {
    ActionOutcome::NoOp {
        reason: reason.into(),
    }
}

/// Why job `job_id` must not be cancelled on its own, if it must not: it carries out a
/// transition that is still pending. Cancelling it alone would leave the tenant in grace past its
/// end, restrictions on, with nothing to finish it; the transition's own cancel cancels its jobs,
/// lifts its restrictions and records why. `None`: the job may be cancelled.
///
/// The transition is read from the job's payload (every transition kind's payload names it):
/// transition jobs carry no key, and rows written before they stopped carrying one read the
/// same way.
pub async fn cancel_refusal(
    conn: &mut sqlx::PgConnection,
    job_id: &str,
) -> Result<Option<String>, StoreError> {
    let transition_kinds = [VoiceDisable::KIND, SlaFreeze::KIND, ApplyDowngrade::KIND];
    let pending: Option<(String, String, uuid::Uuid)> = sqlx::query_as(
        "SELECT j.job_type, t.tenant_id, t.id
           FROM apalis.jobs j
           JOIN tier_transitions t
             ON t.id = CASE WHEN j.job_type = ANY($2)
                            THEN (convert_from(j.job, 'UTF8')::jsonb ->> 'transition_id')::uuid END
          WHERE j.id = $1 AND t.status = 'pending'",
    )
    .bind(job_id)
    .bind(&transition_kinds[..])
    .fetch_optional(conn)
    .await?;
    Ok(pending.map(|(kind, tenant, id)| {
        format!(
            "this {kind} job carries out transition {id} of tenant {tenant}, which is still pending; \
             cancel the transition instead (POST /v1/tenants/{tenant}/transitions/{id}/cancel), \
             which cancels its jobs and lifts its restrictions"
        )
    }))
}

/// The queue outcome of a job's effect.
fn outcome(o: ActionOutcome) -> Outcome {
    match o {
        ActionOutcome::Applied { tenant_version } => {
            Outcome::Done(format!("applied; tenant at version {tenant_version}"))
        }
        ActionOutcome::NoOp { reason } => Outcome::NoOp(reason),
        ActionOutcome::NotYetDue { due_at } => Outcome::NotYetDue(due_at),
    }
}

/// A store error as a job error: what retrying cannot fix (the tenant is gone, stored data does
/// not parse) is permanent; a wait for a row lock past the job's `lock_timeout` (SQLSTATE 55P03)
/// is contention, retried soon without spending an attempt; the rest (database trouble) is
/// retried with backoff.
fn job_error(e: StoreError) -> JobError {
    match e {
        StoreError::Database(sqlx::Error::Database(ref db))
            if db.code().as_deref() == Some("55P03") =>
        {
            JobError::Contended(format!("waited too long for a lock: {e}"))
        }
        StoreError::Database(_) | StoreError::Queue(_) => JobError::Retry(e.to_string()),
        other => JobError::Permanent(other.to_string()),
    }
}

/// How many jobs of one transition kind (`voice_disable`, `sla_freeze`, `apply_downgrade`) a
/// worker runs in one transaction when several are due at once ([`tierflow_queue::Job::BATCH`]).
/// Each is a few short statements on one tenant's rows, so a transaction per job paid as much
/// for its `BEGIN`, `COMMIT` and round trips as for its work. Two jobs of one batch never touch
/// the same rows (one pending transition per tenant, one kind per batch).
pub const TRANSITION_BATCH: usize = 8;

/// The kind name of a transition action's job.
pub fn action_kind(action: Action) -> &'static str {
    match action {
        Action::VoiceDisable => VoiceDisable::KIND,
        Action::SlaFreeze => SlaFreeze::KIND,
        Action::ApplyDowngrade => ApplyDowngrade::KIND,
    }
}

/// The key of an override's expiry job.
pub fn override_key(id: OverrideId) -> JobKey {
    JobKey {
        kind: ExpireOverride::KIND,
        key: format!("override:{id}"),
    }
}

/// Every kind tierflow enqueues (the worker registers a handler for each).
pub const KINDS: [&str; 7] = [
    VoiceDisable::KIND,
    SlaFreeze::KIND,
    ApplyDowngrade::KIND,
    ExpireOverride::KIND,
    ExpireEntitlement::KIND,
    DeliverEvent::KIND,
    TierFanout::KIND,
];

/// The OpenAPI schema of a job kind's name, as tierflow schedules it: an enum of [`KINDS`], so
/// that a new kind appears in `/openapi.json` with its registration.
pub struct JobKind;

impl utoipa::PartialSchema for JobKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A job kind: each runs one step of a change."))
            .enum_values(Some(KINDS))
            .into()
    }
}

impl utoipa::ToSchema for JobKind {}

/// The connection-holding job slots of a worker process whose concurrency is `concurrency`: each
/// kind runs that many at once, or its [`Job::MAX_CONCURRENCY`] if lower. A running job of a
/// transactional kind holds a connection. `deliver_event` is standalone (its own, larger slot
/// count, `standalone_concurrency`) and takes one only briefly; it is counted here at
/// `concurrency` as headroom for those brief acquires.
pub fn job_slots(concurrency: usize) -> usize {
    [
        VoiceDisable::MAX_CONCURRENCY,
        SlaFreeze::MAX_CONCURRENCY,
        ApplyDowngrade::MAX_CONCURRENCY,
        ExpireOverride::MAX_CONCURRENCY,
        ExpireEntitlement::MAX_CONCURRENCY,
        DeliverEvent::MAX_CONCURRENCY,
        TierFanout::MAX_CONCURRENCY,
    ]
    .iter()
    .map(|cap| concurrency.min(*cap).max(1))
    .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_snake_case() {
        let mut kinds = KINDS.to_vec();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), KINDS.len());
        assert!(
            KINDS
                .iter()
                .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }

    #[test]
    fn unknown_payload_fields_are_refused() {
        let bad =
            r#"{"tenant_id":"a","transition_id":"0190a0a0-0000-7000-8000-000000000000","x":1}"#;
        assert!(serde_json::from_str::<VoiceDisable>(bad).is_err());
    }
}
