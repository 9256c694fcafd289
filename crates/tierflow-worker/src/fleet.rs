//! Builds the worker process's fleet with every job kind registered.

use std::sync::Arc;

use sqlx::PgPool;
use std::sync::atomic::{AtomicUsize, Ordering};

use tierflow_queue::{Fleet, FleetConfig, QueueError};
use tierflow_store::jobs::{
    ApplyDowngrade, DeliverEvent, ExpireEntitlement, ExpireOverride, SlaFreeze, TierFanout,
    VoiceDisable, apply_downgrade, expire_entitlement, expire_override, sla_freeze, tier_fanout,
    transition_action, voice_disable,
};
use tierflow_store::reconciler;

use crate::{WorkerState, deliver_event};

/// A fleet running every tierflow job kind (one line per kind), the domain's gauges and the
/// store's reconciler.
pub fn build(pool: PgPool, state: Arc<WorkerState>, config: FleetConfig) -> Fleet<WorkerState> {
    let reconcile_interval = state.reconcile_interval;
    Fleet::new(pool, state, config)
        .register_batched::<VoiceDisable>(
            |job, tx, s| voice_disable::handle(job, tx, &s.store),
            |jobs, tx, s| transition_action::handle_batch(jobs, tx, &s.store),
        )
        .register_batched::<SlaFreeze>(
            |job, tx, s| sla_freeze::handle(job, tx, &s.store),
            |jobs, tx, s| transition_action::handle_batch(jobs, tx, &s.store),
        )
        .register::<ApplyDowngrade>(|job, tx, s| apply_downgrade::handle(job, tx, &s.store))
        .register::<ExpireOverride>(|job, tx, s| expire_override::handle(job, tx, &s.store))
        .register::<ExpireEntitlement>(|job, tx, s| expire_entitlement::handle(job, tx, &s.store))
        .register::<TierFanout>(|job, tx, s| tier_fanout::handle(job, tx, &s.store))
        .register_standalone::<DeliverEvent>(deliver_event::handle)
        .sample_sql(
            tierflow_store::metrics::ACTIVE_OVERRIDES,
            tierflow_store::metrics::ACTIVE_OVERRIDES_SQL,
        )
        .sample_sql(
            tierflow_store::metrics::PENDING_PAST_GRACE,
            reconciler::PENDING_PAST_GRACE_SQL,
        )
        .sample_sql(tierflow_store::metrics::STRANDED, reconciler::STRANDED_SQL)
        .maintain("reconciler", reconcile_interval, Arc::new(reconcile))
}

/// One reconciler round; dead jobs it leaves to an operator are logged when their number changes.
fn reconcile(
    pool: PgPool,
    fence: tierflow_queue::maintenance::elector::Fence,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, QueueError>> + Send>> {
    static REPORTED: AtomicUsize = AtomicUsize::new(0);
    Box::pin(async move {
        let out = reconciler::run_once(&pool, &fence)
            .await
            .map_err(|e| match e {
                tierflow_store::StoreError::Database(e) => QueueError::Database(e),
                tierflow_store::StoreError::Queue(e) => e,
                other => QueueError::Service(other.to_string()),
            })?;
        if REPORTED.swap(out.dead.len(), Ordering::Relaxed) != out.dead.len()
            && !out.dead.is_empty()
        {
            let stranded: Vec<String> = out
                .dead
                .iter()
                .map(|(t, job)| format!("transition {t} (job {job})"))
                .collect();
            tracing::error!(
                count = out.dead.len(),
                ?stranded,
                "downgrades are stranded in grace: their apply_downgrade job is dead; read why with `tierflow jobs dead`, fix the cause, then `tierflow jobs retry <job>`"
            );
        }
        Ok(out.more)
    })
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
            reconcile_interval: reconciler::DEFAULT_INTERVAL,
        });
        let mut kinds = build(pool, state, FleetConfig::default()).kinds();
        kinds.sort();
        let mut expected = tierflow_store::jobs::KINDS.to_vec();
        expected.sort();
        assert_eq!(kinds, expected);
    }
}
