//! Tenants: search by id, and one tenant's whole story — its effective entitlement with the
//! source of every value, its restrictions by source, its pending change with a countdown, its
//! overrides with their expiry, its transitions and its audit trail (who, principal, why).
//!
//! The entitlement is the API's own read ([`tierflow_store::tenants::effective`]), rendered from
//! its JSON form, so the page and `GET /v1/tenants/{id}/entitlement` cannot disagree.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tierflow_domain::ids::TenantId;

use super::session::ConsoleSession;
use super::{Failure, badge, countdown, esc, page, time, url_part};
use crate::app::AppState;

/// How many rows of each history the page shows.
const SHOWN: i64 = 50;

/// `GET /console/tenants?q=`: tenants whose id starts with `q`.
pub async fn search(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Query(q): Query<HashMap<String, String>>,
) -> super::Result {
    let query = q.get("q").map(|s| s.trim()).unwrap_or_default();
    let mut b = format!(
        "<form class=\"filters\" method=\"get\" action=\"/console/tenants\" role=\"search\">\
<label>tenant id (or its beginning)<input name=\"q\" id=\"tenant-search\" value=\"{}\" autofocus></label>\
<button type=\"submit\">Search</button></form>",
        esc(query)
    );
    if !query.is_empty() && !query.contains('\0') {
        let mut conn = state.pool.acquire().await?;
        let found = tierflow_store::console::search_tenants(&mut conn, query, SHOWN).await?;
        if found.is_empty() {
            b.push_str("<p class=\"muted\">No tenant id starts with that.</p>");
        } else {
            b.push_str("<div class=\"table\"><table><thead><tr><th scope=\"col\">tenant</th><th scope=\"col\">tier</th><th scope=\"col\">status</th></tr></thead><tbody>");
            for (id, tier, status) in found {
                let _ = write!(
                    b,
                    "<tr><td><a href=\"/console/tenants/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                    url_part(&id),
                    esc(&id),
                    esc(&tier),
                    badge(&status)
                );
            }
            b.push_str("</tbody></table></div>");
        }
    }
    Ok(page(&session, "Tenants", "Tenants", &b))
}

