//! The operator console: server-rendered HTML pages under `/console` on the API's port — the
//! queue at a glance, a tenant's whole story, jobs with re-drive and cancel, the fleet, and the
//! audit trail.
//!
//! Why server-rendered: every page is one handler that reads the store and writes HTML with
//! `format!` (text always through [`esc`]), so there is no build chain, nothing to download at
//! run time, and every page reads without JavaScript. The only script ([`ASSET_JS`], compiled into
//! the binary like the stylesheet) ticks countdowns; without it a countdown shows its value when
//! the page was rendered. Actions need no script either: a button leads to a confirmation page,
//! whose form does the POST.
//!
//! Safety by construction:
//! - every route but the sign-in form takes a [`session::ConsoleSession`]; without one it
//!   redirects to sign-in (unknown paths included, so the console's shape is not probed);
//! - a session is a row in PostgreSQL holding the token's name and role, never the token
//!   ([`session`]); the cookie is `HttpOnly`, `SameSite=Strict`, `Secure` behind TLS, 8 hours;
//! - every POST carries the session's CSRF token, compared in constant time;
//! - roles are the API's: a service token reads, an admin token acts; actions go through the
//!   same store functions as `POST /v1/jobs/{id}/retry|cancel` ([`tierflow_store::job_actions`]),
//!   which refuse what the API refuses and write the audit row with the principal;
//! - every response carries `Cache-Control: no-store`, a CSP allowing only this stylesheet (by
//!   hash) and this origin's script, and `frame-ancestors 'none'`.
//!
//! # Layout
//! - [`session`] — sign-in, sign-out, the session extractor, CSRF.
//! - [`overview`] — depth per kind and state, last hour's throughput and latency, dead jobs,
//!   grace ends due and late.
//! - [`tenants`] — search, and one tenant: entitlement with sources, restrictions, pending change,
//!   overrides, transitions, audit.
//! - [`jobs`] — filters, one job, re-drive and cancel with a confirmation.
//! - [`fleet`] — workers with heartbeat age and in-flight jobs, the maintenance lease; the audit page.

pub mod fleet;
pub mod jobs;
pub mod overview;
pub mod session;
pub mod tenants;

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::ApiError;
use session::ConsoleSession;

/// The console's routes, to merge into the API's router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(overview::show))
        .route("/console/", get(overview::show))
        .route(
            "/console/sign-in",
            get(session::sign_in_form).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/tenants", get(tenants::search))
        .route("/console/tenants/{tenant_id}", get(tenants::show))
        .route("/console/jobs", get(jobs::list))
        .route("/console/jobs/{job_id}", get(jobs::show))
        .route(
            "/console/jobs/{job_id}/retry",
            get(jobs::confirm_retry).post(jobs::retry),
        )
        .route(
            "/console/jobs/{job_id}/cancel",
            get(jobs::confirm_cancel).post(jobs::cancel),
        )
        .route("/console/fleet", get(fleet::show))
        .route("/console/audit", get(fleet::audit))
        .route("/console/assets/console.js", get(script))
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::map_response(secure_headers))
}

/// The stylesheet, inlined in every page (one request per page; allowed by its hash).
pub const ASSET_CSS: &str = include_str!("console.css");
/// The one script: countdowns and confirmations. Served from this origin, behind a session.
pub const ASSET_JS: &str = include_str!("console.js");

/// `Content-Security-Policy`: this stylesheet by hash, scripts from this origin only, nothing
/// framed, forms posted only here.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(ASSET_CSS));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; script-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ))
    .expect("a CSP header is ASCII")
});

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn script(_session: ConsoleSession) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        ASSET_JS,
    )
        .into_response()
}

