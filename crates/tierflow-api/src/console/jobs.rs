//! Jobs: a list filtered by kind, state and tenant; one job with its payload, attempts, last
//! error and timeline; and, for an admin, re-drive and cancel behind a confirmation page.
//!
//! Actions go through [`tierflow_store::job_actions`], the functions behind
//! `POST /v1/jobs/{id}/retry|cancel`: the same refusals (only a dead or cancelled job is
//! re-driven, only an unstarted one cancelled, never a pending transition's own job) and an audit
//! row with the session's principal in the same transaction. A service-token session sees no
//! action buttons and gets 403 from the action endpoints; a form without the session's CSRF token
//! gets 403 before anything is read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use tierflow_queue::JobState;
use tierflow_queue::inspect::{self, JobFilter};
use tierflow_store::job_actions::{self, JobActionRefusal};

use super::session::ConsoleSession;
use super::{Failure, badge, esc, page, time, url_part};
use crate::app::AppState;

/// Rows a list shows.
const LIST_LIMIT: i64 = 100;

/// `GET /console/jobs?state=&kind=&tenant=`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Query(q): Query<HashMap<String, String>>,
) -> super::Result {
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let status = get("state")
        .and_then(JobState::parse)
        .map(|s| s.as_str().to_owned());
    let kind = get("kind").filter(|k| tierflow_store::jobs::KINDS.contains(k));
    let tenant = get("tenant").and_then(|t| tierflow_domain::ids::TenantId::parse(t).ok());
    let mut conn = state.pool.acquire().await?;
    let owned = match &tenant {
        Some(t) => Some(tierflow_store::console::tenant_jobs(&mut conn, t.as_str()).await?),
        None => None,
    };
    let filter = JobFilter {
        status: status.clone(),
        kind: kind.map(str::to_owned),
        owned,
    };
    let rows = inspect::list(&mut conn, &filter, LIST_LIMIT).await?;
    drop(conn);

    let mut b = String::from(
        "<form class=\"filters\" method=\"get\" action=\"/console/jobs\"><label>state<select name=\"state\" id=\"filter-state\"><option value=\"\">unfinished and dead</option>",
    );
    for s in JobState::ALL {
        let sel = if status.as_deref() == Some(s.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{}</option>", s.as_str());
    }
    b.push_str("</select></label><label>kind<select name=\"kind\"><option value=\"\">any</option>");
    for k in tierflow_store::jobs::KINDS {
        let sel = if kind == Some(k) { " selected" } else { "" };
        let _ = write!(b, "<option{sel}>{k}</option>");
    }
    let _ = write!(
        b,
        "</select></label><label>tenant<input name=\"tenant\" value=\"{}\"></label><button type=\"submit\">Filter</button></form>",
        esc(tenant.as_ref().map_or("", |t| t.as_str()))
    );
    if tenant.is_some() {
        b.push_str("<p class=\"muted\">A tenant's jobs are those of its transitions and overrides (event deliveries are listed by kind).</p>");
    }
    if rows.is_empty() {
        b.push_str("<p class=\"muted\" id=\"no-jobs\">No jobs match.</p>");
    } else {
        b.push_str("<div class=\"table\"><table><thead><tr><th scope=\"col\">job</th><th scope=\"col\">kind</th><th scope=\"col\">state</th><th scope=\"col\" class=\"num\">attempts</th><th scope=\"col\">due</th><th scope=\"col\">finished</th><th scope=\"col\">last error</th></tr></thead><tbody>");
        for r in &rows {
            let _ = write!(
                b,
                "<tr><td><a href=\"/console/jobs/{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                url_part(&r.id),
                esc(&r.id),
                esc(&r.kind),
                badge(&r.status),
                r.attempts,
                r.max_attempts,
                time(r.run_at),
                r.done_at.map_or(String::new(), time),
                esc(&truncate(r.last_error.as_deref().unwrap_or(""), 120)),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    Ok(page(&session, "Jobs", "Jobs", &b))
}

/// `GET /console/jobs/{job_id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Path(job_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> super::Result {
    let mut conn = state.pool.acquire().await?;
    let job = find(&mut conn, &job_id).await?;
    let timeline = tierflow_store::console::job_audit(&mut conn, &job.id).await?;
    drop(conn);

    let mut b = String::new();
    match q.get("done").map(String::as_str) {
        Some("redriven") => b.push_str("<p class=\"notice ok\" role=\"status\" id=\"flash\">Re-driven: the job is due now with a fresh set of attempts.</p>"),
        Some("cancelled") => b.push_str("<p class=\"notice ok\" role=\"status\" id=\"flash\">Cancelled: the job will not run.</p>"),
        _ => {}
    }
    // A transition's or an override's job names its tenant (and transition) in its payload; it
    // carries no key since transition jobs are found by id, so these rows say whose job it is.
    let payload = serde_json::from_slice::<serde_json::Value>(&job.payload).ok();
    let named = |field: &str| {
        payload
            .as_ref()
            .and_then(|p| p.get(field))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let mut owner = String::new();
    if let Some(tenant) = named("tenant_id") {
        let _ = write!(
            owner,
            "<dt>tenant</dt><dd id=\"job-tenant\"><a href=\"/console/tenants/{}\">{}</a></dd>",
            url_part(&tenant),
            esc(&tenant)
        );
    }
    if let Some(transition) = named("transition_id") {
        let _ = write!(
            owner,
            "<dt>transition</dt><dd id=\"job-transition\"><code>{}</code></dd>",
            esc(&transition)
        );
    }
    let state_name = if job.status == "Pending" && !job.due {
        "Pending (scheduled)"
    } else {
        job.status.as_str()
    };
    let _ = write!(
        b,
        "<dl><dt>kind</dt><dd>{}</dd><dt>state</dt><dd id=\"job-state\">{}</dd><dt>attempts</dt><dd>{} of {}</dd>\
{owner}<dt>due</dt><dd>{}</dd><dt>claimed</dt><dd>{}</dd><dt>finished</dt><dd>{}</dd><dt>key</dt><dd><code>{}</code></dd></dl>",
        esc(&job.kind),
        badge(state_name),
        job.attempts,
        job.max_attempts,
        time(job.run_at),
        match (&job.lock_at, &job.lock_by) {
            (Some(at), Some(by)) => format!(
                "{} by <a href=\"/console/fleet\">{}</a>",
                time(*at),
                esc(by)
            ),
            _ => "–".into(),
        },
        job.done_at.map_or("–".into(), time),
        esc(job.key.as_deref().unwrap_or("–")),
    );
    if session.is_admin() {
        let mut actions = String::new();
        if matches!(job.status.as_str(), "Dead" | "Cancelled") {
            let _ = write!(
                actions,
                "<a class=\"button\" id=\"redrive\" href=\"/console/jobs/{}/retry\">Re-drive…</a>",
                url_part(&job.id)
            );
        }
        if matches!(job.status.as_str(), "Pending" | "Failed") {
            let _ = write!(
                actions,
                "<a class=\"button\" id=\"cancel\" href=\"/console/jobs/{}/cancel\">Cancel…</a>",
                url_part(&job.id)
            );
        }
        if !actions.is_empty() {
            let _ = write!(b, "<div class=\"actions\">{actions}</div>");
        }
    }
    b.push_str("<h2>Last result</h2>");
    match &job.last_result {
        Some(r) => {
            let (class, text) = match (r.get("Err"), r.get("Ok")) {
                (Some(e), _) => (
                    "bad",
                    e.as_str().map_or_else(|| e.to_string(), str::to_owned),
                ),
                (_, Some(o)) => (
                    "ok",
                    o.as_str().map_or_else(|| o.to_string(), str::to_owned),
                ),
                _ => ("muted", r.to_string()),
            };
            let _ = write!(
                b,
                "<pre class=\"{class}\" id=\"last-result\">{}</pre>",
                esc(&text)
            );
        }
        None => b.push_str("<p class=\"muted\">None yet.</p>"),
    }
    b.push_str("<h2>Payload</h2>");
    let payload = match &payload {
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => format!("(not JSON) {}", String::from_utf8_lossy(&job.payload)),
    };
    let _ = write!(b, "<pre>{}</pre>", esc(&truncate(&payload, 20_000)));
    b.push_str("<h2>Timeline</h2><ul>");
    let _ = write!(b, "<li>due {}</li>", time(job.run_at));
    if let Some(at) = job.lock_at {
        let _ = write!(
            b,
            "<li>claimed {} (attempt {})</li>",
            time(at),
            job.attempts
        );
    }
    if let Some(at) = job.done_at {
        let _ = write!(
            b,
            "<li>{} {}</li>",
            esc(&job.status.to_lowercase()),
            time(at)
        );
    }
    b.push_str("</ul>");
    if !timeline.is_empty() {
        b.push_str("<h3>Operator actions</h3>");
        b.push_str(&super::fleet::audit_table(&timeline, true));
    }
    Ok(page(&session, &format!("Job {}", job.id), "Jobs", &b))
}

/// `GET /console/jobs/{job_id}/retry`: the confirmation page (admin).
pub async fn confirm_retry(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Path(job_id): Path<String>,
) -> super::Result {
    confirm(&state, &session, &job_id, Action::Redrive).await
}

/// `GET /console/jobs/{job_id}/cancel`: the confirmation page (admin).
pub async fn confirm_cancel(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Path(job_id): Path<String>,
) -> super::Result {
    confirm(&state, &session, &job_id, Action::Cancel).await
}

/// `POST /console/jobs/{job_id}/retry` (admin, CSRF).
pub async fn retry(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Path(job_id): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> super::Result {
    act(&state, &session, &job_id, &form, Action::Redrive).await
}

/// `POST /console/jobs/{job_id}/cancel` (admin, CSRF).
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Path(job_id): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> super::Result {
    act(&state, &session, &job_id, &form, Action::Cancel).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Redrive,
    Cancel,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Redrive => "retry",
            Action::Cancel => "cancel",
        }
    }
}

async fn confirm(
    state: &AppState,
    session: &ConsoleSession,
    job_id: &str,
    action: Action,
) -> super::Result {
    session.require_admin()?;
    let mut conn = state.pool.acquire().await?;
    let job = find(&mut conn, job_id).await?;
    drop(conn);
    let (verb, what) = match action {
        Action::Redrive => (
            "Re-drive",
            "It becomes due now with a fresh set of attempts and runs again on a worker.",
        ),
        Action::Cancel => (
            "Cancel",
            "It will not run. A pending transition's own jobs are refused: cancel the transition instead.",
        ),
    };
    let body = format!(
        "<p>{verb} job <code>{}</code> ({}, now {})? {what}</p>\
<form id=\"confirm-form\" method=\"post\" action=\"/console/jobs/{}/{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<div class=\"actions\"><button type=\"submit\" class=\"danger\" id=\"confirm\">{verb} job</button>\
<a href=\"/console/jobs/{}\">Back</a></div></form><p class=\"muted\">This is recorded in the audit trail under your name.</p>",
        esc(&job.id),
        esc(&job.kind),
        badge(&job.status),
        url_part(&job.id),
        action.path(),
        esc(&session.csrf_token),
        url_part(&job.id),
    );
    Ok(page(session, &format!("{verb} job?"), "Jobs", &body))
}

async fn act(
    state: &AppState,
    session: &ConsoleSession,
    job_id: &str,
    form: &HashMap<String, String>,
    action: Action,
) -> super::Result {
    session.check_csrf(form)?;
    session.require_admin()?;
    let ctx = state.ctx.acting_as(session.audit_principal());
    let mut conn = state.pool.acquire().await?;
    let out = match action {
        Action::Redrive => job_actions::redrive(&mut conn, &ctx, job_id).await?,
        Action::Cancel => job_actions::cancel(&mut conn, &ctx, job_id).await?,
    };
    match out {
        Ok(row) => {
            let done = if action == Action::Redrive {
                "redriven"
            } else {
                "cancelled"
            };
            tracing::info!(job.id = %row.id, principal = %session.principal, action = done, "console job action");
            Ok(
                Redirect::to(&format!("/console/jobs/{}?done={done}", url_part(&row.id)))
                    .into_response(),
            )
        }
        Err(JobActionRefusal::NotFound) => Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("There is no job with id '{job_id}'."),
        )),
        Err(JobActionRefusal::WrongState(s)) => Err(Failure::new(
            StatusCode::CONFLICT,
            match action {
                Action::Redrive => {
                    format!("Job {job_id} is {s}; only Dead or Cancelled jobs can be re-driven.")
                }
                Action::Cancel => {
                    format!("Job {job_id} is {s}; only Pending or Failed jobs can be cancelled.")
                }
            },
        )),
        Err(JobActionRefusal::OwnedByTransition(why)) => {
            Err(Failure::new(StatusCode::CONFLICT, why))
        }
    }
}

async fn find(conn: &mut sqlx::PgConnection, job_id: &str) -> Result<inspect::JobDetail, Failure> {
    let valid = !job_id.is_empty()
        && job_id.len() <= 64
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    let job = if valid {
        inspect::job(conn, job_id).await?
    } else {
        None
    };
    job.ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("There is no job with id '{job_id}'."),
        )
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