/// `GET /console/tenants/{tenant_id}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Path(tenant_id): Path<String>,
) -> super::Result {
    let tenant = TenantId::parse(tenant_id)
        .map_err(|e| Failure::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let mut conn = state.pool.acquire().await?;
    let effective = tierflow_store::tenants::effective(&mut conn, &state.ctx, &tenant).await?;
    let overrides =
        tierflow_store::console::tenant_overrides(&mut conn, tenant.as_str(), SHOWN).await?;
    let transitions = tierflow_store::transitions::history(&mut conn, &tenant, SHOWN, None).await?;
    let audit =
        tierflow_store::console::recent_audit(&mut conn, Some(tenant.as_str()), None, SHOWN)
            .await?;
    drop(conn);
    let e = serde_json::to_value(&effective).map_err(|err| {
        Failure::from(crate::error::ApiError::Internal(format!(
            "entitlement does not encode: {err}"
        )))
    })?;
    let now = effective.as_of;
    // A tenant on a test clock lives by the clock's time: its countdown must not tick in real time.
    let on_test_clock = (Utc::now() - now).num_seconds().abs() > 60;

    let mut b = String::new();
    let _ = write!(
        b,
        "<dl><dt>tier</dt><dd>{} ({}) {}</dd><dt>status</dt><dd>{}</dd><dt>version</dt><dd>{}</dd>\
<dt>effective since</dt><dd>{}</dd>{}<dt>read at</dt><dd>{}{}</dd></dl>",
        esc(&effective.tier_name),
        esc(effective.tier_id.as_str()),
        badge(s(&e["category"])),
        badge(s(&e["status"])),
        effective.version,
        time(effective.effective_at),
        effective.expires_at.map_or(String::new(), |t| format!(
            "<dt>expires</dt><dd>{} ({})</dd>",
            time(t),
            countdown(t, now)
        )),
        time(now),
        if on_test_clock {
            " <span class=\"badge warn\">test clock</span>"
        } else {
            ""
        },
    );

    b.push_str("<h2 id=\"pending\">Pending change</h2>");
    match &effective.pending_downgrade {
        Some(p) => {
            let left = if on_test_clock {
                format!(
                    "{} on its clock",
                    esc(&super::duration(
                        (p.grace_ends_at - now).num_milliseconds() as f64 / 1000.0
                    ))
                )
            } else {
                countdown(p.grace_ends_at, now)
            };
            let _ = write!(
                b,
                "<p class=\"notice warn\" id=\"pending-downgrade\">Downgrade to <strong>{}</strong>: grace ends {} — <strong id=\"grace-countdown\">{left}</strong>. Transition <code>{}</code>.</p>",
                esc(p.to_tier.as_str()),
                time(p.grace_ends_at),
                esc(&p.transition_id.to_string()),
            );
        }
        None => b.push_str("<p class=\"muted\">None.</p>"),
    }

    b.push_str("<h2 id=\"restrictions\">Restrictions</h2><div class=\"table\"><table><thead><tr><th scope=\"col\">restriction</th><th scope=\"col\">state</th><th scope=\"col\">held by</th></tr></thead><tbody>");
    if let Some(flags) = e["restrictions"].as_object() {
        for (flag, on) in flags {
            let held = e["restriction_sources"][flag]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| format!("<code>{}</code>", esc(s(v))))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(flag),
                if on.as_bool() == Some(true) {
                    "<span class=\"badge bad\">on</span>"
                } else {
                    "<span class=\"badge muted\">off</span>"
                },
                held
            );
        }
    }
    b.push_str("</tbody></table></div>");

    b.push_str("<h2>Features</h2><div class=\"table\"><table><thead><tr><th scope=\"col\">feature</th><th scope=\"col\">value</th><th scope=\"col\">source</th></tr></thead><tbody>");
    for (name, v) in e["features"].as_object().into_iter().flatten() {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            esc(&v["value"].to_string()),
            provenance(v)
        );
    }
    b.push_str("</tbody></table></div><h2>Limits</h2><div class=\"table\"><table><thead><tr><th scope=\"col\">limit</th><th scope=\"col\" class=\"num\">value</th><th scope=\"col\">source</th></tr></thead><tbody>");
    for (name, v) in e["limits"].as_object().into_iter().flatten() {
        let value = if v["value"].is_null() {
            "unlimited".to_owned()
        } else {
            v["value"].to_string()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(name),
            esc(&value),
            provenance(v)
        );
    }
    b.push_str("</tbody></table></div>");

    b.push_str("<h2>Overrides</h2>");
    if overrides.is_empty() {
        b.push_str("<p class=\"muted\">None.</p>");
    } else {
        b.push_str("<div class=\"table\"><table><thead><tr><th scope=\"col\">type</th><th scope=\"col\" class=\"num\">limit</th><th scope=\"col\">reason</th><th scope=\"col\">granted by</th><th scope=\"col\">expires</th><th scope=\"col\">status</th></tr></thead><tbody>");
        for o in &overrides {
            let expiry = if o.status == "active" && !on_test_clock {
                format!("{} ({})", time(o.expires_at), countdown(o.expires_at, now))
            } else {
                time(o.expires_at)
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"num\">{} <span class=\"muted\">(was {})</span></td><td>{}</td><td>{}</td><td>{expiry}</td><td>{}</td></tr>",
                esc(&o.entitlement_type),
                o.override_limit,
                o.original_limit
                    .map_or("unlimited".into(), |l| l.to_string()),
                esc(&o.reason),
                esc(&o.granted_by),
                badge(&o.status),
            );
        }
        b.push_str("</tbody></table></div>");
    }

    let _ = write!(
        b,
        "<h2>Transitions</h2><p><a href=\"/console/jobs?tenant={}&amp;state=\">This tenant's jobs</a></p>",
        url_part(tenant.as_str())
    );
    b.push_str("<div class=\"table\"><table><thead><tr><th scope=\"col\">requested</th><th scope=\"col\">kind</th><th scope=\"col\">from → to</th><th scope=\"col\">status</th><th scope=\"col\">by</th><th scope=\"col\">reason</th></tr></thead><tbody>");
    for t in &transitions {
        let t = serde_json::to_value(t).unwrap_or(Value::Null);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(&t["requested_at"]),
            esc(s(&t["kind"])),
            esc(t["from_tier"].as_str().unwrap_or("–")),
            esc(s(&t["to_tier"])),
            badge(s(&t["status"])),
            esc(s(&t["requested_by"])),
            esc(t["reason"].as_str().unwrap_or("")),
        );
    }
    b.push_str("</tbody></table></div>");

    let _ = write!(
        b,
        "<h2>Audit trail</h2><p><a href=\"/console/audit?tenant={}\">All of it</a> (newest first)</p>",
        url_part(tenant.as_str())
    );
    b.push_str(&super::fleet::audit_table(&audit, false));
    Ok(page(
        &session,
        &format!("Tenant {}", tenant.as_str()),
        "Tenants",
        &b,
    ))
}

/// Where a value comes from: the plan, an override (with its expiry), or a restriction and the
/// sources holding it.
fn provenance(v: &Value) -> String {
    match s(&v["source"]) {
        "plan" => format!("plan <code>{}</code>", esc(s(&v["tier_id"]))),
        "override" => format!("override, expires {}", when(&v["expires_at"])),
        "restriction" => format!(
            "restriction <code>{}</code> held by {}",
            esc(s(&v["restriction"])),
            v["held_by"]
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|x| format!("<code>{}</code>", esc(s(x))))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        other => esc(other),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn when(v: &Value) -> String {
    v.as_str()
        .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        .map_or_else(|| esc(s(v)), time)
}
