//! Stored rows and their conversion into domain types.
//!
//! Rows are read with runtime `query_as` into these structs (no compile-time database), then
//! parsed into domain types; a value that does not parse is [`StoreError::Corrupt`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tierflow_domain::ids::{Actor, OverrideId, TierId, TransitionId};
use tierflow_domain::limit_override::{EntitlementType, LimitOverride, OverrideReason};
use tierflow_domain::restriction::{Hold, Restriction, RestrictionSource};
use tierflow_domain::tier::{Tier, TierCategory};
use tierflow_domain::transition::{
    EntitlementStatus, PendingDowngrade, TransitionKind, TransitionStatus,
};
use uuid::Uuid;

use crate::StoreError;
use crate::error::corrupt;

/// `tiers` row (also read as JSON, see `tenants::lock_for_change`).
#[derive(Debug, sqlx::FromRow, Deserialize)]
pub struct TierRow {
    pub tier_id: String,
    pub name: String,
    pub category: String,
    pub rank: i32,
    pub active: bool,
    pub features: serde_json::Value,
    pub limits: serde_json::Value,
    pub metadata: serde_json::Value,
}

/// The columns of [`TierRow`], as a literal for `concat!` (queries must be static strings).
macro_rules! tier_columns {
    () => {
        "tier_id, name, category, rank, active, features, limits, metadata"
    };
}
pub(crate) use tier_columns;

impl TryFrom<TierRow> for Tier {
    type Error = StoreError;
    fn try_from(r: TierRow) -> Result<Tier, StoreError> {
        let bad = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("tier '{}' {what}: {e}", r.tier_id))
        };
        Ok(Tier {
            tier_id: TierId::parse(&r.tier_id).map_err(corrupt("tier id"))?,
            category: TierCategory::parse(&r.category)
                .ok_or_else(|| StoreError::Corrupt(format!("tier category '{}'", r.category)))?,
            features: serde_json::from_value(r.features.clone()).map_err(|e| bad("features", e))?,
            limits: serde_json::from_value(r.limits.clone()).map_err(|e| bad("limits", e))?,
            name: r.name,
            rank: r.rank,
            active: r.active,
            metadata: r.metadata,
        })
    }
}

/// A transition as stored and as returned to callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionRecord {
    pub id: TransitionId,
    #[schema(value_type = tierflow_domain::ids::TenantId)]
    pub tenant_id: String,
    pub kind: TransitionKind,
    /// `pending` while a downgrade is in its grace period.
    pub status: TransitionStatus,
    /// Absent (null) for the provision.
    pub from_tier: Option<TierId>,
    pub to_tier: TierId,
    pub from_status: Option<EntitlementStatus>,
    pub to_status: EntitlementStatus,
    pub reason: Option<String>,
    /// The actor the request named (default: the token's name).
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    /// When the change takes (or took) effect: the grace end of a pending downgrade.
    pub effective_at: DateTime<Utc>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The transition that superseded this one, if one did.
    pub cancelled_by: Option<TransitionId>,
    /// The tenant's version after this transition.
    pub tenant_version: i64,
}

/// `tier_transitions` row (also read as JSON, see `tenants::lock_for_change`).
#[derive(Debug, sqlx::FromRow, Deserialize)]
pub struct TransitionRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub kind: String,
    pub status: String,
    pub from_tier_id: Option<String>,
    pub to_tier_id: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: Option<String>,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub effective_at: DateTime<Utc>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<Uuid>,
    pub tenant_version: i64,
}

/// The columns of [`TransitionRow`], as a literal for `concat!`.
macro_rules! transition_columns {
    () => {
        "id, tenant_id, kind, status, from_tier_id, to_tier_id, from_status, to_status, reason,
         requested_by, requested_at, effective_at, grace_ends_at, cancelled_at, cancelled_by, tenant_version"
    };
}
pub(crate) use transition_columns;

impl TryFrom<TransitionRow> for TransitionRecord {
    type Error = StoreError;
    fn try_from(r: TransitionRow) -> Result<Self, StoreError> {
        let tier = |s: &str| TierId::parse(s).map_err(corrupt("transition tier"));
        let status = |s: &str| EntitlementStatus::parse(s).map_err(corrupt("transition status"));
        Ok(Self {
            id: TransitionId(r.id),
            kind: TransitionKind::parse(&r.kind).map_err(corrupt("transition kind"))?,
            status: TransitionStatus::parse(&r.status).map_err(corrupt("transition state"))?,
            from_tier: r.from_tier_id.as_deref().map(tier).transpose()?,
            to_tier: tier(&r.to_tier_id)?,
            from_status: r.from_status.as_deref().map(status).transpose()?,
            to_status: status(&r.to_status)?,
            tenant_id: r.tenant_id,
            reason: r.reason,
            requested_by: r.requested_by,
            requested_at: r.requested_at,
            effective_at: r.effective_at,
            grace_ends_at: r.grace_ends_at,
            cancelled_at: r.cancelled_at,
            cancelled_by: r.cancelled_by.map(TransitionId),
            tenant_version: r.tenant_version,
        })
    }
}

impl TransitionRecord {
    /// The pending downgrade this record describes, if it is one.
    pub fn as_pending(&self) -> Option<PendingDowngrade> {
        (self.status == TransitionStatus::Pending).then(|| PendingDowngrade {
            transition_id: self.id,
            to_tier: self.to_tier.clone(),
            grace_ends_at: self.grace_ends_at.unwrap_or(self.effective_at),
        })
    }
}

/// `tenant_restrictions` row (the columns the rules need).
#[derive(Debug, sqlx::FromRow, Deserialize)]
pub struct HoldRow {
    pub source: String,
    pub restriction: String,
}

impl TryFrom<HoldRow> for Hold {
    type Error = StoreError;
    fn try_from(r: HoldRow) -> Result<Hold, StoreError> {
        Ok(Hold {
            restriction: Restriction::parse(&r.restriction).map_err(corrupt("restriction"))?,
            source: RestrictionSource::parse(&r.source).map_err(corrupt("restriction source"))?,
        })
    }
}

/// `entitlement_overrides` row.
#[derive(Debug, sqlx::FromRow, Deserialize)]
pub struct OverrideRow {
    pub id: Uuid,
    pub entitlement_type: String,
    pub original_limit: Option<i64>,
    pub override_limit: i64,
    pub reason: String,
    pub granted_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The columns of [`OverrideRow`], as a literal for `concat!`.
macro_rules! override_columns {
    () => {
        "id, entitlement_type, original_limit, override_limit, reason, granted_by, created_at, expires_at"
    };
}
pub(crate) use override_columns;

impl TryFrom<OverrideRow> for LimitOverride {
    type Error = StoreError;
    fn try_from(r: OverrideRow) -> Result<Self, StoreError> {
        Ok(LimitOverride {
            override_id: OverrideId(r.id),
            entitlement_type: EntitlementType::parse(&r.entitlement_type)
                .map_err(corrupt("override type"))?,
            original_limit: r.original_limit,
            override_limit: r.override_limit,
            reason: OverrideReason::parse(&r.reason).map_err(corrupt("override reason"))?,
            granted_by: Actor::parse(r.granted_by).map_err(corrupt("override actor"))?,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

/// Converts a batch of rows.
pub fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
