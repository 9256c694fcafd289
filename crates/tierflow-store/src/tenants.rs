//! Tenants: the row lock that serializes a tenant's changes, and the effective entitlement read.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::effective::{EffectiveEntitlement, EntitlementState, effective_entitlement};
use tierflow_domain::ids::{TenantId, TierId};
use tierflow_domain::restriction::Hold;
use tierflow_domain::transition::EntitlementStatus;

use crate::error::corrupt;
use crate::rows::{
    HoldRow, OverrideRow, TransitionRecord, TransitionRow, convert, override_columns,
    transition_columns,
};
use crate::{Context, StoreError, tiers};

/// A locked tenant row.
#[derive(Debug, Clone)]
pub struct LockedTenant {
    pub tenant_id: TenantId,
    pub tier_id: TierId,
    pub status: EntitlementStatus,
    pub version: i64,
}

/// Locks the tenant's row for the rest of the transaction; every change takes this lock first.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<LockedTenant, StoreError> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT tier_id, status, version FROM tenant_entitlements WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant_id.as_str())
    .fetch_optional(conn)
    .await?;
    let (tier, status, version) =
        row.ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_string()))?;
    Ok(LockedTenant {
        tenant_id: tenant_id.clone(),
        tier_id: TierId::parse(tier).map_err(corrupt("tenant tier"))?,
        status: EntitlementStatus::parse(&status).map_err(corrupt("tenant status"))?,
        version,
    })
}

/// Records a change to the locked tenant: a new tier and status (unchanged if the same) and the
/// next version, which it returns.
pub(crate) async fn bump(
    conn: &mut PgConnection,
    tenant: &LockedTenant,
    tier: &TierId,
    status: EntitlementStatus,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE tenant_entitlements
            SET effective_at = CASE WHEN tier_id <> $2 OR status <> $3 THEN $4 ELSE effective_at END,
                tier_id = $2, status = $3, version = version + 1, updated_at = $4
          WHERE tenant_id = $1
         RETURNING version",
    )
    .bind(tenant.tenant_id.as_str())
    .bind(tier.as_str())
    .bind(status.as_str())
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// The tenant's pending downgrade, if any.
pub(crate) async fn pending(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<Option<TransitionRecord>, StoreError> {
    let row: Option<TransitionRow> = sqlx::query_as(concat!(
        "SELECT ",
        transition_columns!(),
        " FROM tier_transitions WHERE tenant_id = $1 AND status = 'pending'"
    ))
    .bind(tenant_id.as_str())
    .fetch_optional(conn)
    .await?;
    row.map(TransitionRecord::try_from).transpose()
}

/// What the tenant may do now (no lock taken; a consistent snapshot within the caller's
/// transaction).
pub async fn effective(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
) -> Result<EffectiveEntitlement, StoreError> {
    effective_at(conn, tenant_id, ctx.clock.now()).await
}

/// The effective entitlement at `now`.
pub(crate) async fn effective_at(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
) -> Result<EffectiveEntitlement, StoreError> {
    let row: Option<(String, String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT tier_id, status, effective_at, version FROM tenant_entitlements WHERE tenant_id = $1",
    )
    .bind(tenant_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let (tier_id, status, effective_at, version) =
        row.ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_string()))?;
    let tier_id = TierId::parse(tier_id).map_err(corrupt("tenant tier"))?;
    let tier = tiers::get(conn, &tier_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("tenant on missing tier '{tier_id}'")))?;
    let pending = pending(conn, tenant_id).await?.and_then(|t| t.as_pending());
    let holds: Vec<HoldRow> =
        sqlx::query_as("SELECT source, restriction FROM tenant_restrictions WHERE tenant_id = $1")
            .bind(tenant_id.as_str())
            .fetch_all(&mut *conn)
            .await?;
    let holds: Vec<Hold> = convert(holds)?;
    let overrides: Vec<OverrideRow> = sqlx::query_as(concat!(
        "SELECT ",
        override_columns!(),
        " FROM entitlement_overrides WHERE tenant_id = $1 AND status = 'active'"
    ))
    .bind(tenant_id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let overrides = convert(overrides)?;
    Ok(effective_entitlement(
        &EntitlementState {
            tenant_id,
            tier: &tier,
            status: EntitlementStatus::parse(&status).map_err(corrupt("tenant status"))?,
            effective_at,
            version,
            pending: pending.as_ref(),
            holds: &holds,
            overrides: &overrides,
        },
        now,
    ))
}

/// Whether the tenant exists.
pub async fn exists(conn: &mut PgConnection, tenant_id: &TenantId) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenant_entitlements WHERE tenant_id = $1)",
        )
        .bind(tenant_id.as_str())
        .fetch_one(conn)
        .await?,
    )
}
