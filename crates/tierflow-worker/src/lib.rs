//! tierflow's job handlers, and the fleet that runs them.
//!
//! Each job kind is one module under [`jobs`]: a handler, a plain function from the kind's payload
//! (defined with its kind name and attempt budget in `tierflow_store::jobs`), the job's
//! transaction and the store [`Context`], to an [`Outcome`]. The handler asks the store to apply
//! the job's effect (`tierflow_store::actions`), which is guarded by the domain row it changes, so
//! a second run is a no-op that says so. [`fleet`] registers every kind with the queue's runtime.
//!
//! # Layout
//! - [`jobs`] — one module per kind: `voice_disable`, `sla_freeze`, `apply_downgrade`,
//!   `expire_override`, `deliver_event`.
//! - [`webhook`] — signing deliveries, and the check a receiver runs.
//! - [`fleet`] — [`fleet::build`]: a `tierflow_queue::Fleet` with every handler registered.

pub mod fleet;
pub mod jobs;
pub mod webhook;

pub use tierflow_queue::{FleetConfig, Outcome};
pub use tierflow_store::Context;

/// What every handler is given: the store context and, when events are delivered, the webhook
/// client.
#[derive(Clone)]
pub struct WorkerState {
    pub store: Context,
    pub webhooks: Option<webhook::WebhookClient>,
}
