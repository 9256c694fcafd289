//! Console sessions: sign-in with an API token, the session cookie, sign-out, CSRF.
//!
//! Sign-in takes a token in a POST body (never a URL), finds it among the configured tokens
//! exactly as the API's bearer check does, and stores a session row: the SHA-256 of a random
//! 256-bit id, the token's *name* and role, a CSRF token and an expiry 8 hours ahead (database
//! clock). The browser gets the id in a cookie that is `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's page sends it), `Path=/console`, and `Secure` when the
//! request came over TLS (a TLS-terminating proxy says so with `X-Forwarded-Proto: https`).
//!
//! Why PostgreSQL rows rather than a signed cookie: every replica already shares the database,
//! so sessions work behind any load balancer with no signing key to distribute or rotate, and a
//! sign-out (or an expiry) ends a session on every replica at once. Each request costs one
//! primary-key lookup. On every request the session's name and role are checked against the
//! configured tokens too, so removing a token from the configuration ends its sessions.
//!
//! CSRF: every state-changing form carries the session's synchronizer token, compared in
//! constant time before anything happens; `SameSite=Strict` is the second wall. The sign-in form
//! itself, before any session exists, carries a double-submit token (a random value in both a
//! short-lived cookie and the form), so another site cannot sign a browser in as someone else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use tierflow_store::audit::{Principal, PrincipalRole};

use super::{Failure, bare_page, esc};
use crate::app::AppState;
use crate::auth::Role;

/// The session cookie's name.
pub const COOKIE: &str = "tierflow_console";
/// The sign-in form's double-submit cookie.
const SIGN_IN_COOKIE: &str = "tierflow_console_sign_in";
/// How long a session lasts: a working day, so a forgotten laptop is not signed in overnight.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long the sign-in form stays valid.
const SIGN_IN_FORM_LIFETIME: Duration = Duration::from_secs(3600);

/// A signed-in operator: what every console page takes. Without a valid session the request is
/// redirected to sign-in (303), whatever its path or method.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub principal: String,
    pub role: Role,
    pub csrf_token: String,
    id_sha256: [u8; 32],
}

impl ConsoleSession {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The principal the audit trail records for this session's actions.
    pub fn audit_principal(&self) -> Principal {
        let role = match self.role {
            Role::Admin => PrincipalRole::Admin,
            Role::Service => PrincipalRole::Service,
        };
        Principal::new(self.principal.clone(), role)
    }

    /// Refuses (403) a form whose `csrf` field is not this session's token.
    pub fn check_csrf(&self, form: &HashMap<String, String>) -> Result<(), Failure> {
        match form.get("csrf") {
            Some(t) if same(t.as_bytes(), self.csrf_token.as_bytes()) => Ok(()),
            _ => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "This form is missing its CSRF token or carries a stale one; reload the page and try again.",
            )),
        }
    }

    /// Refuses (403) a service-token session: acting needs an admin token, as in the API.
    pub fn require_admin(&self) -> Result<(), Failure> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                format!(
                    "This needs an admin token; '{}' is a {} token.",
                    self.principal,
                    self.role.as_str()
                ),
            ))
        }
    }
}

/// Why a request has no session: it goes to sign-in, or the database failed.
pub enum NoSession {
    SignIn(String),
    Failed(Failure),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::SignIn(next) => {
                Redirect::to(&format!("/console/sign-in?next={}", super::url_part(&next)))
                    .into_response()
            }
            NoSession::Failed(f) => f.into_response(),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for ConsoleSession {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, NoSession> {
        // Only a GET is sent back to where it was; a POST's form would not survive sign-in.
        let next = if parts.method == axum::http::Method::GET {
            parts
                .uri
                .path_and_query()
                .map_or("/console", |p| p.as_str())
                .to_owned()
        } else {
            "/console".to_owned()
        };
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(NoSession::SignIn(next));
        };
        let id_sha256: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut conn = state
            .pool
            .acquire()
            .await
            .map_err(|e| NoSession::Failed(e.into()))?;
        let Some(row) = tierflow_store::console::find_session(&mut conn, &id_sha256)
            .await
            .map_err(|e| NoSession::Failed(e.into()))?
        else {
            return Err(NoSession::SignIn(next));
        };
        let role = match row.role.as_str() {
            "admin" => Role::Admin,
            _ => Role::Service,
        };
        if !state.tokens.has(&row.principal, role) {
            return Err(NoSession::SignIn(next));
        }
        Ok(ConsoleSession {
            principal: row.principal,
            role,
            csrf_token: row.csrf_token,
            id_sha256,
        })
    }
}

/// `GET /console/sign-in`: the form (and a fresh double-submit token).
pub async fn sign_in_form(
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = safe_next(q.get("next").map(String::as_str));
    sign_in_page(&headers, StatusCode::OK, &next, None)
}

