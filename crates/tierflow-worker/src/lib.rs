//! tierflow's worker: the fleet that runs every job kind, and the webhook delivery.
//!
//! Each job kind is one module of `tierflow_store::jobs` (payload, policy, handler, effect,
//! guarded by the domain row it changes, so a second run is a no-op that says so); [`fleet`]
//! registers each with the queue's runtime, one line per kind. The one kind whose effect lies
//! outside the database, `deliver_event`, has its handler here, beside the HTTP client.
//!
//! # Layout
//! - [`fleet`] — [`fleet::build`]: a `tierflow_queue::Fleet` with every handler registered.
//! - [`deliver_event`] — POSTs one signed event to one endpoint.
//! - [`webhook`] — signing deliveries, and the check a receiver runs.

pub mod deliver_event;
pub mod fleet;
pub mod webhook;

pub use tierflow_queue::{FleetConfig, Outcome};
pub use tierflow_store::Context;

/// What every handler is given: the store context and, when events are delivered, the webhook
/// client; and how often the store's reconciler runs on the maintenance leader.
#[derive(Clone)]
pub struct WorkerState {
    pub store: Context,
    pub webhooks: Option<webhook::WebhookClient>,
    /// Interval of [`tierflow_store::reconciler`] rounds (default
    /// [`tierflow_store::reconciler::DEFAULT_INTERVAL`]).
    pub reconcile_interval: std::time::Duration,
}
