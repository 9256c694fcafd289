//! The jobs tierflow enqueues: one payload type per kind, with its permanent kind name and its
//! attempt budget. Handlers live in `tierflow-worker`; the effect each has on tierflow's state is
//! in [`crate::actions`].
//!
//! Each job also has a key, unique within its kind, by which superseded work is cancelled:
//! `transition:<id>` for the three transition actions, `override:<id>` for an expiry.

use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{OverrideId, TenantId, TransitionId};
use tierflow_domain::transition::Action;
use tierflow_queue::{Job, JobKey};

/// Deliver one `entitlement.changed` event to one webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverEvent {
    pub endpoint: String,
    pub event: crate::events::EntitlementChanged,
}

/// Enforce "voice off" for a downgrade in grace. Due at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceDisable {
    pub tenant_id: TenantId,
    pub transition_id: TransitionId,
}

/// Enforce frozen SLA timers and escalations and degraded routing for a downgrade in grace.
/// Due at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaFreeze {
    pub tenant_id: TenantId,
    pub transition_id: TransitionId,
}

/// Apply a downgrade at the end of its grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyDowngrade {
    pub tenant_id: TenantId,
    pub transition_id: TransitionId,
}

/// Record an override's expiry at its `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireOverride {
    pub tenant_id: TenantId,
    pub override_id: OverrideId,
}

impl Job for VoiceDisable {
    const KIND: &'static str = "voice_disable";
    const MAX_ATTEMPTS: i32 = 10;
}

impl Job for SlaFreeze {
    const KIND: &'static str = "sla_freeze";
    const MAX_ATTEMPTS: i32 = 10;
}

impl Job for ApplyDowngrade {
    const KIND: &'static str = "apply_downgrade";
    // A missed grace end is a billing error; keep trying longer than for the others.
    const MAX_ATTEMPTS: i32 = 20;
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

impl Job for ExpireOverride {
    const KIND: &'static str = "expire_override";
    const MAX_ATTEMPTS: i32 = 20;
}

/// The kind name of a transition action's job.
pub fn action_kind(action: Action) -> &'static str {
    match action {
        Action::VoiceDisable => VoiceDisable::KIND,
        Action::SlaFreeze => SlaFreeze::KIND,
        Action::ApplyDowngrade => ApplyDowngrade::KIND,
    }
}

/// The key of a transition's jobs.
pub fn transition_key(id: TransitionId) -> String {
    format!("transition:{id}")
}

/// The keys of every job a pending transition may have.
pub fn transition_job_keys(id: TransitionId) -> Vec<JobKey> {
    [
        Action::VoiceDisable,
        Action::SlaFreeze,
        Action::ApplyDowngrade,
    ]
    .into_iter()
    .map(|a| JobKey {
        kind: action_kind(a),
        key: transition_key(id),
    })
    .collect()
}

/// The key of an override's expiry job.
pub fn override_key(id: OverrideId) -> JobKey {
    JobKey {
        kind: ExpireOverride::KIND,
        key: format!("override:{id}"),
    }
}

/// Every kind tierflow enqueues (the worker registers a handler for each).
pub const KINDS: [&str; 5] = [
    VoiceDisable::KIND,
    SlaFreeze::KIND,
    ApplyDowngrade::KIND,
    ExpireOverride::KIND,
    DeliverEvent::KIND,
];

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
