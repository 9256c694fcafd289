//! Tenants: the row lock that serializes a tenant's changes, and the effective entitlement read.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tierflow_domain::effective::{EffectiveEntitlement, EntitlementState, effective_entitlement};
use tierflow_domain::ids::{TenantId, TierId, TransitionId};
use tierflow_domain::limit_override::LimitOverride;
use tierflow_domain::restriction::Hold;
use tierflow_domain::tier::Tier;
use tierflow_domain::transition::{EntitlementStatus, PendingDowngrade};

use crate::error::corrupt;
use crate::rows::{
    HoldRow, OverrideRow, TierRow, TransitionRecord, TransitionRow, convert, override_columns,
    tier_columns, transition_columns,
};
use crate::{Context, StoreError};

/// The tenant's holds as one JSON array, for a query over `tenant_entitlements e`.
macro_rules! holds_json {
    () => {
        "coalesce((SELECT json_agg(json_build_object('source', r.source, 'restriction', r.restriction))
                     FROM tenant_restrictions r WHERE r.tenant_id = e.tenant_id), '[]')"
    };
}

/// The tenant's active overrides as one JSON array, for a query over `tenant_entitlements e`.
macro_rules! overrides_json {
    () => {
        concat!(
            "coalesce((SELECT json_agg(o) FROM (SELECT ",
            override_columns!(),
            " FROM entitlement_overrides WHERE tenant_id = e.tenant_id AND status = 'active') o), '[]')"
        )
    };
}

/// A locked tenant row.
#[derive(Debug, Clone)]
pub struct LockedTenant {
    pub tenant_id: TenantId,
    pub tier_id: TierId,
    pub status: EntitlementStatus,
    pub version: i64,
    pub expires_at: Option<DateTime<Utc>>,
    /// The test clock the tenant lives by, if any.
    pub clock: Option<TenantClock>,
}

/// A tenant's test clock: its id and its frozen time, the tenant's "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantClock {
    pub id: uuid::Uuid,
    pub now: DateTime<Utc>,
}

impl TenantClock {
    /// From a row's clock id and frozen time (both set or both absent).
    pub(crate) fn from_row(
        id: Option<uuid::Uuid>,
        now: Option<DateTime<Utc>>,
    ) -> Option<TenantClock> {
        Some(TenantClock { id: id?, now: now? })
    }
}

/// The clock columns of a query over `tenant_entitlements e`.
macro_rules! clock_columns {
    () => {
        "e.test_clock_id, (SELECT c.frozen_time FROM test_clocks c WHERE c.id = e.test_clock_id) AS clock_now"
    };
}

