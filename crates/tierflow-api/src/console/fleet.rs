//! The fleet — worker incarnations with their heartbeat age and in-flight jobs, and who holds the
//! maintenance lease — and the audit page: the newest changes across every tenant and the
//! catalogue, console sign-ins and job re-drives included.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use tierflow_queue::inspect;
use tierflow_store::console::AuditEntry;

use super::session::ConsoleSession;
use super::{badge, duration, esc, page, time, url_part};
use crate::app::AppState;

/// Workers silent for longer than this are not listed: the cleaner prunes them soon after, and
/// their jobs have long been rescued.
const SHOWN_SILENCE_SECS: f64 = 3600.0;
/// A heartbeat older than this is shown as late (the default rescue delay is 6 s).
const LATE_HEARTBEAT_SECS: f64 = 5.0;

/// `GET /console/fleet`.
pub async fn show(State(state): State<Arc<AppState>>, session: ConsoleSession) -> super::Result {
    let mut conn = state.pool.acquire().await?;
    let workers = inspect::workers(&mut conn, SHOWN_SILENCE_SECS).await?;
    let leases = inspect::leases(&mut conn).await?;
    drop(conn);
    let leader = leases.iter().find(|l| {
        l.name == tierflow_queue::maintenance::elector::MAINTENANCE && l.expires_in_secs > 0.0
    });

    let mut b = String::from("<h2>Maintenance leadership</h2>");
    match leader {
        Some(l) => {
            let _ = write!(
                b,
                "<p id=\"leader\"><code>{}</code> leads maintenance (term {}, elected {}, lease renews within {}).</p>",
                esc(&l.leader_id),
                l.term,
                time(l.elected_at),
                duration(l.expires_in_secs)
            );
        }
        None => b.push_str("<p class=\"notice warn\" id=\"leader\">Nobody leads maintenance now: no worker is running, or the lease just expired and is being taken over.</p>"),
    }
    let _ = write!(b, "<h2>Workers ({})</h2>", workers.len());
    if workers.is_empty() {
        b.push_str("<p class=\"muted\">No worker has beaten in the last hour.</p>");
    } else {
        b.push_str("<div class=\"table\"><table><thead><tr><th scope=\"col\">worker</th><th scope=\"col\">heartbeat</th><th scope=\"col\" class=\"num\">in flight</th><th scope=\"col\">started</th><th scope=\"col\">kinds</th></tr></thead><tbody>");
        for w in &workers {
            let leads = leader.is_some_and(|l| l.leader_id == w.id);
            let beat_class = if w.heartbeat_age_secs > LATE_HEARTBEAT_SECS {
                "bad"
            } else {
                "ok"
            };
            let _ = write!(
                b,
                "<tr><td><code>{}</code>{}</td><td class=\"{beat_class}\">{} ago</td><td class=\"num\"><a href=\"/console/jobs?state=Running\">{}</a> <span class=\"muted\">(holds {})</span></td><td>{}</td><td>{}</td></tr>",
                esc(&w.id),
                if leads {
                    " <span class=\"badge ok\">leader</span>"
                } else {
                    ""
                },
                duration(w.heartbeat_age_secs),
                w.running,
                w.holding,
                w.started_at.map_or("–".into(), time),
                esc(&w.kinds.replace(',', ", ")),
            );
        }
        b.push_str("</tbody></table></div>");
    }
    Ok(page(&session, "Fleet", "Fleet", &b))
}

/// `GET /console/audit?tenant=&action=`: the newest audit rows.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    session: ConsoleSession,
    Query(q): Query<HashMap<String, String>>,
) -> super::Result {
    let get = |k: &str| {
        q.get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty() && !v.contains('\0') && v.len() <= 200)
    };
    let tenant = get("tenant");
    let action = get("action");
    let mut conn = state.pool.acquire().await?;
    let rows = tierflow_store::console::recent_audit(&mut conn, tenant, action, 200).await?;
    drop(conn);
    let mut b = format!(
        "<form class=\"filters\" method=\"get\" action=\"/console/audit\"><label>tenant<input name=\"tenant\" value=\"{}\"></label>\
<label>action or family (job, transition, console…)<input name=\"action\" value=\"{}\"></label><button type=\"submit\">Filter</button></form>",
        esc(tenant.unwrap_or("")),
        esc(action.unwrap_or(""))
    );
    b.push_str(&audit_table(&rows, true));
    Ok(page(&session, "Audit trail", "Audit", &b))
}

/// Audit rows as a table: when, what, subject, the stated actor, the authenticated principal,
/// why (and the tenant when `with_tenant`).
pub fn audit_table(rows: &[AuditEntry], with_tenant: bool) -> String {
    if rows.is_empty() {
        return "<p class=\"muted\">No audit rows.</p>".into();
    }
    let mut b = String::from(
        "<div class=\"table\"><table class=\"audit\"><thead><tr><th scope=\"col\">when</th><th scope=\"col\">action</th>",
    );
    if with_tenant {
        b.push_str("<th scope=\"col\">tenant</th>");
    }
    b.push_str("<th scope=\"col\">subject</th><th scope=\"col\">actor</th><th scope=\"col\">principal</th><th scope=\"col\">why</th></tr></thead><tbody>");
    for r in rows {
        let subject = if r.subject_type == "job" {
            format!(
                "job <a href=\"/console/jobs/{}\">{}</a>",
                url_part(&r.subject_id),
                esc(&r.subject_id)
            )
        } else {
            format!(
                "{} <code>{}</code>",
                esc(&r.subject_type),
                esc(&r.subject_id)
            )
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td>",
            time(r.occurred_at),
            esc(&r.action)
        );
        if with_tenant {
            let _ = write!(
                b,
                "<td>{}</td>",
                r.tenant_id.as_deref().map_or("–".into(), |t| format!(
                    "<a href=\"/console/tenants/{}\">{}</a>",
                    url_part(t),
                    esc(t)
                ))
            );
        }
        let _ = write!(
            b,
            "<td>{subject}</td><td>{}</td><td class=\"principal\">{} {}</td><td>{}</td></tr>",
            esc(&r.actor),
            esc(&r.principal),
            badge(&r.principal_role),
            esc(r.reason.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</tbody></table></div>");
    b
}
