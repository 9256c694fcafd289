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

//!
//! # Layout
//! - [`request`] — [`request_transition`] and [`submit_transition`]: lock, plan, write, announce.
//! - [`write`] — a plan's rows staged and written in one statement.
//! - [`cancel`] — [`cancel_transition`], and the cancellation of a superseded downgrade.
//! - [`provision`] — [`provision_tenant`]: a new tenant's first tier (and its expiry).
//! - [`history`] — one transition, and a tenant's transitions page by page.

mod cancel;
mod history;
mod provision;
mod request;
mod write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tierflow_domain::effective::EffectiveEntitlement;
use tierflow_domain::ids::{Actor, IdempotencyKey, Reason, TenantId, TransitionId};
use tierflow_domain::transition::{GracePeriod, Target};

use crate::rows::TransitionRecord;

pub use cancel::{CancelOutcome, cancel_transition};
pub use history::{get, history};
pub use provision::{ProvisionRequest, provision_tenant};
pub use request::{request_transition, submit_transition};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduledJob {
    #[schema(value_type = crate::jobs::JobKind)]
    pub kind: String,
    /// See `GET /v1/jobs`.
    #[schema(example = "01JDQ3V5Z8K2M4N6P8R0S2T4V6")]
    pub job_id: String,
    pub due_at: DateTime<Utc>,
}

/// A pending downgrade cancelled by a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Superseded {
    pub transition_id: TransitionId,
    /// Ids of the jobs cancelled before they ran.
    pub cancelled_jobs: Vec<String>,
}

/// What a transition request did: the transition, the jobs it scheduled with their due times,
/// the pending downgrade it cancelled, and the effective entitlement after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionOutcome {
    pub transition: TransitionRecord,
    pub jobs: Vec<ScheduledJob>,
    /// The pending downgrade this request cancelled, if any.
    pub superseded: Option<Superseded>,
    pub entitlement: EffectiveEntitlement,
    /// True when this is the stored result of an earlier request with the same idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

const OP_TRANSITION: &str = "transition";