/// Locks the tenant's row for the rest of the transaction; every change takes this lock first.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<LockedTenant, StoreError> {
    #[allow(clippy::type_complexity)]
    let row: Option<(
        String,
        String,
        i64,
        Option<DateTime<Utc>>,
        Option<uuid::Uuid>,
        Option<DateTime<Utc>>,
    )> = sqlx::query_as(concat!(
        "SELECT e.tier_id, e.status, e.version, e.expires_at, ",
        clock_columns!(),
        " FROM tenant_entitlements e WHERE e.tenant_id = $1 FOR UPDATE OF e"
    ))
    .bind(tenant_id.as_str())
    .fetch_optional(conn)
    .await?;
    let (tier, status, version, expires_at, clock_id, clock_now) =
        row.ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_string()))?;
    Ok(LockedTenant {
        expires_at,
        clock: TenantClock::from_row(clock_id, clock_now),
        ..LockedTenant::parse(tenant_id.clone(), tier, &status, version)?
    })
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
            expires_at: None,
            clock: None,
        })
    }

    /// The tenant's "now" and the context its change runs in: its test clock's time and a
    /// context that delivers events in real time, or `ctx` and its clock.
    pub(crate) fn time<'c>(
        &self,
        ctx: &'c Context,
    ) -> (std::borrow::Cow<'c, Context>, DateTime<Utc>) {
        match self.clock {
            Some(c) => (std::borrow::Cow::Owned(ctx.on_test_clock()), c.now),
            None => (std::borrow::Cow::Borrowed(ctx), ctx.clock.now()),
        }
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

/// A tenant locked for a change request, with everything the request reads: what it plans
/// from, and what the entitlement after it is computed from.
pub(crate) struct ChangeContext {
    pub tenant: LockedTenant,
    /// When the tenant's tier or status last changed.
    pub effective_at: DateTime<Utc>,
    /// The tenant's tier.
    pub current: Tier,
    /// The requested tier, if one was named and exists.
    pub target: Option<Tier>,
    /// The tenant's pending downgrade, if any.
    pub pending: Option<TransitionRecord>,
    pub holds: Vec<Hold>,
    /// The overrides stored as active.
    pub overrides: Vec<LimitOverride>,
    /// What is stored under the request's idempotency key, if it had one and it was seen.
    pub prior: Option<crate::idempotency::Stored>,
}

/// Locks the tenant's row and reads, in the same statement, its tier, the requested tier, its
/// pending downgrade, its holds, its active overrides and what is stored under the request's
/// idempotency key — a change request's hottest round trip.
///
/// One statement is safe only because every change to what it reads also bumps the tenant's
/// version under this lock. In READ COMMITTED a statement that waits for a row lock re-reads the
/// row it locks but not the others: those come from the snapshot taken when the statement
/// started. So the statement also reads the version as of that snapshot; if the locked row's
/// version is newer, a change committed in between and the read is repeated, now with the lock
/// held, in a fresh snapshot. (Tiers are not covered: a tier edited while a request waits is
/// read as it was when the request's statement started, as with any read that takes no lock on
/// the tier.)
pub(crate) async fn lock_for_change(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    target: Option<&TierId>,
    idempotency_key: Option<&str>,
) -> Result<ChangeContext, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        tier_id: String,
        status: String,
        version: i64,
        snapshot_version: i64,
        effective_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        test_clock_id: Option<uuid::Uuid>,
        clock_now: Option<DateTime<Utc>>,
        current: Option<serde_json::Value>,
        target: Option<serde_json::Value>,
        pending: Option<serde_json::Value>,
        holds: serde_json::Value,
        overrides: serde_json::Value,
        prior: Option<serde_json::Value>,
    }
    let query = concat!(
        "SELECT e.tier_id, e.status, e.version, e.effective_at, e.expires_at, ",
        clock_columns!(),
        ",
                (SELECT s.version FROM tenant_entitlements s WHERE s.tenant_id = $1) AS snapshot_version,
                (SELECT to_jsonb(c) FROM (SELECT ",
        tier_columns!(),
        " FROM tiers WHERE tier_id = e.tier_id) c) AS current,
                (SELECT to_jsonb(g) FROM (SELECT ",
        tier_columns!(),
        " FROM tiers WHERE tier_id = $2) g) AS target,
                (SELECT to_jsonb(p) FROM (SELECT ",
        transition_columns!(),
        " FROM tier_transitions WHERE tenant_id = $1 AND status = 'pending') p) AS pending, ",
        holds_json!(),
        " AS holds, ",
        overrides_json!(),
        " AS overrides,
                (SELECT to_jsonb(k) FROM (SELECT operation, fingerprint, response FROM idempotency_keys
                   WHERE tenant_id = $1 AND idempotency_key = $3) k) AS prior
           FROM tenant_entitlements e WHERE e.tenant_id = $1
            FOR UPDATE OF e"
    );
    let mut row = None;
    // The second read holds the lock from the first, so its snapshot sees every change.
    for _ in 0..2 {
        let read: Row = sqlx::query_as(query)
            .bind(tenant_id.as_str())
            .bind(target.map(TierId::as_str))
            .bind(idempotency_key)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_string()))?;
        if read.version == read.snapshot_version {
            row = Some(read);
            break;
        }
    }
    let row = row.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "tenant '{tenant_id}': its version still differs from the snapshot's after a read \
             under its lock (a writer changed it without taking the lock)"
        ))
    })?;
    let json = |what: &str, e: serde_json::Error| {
        StoreError::Corrupt(format!("{what} of tenant '{tenant_id}': {e}"))
    };
    let tier = |what: &str, v: serde_json::Value| -> Result<Tier, StoreError> {
        Tier::try_from(serde_json::from_value::<TierRow>(v).map_err(|e| json(what, e))?)
    };
    let current = row
        .current
        .ok_or_else(|| StoreError::Corrupt(format!("tenant on missing tier '{}'", row.tier_id)))?;
    Ok(ChangeContext {
        tenant: LockedTenant {
            expires_at: row.expires_at,
            clock: TenantClock::from_row(row.test_clock_id, row.clock_now),
            ..LockedTenant::parse(tenant_id.clone(), row.tier_id, &row.status, row.version)?
        },
        effective_at: row.effective_at,
        current: tier("current tier", current)?,
        target: row.target.map(|t| tier("target tier", t)).transpose()?,
        pending: row
            .pending
            .map(|p| {
                let row: TransitionRow =
                    serde_json::from_value(p).map_err(|e| json("pending downgrade", e))?;
                TransitionRecord::try_from(row)
            })
            .transpose()?,
        holds: parse_holds(row.holds, tenant_id)?,
        overrides: parse_overrides(row.overrides, tenant_id)?,
        prior: row
            .prior
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| json("stored idempotent response", e))?,
    })
}

