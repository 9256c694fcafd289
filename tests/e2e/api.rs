//! The HTTP API against a real server process and a real PostgreSQL: every route, every error
//! class, both roles, idempotency, pagination, the OpenAPI document, request ids, and the whole
//! flow with `tierflow run`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{ADMIN, SERVICE, TestApi, json as body_of};
use crate::support::wait_until;

const PROBLEM: &str = "https://tierflow.dev/problems/";

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches(PROBLEM)
}

async fn transitions_count(api: &TestApi) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tier_transitions")
        .fetch_one(api.db.pool())
        .await
        .unwrap()
}

/// The same Idempotency-Key and body replays the first result (200, header and body marked); the
/// same key with another body is a 409 of its own type.
#[tokio::test]
async fn idempotent_replay_and_conflict() {
    let api = TestApi::spawn().await;
    api.provision("acme", "professional").await;
    let send = |body: Value| {
        api.http
            .post(format!("{}/v1/tenants/acme/transitions", api.base))
            .bearer_auth(SERVICE)
            .header("Idempotency-Key", "billing-42")
            .json(&body)
            .send()
    };
    let first = send(json!({"tier_id": "starter", "grace_seconds": 3600}))
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (_, first) = body_of(first).await;
    assert_eq!(first["jobs"].as_array().unwrap().len(), 3);

    let again = send(json!({"tier_id": "starter", "grace_seconds": 3600}))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (_, again) = body_of(again).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["transition"], first["transition"]);

    let other = send(json!({"tier_id": "free", "grace_seconds": 3600}))
        .await
        .unwrap();
    let (status, body) = body_of(other).await;
    assert_eq!((status, problem_type(&body)), (409, "idempotency-conflict"));
    assert_eq!(
        transitions_count(&api).await,
        2,
        "provision + the one downgrade"
    );
}

/// Every route answers its documented success for the role allowed to call it, and admin-only
/// routes refuse a service token with 403.
#[tokio::test]
async fn every_route_works_for_its_roles() {
    let api = TestApi::spawn().await;
    api.provision("acme", "professional").await;
    let (s, e) = api
        .service(Method::GET, "/v1/tenants/acme/entitlement", None)
        .await;
    assert_eq!((s, e["tier_id"].as_str()), (200, Some("professional")));

    let (s, t) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "starter", "grace_seconds": 600})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(
        t["transition"]["requested_by"], "billing",
        "the token's name is the default actor"
    );
    let id = t["transition"]["id"].as_str().unwrap().to_owned();
    let (s, page) = api
        .service(Method::GET, "/v1/tenants/acme/transitions", None)
        .await;
    assert_eq!((s, page["items"].as_array().unwrap().len()), (200, 2));
    let (s, c) = api
        .service(
            Method::POST,
            &format!("/v1/tenants/acme/transitions/{id}/cancel"),
            Some(json!({"reason": "customer stayed"})),
        )
        .await;
    assert_eq!(
        (s, c["transition"]["status"].as_str()),
        (200, Some("cancelled")),
        "{c}"
    );

    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (s, o) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/overrides",
            Some(json!({"entitlement_type": "voice", "override_limit": 5000, "reason": "incident", "expires_at": expires})),
        )
        .await;
    assert_eq!(s, 201, "{o}");
    assert_eq!(o["entitlement"]["limits"]["voice"]["value"], 5000);
    let oid = o["override"]["override_id"].as_str().unwrap().to_owned();
    let (s, r) = api
        .service(
            Method::DELETE,
            &format!("/v1/tenants/acme/overrides/{oid}"),
            None,
        )
        .await;
    assert_eq!(
        (s, r["entitlement"]["limits"]["voice"]["value"].as_i64()),
        (200, Some(1000))
    );

    let (s, tiers) = api.service(Method::GET, "/v1/tiers", None).await;
    assert_eq!((s, tiers.as_array().unwrap().len()), (200, 4));
    let tier = json!({"name": "Team", "category": "paid", "rank": 20, "features": {"voice": true}, "limits": {"leads": 5000}});
    let (s, b) = api
        .service(Method::PUT, "/v1/tiers/team", Some(tier.clone()))
        .await;
    assert_eq!((s, problem_type(&b)), (403, "forbidden"));
    let (s, _) = api
        .admin(Method::PUT, "/v1/tiers/team", Some(tier.clone()))
        .await;
    assert_eq!(s, 201);
    let (s, _) = api.admin(Method::PUT, "/v1/tiers/team", Some(tier)).await;
    assert_eq!(s, 200, "a second PUT replaces");

    let (s, jobs) = api
        .service(
            Method::GET,
            "/v1/jobs?state=Cancelled&kind=apply_downgrade",
            None,
        )
        .await;
    assert_eq!((s, jobs.as_array().unwrap().len()), (200, 1));
    let job = jobs[0]["id"].as_str().unwrap().to_owned();
    let (s, b) = api
        .service(Method::POST, &format!("/v1/jobs/{job}/retry"), None)
        .await;
    assert_eq!((s, problem_type(&b)), (403, "forbidden"));
    let (s, b) = api
        .admin(Method::POST, &format!("/v1/jobs/{job}/retry"), None)
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("Pending")), "{b}");
    let (s, b) = api
        .admin(Method::POST, &format!("/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("Cancelled")), "{b}");
    let (s, b) = api
        .admin(Method::POST, &format!("/v1/jobs/{job}/cancel"), None)
        .await;
    assert_eq!((s, problem_type(&b)), (409, "state-conflict"));
    let (s, b) = api.admin(Method::POST, "/v1/jobs/nope/retry", None).await;
    assert_eq!((s, problem_type(&b)), (404, "not-found"));

    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let r = api.call(Method::GET, path, None, None).await;
        assert_eq!(r.status(), 200, "{path} needs no token");
    }
}

