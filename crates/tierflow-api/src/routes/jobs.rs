//! `GET /v1/jobs`, and `POST /v1/jobs/{job_id}/retry|cancel` (admin).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use tierflow_queue::JobState;
use tierflow_queue::admin::{self, JobRow};
use tierflow_store::job_actions::{self, JobActionRefusal};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::tenants::to_json;
use crate::app::AppState;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{Path, Query};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry))
        .routes(routes!(cancel))
}

/// Job filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// Pending, Running, Done, Failed, Dead or Cancelled.
    pub state: Option<String>,
    /// A job kind, e.g. apply_downgrade.
    pub kind: Option<String>,
    /// 1–500 (default 50).
    pub limit: Option<i64>,
}

/// Jobs, most recently due first.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs", security(("bearer" = [])), params(JobsQuery),
    responses((status = 200, description = "the jobs", body = Vec<Object>), (status = 400, body = Problem, description = "malformed request"),
                 (status = 422, body = Problem, description = "kind is not a job kind's name")))]
async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Query(q): Query<JobsQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if let Some(kind) = &q.kind {
        check_kind(kind)?;
    }
    if let Some(s) = &q.state
        && JobState::parse(s).is_none()
    {
        return Err(ApiError::Malformed(format!(
            "unknown state '{s}'; use Pending, Running, Done, Failed, Dead or Cancelled"
        )));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Malformed(format!(
            "limit is {limit}; use 1 to 500"
        )));
    }
    let mut conn = state.pool.acquire().await?;
    let rows = admin::list(&mut conn, q.state.as_deref(), q.kind.as_deref(), limit).await?;
    Ok(axum::Json(to_json(&rows)?))
}

/// Re-drives a dead or cancelled job (admin).
#[utoipa::path(post, path = "/v1/jobs/{job_id}/retry", operation_id = "retry_job", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path, description = "the job")),
    responses((status = 200, body = Object, description = "success"), (status = 403, body = Problem, description = "not an admin token"), (status = 404, body = Problem, description = "not found"),
              (status = 409, description = "not dead or cancelled", body = Problem),
              (status = 422, description = "job_id is not a job id", body = Problem)))]
async fn retry(
    State(state): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(job_id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    check_job_id(&job_id)?;
    let mut conn = state.pool.acquire().await?;
    // Audited with the caller's principal (tierflow_store::job_actions).
    let row = job_actions::redrive(&mut conn, &admin.context(&state), &job_id).await?;
    answer(row, &job_id, "re-drive", "only Dead or Cancelled jobs")
}

/// Cancels a job that has not started (admin). A pending transition's own jobs are cancelled
/// through the transition, never alone.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/cancel", operation_id = "cancel_job", tag = "jobs", security(("bearer" = [])),
    params(("job_id" = String, Path, description = "the job")),
    responses((status = 200, body = Object, description = "success"), (status = 403, body = Problem, description = "not an admin token"), (status = 404, body = Problem, description = "not found"),
              (status = 409, description = "already started or finished, or a pending transition's job (cancel the transition)", body = Problem),
              (status = 422, description = "job_id is not a job id", body = Problem)))]
async fn cancel(
    State(state): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(job_id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    check_job_id(&job_id)?;
    let mut conn = state.pool.acquire().await?;
    // Refuses a pending transition's own jobs; audited with the caller's principal.
    let row = job_actions::cancel(&mut conn, &admin.context(&state), &job_id).await?;
    answer(row, &job_id, "cancel", "only Pending or Failed jobs")
}

fn answer(
    row: Result<JobRow, JobActionRefusal>,
    id: &str,
    action: &str,
    allowed: &str,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match row {
        Ok(row) => Ok(axum::Json(to_json(&row)?)),
        Err(JobActionRefusal::NotFound) => {
            Err(ApiError::NotFound(format!("no job with id '{id}'")))
        }
        Err(JobActionRefusal::WrongState(s)) => Err(ApiError::StateConflict(format!(
            "cannot {action} job {id}: it is {s}; {allowed} can be"
        ))),
        Err(JobActionRefusal::OwnedByTransition(why)) => Err(ApiError::StateConflict(why)),
    }
}

/// A job kind filter: a snake_case name, as every kind has (checked before it reaches SQL: a NUL
/// or a control character would otherwise come back from PostgreSQL as a 500).
fn check_kind(kind: &str) -> Result<(), ApiError> {
    if kind.is_empty()
        || kind.len() > 64
        || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        return Err(ApiError::Validation {
            detail:
                "kind must be a job kind's name: lowercase letters and '_' (e.g. apply_downgrade)"
                    .into(),
            field: Some("kind".into()),
        });
    }
    Ok(())
}

/// A job id: what tierflow writes is a ULID (26 letters and digits); apalis's own are UUIDs.
fn check_job_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::Validation {
            detail: "job_id must be a job's id: letters, digits and '-' (see GET /v1/jobs)".into(),
            field: Some("job_id".into()),
        });
    }
    Ok(())
}