fn parse_holds(v: serde_json::Value, tenant_id: &TenantId) -> Result<Vec<Hold>, StoreError> {
    let rows: Vec<HoldRow> = serde_json::from_value(v)
        .map_err(|e| StoreError::Corrupt(format!("restrictions of tenant '{tenant_id}': {e}")))?;
    convert(rows)
}

fn parse_overrides(
    v: serde_json::Value,
    tenant_id: &TenantId,
) -> Result<Vec<LimitOverride>, StoreError> {
    let rows: Vec<OverrideRow> = serde_json::from_value(v)
        .map_err(|e| StoreError::Corrupt(format!("overrides of tenant '{tenant_id}': {e}")))?;
    convert(rows)
}

/// What the tenant may do now (no lock taken; a consistent snapshot within the caller's
/// transaction).
pub async fn effective(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
) -> Result<EffectiveEntitlement, StoreError> {
    let state = read_state(conn, tenant_id).await?;
    // A test-clock tenant is read at its clock's time.
    let now = state.clock.map_or_else(|| ctx.clock.now(), |c| c.now);
    Ok(state.entitlement(None, now))
}

/// Everything a tenant's effective entitlement is computed from, for a query over
/// `tenant_entitlements e JOIN tiers t`.
macro_rules! state_columns {
    () => {
        concat!(
            "e.tenant_id AS state_tenant_id, e.status, e.effective_at, e.expires_at, e.version, ",
            clock_columns!(),
            ",
                t.tier_id, t.name, t.category, t.rank, t.active, t.features, t.limits, t.metadata,
                (SELECT json_build_object('id', p.id, 'to_tier_id', p.to_tier_id, 'grace_ends_at', p.grace_ends_at)
                   FROM tier_transitions p WHERE p.tenant_id = e.tenant_id AND p.status = 'pending') AS pending, ",
            holds_json!(),
            " AS holds, ",
            overrides_json!(),
            " AS overrides"
        )
    };
}

/// The effective entitlement at `now`.
pub(crate) async fn effective_at(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    now: DateTime<Utc>,
) -> Result<EffectiveEntitlement, StoreError> {
    Ok(read_state(conn, tenant_id).await?.entitlement(None, now))
}

