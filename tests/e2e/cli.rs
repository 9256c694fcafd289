//! `tierflow migrate` and `tierflow tiers` as an operator runs them.

use std::thread;

use tierflow_testdb::TestDb;

use crate::support::{stderr, stdout, tierflow};

/// Three `tierflow migrate` processes started at once on an empty database all succeed, exactly
/// one applies the migrations, and the canonical tiers are there once.
#[tokio::test]
async fn three_replicas_migrating_at_once_apply_once() {
    let db = TestDb::empty().await;
    let url = db.url();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || tierflow(&url, &["migrate"]))
        })
        .collect();
    let outputs: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    for o in &outputs {
        assert!(o.status.success(), "migrate failed: {}", stderr(o));
    }
    let applied = outputs
        .iter()
        .filter(|o| !stdout(o).contains("0 queue, 0 tierflow"))
        .count();
    assert_eq!(
        applied,
        1,
        "{:?}",
        outputs.iter().map(stdout).collect::<Vec<_>>()
    );

    let list = tierflow(&url, &["tiers", "list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let tiers: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = tiers
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["free", "starter", "professional", "enterprise"]);

    let seed = tierflow(&url, &["tiers", "seed"]);
    assert!(seed.status.success());
    assert!(stdout(&seed).contains("inserted: 0"), "{}", stdout(&seed));
    let show = tierflow(&url, &["tiers", "show", "professional"]);
    assert!(
        stdout(&show).contains("voice              on"),
        "{}",
        stdout(&show)
    );
}

