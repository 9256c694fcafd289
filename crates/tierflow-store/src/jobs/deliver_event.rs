//! `deliver_event`: one `entitlement.changed` event for one webhook endpoint. Enqueued with the
//! change it announces, one job per endpoint, so a failing endpoint delays only its own events.
//!
//! Its effect lies outside tierflow's database (an HTTP POST), so its handler is a standalone one
//! and lives with the HTTP client: `tierflow_worker::deliver_event`. Its claims commit durably
//! (`DURABLE_CLAIM`): an event must never announce a change that a crash or failover takes back.
//! Proven by `crates/tierflow-worker/tests/webhooks.rs` and `tests/e2e/faults.rs`.

use serde::{Deserialize, Serialize};
use tierflow_queue::Job;

/// Deliver one `entitlement.changed` event to one webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverEvent {
    pub endpoint: String,
    pub event: crate::events::EntitlementChanged,
}

impl Job for DeliverEvent {
    const KIND: &'static str = "deliver_event";
    // With the default backoff (1 s doubling to a 10-minute cap) 14 attempts span about an hour
    // of endpoint outage before the event is dead and shows up in `tierflow jobs dead`.
    const MAX_ATTEMPTS: i32 = 14;
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
    // An event must never announce a change a crash or failover then takes back.
    const DURABLE_CLAIM: bool = true;
}
