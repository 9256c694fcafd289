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