/// An unreachable database fails with exit code 1, a message naming the host and what to check,
/// and never the password in the URL.
#[test]
fn unreachable_database_is_a_clear_error_without_the_secret() {
    let o = tierflow(
        "postgres://tierflow:hunter2@127.0.0.1:1/nowhere",
        &["migrate", "--db-connect-timeout", "1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cannot connect to PostgreSQL at 127.0.0.1:1/nowhere"),
        "{err}"
    );
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

/// A wrong command line exits 2 with usage; a bad tier id says what is allowed.
#[tokio::test]
async fn bad_input_exits_with_the_reason() {
    let o = tierflow("postgres://x@127.0.0.1:1/x", &["tiers", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let db = TestDb::new().await;
    let o = tierflow(&db.url(), &["tiers", "show", "Pro Plan"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("lowercase ASCII letters"),
        "{}",
        stderr(&o)
    );
    let o = tierflow(&db.url(), &["tiers", "show", "platinum"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("tier 'platinum' is not known"),
        "{}",
        stderr(&o)
    );
}

/// Operators list dead jobs, re-drive one, and get a clear refusal for the wrong job or state.
#[tokio::test]
async fn operators_list_and_redrive_dead_jobs() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, done_at, last_result)
         VALUES ('01DEAD0000000000000000000A', 'apply_downgrade', convert_to('{}', 'UTF8'), 'Dead', 20, 20, now(),
                 '{\"Err\": \"endpoint answered 500\"}')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let url = db.url();
    let dead = tierflow(&url, &["jobs", "dead", "--json"]);
    assert!(dead.status.success(), "{}", stderr(&dead));
    let rows: serde_json::Value = serde_json::from_slice(&dead.stdout).unwrap();
    assert_eq!(rows[0]["id"], "01DEAD0000000000000000000A");
    assert_eq!(rows[0]["last_result"]["Err"], "endpoint answered 500");
    let table = tierflow(&url, &["jobs", "dead"]);
    assert!(
        stdout(&table).contains("apply_downgrade"),
        "{}",
        stdout(&table)
    );

    let retry = tierflow(&url, &["jobs", "retry", "01DEAD0000000000000000000A"]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    let state: (String, i32) = sqlx::query_as(
        "SELECT status, attempts FROM apalis.jobs WHERE id = '01DEAD0000000000000000000A'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(state, ("Pending".into(), 0));
    // The re-drive is in the audit trail with the operator's principal; the refused one is not.
    let audited: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, principal, principal_role FROM audit_events WHERE subject_type = 'job'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].0, "job.redriven");
    assert!(
        audited[0].1.starts_with("cli:") && audited[0].2 == "operator",
        "{audited:?}"
    );
    let again = tierflow(&url, &["jobs", "retry", "01DEAD0000000000000000000A"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("it is Pending"),
        "{}",
        stderr(&again)
    );
    let missing = tierflow(&url, &["jobs", "retry", "nope"]);
    assert!(
        stderr(&missing).contains("no job with id 'nope'"),
        "{}",
        stderr(&missing)
    );
    let stats = tierflow(&url, &["jobs", "stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats[0]["state"], "due");
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE subject_type = 'job'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(audited, 1, "refused re-drives leave no audit row");
}

/// Operators provision a tenant, read its entitlement and its history from the command line.
#[tokio::test]
async fn operators_read_tenants_and_history() {
    let db = TestDb::new().await;
    let url = db.url();
    let p = tierflow(&url, &["tenants", "provision", "acme", "--tier", "starter"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert!(stdout(&p).contains("tenant acme provisioned on starter"));
    let again = tierflow(&url, &["tenants", "provision", "acme", "--tier", "starter"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));

    let show = tierflow(&url, &["tenants", "show", "acme"]);
    assert!(
        stdout(&show).contains("api_access         on         plan starter"),
        "{}",
        stdout(&show)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&tierflow(&url, &["tenants", "show", "acme", "--json"]).stdout)
            .unwrap();
    assert_eq!(json["tier_id"], "starter");
    let missing = tierflow(&url, &["tenants", "show", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("tenant 'nobody' is not known"),
        "{}",
        stderr(&missing)
    );

    let history = tierflow(&url, &["transitions", "list", "acme", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(rows[0]["kind"], "provision");
    let table = tierflow(&url, &["transitions", "list", "acme"]);
    assert!(stdout(&table).contains("provision"), "{}", stdout(&table));
}

/// `tierflow webhooks`: create prints the secret once, list shows the endpoint without it,
/// rotate prints a new one, disable shows why; a bad URL or a secret that is not `whsec_` is a
/// clear error and changes nothing.
#[tokio::test]
async fn operators_manage_webhook_endpoints() {
    let db = TestDb::new().await;
    let url = db.url();
    let made = tierflow(
        &url,
        &[
            "webhooks",
            "create",
            "https://crm.example.com/hooks",
            "--json",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let secret = made["secret"].as_str().unwrap().to_owned();
    let id = made["endpoint"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    let list = tierflow(&url, &["webhooks", "list"]);
    assert!(stdout(&list).contains(&id) && stdout(&list).contains("enabled"));
    assert!(!stdout(&list).contains(&secret));
    let rotated = tierflow(&url, &["webhooks", "rotate-secret", &id]);
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(stdout(&rotated).contains("whsec_") && !stdout(&rotated).contains(&secret));
    let moved = tierflow(
        &url,
        &[
            "webhooks",
            "update",
            &id,
            "--url",
            "https://crm.example.com/v2/hooks",
        ],
    );
    assert!(stdout(&moved).contains("/v2/hooks"), "{}", stderr(&moved));
    let off = tierflow(&url, &["webhooks", "disable", &id, "--reason", "moving"]);
    assert!(
        stdout(&off).contains("disabled (moving)"),
        "{}",
        stdout(&off)
    );

    let bad = tierflow(&url, &["webhooks", "create", "crm.example.com/hooks"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("must start with https://"),
        "{}",
        stderr(&bad)
    );
    let list = tierflow(&url, &["webhooks", "list", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);

    let fresh = tierflow(&url, &["webhooks", "new-secret"]);
    assert!(stdout(&fresh).trim().starts_with("whsec_"));
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(["worker"])
        .env("DATABASE_URL", &url)
        .env("TIERFLOW_WEBHOOK_URLS", "https://crm.example.com/hooks")
        .env("TIERFLOW_WEBHOOK_SECRET", "hunter2-not-a-whsec")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must refuse at start-up; if it ran instead, stop it rather than hang the test.
    let exited = crate::support::wait_until(
        std::time::Duration::from_secs(30),
        "the worker to refuse its secret",
        || std::future::ready(worker.try_wait().unwrap()),
    )
    .await;
    let o = worker.wait_with_output().unwrap();
    assert_eq!(exited.code(), Some(1));
    assert!(stderr(&o).contains("whsec_"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("hunter2"),
        "the secret is never printed"
    );
}
