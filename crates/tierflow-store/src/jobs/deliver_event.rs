//! `deliver_event`: one `entitlement.changed` event for one webhook endpoint. Enqueued with the
//! change it announces, one job per endpoint, so a failing endpoint delays only its own events.
//!
//! Its effect lies outside tierflow's database (an HTTP POST), so its handler is a standalone one
//! and lives with the HTTP client: `tierflow_worker::deliver_event`. Its claims commit durably
//! (`DURABLE_CLAIM`): an event must never announce a change that a crash or failover takes back.
//! Proven by `crates/tierflow-worker/tests/webhooks.rs` and `tests/e2e/faults.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tierflow_queue::Job;

/// Deliver one `entitlement.changed` event to one webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverEvent {
    /// The endpoint's URL when the event was written (a managed endpoint's current URL is read
    /// at delivery).
    pub endpoint: String,
    /// The managed endpoint ([`crate::webhooks`]); absent for one configured by environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<uuid::Uuid>,
    pub event: crate::events::EntitlementChanged,
}

/// The waits between attempts: Standard Webhooks' schedule (5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 10 h), stretched by three more steps so an event survives a three-day endpoint outage
/// (a long weekend) before it is dead: 71.6 hours in all, 11 attempts. Each wait is shifted by
/// up to ±10 % so events that failed together do not retry together. An endpoint's
/// `Retry-After` replaces the wait it answers (up to [`MAX_RETRY_AFTER`]).
pub const RETRY_SCHEDULE: [Duration; 10] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(16 * 3600),
];
/// The jitter of each wait, as a fraction of it.
pub const RETRY_JITTER: f64 = 0.1;
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Job for DeliverEvent {
    const KIND: &'static str = "deliver_event";
    const MAX_ATTEMPTS: i32 = RETRY_SCHEDULE.len() as i32 + 1;
    // Above the HTTP client's 15 s plus the endpoint read and the 410 write.
    const TIMEOUT: Duration = Duration::from_secs(25);
    // An event must never announce a change a crash or failover then takes back.
    const DURABLE_CLAIM: bool = true;

    fn backoff(failed_attempts: i32) -> Duration {
        let step = (failed_attempts.max(1) as usize - 1).min(RETRY_SCHEDULE.len() - 1);
        tierflow_queue::retry::with_jitter(RETRY_SCHEDULE[step], RETRY_JITTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spans_about_three_days_and_follows_its_steps() {
        let total: Duration = RETRY_SCHEDULE.iter().sum();
        assert!(
            (70.0..74.0).contains(&(total.as_secs_f64() / 3600.0)),
            "{total:?}"
        );
        for (i, plain) in RETRY_SCHEDULE.iter().enumerate() {
            let d = DeliverEvent::backoff(i as i32 + 1).as_secs_f64();
            let p = plain.as_secs_f64();
            assert!(
                d >= p * 0.9 - 1e-6 && d <= p * 1.1 + 1e-6,
                "attempt {}: {d}",
                i + 1
            );
        }
    }
}
