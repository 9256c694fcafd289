//! Tenants: the row lock that serializes a tenant's changes, and the effective entitlement read.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::effective::{EffectiveEntitlement, EntitlementState, effective_entitlement};
use tierflow_domain::ids::{TenantId, TierId, TransitionId};
use tierflow_domain::restriction::Hold;
use tierflow_domain::tier::Tier;
use tierflow_domain::transition::{EntitlementStatus, PendingDowngrade};

use crate::error::corrupt;
use crate::rows::{
    HoldRow, OverrideRow, TierRow, TransitionRecord, TransitionRow, convert, tier_columns,
    transition_columns,
};
use crate::{Context, StoreError};

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
    LockedTenant::parse(tenant_id.clone(), tier, &status, version)
}

impl LockedTenant {
    /// A tenant row locked by the caller's own query, parsed.
    pub(crate) fn parse(
        tenant_id: TenantId,
        tier: String,
        status: &str,
        version: i64,
    ) -> Result<LockedTenant, StoreError> {
        Ok(LockedTenant {
            tenant_id,
            tier_id: TierId::parse(tier).map_err(corrupt("tenant tier"))?,
            status: EntitlementStatus::parse(status).map_err(corrupt("tenant status"))?,
            version,
        })
    }
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

/// What a change request reads besides the locked tenant.
pub(crate) struct ChangeContext {
    /// The tenant's tier.
    pub current: Tier,
    /// The requested tier, if one was named and exists.
    pub target: Option<Tier>,
    /// The tenant's pending downgrade, if any.
    pub pending: Option<TransitionRecord>,
}

/// Reads the locked tenant's tier, the requested tier and the pending downgrade in one round
/// trip (a request's hottest reads). Call it after [`lock`], in a statement of its own, so that
/// it sees everything committed before the lock was granted.
pub(crate) async fn change_context(
    conn: &mut PgConnection,
    tenant: &LockedTenant,
    target: Option<&TierId>,
) -> Result<ChangeContext, StoreError> {
    let (current, target_row, pending): (
        Option<serde_json::Value>,
        Option<serde_json::Value>,
        Option<serde_json::Value>,
    ) = sqlx::query_as(concat!(
        "SELECT (SELECT to_jsonb(c) FROM (SELECT ",
        tier_columns!(),
        " FROM tiers WHERE tier_id = $1) c),
                (SELECT to_jsonb(g) FROM (SELECT ",
        tier_columns!(),
        " FROM tiers WHERE tier_id = $2) g),
                (SELECT to_jsonb(p) FROM (SELECT ",
        transition_columns!(),
        " FROM tier_transitions WHERE tenant_id = $3 AND status = 'pending') p)"
    ))
    .bind(tenant.tier_id.as_str())
    .bind(target.map(TierId::as_str))
    .bind(tenant.tenant_id.as_str())
    .fetch_one(conn)
    .await?;
    let json = |what: &str, e: serde_json::Error| {
        StoreError::Corrupt(format!("{what} of tenant '{}': {e}", tenant.tenant_id))
    };
    let tier = |v: serde_json::Value| -> Result<Tier, StoreError> {
        Tier::try_from(serde_json::from_value::<TierRow>(v).map_err(|e| json("tier", e))?)
    };
    let current = current.ok_or_else(|| {
        StoreError::Corrupt(format!("tenant on missing tier '{}'", tenant.tier_id))
    })?;
    Ok(ChangeContext {
        current: tier(current)?,
        target: target_row.map(tier).transpose()?,
        pending: pending
            .map(|p| {
                let row: TransitionRow =
                    serde_json::from_value(p).map_err(|e| json("pending downgrade", e))?;
                TransitionRecord::try_from(row)
            })
            .transpose()?,
    })
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
    // The product's most frequent read, and part of every change: one round trip, with the
    // pending downgrade, the restriction holds and the active overrides folded in as JSON.
    #[derive(sqlx::FromRow)]
    struct Row {
        status: String,
        effective_at: DateTime<Utc>,
        version: i64,
        #[sqlx(flatten)]
        tier: TierRow,
        pending: Option<serde_json::Value>,
        holds: serde_json::Value,
        overrides: serde_json::Value,
    }
    #[derive(serde::Deserialize)]
    struct PendingRow {
        id: uuid::Uuid,
        to_tier_id: String,
        grace_ends_at: DateTime<Utc>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT e.status, e.effective_at, e.version,
                t.tier_id, t.name, t.category, t.rank, t.active, t.features, t.limits, t.metadata,
                (SELECT json_build_object('id', p.id, 'to_tier_id', p.to_tier_id, 'grace_ends_at', p.grace_ends_at)
                   FROM tier_transitions p WHERE p.tenant_id = e.tenant_id AND p.status = 'pending') AS pending,
                coalesce((SELECT json_agg(json_build_object('source', r.source, 'restriction', r.restriction))
                   FROM tenant_restrictions r WHERE r.tenant_id = e.tenant_id), '[]') AS holds,
                coalesce((SELECT json_agg(o) FROM (SELECT id, entitlement_type, original_limit, override_limit, reason,
                          granted_by, created_at, expires_at
                     FROM entitlement_overrides WHERE tenant_id = e.tenant_id AND status = 'active') o), '[]') AS overrides
           FROM tenant_entitlements e JOIN tiers t ON t.tier_id = e.tier_id
          WHERE e.tenant_id = $1",
    )
    .bind(tenant_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_string()))?;
    let json = |what: &str, e: serde_json::Error| {
        StoreError::Corrupt(format!("{what} of tenant '{tenant_id}': {e}"))
    };
    let tier = Tier::try_from(row.tier)?;
    let pending = match row.pending {
        Some(p) => {
            let p: PendingRow =
                serde_json::from_value(p).map_err(|e| json("pending downgrade", e))?;
            Some(PendingDowngrade {
                transition_id: TransitionId(p.id),
                to_tier: TierId::parse(p.to_tier_id).map_err(corrupt("pending tier"))?,
                grace_ends_at: p.grace_ends_at,
            })
        }
        None => None,
    };
    let holds: Vec<HoldRow> =
        serde_json::from_value(row.holds).map_err(|e| json("restrictions", e))?;
    let holds: Vec<Hold> = convert(holds)?;
    let overrides: Vec<OverrideRow> =
        serde_json::from_value(row.overrides).map_err(|e| json("overrides", e))?;
    let overrides = convert(overrides)?;
    Ok(effective_entitlement(
        &EntitlementState {
            tenant_id,
            tier: &tier,
            status: EntitlementStatus::parse(&row.status).map_err(corrupt("tenant status"))?,
            effective_at: row.effective_at,
            version: row.version,
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