/// Webhook endpoints through the admin API: a service token is refused; create returns the
/// secret once (reads never show it), changes then enqueue a delivery for the endpoint; disable,
/// enable and rotate work and are audited; bad input is a 422 that creates nothing.
#[tokio::test]
async fn webhook_endpoints_are_managed_by_admins() {
    let api = TestApi::spawn().await;
    let body = json!({"url": "https://hooks.example.com/tierflow", "description": "billing", "event_types": ["entitlement.changed"]});
    let (s, b) = api
        .service(Method::POST, "/v1/webhook-endpoints", Some(body.clone()))
        .await;
    assert_eq!((s, problem_type(&b)), (403, "forbidden"));
    let (s, created) = api
        .admin(Method::POST, "/v1/webhook-endpoints", Some(body))
        .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = created["endpoint"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["endpoint"]["status"], "enabled");

    for bad in [
        json!({"url": "ftp://x"}),
        json!({"url": "https://x", "event_types": ["tenant.deleted"]}),
        json!({"url": "https://user:pw@x/"}),
    ] {
        let (s, b) = api
            .admin(Method::POST, "/v1/webhook-endpoints", Some(bad.clone()))
            .await;
        assert_eq!(
            (s, problem_type(&b)),
            (422, "validation-failed"),
            "{bad}: {b}"
        );
    }
    let (s, list) = api.admin(Method::GET, "/v1/webhook-endpoints", None).await;
    assert_eq!((s, list["items"].as_array().unwrap().len()), (200, 1));
    assert!(
        !list.to_string().contains(&secret[6..]),
        "a read shows no secret"
    );

    api.provision("acme", "professional").await;
    let deliveries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'deliver_event'
            AND convert_from(job, 'UTF8')::jsonb ->> 'endpoint_id' = $1",
    )
    .bind(&id)
    .fetch_one(api.db.pool())
    .await
    .unwrap();
    assert_eq!(
        deliveries, 1,
        "the provision's event is queued for the endpoint"
    );

    for (method, path) in [
        (Method::GET, "/v1/webhook-endpoints".to_owned()),
        (Method::GET, format!("/v1/webhook-endpoints/{id}")),
        (Method::PATCH, format!("/v1/webhook-endpoints/{id}")),
        (Method::POST, format!("/v1/webhook-endpoints/{id}/disable")),
        (Method::POST, format!("/v1/webhook-endpoints/{id}/enable")),
        (
            Method::POST,
            format!("/v1/webhook-endpoints/{id}/rotate-secret"),
        ),
    ] {
        let (s, b) = api.service(method.clone(), &path, Some(json!({}))).await;
        assert_eq!((s, problem_type(&b)), (403, "forbidden"), "{method} {path}");
    }
    let (s, e) = api
        .admin(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{id}"),
            Some(json!({"url": "https://hooks.example.com/v2?token=abc"})),
        )
        .await;
    assert_eq!(
        (s, e["url"].as_str()),
        (200, Some("https://hooks.example.com/v2?token=abc")),
        "{e}"
    );
    let (s, e) = api
        .admin(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/disable?reason=maintenance"),
            None,
        )
        .await;
    assert_eq!(
        (s, e["status"].as_str(), e["disabled_reason"].as_str()),
        (200, Some("disabled"), Some("maintenance"))
    );
    let (s, e) = api
        .admin(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/enable"),
            None,
        )
        .await;
    assert_eq!((s, e["status"].as_str()), (200, Some("enabled")));
    let (s, r) = api
        .admin(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/rotate-secret?overlap_seconds=60"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_ne!(r["secret"], created["secret"]);
    assert!(r["endpoint"]["previous_secret_expires_at"].is_string());
    // A second rotation during the overlap would drop a secret receivers may still use.
    let (s, b) = api
        .admin(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!((s, problem_type(&b)), (409, "state-conflict"), "{b}");
    let rotated = r["secret"].as_str().unwrap().to_owned();
    let (s, b) = api
        .admin(
            Method::POST,
            &format!("/v1/webhook-endpoints/{id}/rotate-secret?overlap_seconds=-1"),
            None,
        )
        .await;
    assert_eq!((s, problem_type(&b)), (422, "validation-failed"));
    let (s, b) = api
        .admin(Method::GET, "/v1/webhook-endpoints/not-a-uuid", None)
        .await;
    assert_eq!((s, problem_type(&b)), (400, "malformed-request"));
    let (s, b) = api
        .admin(
            Method::GET,
            "/v1/webhook-endpoints/0190a0a0-0000-7000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!((s, problem_type(&b)), (404, "not-found"));

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_events WHERE subject_type = 'webhook_endpoint' ORDER BY id",
    )
    .fetch_all(api.db.pool())
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "webhook_endpoint.created",
            "webhook_endpoint.updated",
            "webhook_endpoint.disabled",
            "webhook_endpoint.enabled",
            "webhook_endpoint.secret_rotated"
        ]
    );
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT details::text FROM audit_events WHERE subject_type = 'webhook_endpoint'",
    )
    .fetch_all(api.db.pool())
    .await
    .unwrap();
    for secret in [&secret, &rotated] {
        assert!(
            !details.iter().any(|d| d.contains(&secret[6..])),
            "a secret is in an audit row"
        );
        assert!(
            !api.log_lines().iter().any(|l| l.contains(&secret[6..])),
            "a secret is in the log"
        );
    }
    assert!(
        !details.iter().any(|d| d.contains("token=abc")),
        "a URL's query is not audited"
    );
}

