//! `GET /v1/jobs`, and `POST /v1/jobs/{job_id}/retry|cancel` (admin).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use tierflow_queue::JobState;
use tierflow_queue::admin::{self, JobRow};
use tierflow_store::job_actions::{self, JobActionRefusal};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::{Admin, Caller};
use crate::error::responses::{AdminOnly, Authenticated, BadParameters};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Path, Query};
use crate::input::{JobId, JobKindFilter, integral};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry))
        .routes(routes!(cancel))
}

/// Job filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>, nullable = false)]
    pub state: Option<String>,
    /// Only jobs of this kind, e.g. apply_downgrade.
    #[param(value_type = Option<JobKindFilter>, nullable = false)]
    pub kind: Option<String>,
    /// 1–500 (default 50).
    #[serde(default, deserialize_with = "integral::query_int")]
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<i64>,
}

/// Jobs, most recently due first.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs", security(("bearer" = [])), params(JobsQuery),
    responses(
        (status = 200, description = "the jobs", body = Vec<JobRow>),
        Authenticated, BadParameters,
        (status = 422, description = "`validation-failed`: kind is not a job kind's name", body = Problem, content_type = PROBLEM_JSON)))]
async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Query(q): Query<JobsQuery>,
) -> Result<axum::Json<Vec<JobRow>>, ApiError> {
    if let Some(kind) = &q.kind {
        JobKindFilter::check(kind)?;
    }
    if let Some(s) = &q.state
        && JobState::parse(s).is_none()
    {
        return Err(ApiError::Malformed(format!(
            "unknown state '{}'; use Pending, Running, Done, Failed, Dead or Cancelled",
            s.escape_debug()
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
    Ok(axum::Json(rows))
}

/// Re-drives a dead or cancelled job. Admin only.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/retry", operation_id = "retry_job", tag = "jobs", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("job_id" = JobId, Path, description = "the job")),
    responses(
        (status = 200, description = "the job, due now with fresh attempts", body = JobRow),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: no such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: the job is not dead or cancelled", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: job_id is not a job id", body = Problem, content_type = PROBLEM_JSON)))]
async fn retry(
    State(state): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(job_id): Path<String>,
) -> Result<axum::Json<JobRow>, ApiError> {
    JobId::check(&job_id)?;
    let mut conn = state.pool.acquire().await?;
    // Audited with the caller's principal (tierflow_store::job_actions).
    let row = job_actions::redrive(&mut conn, &admin.context(&state), &job_id).await?;
    answer(row, &job_id, "re-drive", "only Dead or Cancelled jobs")
}

/// Cancels a job that has not started. A pending transition's own jobs are cancelled through
/// the transition, never alone. Admin only.
#[utoipa::path(post, path = "/v1/jobs/{job_id}/cancel", operation_id = "cancel_job", tag = "jobs", security(("bearer" = [])),
    extensions(("x-tierflow-role" = json!("admin"))),
    params(("job_id" = JobId, Path, description = "the job")),
    responses(
        (status = 200, description = "the cancelled job", body = JobRow),
        Authenticated, BadParameters, AdminOnly,
        (status = 404, description = "`not-found`: no such job", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: already started or finished, or a pending transition's job (cancel the transition)", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "`validation-failed`: job_id is not a job id", body = Problem, content_type = PROBLEM_JSON)))]
async fn cancel(
    State(state): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(job_id): Path<String>,
) -> Result<axum::Json<JobRow>, ApiError> {
    JobId::check(&job_id)?;
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
) -> Result<axum::Json<JobRow>, ApiError> {
    match row {
        Ok(row) => Ok(axum::Json(row)),
        Err(JobActionRefusal::NotFound) => {
            Err(ApiError::NotFound(format!("no job with id '{id}'")))
        }
        Err(JobActionRefusal::WrongState(s)) => Err(ApiError::StateConflict(format!(
            "cannot {action} job {id}: it is {s}; {allowed} can be"
        ))),
        Err(JobActionRefusal::OwnedByTransition(why)) => Err(ApiError::StateConflict(why)),
    }
}
