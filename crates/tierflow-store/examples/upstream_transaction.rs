//! An upstream service (here: billing) asking for a downgrade from inside its own transaction.
//!
//! The invoice row and tierflow's transition, restrictions, audit row and jobs commit together:
//! if billing's own write fails, no downgrade is left behind, and if tierflow refuses the request,
//! billing decides what to do with its transaction.
//!
//! Run against a migrated database (`tierflow migrate`):
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/tierflow \
//!   cargo run -p tierflow-store --example upstream_transaction -- acme
//! ```

use std::sync::Arc;

use tierflow_domain::SystemClock;
use tierflow_domain::ids::{Actor, IdempotencyKey, Reason, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
use tierflow_store::{Context, StoreError, TransitionRequest, request_transition};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL to a database migrated with `tierflow migrate`")?;
    let tenant = std::env::args().nth(1).unwrap_or_else(|| "acme".to_owned());
    let tenant = TenantId::parse(tenant)?;
    let pool = sqlx::PgPool::connect(&url).await?;
    let ctx = Context::new(Arc::new(SystemClock));

    // Make sure the tenant exists (a real billing system provisions at sign-up).
    let mut conn = pool.acquire().await?;
    let provision = ProvisionRequest {
        tenant_id: tenant.clone(),
        tier_id: TierId::parse("professional")?,
        reason: None,
        requested_by: Actor::parse("billing")?,
        expires_at: None,
        test_clock_id: None,
    };
    match provision_tenant(&mut conn, &ctx, provision).await {
        Ok(_) | Err(StoreError::TenantExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    drop(conn);

    let mut tx = pool.begin().await?;
    // … billing's own writes go here, on &mut *tx …
    let outcome = request_transition(
        &mut tx,
        &ctx,
        TransitionRequest {
            tenant_id: tenant.clone(),
            target: Target::Tier(TierId::parse("starter")?),
            grace: Some(GracePeriod::from_secs(7 * 24 * 3600)?),
            reason: Some(Reason::parse("subscription cancelled at period end")?),
            requested_by: Actor::parse("billing")?,
            idempotency_key: Some(IdempotencyKey::parse(format!("downgrade-{tenant}"))?),
        },
    )
    .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) if e.is_caller_error() => {
            // A rule said no (say, the tenant is already on starter): billing rolls back its
            // own writes, or commits them without the downgrade; tierflow left nothing behind.
            eprintln!("tierflow refused: {e}");
            tx.rollback().await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;

    println!(
        "transition {} is {} (replayed: {}); grace ends {:?}; voice disabled now: {}",
        outcome.transition.id,
        outcome.transition.status,
        outcome.replayed,
        outcome.transition.grace_ends_at,
        outcome.entitlement.restrictions.voice_disabled
    );
    for job in &outcome.jobs {
        println!("  job {:<16} {} due {}", job.kind, job.job_id, job.due_at);
    }
    Ok(())
}
