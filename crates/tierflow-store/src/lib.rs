//! tierflow's PostgreSQL store: every read and write of tierflow's own tables.
//!
//! Each operation takes the caller's connection (`&mut PgConnection`; pass `&mut *tx` to join
//! your transaction) and a [`Context`] holding the clock. Operations that change a tenant lock its
//! `tenant_entitlements` row first, so changes for one tenant are serialized, then ask the pure
//! rules in `tierflow-domain` what to do and write the answer — rows, audit, and queue jobs — on
//! that same connection. Each runs inside a savepoint: an error leaves the caller's transaction
//! exactly as it was, even if the caller then commits.
//!
//! # Layout
//! - [`migrate`] — applies the queue's and tierflow's migrations under one advisory lock, then seeds.
//! - [`tiers`] — the tier catalogue (seed, list, get).
//! - [`tenants`] — provisioning, the tenant lock, and the effective entitlement read.
//! - [`transitions`] — [`request_transition`] (in the caller's transaction), [`submit_transition`] (in
//!   its own), cancel, history.
//! - [`overrides`] — create and remove temporary limit overrides.
//! - [`holds`] — place and lift an operator's hold (a named restriction source).
//! - [`jobs`] — one module per job kind: payload, policy, handler and effect (exactly once).
//! - [`reconciler`] — a maintenance service: downgrades pending past their grace end with no live job.
//! - [`test_clocks`] — test clocks: tenants that live by a frozen time, advanced on demand with their jobs.
//! - [`webhooks`] — webhook endpoints managed through the API, and Standard Webhooks signing.
//! - [`events`] — `entitlement.changed` events for webhook endpoints, written as jobs in the change's transaction.
//! - [`audit`], [`idempotency`] — the audit trail and replay of idempotent requests.
//! - [`job_actions`] — an operator's re-drive or cancel of one job, refused or audited.
//! - [`console`] — the operator console's sessions and reads (overview, recent audit, search).
//! - [`error`] — [`StoreError`].

pub mod audit;
pub mod console;
pub mod error;
pub mod events;
pub mod holds;
pub mod idempotency;
pub mod job_actions;
pub mod jobs;
pub mod metrics;
pub mod migrate;
pub mod overrides;
pub mod reconciler;
pub mod rows;
pub mod tenants;
pub mod test_clocks;
pub mod tiers;
pub mod transitions;
pub mod webhooks;

use std::sync::Arc;

use tierflow_domain::Clock;
use tierflow_domain::transition::GracePeriod;

pub use error::StoreError;
pub use transitions::{
    TransitionOutcome, TransitionRequest, request_transition, submit_transition,
};

/// What every store operation needs besides its connection.
#[derive(Clone)]
pub struct Context {
    /// Where "now" comes from; tests pass a `ManualClock`.
    pub clock: Arc<dyn Clock>,
    /// The grace period of a downgrade that names none.
    pub default_grace: GracePeriod,
    /// Webhook endpoints configured by environment (`TIERFLOW_WEBHOOK_URLS`), delivered every
    /// change beside the endpoints managed through the API ([`webhooks`]).
    pub webhooks: Arc<[String]>,
    /// Who is authenticated for the changes made with this context; stored on every audit row.
    pub principal: audit::Principal,
    /// Set for a change to a test-clock tenant: its time is the clock's, but the events it emits
    /// are delivered now, in real time.
    pub on_test_clock: bool,
}

impl Context {
    /// The default grace when none is configured: 7 days, as WI-010's billing flows used.
    pub const DEFAULT_GRACE_SECS: i64 = 7 * 24 * 3600;

    /// A context on `clock` with the default grace.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            default_grace: GracePeriod::from_secs(Self::DEFAULT_GRACE_SECS)
                .unwrap_or_else(|_| GracePeriod::zero()),
            webhooks: Arc::from(Vec::new()),
            principal: audit::Principal::new("library", audit::PrincipalRole::Library),
            on_test_clock: false,
        }
    }

    /// The same context for a change to a test-clock tenant ([`Context::on_test_clock`]).
    pub fn on_test_clock(&self) -> Self {
        Self {
            on_test_clock: true,
            ..self.clone()
        }
    }

    /// The same context acting for `principal` (the API makes one per request from its token).
    pub fn acting_as(&self, principal: audit::Principal) -> Self {
        Self {
            principal,
            ..self.clone()
        }
    }

    /// The same context delivering events to `endpoints`.
    pub fn with_webhooks(mut self, endpoints: Vec<String>) -> Self {
        self.webhooks = Arc::from(endpoints);
        self
    }
}