/// Every route but health refuses a missing or wrong token with 401 and `WWW-Authenticate`.
#[tokio::test]
async fn missing_or_wrong_token_is_401_everywhere() {
    let api = TestApi::spawn().await;
    let routes = [
        (Method::POST, "/v1/tenants"),
        (Method::GET, "/v1/tenants/acme/entitlement"),
        (Method::POST, "/v1/tenants/acme/transitions"),
        (Method::GET, "/v1/tenants/acme/transitions"),
        (
            Method::POST,
            "/v1/tenants/acme/transitions/0190a0a0-0000-7000-8000-000000000000/cancel",
        ),
        (Method::POST, "/v1/tenants/acme/overrides"),
        (
            Method::DELETE,
            "/v1/tenants/acme/overrides/0190a0a0-0000-7000-8000-000000000000",
        ),
        (Method::GET, "/v1/tenants/acme/audit"),
        (Method::POST, "/v1/tenants/acme/holds"),
        (Method::DELETE, "/v1/tenants/acme/holds/kyc"),
        (Method::POST, "/v1/test-clocks"),
        (
            Method::GET,
            "/v1/test-clocks/0190a0a0-0000-7000-8000-000000000000",
        ),
        (
            Method::DELETE,
            "/v1/test-clocks/0190a0a0-0000-7000-8000-000000000000",
        ),
        (
            Method::POST,
            "/v1/test-clocks/0190a0a0-0000-7000-8000-000000000000/advance",
        ),
        (Method::GET, "/v1/tiers"),
        (Method::PUT, "/v1/tiers/team"),
        (Method::GET, "/v1/jobs"),
        (Method::POST, "/v1/jobs/x/retry"),
        (Method::POST, "/v1/jobs/x/cancel"),
        (Method::POST, "/v1/webhook-endpoints"),
        (Method::GET, "/v1/webhook-endpoints"),
        (
            Method::GET,
            "/v1/webhook-endpoints/0190a0a0-0000-7000-8000-000000000000",
        ),
        (
            Method::PATCH,
            "/v1/webhook-endpoints/0190a0a0-0000-7000-8000-000000000000",
        ),
        (
            Method::POST,
            "/v1/webhook-endpoints/0190a0a0-0000-7000-8000-000000000000/disable",
        ),
        (
            Method::POST,
            "/v1/webhook-endpoints/0190a0a0-0000-7000-8000-000000000000/enable",
        ),
        (
            Method::POST,
            "/v1/webhook-endpoints/0190a0a0-0000-7000-8000-000000000000/rotate-secret",
        ),
    ];
    for (method, path) in routes {
        for token in [None, Some("not-a-real-token-at-all"), Some("")] {
            let r = api.call(method.clone(), path, token, None).await;
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
    }
    // A token for one role is not valid as a prefix or with another scheme.
    let r = api
        .http
        .get(format!("{}/v1/tiers", api.base))
        .header("Authorization", format!("Basic {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Each error class has its status and stable type, says what was wrong, and changes nothing.
#[tokio::test]
async fn every_error_class_is_a_problem_document_and_changes_nothing() {
    let api = TestApi::spawn().await;
    api.provision("acme", "professional").await;
    let before = transitions_count(&api).await;
    let post = |path: &str, body: &str, ctype: &str| {
        api.http
            .post(format!("{}{path}", api.base))
            .bearer_auth(SERVICE)
            .header("content-type", ctype.to_owned())
            .body(body.to_owned())
            .send()
    };
    let t = "/v1/tenants/acme/transitions";
    let cases: Vec<(reqwest::Response, u16, &str, &str)> = vec![
        (post(t, "{\"tier_id\": ", "application/json").await.unwrap(), 400, "malformed-request", "EOF"),
        (post(t, "{\"tier_id\":\"starter\"}", "text/plain").await.unwrap(), 415, "unsupported-media-type", "application/json"),
        (post(t, &format!("{{\"tier_id\":\"starter\",\"reason\":\"{}\"}}", "x".repeat(70_000)), "application/json").await.unwrap(), 413, "payload-too-large", "at most 65536 bytes"),
        (post(t, "{\"tier_id\":\"starter\",\"colour\":\"red\"}", "application/json").await.unwrap(), 422, "validation-failed", "unknown field `colour`"),
        (post(t, "{\"tier_id\":42}", "application/json").await.unwrap(), 422, "validation-failed", "invalid type"),
        (post(t, "{\"tier_id\":\"starter\",\"grace_seconds\":-1}", "application/json").await.unwrap(), 422, "validation-failed", "cannot be negative"),
        (post(t, "{\"tier_id\":\"starter\",\"grace_seconds\":99999999}", "application/json").await.unwrap(), 422, "validation-failed", "at most 7776000"),
        (post(t, "{\"tier_id\":\"starter\",\"action\":\"suspend\"}", "application/json").await.unwrap(), 422, "validation-failed", "exactly one"),
        (post(t, "{\"tier_id\":\"Pro Plan\"}", "application/json").await.unwrap(), 422, "validation-failed", "lowercase"),
        (post(t, "{\"tier_id\":\"platinum\"}", "application/json").await.unwrap(), 404, "not-found", "tier 'platinum' is not known"),
        (post("/v1/tenants/nobody/transitions", "{\"tier_id\":\"starter\"}", "application/json").await.unwrap(), 404, "not-found", "tenant 'nobody'"),
        (post("/v1/tenants/bad%20id/transitions", "{\"tier_id\":\"starter\"}", "application/json").await.unwrap(), 400, "malformed-request", "tenant_id"),
        (post(t, "{\"tier_id\":\"professional\"}", "application/json").await.unwrap(), 409, "state-conflict", "already on tier"),
        (post("/v1/tenants", "{\"tenant_id\":\"acme\",\"tier_id\":\"free\"}", "application/json").await.unwrap(), 409, "state-conflict", "already exists"),
        (post("/v1/tenants/acme/transitions/not-a-uuid/cancel", "", "application/json").await.unwrap(), 400, "malformed-request", "not a UUID"),
        (post("/v1/tenants/acme/transitions/0190a0a0-0000-7000-8000-000000000000/cancel", "", "application/json").await.unwrap(), 404, "not-found", "not known"),
        (post("/v1/nowhere", "{}", "application/json").await.unwrap(), 404, "not-found", "no such route"),
        (api.http.delete(format!("{}{t}", api.base)).bearer_auth(SERVICE).send().await.unwrap(), 405, "method-not-allowed", "method"),
        (api.http.get(format!("{}{t}?limit=0", api.base)).bearer_auth(SERVICE).send().await.unwrap(), 400, "malformed-request", "use 1 to 200"),
        (api.http.get(format!("{}{t}?cursor=garbage", api.base)).bearer_auth(SERVICE).send().await.unwrap(), 400, "malformed-request", "cursor"),
        (api.http.get(format!("{}/v1/jobs?state=Exploded", api.base)).bearer_auth(SERVICE).send().await.unwrap(), 400, "malformed-request", "unknown state"),
        (post("/v1/tenants/acme/overrides", "{\"entitlement_type\":\"sms\",\"override_limit\":1,\"reason\":\"incident\",\"expires_at\":\"2030-01-01T00:00:00Z\"}", "application/json").await.unwrap(), 422, "validation-failed", "leads, scoring"),
        (post("/v1/tenants/acme/overrides", "{\"entitlement_type\":\"voice\",\"override_limit\":1,\"reason\":\"incident\",\"expires_at\":\"2020-01-01T00:00:00Z\"}", "application/json").await.unwrap(), 422, "validation-failed", "after now"),
    ];
    for (response, status, kind, says) in cases {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let (got, body) = body_of(response).await;
        assert_eq!((got, problem_type(&body)), (status, kind), "{body}");
        assert_eq!(body["status"], status);
        let detail = body["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(says),
            "{status} {kind}: {detail:?} should mention {says:?}"
        );
    }
    assert_eq!(
        transitions_count(&api).await,
        before,
        "no refused request changed anything"
    );
}

/// Garbage in bodies, paths, queries and headers gets a 4xx, never a 5xx.
#[tokio::test]
async fn no_input_produces_a_5xx() {
    let api = TestApi::spawn().await;
    api.provision("acme", "professional").await;
    let bodies = [
        "",
        "null",
        "[]",
        "{}",
        "\"x\"",
        "{\"tier_id\":null}",
        "{\"tier_id\":\"\"}",
        "{\"tier_id\":\"starter\",\"grace_seconds\":1e99}",
        "{\"tier_id\":\"starter\",\"grace_seconds\":\"60\"}",
        "{\"action\":\"explode\"}",
        "{\"tier_id\":\"\\u0000\"}",
        "{\"tenant_id\":\"a\",\"tier_id\":\"free\",\"requested_by\":\"\"}",
        "{\"entitlement_type\":\"voice\"}",
        "{\"name\":\"\",\"category\":\"paid\",\"rank\":1,\"features\":{},\"limits\":{\"x\":-1}}",
    ];
    let paths = [
        (Method::POST, "/v1/tenants"),
        (Method::POST, "/v1/tenants/acme/transitions"),
        (Method::POST, "/v1/tenants/%FF/transitions"),
        (Method::POST, "/v1/tenants/acme/overrides"),
        (Method::PUT, "/v1/tiers/x"),
        (Method::PUT, "/v1/tiers/UPPER"),
        (
            Method::POST,
            "/v1/tenants/acme/transitions/0190a0a0-0000-7000-8000-000000000000/cancel",
        ),
        (Method::GET, "/v1/tenants/acme/transitions?limit=abc"),
        (Method::GET, "/v1/jobs?limit=-5&unknown=1"),
    ];
    for (method, path) in &paths {
        for body in bodies {
            let r = api
                .http
                .request(method.clone(), format!("{}{path}", api.base))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "k")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(
                r.status().as_u16() < 500,
                "{method} {path} {body:?} → {}",
                r.status()
            );
        }
    }
}

/// History is newest first and cursor-paginated with no row twice and none missing.
#[tokio::test]
async fn history_is_cursor_paginated() {
    let api = TestApi::spawn().await;
    api.provision("acme", "free").await;
    for tier in [
        "starter",
        "professional",
        "enterprise",
        "starter",
        "free",
        "professional",
        "starter",
    ] {
        let (s, b) = api
            .service(
                Method::POST,
                "/v1/tenants/acme/transitions",
                Some(json!({"tier_id": tier, "grace_seconds": 0})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants/acme/transitions?limit=3&cursor={c}"),
            None => "/v1/tenants/acme/transitions?limit=3".to_owned(),
        };
        let (s, page) = api.service(Method::GET, &path, None).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["tenant_version"].as_i64().unwrap());
        }
        match page.get("next_cursor") {
            Some(c) => cursor = Some(c.as_str().expect("a cursor is a string").to_owned()),
            // The last page has no cursor at all (documented as absent, not null).
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (1..=8).rev().collect::<Vec<i64>>(),
        "newest first, each once"
    );
    let (s, b) = api
        .service(Method::GET, "/v1/tenants/nobody/transitions", None)
        .await;
    assert_eq!((s, problem_type(&b)), (404, "not-found"));
}

/// The served OpenAPI document is valid OpenAPI 3 (checked by openapi-spec-validator), documents
/// exactly the routes of the issue, and every documented operation is served.
#[tokio::test]
async fn openapi_document_is_valid_and_matches_the_router() {
    let api = TestApi::spawn().await;
    let r = api.call(Method::GET, "/openapi.json", None, None).await;
    let text = r.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let file = std::env::temp_dir().join(format!("tierflow-openapi-{}.json", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    let validated = std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator is installed (`pip install openapi-spec-validator`; .ci/run does it)");
    let _ = std::fs::remove_file(&file);
    assert!(
        validated.status.success(),
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/tenants/{tenant_id}/entitlement"),
        ("POST", "/v1/tenants/{tenant_id}/transitions"),
        ("GET", "/v1/tenants/{tenant_id}/transitions"),
        (
            "POST",
            "/v1/tenants/{tenant_id}/transitions/{transition_id}/cancel",
        ),
        ("POST", "/v1/tenants/{tenant_id}/overrides"),
        ("DELETE", "/v1/tenants/{tenant_id}/overrides/{override_id}"),
        ("GET", "/v1/tenants/{tenant_id}/audit"),
        ("POST", "/v1/tenants/{tenant_id}/holds"),
        ("DELETE", "/v1/tenants/{tenant_id}/holds/{name}"),
        ("POST", "/v1/test-clocks"),
        ("GET", "/v1/test-clocks/{clock_id}"),
        ("DELETE", "/v1/test-clocks/{clock_id}"),
        ("POST", "/v1/test-clocks/{clock_id}/advance"),
        ("GET", "/v1/tiers"),
        ("PUT", "/v1/tiers/{tier_id}"),
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs/{job_id}/retry"),
        ("POST", "/v1/jobs/{job_id}/cancel"),
        ("POST", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints/{endpoint_id}"),
        ("PATCH", "/v1/webhook-endpoints/{endpoint_id}"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/disable"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/enable"),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Every documented operation is served: the router answers something other than its
    // "no such route" or "method not allowed" fallbacks.
    for (method, path) in &documented {
        let concrete = path
            .replace("{tenant_id}", "acme")
            .replace("{transition_id}", "0190a0a0-0000-7000-8000-000000000000")
            .replace("{override_id}", "0190a0a0-0000-7000-8000-000000000000")
            .replace("{tier_id}", "team")
            .replace("{name}", "kyc")
            .replace("{clock_id}", "0190a0a0-0000-7000-8000-000000000000")
            .replace("{endpoint_id}", "0190a0a0-0000-7000-8000-000000000000")
            .replace("{job_id}", "x");
        let r = api
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                Some(ADMIN),
                None,
            )
            .await;
        let (status, body) = body_of(r).await;
        let fallback = body["detail"].as_str().is_some_and(|d| {
            d.contains("no such route") || d.contains("does not take that method")
        });
        assert!(
            !fallback && status != 405,
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
}

/// A request id is accepted from X-Request-Id, or generated, and returned either way.
#[tokio::test]
async fn request_ids_are_accepted_or_generated_and_returned() {
    let api = TestApi::spawn().await;
    let r = api
        .http
        .get(format!("{}/healthz", api.base))
        .header("X-Request-Id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-123");
    let r = api
        .http
        .get(format!("{}/v1/tiers", api.base))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

/// `tierflow run` serves the API and runs the jobs: a downgrade requested over HTTP with a 1 s
/// grace is applied by the worker in the same process.
#[tokio::test]
async fn run_serves_the_api_and_applies_the_downgrade() {
    let api = TestApi::spawn_cmd(
        "run",
        &[
            ("TIERFLOW_HEARTBEAT_INTERVAL_MS", "200"),
            ("TIERFLOW_RESCUE_AFTER_SECS", "1"),
        ],
    )
    .await;
    api.provision("acme", "professional").await;
    let (s, t) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "starter", "grace_seconds": 1})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(
        t["entitlement"]["restrictions"]["voice_disabled"], true,
        "voice off at once"
    );
    let e = wait_until(
        Duration::from_secs(10),
        "the downgrade to apply",
        || async {
            let (_, e) = api
                .service(Method::GET, "/v1/tenants/acme/entitlement", None)
                .await;
            (e["tier_id"] == "starter").then_some(e)
        },
    )
    .await;
    assert!(e["pending_downgrade"].is_null());
    assert_eq!(
        e["restrictions"]["voice_disabled"], false,
        "grace holds lifted; starter has no voice anyway"
    );
    assert_eq!(e["features"]["voice"]["value"], false);
}

/// Input is checked at the edge before it reaches SQL or a log line: a NUL in a job filter or a
/// job id is a 422 (not a 500 from PostgreSQL), tenant ids that are dot segments are refused, a
/// caller's `X-Request-Id` outside a short safe alphabet is replaced (it is repeated in every log
/// line of the request), and the auth scheme is matched case-insensitively.
#[tokio::test]
async fn input_is_strict_at_the_edge() {
    let api = TestApi::spawn().await;
    for (method, path, token) in [
        (Method::GET, "/v1/jobs?kind=%00", SERVICE),
        (Method::GET, "/v1/jobs?kind=apply%01downgrade", SERVICE),
        (Method::POST, "/v1/jobs/%00/retry", ADMIN),
        (Method::POST, "/v1/jobs/%00/cancel", ADMIN),
    ] {
        let (status, body) = body_of(api.call(method.clone(), path, Some(token), None).await).await;
        assert_eq!(status, 422, "{method} {path}: {body}");
        assert_eq!(
            problem_type(&body),
            "validation-failed",
            "{method} {path}: {body}"
        );
    }
    // A NUL in any body field or query value is refused before SQL sees it, and nothing about it
    // is logged at ERROR.
    api.provision("acme", "professional").await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for (method, path, token, body) in [
        (
            Method::POST,
            "/v1/tenants",
            SERVICE,
            Some(json!({"tenant_id": "a\u{0}b", "tier_id": "starter"})),
        ),
        (
            Method::POST,
            "/v1/tenants",
            SERVICE,
            Some(json!({"tenant_id": "ok", "tier_id": "starter", "reason": "x\u{0}"})),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/transitions",
            SERVICE,
            Some(json!({"tier_id": "starter", "reason": "\u{0}"})),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/transitions",
            SERVICE,
            Some(json!({"tier_id": "starter", "requested_by": "a\u{0}"})),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/overrides",
            SERVICE,
            Some(
                json!({"entitlement_type": "leads", "override_limit": 1, "reason": "incident", "expires_at": soon, "note": "\u{0}"}),
            ),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/holds",
            ADMIN,
            Some(json!({"name": "h\u{0}", "reason": "r"})),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/holds",
            ADMIN,
            Some(json!({"name": "h", "reason": "\u{0}"})),
        ),
        (
            Method::POST,
            "/v1/test-clocks",
            SERVICE,
            Some(json!({"name": "c\u{0}"})),
        ),
        (
            Method::GET,
            "/v1/tenants/acme/audit?kind=%00",
            SERVICE,
            None,
        ),
    ] {
        let (status, body) = body_of(api.call(method.clone(), path, Some(token), body).await).await;
        assert!(
            matches!(status, 400 | 422),
            "{method} {path}: {status} {body}"
        );
    }
    assert!(!api.lines_at("INFO").is_empty(), "the log is read");
    assert_eq!(
        api.lines_at("ERROR"),
        Vec::<String>::new(),
        "nothing logged at ERROR"
    );
    // A client library resolves `%2E%2E` before sending (reqwest turns this path into
    // `/v1/entitlement`), which is why such ids are refused; sent as written, the path id is
    // refused like any malformed path (400), saying why.
    for path in [
        "/v1/tenants/%2E%2E/entitlement",
        "/v1/tenants/./transitions",
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(api.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SERVICE}\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut reply = String::new();
        sock.read_to_string(&mut reply).await.unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 400") && reply.contains("path segment"),
            "{path}: {reply}"
        );
    }
    for tenant in [".", ".."] {
        let (status, body) = api
            .service(
                Method::POST,
                "/v1/tenants",
                Some(json!({"tenant_id": tenant, "tier_id": "starter"})),
            )
            .await;
        assert_eq!(status, 422, "tenant {tenant:?}: {body}");
    }
    let tier = |name: &str, features: Value, limits: Value, metadata: Value| {
        json!({"name": name, "category": "paid", "rank": 5, "features": features,
               "limits": limits, "metadata": metadata})
    };
    for (field, body) in [
        ("name", tier("a\u{0}b", json!({}), json!({}), json!({}))),
        (
            "features",
            tier("n", json!({"vo\u{0}ice": true}), json!({}), json!({})),
        ),
        (
            "limits",
            tier("n", json!({}), json!({"le\u{1}ads": 5}), json!({})),
        ),
        (
            "metadata",
            tier("n", json!({}), json!({}), json!({"k": ["\u{0}"]})),
        ),
    ] {
        let (status, problem) = api
            .admin(Method::PUT, "/v1/tiers/nul-test", Some(body))
            .await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_entitlements")
        .fetch_one(api.db.pool())
        .await
        .unwrap();
    assert_eq!(
        listed, 1,
        "a refused request changed something (acme is the one provisioned)"
    );
    let tiers: i64 = sqlx::query_scalar("SELECT count(*) FROM tiers WHERE tier_id = 'nul-test'")
        .fetch_one(api.db.pool())
        .await
        .unwrap();
    assert_eq!(tiers, 0, "a refused tier was written");

    // The scheme is case-insensitive.
    let r = api
        .http
        .get(format!("{}/v1/tiers", api.base))
        .header("authorization", format!("bearer {SERVICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Request ids: a safe one comes back as sent; a forged or oversized one is replaced.
    let echoed = |id: String| {
        let api = &api;
        async move {
            let r = api
                .http
                .get(format!("{}/v1/tiers", api.base))
                .bearer_auth(SERVICE)
                .header("x-request-id", &id)
                .send()
                .await
                .unwrap();
            let back = r.headers()["x-request-id"].to_str().unwrap().to_owned();
            (id, back)
        }
    };
    let (sent, back) = echoed("req-42.retry:1".into()).await;
    assert_eq!(back, sent);
    for forged in [
        "x\" level=ERROR message=\"forged".to_owned(),
        "a".repeat(8192),
        "semi;colon".to_owned(),
    ] {
        let (sent, back) = echoed(forged).await;
        assert_ne!(back, sent, "an unsafe request id was kept");
        assert!(
            back.len() <= 128 && back.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{back}"
        );
    }
}

/// A pending downgrade's own jobs cannot be cancelled on their own (that would strand the tenant
/// in grace with its restrictions on): the refusal points at the transition's cancel, the job is
/// left as it was, and cancelling the transition cancels it.
#[tokio::test]
async fn a_pending_transitions_job_is_cancelled_only_through_the_transition() {
    let api = TestApi::spawn().await;
    api.provision("acme", "professional").await;
    let (s, t) = api
        .service(
            Method::POST,
            "/v1/tenants/acme/transitions",
            Some(json!({"tier_id": "starter", "grace_seconds": 3600})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let transition = t["transition"]["id"].as_str().unwrap().to_owned();
    let pending_apply = || async {
        let (s, jobs) = api
            .service(
                Method::GET,
                "/v1/jobs?kind=apply_downgrade&state=Pending",
                None,
            )
            .await;
        assert_eq!(s, 200);
        jobs.as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let jobs = pending_apply().await;
    assert_eq!(jobs.len(), 1);
    let (s, b) = api
        .admin(Method::POST, &format!("/v1/jobs/{}/cancel", jobs[0]), None)
        .await;
    assert_eq!((s, problem_type(&b)), (409, "state-conflict"), "{b}");
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("/v1/tenants/acme/transitions/{transition}/cancel")),
        "{detail}"
    );
    assert_eq!(
        pending_apply().await,
        jobs,
        "the refused cancel changed the job"
    );

    let (s, b) = api
        .service(
            Method::POST,
            &format!("/v1/tenants/acme/transitions/{transition}/cancel"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        pending_apply().await.is_empty(),
        "the transition's cancel cancelled its job"
    );
}

/// A body declared larger than the limit (`Content-Length: 10^12`) is refused with 413 at once,
/// not waited for.
#[tokio::test]
async fn a_huge_declared_body_is_refused_at_once() {
    use std::io::{Read, Write};
    let api = TestApi::spawn().await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let started = std::time::Instant::now();
    tcp.write_all(
        format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SERVICE}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tcp.read(&mut answer).expect("an answer before the body");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("at most 65536 bytes"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(1));
}
