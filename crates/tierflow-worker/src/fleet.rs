//! Builds the worker process's fleet with every job kind registered.

use std::sync::Arc;

use sqlx::PgPool;
use tierflow_queue::{Fleet, FleetConfig};
use tierflow_store::jobs::{
    ApplyDowngrade, DeliverEvent, ExpireOverride, SlaFreeze, VoiceDisable, apply_downgrade,
    expire_override, sla_freeze, voice_disable,
};

use crate::{WorkerState, deliver_event};

/// A fleet running every tierflow job kind: one line per kind.
pub fn build(pool: PgPool, state: Arc<WorkerState>, config: FleetConfig) -> Fleet<WorkerState> {
    Fleet::new(pool, state, config)
        .register::<VoiceDisable>(|job, tx, s| voice_disable::handle(job, tx, &s.store))
        .register::<SlaFreeze>(|job, tx, s| sla_freeze::handle(job, tx, &s.store))
        .register::<ApplyDowngrade>(|job, tx, s| apply_downgrade::handle(job, tx, &s.store))
        .register::<ExpireOverride>(|job, tx, s| expire_override::handle(job, tx, &s.store))
        .register_standalone::<DeliverEvent>(deliver_event::handle)
        .sample_sql(
            tierflow_store::metrics::ACTIVE_OVERRIDES,
            tierflow_store::metrics::ACTIVE_OVERRIDES_SQL,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind the store enqueues has a handler, and no kind is registered twice.
    #[tokio::test]
    async fn every_enqueued_kind_has_exactly_one_handler() {
        let pool = PgPool::connect_lazy("postgres://unused@127.0.0.1:1/x").unwrap();
        let store = tierflow_store::Context::new(Arc::new(tierflow_domain::SystemClock));
        let state = Arc::new(WorkerState {
            store,
            webhooks: None,
        });
        let mut kinds = build(pool, state, FleetConfig::default()).kinds();
        kinds.sort();
        let mut expected = tierflow_store::jobs::KINDS.to_vec();
        expected.sort();
        assert_eq!(kinds, expected);
    }
}
