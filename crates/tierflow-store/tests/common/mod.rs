//! Shared arrange helpers for the store's tests: a private database, a manual clock, and
//! one-line requests.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use tierflow_domain::ManualClock;
use tierflow_domain::ids::{Actor, IdempotencyKey, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
use tierflow_store::{
    Context, StoreError, TransitionOutcome, TransitionRequest, request_transition,
};
use tierflow_testdb::TestDb;

pub struct Fixture {
    pub db: TestDb,
    pub clock: Arc<ManualClock>,
    pub ctx: Context,
}

pub fn start() -> DateTime<Utc> {
    "2026-11-25T12:00:00.123456Z".parse().unwrap()
}

impl Fixture {
    pub async fn new() -> Fixture {
        let db = TestDb::new().await;
        let clock = Arc::new(ManualClock::new(start()));
        let ctx = Context::new(clock.clone());
        Fixture { db, clock, ctx }
    }

    pub fn pool(&self) -> &PgPool {
        self.db.pool()
    }

    pub fn now(&self) -> DateTime<Utc> {
        use tierflow_domain::Clock;
        self.clock.now()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by)
    }

    /// Provisions `tenant` on `tier`, committed.
    pub async fn provision(&self, tenant: &str, tier: &str) -> TransitionOutcome {
        let mut conn = self.pool().acquire().await.unwrap();
        provision_tenant(
            &mut conn,
            &self.ctx,
            ProvisionRequest {
                tenant_id: tid(tenant),
                tier_id: tier_id(tier),
                reason: None,
                requested_by: actor(),
                expires_at: None,
                test_clock_id: None,
            },
        )
        .await
        .unwrap()
    }

    /// Moves `tenant` (already provisioned) to `tier` with `grace_secs` of grace, committed;
    /// returns the transition's id.
    pub async fn downgrade(
        &self,
        tenant: &str,
        tier: &str,
        grace_secs: i64,
    ) -> tierflow_domain::ids::TransitionId {
        self.request(to_tier(tenant, tier, grace_secs))
            .await
            .unwrap()
            .transition
            .id
    }

    /// Requests a transition in its own committed transaction.
    pub async fn request(&self, req: TransitionRequest) -> Result<TransitionOutcome, StoreError> {
        let mut tx = self.pool().begin().await.unwrap();
        let out = request_transition(&mut tx, &self.ctx, req).await;
        if out.is_ok() {
            tx.commit().await.unwrap();
        }
        out
    }

    /// Row counts of every table a request writes, and the tenant's version: equal snapshots
    /// mean nothing changed.
    pub async fn snapshot(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for (name, sql) in [
            ("tenants", "SELECT count(*) FROM tenant_entitlements"),
            (
                "versions",
                "SELECT coalesce(sum(version), 0)::bigint FROM tenant_entitlements",
            ),
            ("transitions", "SELECT count(*) FROM tier_transitions"),
            (
                "pending",
                "SELECT count(*) FROM tier_transitions WHERE status = 'pending'",
            ),
            ("restrictions", "SELECT count(*) FROM tenant_restrictions"),
            ("actions", "SELECT count(*) FROM transition_actions"),
            ("overrides", "SELECT count(*) FROM entitlement_overrides"),
            ("audit", "SELECT count(*) FROM audit_events"),
            ("idempotency", "SELECT count(*) FROM idempotency_keys"),
            ("jobs", "SELECT count(*) FROM apalis.jobs"),
            (
                "jobs_not_started",
                "SELECT count(*) FROM apalis.jobs WHERE status = 'Pending'",
            ),
        ] {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(self.pool())
                .await
                .unwrap();
            out.push((name.to_owned(), n));
        }
        out
    }

    /// Waits until one session of this database is waiting for a row lock (`who`, in the
    /// timeout's message, says which).
    pub async fn wait_for_one_lock_waiter(&self, who: &str) {
        tierflow_testdb::wait_until(
            std::time::Duration::from_secs(10),
            &format!("{who} to wait for the tenant lock"),
            || async {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(self.pool())
                .await
                .unwrap();
                (waiting == 1).then_some(())
            },
        )
        .await;
    }

    /// `(job_type, status, run_at)` of every queued job, ordered by run_at then kind.
    pub async fn jobs(&self) -> Vec<(String, String, DateTime<Utc>)> {
        sqlx::query_as("SELECT job_type, status, run_at FROM apalis.jobs ORDER BY run_at, job_type")
            .fetch_all(self.pool())
            .await
            .unwrap()
    }
}

pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub fn tier_id(s: &str) -> TierId {
    TierId::parse(s).unwrap()
}

pub fn actor() -> Actor {
    Actor::parse("billing").unwrap()
}

/// A request moving `tenant` to `tier` with `grace_secs` of grace.
pub fn to_tier(tenant: &str, tier: &str, grace_secs: i64) -> TransitionRequest {
    TransitionRequest {
        tenant_id: tid(tenant),
        target: Target::Tier(tier_id(tier)),
        grace: Some(GracePeriod::from_secs(grace_secs).unwrap()),
        reason: None,
        requested_by: actor(),
        idempotency_key: None,
    }
}

/// A request with a status target.
pub fn to_status(tenant: &str, target: Target) -> TransitionRequest {
    TransitionRequest {
        target,
        grace: None,
        ..to_tier(tenant, "free", 0)
    }
}

pub fn key(s: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(s).unwrap())
}
