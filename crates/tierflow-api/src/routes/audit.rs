//! `GET /v1/tenants/{tenant_id}/audit`: a tenant's audit trail in the order it was written,
//! cursor-paginated, filtered by kind and time. Each row names the stated actor and the
//! authenticated principal.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tierflow_domain::ids::TenantId;
use tierflow_store::audit::{AuditFilter, AuditRow, page};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenants::parse_tenant;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::responses::{Authenticated, BadParameters};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Path, Query};
use crate::input::{AuditCursor, AuditKind, integral};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Audit query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 1–500 (default 100).
    #[serde(default, deserialize_with = "integral::query_int")]
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<AuditCursor>, nullable = false)]
    pub cursor: Option<String>,
    /// Only this kind of change: a family (`transition`, `override`, `action`, `hold`, `tier`)
    /// or one action (`transition.downgrade`).
    #[param(value_type = Option<AuditKind>, nullable = false)]
    pub kind: Option<String>,
    /// Only changes at or after this time (RFC 3339).
    #[param(nullable = false)]
    pub since: Option<DateTime<Utc>>,
    /// Only changes before this time (RFC 3339).
    #[param(nullable = false)]
    pub until: Option<DateTime<Utc>>,
}

/// One page of a tenant's audit trail, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// The tenant's audit trail — every change, who stated it (`actor`), who was authenticated for
/// it (`principal`), why — in the order it was written.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/audit", operation_id = "list_audit", tag = "tenants", security(("bearer" = [])),
    params(("tenant_id" = TenantId, Path, description = "the tenant"), AuditQuery),
    responses(
        (status = 200, body = AuditPage, description = "one page, oldest first"),
        Authenticated, BadParameters,
        (status = 404, description = "`not-found`: unknown tenant", body = Problem, content_type = PROBLEM_JSON)))]
async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(tenant_id): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let tenant = parse_tenant(tenant_id)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Malformed(format!(
            "limit is {limit}; use 1 to 500"
        )));
    }
    let after = q.cursor.as_deref().map(AuditCursor::parse).transpose()?;
    if let Some(kind) = q.kind.as_deref() {
        AuditKind::check(kind)?;
    }
    let filter = AuditFilter {
        kind: q.kind,
        since: q.since,
        until: q.until,
    };
    let mut conn = state.pool.acquire().await?;
    if !tierflow_store::tenants::exists(&mut conn, &tenant).await? {
        return Err(ApiError::NotFound(format!(
            "tenant '{tenant}' is not known"
        )));
    }
    let mut items = page(&mut conn, tenant.as_str(), &filter, after, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(axum::Json(AuditPage { items, next_cursor }))
}
