//! `/v1/test-clocks`: create, read, advance and delete test clocks (see
//! `tierflow_store::test_clocks`). Tenants are attached at provisioning (`test_clock_id`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tierflow_domain::ids::Actor;
use tierflow_store::test_clocks::{self, Advanced, TestClock};
use utoipa::openapi::schema::Type;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::responses::{Authenticated, BadParameters, JsonBody};
use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::extract::{Json, Path};
use crate::input::{DisplayName, UuidParam, exactly_one_of, integral};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(show, delete))
        .routes(routes!(advance))
}

/// A new test clock.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockBody {
    /// A name for people; stored without leading and trailing white space.
    #[schema(value_type = DisplayName)]
    pub name: String,
    /// Where the clock starts; now if absent.
    pub frozen_time: Option<DateTime<Utc>>,
}

/// Creates a test clock. Provision tenants on it with `test_clock_id`.
#[utoipa::path(post, path = "/v1/test-clocks", operation_id = "create_test_clock", tag = "test-clocks", security(("bearer" = [])),
    request_body = ClockBody,
    responses(
        (status = 201, description = "the clock", body = TestClock),
        Authenticated, JsonBody))]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<ClockBody>,
) -> Result<(StatusCode, axum::Json<TestClock>), ApiError> {
    DisplayName::check("name", &body.name)?;
    let name = body.name.trim();
    let now = state.ctx.clock.now();
    let actor = Actor::parse(caller.name.clone())?;
    let mut conn = state.pool.acquire().await?;
    let clock = test_clocks::create(
        &mut conn,
        name,
        body.frozen_time.unwrap_or(now),
        &actor,
        now,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(clock)))
}

/// The clock `id`, or 404.
async fn find(state: &AppState, id: Uuid) -> Result<TestClock, ApiError> {
    let mut conn = state.pool.acquire().await?;
    test_clocks::get(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("test clock {id} is not known")))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    UuidParam::parse("clock_id", id)
}

/// A test clock: its time, its tenants, its parked jobs and when the next is due.
#[utoipa::path(get, path = "/v1/test-clocks/{clock_id}", operation_id = "get_test_clock", tag = "test-clocks", security(("bearer" = [])),
    params(("clock_id" = UuidParam, Path, description = "the clock")),
    responses(
        (status = 200, description = "the clock", body = TestClock),
        Authenticated, BadParameters,
        (status = 404, description = "`not-found`: unknown clock", body = Problem, content_type = PROBLEM_JSON)))]
async fn show(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TestClock>, ApiError> {
    Ok(axum::Json(find(&state, parse_id(&id)?).await?))
}

/// How far to advance.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AdvanceFields)]
pub struct AdvanceBody {
    /// The new time, not before the clock's (a 422 names `to`).
    pub to: Option<DateTime<Utc>>,
    /// Or: seconds forward, 0 to 316,224,000 (ten years).
    #[serde(default, deserialize_with = "integral::opt_int")]
    #[schema(minimum = 0, maximum = 316_224_000, example = 604_800)]
    pub seconds: Option<i64>,
}

/// The longest `seconds` of an advance: ten years.
const MAX_ADVANCE_SECS: i64 = 10 * 366 * 86_400;

/// [`AdvanceBody`] as the document shows it: exactly one of `to` and `seconds`.
pub struct AdvanceRequestBody;

impl utoipa::PartialSchema for AdvanceRequestBody {
    fn schema() -> RefOr<Schema> {
        exactly_one_of(
            <AdvanceBody as utoipa::PartialSchema>::schema(),
            &[("to", Type::String), ("seconds", Type::Integer)],
        )
    }
}

impl utoipa::ToSchema for AdvanceRequestBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "AdvanceBody".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <AdvanceBody as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Moves the clock forward, running in due order every job of its tenants that becomes due
/// (grace ends, override and entitlement expiries); answers with the jobs that ran.
#[utoipa::path(post, path = "/v1/test-clocks/{clock_id}/advance", operation_id = "advance_test_clock", tag = "test-clocks", security(("bearer" = [])),
    params(("clock_id" = UuidParam, Path, description = "the clock")),
    request_body = AdvanceRequestBody,
    responses(
        (status = 200, description = "the clock and the jobs that ran", body = Advanced),
        Authenticated, JsonBody,
        (status = 404, description = "`not-found`: unknown clock", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`state-conflict`: another advance of this clock is running", body = Problem, content_type = PROBLEM_JSON)))]
async fn advance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AdvanceBody>,
) -> Result<axum::Json<Advanced>, ApiError> {
    let id = parse_id(&id)?;
    let to = match (body.to, body.seconds) {
        (Some(to), None) => to,
        (None, Some(secs)) if (0..=MAX_ADVANCE_SECS).contains(&secs) => {
            find(&state, id).await?.frozen_time + chrono::Duration::seconds(secs)
        }
        (None, Some(secs)) => {
            return Err(ApiError::field(
                "seconds",
                format!("seconds is {secs}; use 0 to 316224000 (ten years)"),
            ));
        }
        _ => {
            return Err(ApiError::field(
                "to",
                "give either `to` (a time) or `seconds` (a duration), not both or neither",
            ));
        }
    };
    let out = test_clocks::advance(&state.pool, &caller.context(&state), id, to).await?;
    Ok(axum::Json(out))
}

/// What deleting a clock did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub id: Uuid,
    /// Tenants deleted with it (and everything that referred to them).
    pub tenants_deleted: i64,
}

/// Deletes the clock and its tenants, with their history, jobs and audit rows.
#[utoipa::path(delete, path = "/v1/test-clocks/{clock_id}", operation_id = "delete_test_clock", tag = "test-clocks", security(("bearer" = [])),
    params(("clock_id" = UuidParam, Path, description = "the clock")),
    responses(
        (status = 200, description = "deleted", body = Deleted),
        Authenticated, BadParameters,
        (status = 404, description = "`not-found`: unknown clock", body = Problem, content_type = PROBLEM_JSON)))]
async fn delete(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Deleted>, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.pool.acquire().await?;
    let tenants_deleted = test_clocks::delete(&mut conn, id).await?;
    Ok(axum::Json(Deleted {
        id,
        tenants_deleted,
    }))
}