async fn not_found(session: ConsoleSession) -> Failure {
    let _ = session;
    Failure::new(StatusCode::NOT_FOUND, "There is no such console page.")
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time as operators read it: UTC to the second.
pub fn time(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.to_rfc3339(),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// A duration in seconds as `3d 4h`, `4m 12s`, `850 ms`.
pub fn duration(secs: f64) -> String {
    let neg = secs < 0.0;
    let s = secs.abs();
    let text = if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let s = s.round() as u64;
        let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
        if d > 0 {
            format!("{d}d {h}h")
        } else if h > 0 {
            format!("{h}h {m}m")
        } else {
            format!("{m}m {sec}s")
        }
    };
    if neg { format!("-{text}") } else { text }
}

/// A countdown to `at`: the server's remaining time, ticked by the script when it runs.
pub fn countdown(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = (at - now).num_milliseconds() as f64 / 1000.0;
    let text = if left > 0.0 {
        format!("in {}", duration(left))
    } else {
        format!("{} ago", duration(-left))
    };
    format!(
        "<time class=\"countdown\" data-countdown=\"{}\" datetime=\"{}\">{}</time>",
        at.timestamp_millis(),
        at.to_rfc3339(),
        esc(&text)
    )
}

/// An inline SVG sparkline of `values` (missing points are gaps), labelled for screen readers.
pub fn sparkline(values: &[Option<f64>], label: &str) -> String {
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let (w, h) = (240.0, 40.0);
    let step = w / (values.len().max(2) - 1) as f64;
    let mut paths = String::new();
    let mut open = false;
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let y = if max > 0.0 {
                    h - 2.0 - (v / max) * (h - 4.0)
                } else {
                    h - 2.0
                };
                let _ = write!(
                    paths,
                    "{}{:.1},{:.1} ",
                    if open { "L" } else { "M" },
                    i as f64 * step,
                    y
                );
                open = true;
            }
            None => open = false,
        }
    }
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><title>{}</title><path d=\"{}\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"/></svg>",
        esc(label),
        esc(label),
        paths.trim_end()
    )
}

/// A status badge.
pub fn badge(text: &str) -> String {
    let class = match text {
        "Dead" | "dead" | "expired" | "Failed" | "retrying" => "bad",
        "Pending" | "pending" | "due" | "suspended" | "Running" | "running" => "warn",
        "Done" | "done" | "effective" | "active" => "ok",
        _ => "muted",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

/// The page around `body`: the navigation, who is signed in, sign-out.
pub fn page(session: &ConsoleSession, title: &str, current: &str, body: &str) -> Response {
    let nav = [
        ("/console", "Overview"),
        ("/console/tenants", "Tenants"),
        ("/console/jobs", "Jobs"),
        ("/console/fleet", "Fleet"),
        ("/console/audit", "Audit"),
    ]
    .iter()
    .map(|(href, name)| {
        let here = if *name == current {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{here}>{name}</a>")
    })
    .collect::<String>();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · tierflow console</title><style>{ASSET_CSS}</style>\
<script src=\"/console/assets/console.js\" defer></script></head><body>\
<a class=\"skip\" href=\"#main\">Skip to content</a>\
<header><strong class=\"brand\">tierflow</strong><nav aria-label=\"Console\">{nav}</nav>\
<form class=\"who\" method=\"post\" action=\"/console/sign-out\">\
<span>{who} <span class=\"badge muted\">{role}</span></span>\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button></form></header>\
<main id=\"main\"><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
        who = esc(&session.principal),
        role = esc(session.role.as_str()),
        csrf = esc(&session.csrf_token),
    );
    html_response(StatusCode::OK, html)
}

/// A page that needs no session (sign-in, and the errors before one exists).
pub fn bare_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · tierflow console</title><style>{ASSET_CSS}</style></head><body>\
<main id=\"main\" class=\"narrow\"><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title)
    );
    html_response(status, html)
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

/// A console request that failed: an HTML page with the status. Database trouble and internal
/// errors go through [`ApiError`] first, so they are logged (and 503s carry `Retry-After`)
/// exactly as the API's are; the page shows no internals.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: false,
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let shown = match &e {
            ApiError::Internal(_) => None,
            ApiError::Unavailable(_) => {
                Some("The database is unavailable; retry in a moment.".to_owned())
            }
            other => Some(other.to_string()),
        };
        let retry_after = matches!(e, ApiError::Unavailable(_));
        // Logs internal causes and gives the status, as for the API.
        let status = e.into_response().status();
        Failure {
            status,
            message: shown.unwrap_or_else(|| {
                "An internal error occurred; it has been logged with this request's X-Request-Id."
                    .to_owned()
            }),
            retry_after,
        }
    }
}

impl From<tierflow_store::StoreError> for Failure {
    fn from(e: tierflow_store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<tierflow_queue::QueueError> for Failure {
    fn from(e: tierflow_queue::QueueError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = format!(
            "<p class=\"notice bad\" role=\"alert\">{}</p><p><a href=\"/console\">Back to the overview</a></p>",
            esc(&self.message)
        );
        let mut r = bare_page(self.status, title, &body);
        if self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        r
    }
}

/// A console handler's result.
pub type Result<T = Response, E = Failure> = std::result::Result<T, E>;
