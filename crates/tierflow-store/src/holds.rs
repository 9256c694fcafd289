//! Operator holds: [`place_hold`] and [`lift_hold`].
//!
//! A hold is a named restriction source (`hold:<name>`) that an operator places on a tenant for
//! compliance, fraud review or an incident. Like every source it holds its own rows in
//! `tenant_restrictions`, so it survives transitions (an upgrade lifts only the pending
//! downgrade's rows, a reactivation only the suspension's), and lifting it removes only its own
//! rows: a flag another source holds stays on. Placing and lifting are changes like any other:
//! under the tenant lock, a new version, an audit row with the principal, and an event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection};
use tierflow_domain::effective::EffectiveEntitlement;
use tierflow_domain::ids::{Actor, HoldName, Reason, TenantId};
use tierflow_domain::restriction::{Restriction, RestrictionSource};

use crate::audit::{self, AuditEvent};
use crate::{Context, StoreError, events, tenants};

/// A request to place a hold.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub tenant_id: TenantId,
    pub name: HoldName,
    /// The flags it holds; empty means all four.
    pub restrictions: Vec<Restriction>,
    pub reason: Reason,
    pub requested_by: Actor,
}

/// A hold as placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldRecord {
    #[schema(value_type = tierflow_domain::ids::HoldName)]
    pub name: String,
    /// The restriction source's key, as the entitlement's `restriction_sources` show it.
    pub source: String,
    pub restrictions: Vec<Restriction>,
    pub placed_at: DateTime<Utc>,
}

/// What placing or lifting a hold did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoldOutcome {
    pub hold: HoldRecord,
    pub entitlement: EffectiveEntitlement,
}

/// Places a hold: its flags are on until it is lifted, whatever else happens to the tenant.
pub async fn place_hold(
    conn: &mut PgConnection,
    ctx: &Context,
    req: HoldRequest,
) -> Result<HoldOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = tenants::lock(&mut tx, &req.tenant_id).await?;
    // A test-clock tenant changes at its clock\'s time.
    let (ctx, now) = tenant.time(ctx);
    let ctx = &*ctx;
    let mut restrictions = if req.restrictions.is_empty() {
        Restriction::ALL.to_vec()
    } else {
        req.restrictions.clone()
    };
    restrictions.sort();
    restrictions.dedup();
    let source = RestrictionSource::Hold(req.name.to_string()).key();
    let flags: Vec<&str> = restrictions.iter().map(|r| r.as_str()).collect();
    let placed = sqlx::query(
        "INSERT INTO tenant_restrictions (tenant_id, source, restriction, created_at)
         SELECT $1, $2, r, $3 FROM unnest($4::text[]) AS r
          WHERE NOT EXISTS (SELECT 1 FROM tenant_restrictions WHERE tenant_id = $1 AND source = $2)",
    )
    .bind(tenant.tenant_id.as_str())
    .bind(&source)
    .bind(now)
    .bind(&flags)
    .execute(&mut *tx)
    .await?;
    if placed.rows_affected() == 0 {
        return Err(StoreError::HoldExists {
            tenant: tenant.tenant_id.to_string(),
            name: req.name.to_string(),
        });
    }
    let version = tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    let hold = HoldRecord {
        name: req.name.to_string(),
        source: source.clone(),
        restrictions,
        placed_at: now,
    };
    audit::record(
        &mut tx,
        AuditEvent {
            tenant_id: tenant.tenant_id.as_str(),
            occurred_at: now,
            actor: req.requested_by.as_str(),
            action: "hold.placed",
            subject_type: "hold",
            subject_id: source.clone(),
            reason: Some(req.reason.as_str()),
            idempotency_key: None,
            details: serde_json::json!({ "restrictions": flags }),
            principal: &ctx.principal,
        },
    )
    .await?;
    let entitlement = events::announce(
        &mut tx,
        ctx,
        &tenant.tenant_id,
        "hold.placed",
        "hold",
        &event_subject(&tenant.tenant_id, &req.name, version),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(HoldOutcome { hold, entitlement })
}

/// Lifts a hold: removes its own flags and no other source's.
pub async fn lift_hold(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    name: &HoldName,
    actor: &Actor,
    reason: Option<&Reason>,
) -> Result<HoldOutcome, StoreError> {
    let mut tx = conn.begin().await?;
    let tenant = tenants::lock(&mut tx, tenant_id).await?;
    // A test-clock tenant changes at its clock\'s time.
    let (ctx, now) = tenant.time(ctx);
    let ctx = &*ctx;
    let source = RestrictionSource::Hold(name.to_string()).key();
    let lifted: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "DELETE FROM tenant_restrictions WHERE tenant_id = $1 AND source = $2
         RETURNING restriction, created_at",
    )
    .bind(tenant_id.as_str())
    .bind(&source)
    .fetch_all(&mut *tx)
    .await?;
    let Some(placed_at) = lifted.iter().map(|(_, at)| *at).min() else {
        return Err(StoreError::UnknownHold {
            tenant: tenant_id.to_string(),
            name: name.to_string(),
        });
    };
    let mut restrictions = lifted
        .iter()
        .map(|(r, _)| Restriction::parse(r).map_err(crate::error::corrupt("hold restriction")))
        .collect::<Result<Vec<_>, _>>()?;
    restrictions.sort();
    let version = tenants::bump(&mut tx, &tenant, &tenant.tier_id, tenant.status, now).await?;
    let flags: Vec<&str> = restrictions.iter().map(|r| r.as_str()).collect();
    audit::record(
        &mut tx,
        AuditEvent {
            tenant_id: tenant_id.as_str(),
            occurred_at: now,
            actor: actor.as_str(),
            action: "hold.lifted",
            subject_type: "hold",
            subject_id: source.clone(),
            reason: reason.map(Reason::as_str),
            idempotency_key: None,
            details: serde_json::json!({ "restrictions": flags, "placed_at": placed_at }),
            principal: &ctx.principal,
        },
    )
    .await?;
    let entitlement = events::announce(
        &mut tx,
        ctx,
        tenant_id,
        "hold.lifted",
        "hold",
        &event_subject(tenant_id, name, version),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(HoldOutcome {
        hold: HoldRecord {
            name: name.to_string(),
            source,
            restrictions,
            placed_at,
        },
        entitlement,
    })
}

/// The subject of a hold's event, `<tenant>/<hold>@<version>.<fresh id>`: an event id must be
/// unique across tenants, across placing the same hold again and across a tenant id reused after
/// its test clock was deleted (it is the delivery's idempotency key).
fn event_subject(tenant_id: &TenantId, name: &HoldName, version: i64) -> String {
    format!("{tenant_id}/{name}@{version}.{}", uuid::Uuid::now_v7())
}
