//! The overview: what an on-call engineer looks at first — queue depth per kind and state, the
//! oldest due job, dead jobs, last hour's throughput and due-to-done latency (sparklines), grace
//! ends due in the next hour and how late the last hour's were.
//!
//! Depth is the metrics' own query ([`tierflow_queue::depth::DEPTH_SQL`], an index-only scan);
//! the rest reads partial indexes (see [`tierflow_queue::inspect`] and
//! [`tierflow_store::console::domain_overview`]). The page's server time is in its footer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use tierflow_queue::inspect;

use super::session::ConsoleSession;
use super::{duration, esc, page, sparkline, url_part};
use crate::app::AppState;

/// The states of the depth table, in the order a reader scans them.
const STATES: [&str; 5] = ["due", "running", "retrying", "scheduled", "dead"];

/// `GET /console`.
pub async fn show(State(state): State<Arc<AppState>>, session: ConsoleSession) -> super::Result {
    let started = Instant::now();
    let mut conn = state.pool.acquire().await?;
    let depth = inspect::depth(&mut conn).await?;
    let throughput = inspect::throughput_last_hour(&mut conn).await?;
    let latency = inspect::latency_last_hour(&mut conn).await?;
    let domain = tierflow_store::console::domain_overview(&mut conn).await?;
    drop(conn);

    let mut by_kind: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    let mut oldest_due: Option<f64> = None;
    for kind in tierflow_store::jobs::KINDS {
        by_kind.entry(kind).or_default();
    }
    for r in &depth {
        *by_kind
            .entry(&r.kind)
            .or_default()
            .entry(&r.state)
            .or_default() += r.jobs;
        if let Some(age) = r.oldest_due_secs {
            oldest_due = Some(oldest_due.map_or(age, |o: f64| o.max(age)));
        }
    }
    let total = |state: &str| -> f64 {
        depth
            .iter()
            .filter(|r| r.state == state)
            .fold(0.0, |n, r| n + r.jobs)
    };
    let dead = total("dead");
    let finished: i64 = throughput.iter().sum();

    let mut b = String::new();
    b.push_str("<section class=\"cards\" aria-label=\"Key figures\">");
    card(
        &mut b,
        &format!("{dead:.0}"),
        "<a href=\"/console/jobs?state=Dead\">dead jobs</a>",
        if dead > 0.0 { "bad" } else { "" },
    );
    card(&mut b, &format!("{:.0}", total("due")), "due now", "");
    card(
        &mut b,
        &oldest_due.map_or("–".into(), duration),
        "oldest due job waiting",
        if oldest_due.unwrap_or(0.0) > 60.0 {
            "warn"
        } else {
            ""
        },
    );
    card(&mut b, &format!("{:.0}", total("running")), "running", "");
    card(
        &mut b,
        &format!("{:.0}", total("retrying")),
        "waiting to retry",
        "",
    );
    card(
        &mut b,
        &domain.downgrades_due_next_hour.to_string(),
        "downgrades whose grace ends in the next hour",
        "",
    );
    card(
        &mut b,
        &domain.downgrades_past_grace.to_string(),
        "downgrades past their grace end, not yet applied",
        if domain.downgrades_past_grace > 0 {
            "warn"
        } else {
            ""
        },
    );
    card(
        &mut b,
        &domain.grace_lateness_p50_secs.map_or("–".into(), duration),
        &format!(
            "grace lateness, median of {} applied in the last hour (worst {})",
            domain.grace_ends_applied_last_hour,
            domain.grace_lateness_max_secs.map_or("–".into(), duration)
        ),
        "",
    );
    let _ = write!(
        b,
        "<div class=\"card wide\"><span class=\"n\">{finished}</span><span class=\"l\">jobs finished in the last hour (per minute)</span>{}</div>",
        sparkline(
            &throughput
                .iter()
                .map(|n| Some(*n as f64))
                .collect::<Vec<_>>(),
            "jobs finished per minute over the last hour"
        )
    );
    let _ = write!(
        b,
        "<div class=\"card wide\"><span class=\"n\">{} / {}</span><span class=\"l\">due → done, median / 95th percentile, last {} jobs (mean per minute)</span>{}</div>",
        latency.p50_secs.map_or("–".into(), duration),
        latency.p95_secs.map_or("–".into(), duration),
        latency.jobs,
        sparkline(
            &latency.per_minute,
            "mean due-to-done latency per minute over the last hour"
        )
    );
    b.push_str("</section>");

    b.push_str("<h2>Queue depth by kind and state</h2><div class=\"table\"><table><thead><tr><th scope=\"col\">kind</th>");
    for s in STATES {
        let _ = write!(b, "<th scope=\"col\" class=\"num\">{s}</th>");
    }
    b.push_str("</tr></thead><tbody>");
    for (kind, states) in &by_kind {
        let _ = write!(
            b,
            "<tr><th scope=\"row\"><a href=\"/console/jobs?kind={}\">{}</a></th>",
            url_part(kind),
            esc(kind)
        );
        for s in STATES {
            let n = states.get(s).copied().unwrap_or(0.0);
            let class = if s == "dead" && n > 0.0 { " bad" } else { "" };
            let _ = write!(b, "<td class=\"num{class}\">{n:.0}</td>");
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table></div>");
    let _ = write!(
        b,
        "<p class=\"muted\" id=\"server-time\">Read from the database in {:.1} ms. Depth is the metrics' own query; throughput and latency come from the jobs finished in the last hour.</p>",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(page(&session, "Overview", "Overview", &b))
}

fn card(b: &mut String, n: &str, label: &str, class: &str) {
    let _ = write!(
        b,
        "<div class=\"card\"><span class=\"n {class}\">{}</span><span class=\"l\">{label}</span></div>",
        esc(n)
    );
}