/// The tenant's stored state. The product's most frequent read, and part of every change: one
/// round trip, with the pending downgrade, the restriction holds and the active overrides
/// folded in as JSON.
async fn read_state(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
) -> Result<TenantState, StoreError> {
    let row: Option<StateRow> = sqlx::query_as(concat!(
        "SELECT ",
        state_columns!(),
        " FROM tenant_entitlements e JOIN tiers t ON t.tier_id = e.tier_id
          WHERE e.tenant_id = $1"
    ))
    .bind(tenant_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| StoreError::UnknownTenant(tenant_id.to_string()))?
        .parse()
}

#[derive(sqlx::FromRow)]
struct StateRow {
    state_tenant_id: String,
    status: String,
    effective_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    test_clock_id: Option<uuid::Uuid>,
    clock_now: Option<DateTime<Utc>>,
    version: i64,
    #[sqlx(flatten)]
    tier: TierRow,
    pending: Option<serde_json::Value>,
    holds: serde_json::Value,
    overrides: serde_json::Value,
}

/// A tenant's stored state, parsed: what [`effective_entitlement`] folds.
pub(crate) struct TenantState {
    pub tenant_id: TenantId,
    pub tier: Tier,
    pub status: EntitlementStatus,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub clock: Option<TenantClock>,
    pub version: i64,
    pub pending: Option<PendingDowngrade>,
    pub holds: Vec<Hold>,
    pub overrides: Vec<LimitOverride>,
}

impl StateRow {
    fn parse(self) -> Result<TenantState, StoreError> {
        #[derive(serde::Deserialize)]
        struct PendingRow {
            id: uuid::Uuid,
            to_tier_id: String,
            grace_ends_at: DateTime<Utc>,
        }
        let tenant_id = TenantId::parse(self.state_tenant_id).map_err(corrupt("tenant id"))?;
        let json = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("{what} of tenant '{tenant_id}': {e}"))
        };
        let pending = match self.pending {
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
        let holds = parse_holds(self.holds, &tenant_id)?;
        let overrides = parse_overrides(self.overrides, &tenant_id)?;
        Ok(TenantState {
            tier: Tier::try_from(self.tier)?,
            status: EntitlementStatus::parse(&self.status).map_err(corrupt("tenant status"))?,
            effective_at: self.effective_at,
            expires_at: self.expires_at,
            clock: TenantClock::from_row(self.test_clock_id, self.clock_now),
            version: self.version,
            pending,
            holds,
            overrides,
            tenant_id,
        })
    }
}

impl TenantState {
    /// The effective entitlement at `now` — on `tier` instead of the stored one if given (what a
    /// tier's earlier definition gave).
    pub(crate) fn entitlement(
        &self,
        tier: Option<&Tier>,
        now: DateTime<Utc>,
    ) -> EffectiveEntitlement {
        effective_entitlement(
            &EntitlementState {
                tenant_id: &self.tenant_id,
                tier: tier.unwrap_or(&self.tier),
                status: self.status,
                effective_at: self.effective_at,
                expires_at: self.expires_at,
                version: self.version,
                pending: self.pending.as_ref(),
                holds: &self.holds,
                overrides: &self.overrides,
            },
            now,
        )
    }
}

/// Locks the next `limit` tenants on `tier_id` after `after` (in id order) and reads their state
/// — one batch of a tier edit's fan-out.
pub(crate) async fn lock_tier_batch(
    conn: &mut PgConnection,
    tier_id: &TierId,
    after: Option<&TenantId>,
    limit: i64,
) -> Result<Vec<TenantState>, StoreError> {
    let rows: Vec<StateRow> = sqlx::query_as(concat!(
        "SELECT ",
        state_columns!(),
        " FROM tenant_entitlements e JOIN tiers t ON t.tier_id = e.tier_id
          WHERE e.tier_id = $1 AND e.tenant_id > $2
          ORDER BY e.tenant_id LIMIT $3
          FOR UPDATE OF e"
    ))
    .bind(tier_id.as_str())
    .bind(after.map_or("", TenantId::as_str))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(StateRow::parse).collect()
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
