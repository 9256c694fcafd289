//! The record (issue 14) over the API and the CLI: an audit trail that names the authenticated
//! principal beside the stated actor, read back in order; operator holds that outlive
//! transitions and lift only their own flags.

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::TestApi;
use crate::support::{stderr, stdout, tierflow};

/// Every audit row of a tenant, read page by page (`limit` rows each) through the API.
async fn audit_pages(api: &TestApi, tenant: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/tenants/{tenant}/audit?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, page) = api.service(Method::GET, &path, None).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        rows.extend(items.iter().cloned());
        match page.get("next_cursor") {
            Some(c) => cursor = Some(c.as_str().unwrap().to_owned()),
            None => return rows,
        }
    }
}

fn actions(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["action"].as_str().unwrap()).collect()
}

/// A restriction's sources in an entitlement response.
fn held_by(e: &Value, restriction: &str) -> Vec<String> {
    e["restriction_sources"][restriction]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A service token that names another actor (`ops:alice`) changes the audit's `actor` but not its
/// principal: every row says which token was authenticated. The trail of a whole scenario —
/// provision, downgrade, override, hold, upgrade over the pending downgrade, release — reads
/// back in order, page by page, with principal, actor and reason; `kind` filters it, and
/// `tierflow audit --json` shows the same rows, with the CLI's own principal on its change.
#[tokio::test]
async fn the_audit_names_the_principal_and_reads_back_every_change_in_order() {
    let api = TestApi::spawn().await;
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants",
            Some(json!({"tenant_id": "acme", "tier_id": "professional", "requested_by": "ops:alice"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(
                json!({"tier_id": "starter", "grace_seconds": 3600, "reason": "plan cancelled",
                        "requested_by": "ops:alice"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let expires = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/overrides",
            Some(
                json!({"entitlement_type": "leads", "override_limit": 9000, "reason": "incident",
                        "expires_at": expires, "note": "INC-7"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/tenants/acme/holds",
            Some(json!({"name": "kyc-review", "restrictions": ["voice_disabled"], "reason": "KYC check"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "enterprise", "reason": "won back"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = api
        .admin(
            Method::DELETE,
            "/v1/tenants/acme/holds/kyc-review?reason=cleared",
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let rows = audit_pages(&api, "acme", "", 2).await;
    assert_eq!(
        actions(&rows),
        [
            "transition.provision",
            "transition.downgrade",
            "override.created",
            "hold.placed",
            "transition.cancelled",
            "transition.upgrade",
            "hold.lifted",
        ]
    );
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "write order: {ids:?}");
    let who: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap(),
                r["principal"]["name"].as_str().unwrap(),
                r["principal"]["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            ("ops:alice", "billing", "service"),
            ("ops:alice", "billing", "service"),
            ("billing", "billing", "service"),
            ("ops", "ops", "admin"),
            ("billing", "billing", "service"),
            ("billing", "billing", "service"),
            ("ops", "ops", "admin"),
        ],
        "the stated actor and the authenticated principal of each row"
    );
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("plan cancelled"),
            Some("INC-7"),
            Some("KYC check"),
            Some("won back"),
            Some("won back"),
            Some("cleared")
        ]
    );

    let holds = audit_pages(&api, "acme", "&kind=hold", 100).await;
    assert_eq!(actions(&holds), ["hold.placed", "hold.lifted"]);
    let downgrades = audit_pages(&api, "acme", "&kind=transition.downgrade", 100).await;
    assert_eq!(actions(&downgrades), ["transition.downgrade"]);
    let until = rows[3]["occurred_at"].as_str().unwrap();
    let early = audit_pages(
        &api,
        "acme",
        &format!("&until={}", until.replace('+', "%2B")),
        100,
    )
    .await;
    assert!(early.len() <= 3 && actions(&early)[0] == "transition.provision");

    for bad in ["limit=0", "cursor=abc", "kind=Transition", "kind=a.b.c"] {
        let (s, b) = api
            .service(Method::GET, &format!("/v1/tenants/acme/audit?{bad}"), None)
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    let (s, _) = api
        .service(Method::GET, "/v1/tenants/nobody/audit", None)
        .await;
    assert_eq!(s, 404);

    // The CLI: its change carries the operator's principal; `audit --json` shows every row.
    let url = api.db.url();
    let placed = tierflow(
        &url,
        &[
            "tenants",
            "hold",
            "acme",
            "--name",
            "cli-hold",
            "--restrict",
            "sla_frozen",
            "--reason",
            "audit drill",
            "--actor",
            "ops:bob",
        ],
    );
    assert!(placed.status.success(), "{}", stderr(&placed));
    let listed = tierflow(&url, &["audit", "acme", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let cli_rows: Vec<Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(cli_rows.len(), rows.len() + 1);
    assert_eq!(
        &cli_rows[..rows.len()],
        &rows[..],
        "the CLI reads the same rows"
    );
    let last = cli_rows.last().unwrap();
    assert_eq!(last["action"], "hold.placed");
    assert_eq!(last["actor"], "ops:bob");
    assert_eq!(last["principal"]["role"], "operator");
    assert!(
        last["principal"]["name"]
            .as_str()
            .unwrap()
            .starts_with("cli:"),
        "{last}"
    );
    let table = tierflow(&url, &["audit", "acme", "--kind", "hold"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert_eq!(
        text.lines().count(),
        4,
        "header and three hold rows:\n{text}"
    );
    assert!(
        text.contains("ops (admin)") && text.contains("(operator)"),
        "{text}"
    );
}

/// A hold's flags stay on through an upgrade that cancels a pending downgrade; lifting the hold
/// takes off only its own flags, never one another source (a pending downgrade) holds. Only an
/// admin token places or lifts a hold.
#[tokio::test]
async fn a_hold_outlives_an_upgrade_and_its_release_lifts_only_its_own_flags() {
    let api = TestApi::spawn().await;
    api.provision("acme", "professional").await;
    let hold =
        json!({"name": "compliance", "restrictions": ["voice_disabled"], "reason": "legal hold"});
    let (s, b) = api
        .service(Method::POST, "/v1/tenants/acme/holds", Some(hold.clone()))
        .await;
    assert_eq!(s, 403, "a service token cannot place a hold: {b}");
    let (s, b) = api
        .admin(Method::POST, "/v1/tenants/acme/holds", Some(hold.clone()))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        held_by(&b["entitlement"], "voice_disabled"),
        ["hold:compliance"]
    );
    assert_eq!(b["entitlement"]["features"]["voice"]["value"], false);
    let (s, _) = api
        .admin(Method::POST, "/v1/tenants/acme/holds", Some(hold))
        .await;
    assert_eq!(s, 409, "the same hold twice");

    // A downgrade in grace holds all four; an upgrade cancels it and lifts only its own.
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "starter", "grace_seconds": 3600})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let downgrade = format!("downgrade:{}", b["transition"]["id"].as_str().unwrap());
    assert_eq!(
        held_by(&b["entitlement"], "voice_disabled"),
        [downgrade.clone(), "hold:compliance".to_owned()]
    );
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "enterprise"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let e = &b["entitlement"];
    assert_eq!(held_by(e, "voice_disabled"), ["hold:compliance"], "{e}");
    assert!(held_by(e, "sla_frozen").is_empty(), "{e}");
    assert_eq!(e["features"]["voice"]["value"], false);

    // Released while another downgrade is in grace: voice stays off, held by the downgrade.
    let (s, b) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "starter", "grace_seconds": 3600})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let downgrade = format!("downgrade:{}", b["transition"]["id"].as_str().unwrap());
    let (s, _) = api
        .service(Method::DELETE, "/v1/tenants/acme/holds/compliance", None)
        .await;
    assert_eq!(s, 403, "a service token cannot lift a hold");
    let (s, b) = api
        .admin(Method::DELETE, "/v1/tenants/acme/holds/compliance", None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["hold"]["restrictions"], json!(["voice_disabled"]));
    let e = &b["entitlement"];
    assert_eq!(held_by(e, "voice_disabled"), [downgrade], "{e}");
    assert_eq!(e["features"]["voice"]["value"], false);
    let (s, _) = api
        .admin(Method::DELETE, "/v1/tenants/acme/holds/compliance", None)
        .await;
    assert_eq!(s, 404, "a hold lifted twice");
    let (s, b) = api
        .admin(Method::DELETE, "/v1/tenants/acme/holds/Bad%20Name", None)
        .await;
    assert_eq!(s, 400, "{b}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of an unlabelled gauge on a /metrics page.
async fn gauge(metrics: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn transition_status(pool: &sqlx::PgPool, tenant: &str) -> String {
    sqlx::query_scalar(
        "SELECT status FROM tier_transitions WHERE tenant_id = $1 AND kind = 'downgrade'",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Three downgrades whose grace ended three minutes ago lost their `apply_downgrade` job in the
/// three ways the queue cannot see as wrong: cancelled by hand, pruned, dead. A worker's
/// reconciler re-drives the cancelled one and re-enqueues the pruned one (both become effective)
/// and reports the dead one: `tierflow_transitions_stranded` and
/// `tierflow_transitions_pending_past_grace` are 1 on /metrics and an ERROR line says what to do;
/// once an operator re-drives it, it applies and the gauges go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_puts_stranded_downgrades_back_and_reports_dead_ones() {
    use std::sync::Arc;
    use tierflow_domain::ManualClock;
    use tierflow_domain::ids::{Actor, TenantId, TierId};
    use tierflow_domain::transition::{GracePeriod, Target};
    use tierflow_store::transitions::{ProvisionRequest, provision_tenant};
    use tierflow_store::{Context, TransitionRequest, submit_transition};

    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = tierflow_testdb::TestDb::new().await;
    let pool = db.pool().clone();
    // Requested five minutes ago with a two-minute grace.
    let clock = Arc::new(ManualClock::new(
        chrono::Utc::now() - chrono::Duration::minutes(5),
    ));
    let ctx = Context::new(clock);
    let mut jobs = std::collections::HashMap::new();
    for t in ["cancelled", "pruned", "dead"] {
        let mut conn = pool.acquire().await.unwrap();
        provision_tenant(
            &mut conn,
            &ctx,
            ProvisionRequest {
                tenant_id: TenantId::parse(t).unwrap(),
                tier_id: TierId::parse("professional").unwrap(),
                reason: None,
                requested_by: Actor::parse("test").unwrap(),
            },
        )
        .await
        .unwrap();
        let out = submit_transition(
            &pool,
            &ctx,
            TransitionRequest {
                tenant_id: TenantId::parse(t).unwrap(),
                target: Target::Tier(TierId::parse("starter").unwrap()),
                grace: Some(GracePeriod::from_secs(120).unwrap()),
                reason: None,
                requested_by: Actor::parse("test").unwrap(),
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
        let apply = out
            .jobs
            .iter()
            .find(|j| j.kind == "apply_downgrade")
            .unwrap();
        jobs.insert(t, apply.job_id.clone());
    }
    let set = |sql: &'static str, id: String| {
        let pool = pool.clone();
        async move {
            let n = sqlx::query(sql).bind(id).execute(&pool).await.unwrap();
            assert_eq!(n.rows_affected(), 1);
        }
    };
    set(
        "UPDATE apalis.jobs SET status = 'Cancelled', done_at = now(), last_result = '{\"Err\": \"cancelled by an operator\"}' WHERE id = $1",
        jobs["cancelled"].clone(),
    )
    .await;
    set(
        "DELETE FROM apalis.jobs WHERE id = $1",
        jobs["pruned"].clone(),
    )
    .await;
    set(
        "UPDATE apalis.jobs SET status = 'Dead', attempts = max_attempts, done_at = now(), last_result = '{\"Err\": \"boom\"}' WHERE id = $1",
        jobs["dead"].clone(),
    )
    .await;

    let metrics = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!("tierflow-reconciler-{}.log", std::process::id()));
    let mut worker = crate::support::WorkerProc::start_logged(
        &db.url(),
        "rec-1",
        &[
            ("TIERFLOW_METRICS_LISTEN", metrics.as_str()),
            ("TIERFLOW_RECONCILE_INTERVAL_SECS", "1"),
        ],
        &log,
    );
    crate::support::wait_until(
        std::time::Duration::from_secs(30),
        "the cancelled and the pruned downgrade to apply",
        || async {
            let a = transition_status(&pool, "cancelled").await;
            let b = transition_status(&pool, "pruned").await;
            (a == "effective" && b == "effective").then_some(())
        },
    )
    .await;
    crate::support::wait_until(
        std::time::Duration::from_secs(30),
        "the stranded gauge to show the dead one",
        || async {
            let stranded = gauge(&metrics, "tierflow_transitions_stranded").await?;
            let late = gauge(&metrics, "tierflow_transitions_pending_past_grace").await?;
            (stranded == 1.0 && late == 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(transition_status(&pool, "dead").await, "pending");
    let dead_status: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(&jobs["dead"])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dead_status, "Dead", "a dead job is reported, not re-driven");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("stranded in grace")
            && l.contains("ERROR")
            && l.contains(&jobs["dead"])),
        "{text}"
    );
    assert!(text.contains("put back on the queue"), "{text}");

    // The operator re-drives it (`tierflow jobs retry` is this call; tests/e2e/cli.rs runs it).
    let mut conn = pool.acquire().await.unwrap();
    let retried = tierflow_queue::admin::retry(&mut conn, &jobs["dead"])
        .await
        .unwrap();
    assert!(retried.is_ok(), "{retried:?}");
    drop(conn);
    crate::support::wait_until(
        std::time::Duration::from_secs(30),
        "the re-driven downgrade to apply and the gauges to clear",
        || async {
            let done = transition_status(&pool, "dead").await == "effective";
            let stranded = gauge(&metrics, "tierflow_transitions_stranded").await?;
            let late = gauge(&metrics, "tierflow_transitions_pending_past_grace").await?;
            (done && stranded == 0.0 && late == 0.0).then_some(())
        },
    )
    .await;
    crate::fleet::assert_consistent(&pool).await;
    assert!(worker.terminate());
    let _ = std::fs::remove_file(&log);
}
