//! Builds the worker process's fleet with every job kind registered.

use std::sync::Arc;

use sqlx::PgPool;
use tierflow_queue::{Fleet, FleetConfig};
use tierflow_store::jobs::{ApplyDowngrade, DeliverEvent, ExpireOverride, SlaFreeze, VoiceDisable};

use crate::{WorkerState, jobs};

/// A fleet running every tierflow job kind.
pub fn build(pool: PgPool, state: Arc<WorkerState>, config: FleetConfig) -> Fleet<WorkerState> {
    Fleet::new(pool, state, config)
        .register::<VoiceDisable>(jobs::voice_disable::handle)
        .register::<SlaFreeze>(jobs::sla_freeze::handle)
        .register::<ApplyDowngrade>(jobs::apply_downgrade::handle)
        .register::<ExpireOverride>(jobs::expire_override::handle)
        .register_standalone::<DeliverEvent>(jobs::deliver_event::handle)
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