fn sign_in_page(
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Response {
    let form_token = random_hex();
    let error = error.map_or(String::new(), |e| {
        format!(
            "<p class=\"notice bad\" role=\"alert\" id=\"sign-in-error\">{}</p>",
            esc(e)
        )
    });
    let body = format!(
        "{error}<form method=\"post\" action=\"/console/sign-in\" class=\"stack\">\
<label for=\"token\">API token (admin or service)</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus>\
<input type=\"hidden\" name=\"form_token\" value=\"{form_token}\">\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
<p class=\"muted\">The token is checked like an API bearer token and never stored; the session lasts 8 hours.</p>",
        next = esc(next)
    );
    let mut r = bare_page(status, "Sign in", &body);
    set_cookie(
        &mut r,
        headers,
        SIGN_IN_COOKIE,
        &form_token,
        SIGN_IN_FORM_LIFETIME,
    );
    r
}

/// `POST /console/sign-in`: checks the form token and the API token, starts a session.
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let next = safe_next(form.get("next").map(String::as_str));
    let form_ok = match (form.get("form_token"), cookie(&headers, SIGN_IN_COOKIE)) {
        (Some(f), Some(c)) => same(f.as_bytes(), c.as_bytes()),
        _ => false,
    };
    if !form_ok {
        return Ok(sign_in_page(
            &headers,
            StatusCode::FORBIDDEN,
            &next,
            Some("The sign-in form expired or did not come from this console; try again."),
        ));
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let Some(caller) = state.tokens.find(token) else {
        tracing::warn!("console sign-in refused: the token is not valid");
        return Ok(sign_in_page(
            &headers,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is not valid."),
        ));
    };
    let id = random_hex();
    let id_sha256: [u8; 32] = Sha256::digest(id.as_bytes()).into();
    let csrf = random_hex();
    let mut conn = state.pool.acquire().await?;
    tierflow_store::console::create_session(
        &mut conn,
        &id_sha256,
        &caller.name,
        caller.role.as_str(),
        &csrf,
        LIFETIME,
    )
    .await?;
    tierflow_store::console::record_operator_action(
        &mut conn,
        &caller.principal(),
        "console.signed_in",
        "console_session",
        &handle(&id_sha256),
        serde_json::json!({"lifetime_secs": LIFETIME.as_secs()}),
    )
    .await?;
    tracing::info!(principal = %caller.name, role = caller.role.as_str(), "console sign-in");
    let mut r = Redirect::to(&next).into_response();
    set_cookie(&mut r, &headers, COOKIE, &id, LIFETIME);
    set_cookie(&mut r, &headers, SIGN_IN_COOKIE, "", Duration::ZERO);
    Ok(r)
}

/// `POST /console/sign-out`: ends the session everywhere, after the CSRF check.
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Result<Response, Failure> {
    session.check_csrf(&form)?;
    let mut conn = state.pool.acquire().await?;
    tierflow_store::console::delete_session(&mut conn, &session.id_sha256).await?;
    tierflow_store::console::record_operator_action(
        &mut conn,
        &session.audit_principal(),
        "console.signed_out",
        "console_session",
        &handle(&session.id_sha256),
        serde_json::json!({}),
    )
    .await?;
    let mut r = Redirect::to("/console/sign-in").into_response();
    set_cookie(&mut r, &headers, COOKIE, "", Duration::ZERO);
    Ok(r)
}

/// A session's name in the audit trail: the first 8 bytes of its id's digest (it opens nothing).
fn handle(id_sha256: &[u8; 32]) -> String {
    hex::encode(&id_sha256[..8])
}

/// Where to go after sign-in: a console path of this origin, nothing else (`//evil` and
/// `/console/../` included).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains("..")
                && !n.contains('\\')
                && n.chars().all(|c| c.is_ascii_graphic())
                && !n.starts_with("/console/sign-") =>
        {
            n.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

/// Whether the request reached us over TLS: tierflow serves plain HTTP, so only a terminating
/// proxy can say so.
fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

fn set_cookie(r: &mut Response, req: &HeaderMap, name: &str, value: &str, max_age: Duration) {
    let secure = if over_tls(req) { "; Secure" } else { "" };
    let c = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A cookie's value from the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// 256 random bits as hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Constant-time equality of two byte strings (the length is not secret: both are fixed-size).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(
            safe_next(Some("/console/jobs?state=Dead")),
            "/console/jobs?state=Dead"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/console/../v1/jobs",
            "/consolex",
            "/console/sign-in",
            "/console\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console", "{bad}");
        }
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tierflow_console=abc; x=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "tierflow"), None);
    }

    #[test]
    fn secure_only_behind_tls() {
        let mut h = HeaderMap::new();
        assert!(!over_tls(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&h));
    }
}
