//! `tierflow demo` runs its story to the end and every state it claims holds; the embedded
//! PostgreSQL starts, keeps its data between runs and stops on exit.

use std::process::Command;

use serde_json::Value;
use tierflow_testdb::TestDb;

use crate::support::{stderr, stdout};

/// The demo's scenario on a real database: every printed claim is checked by the demo itself
/// (exit 0), and the observed states it reports are asserted here.
#[tokio::test]
async fn demo_runs_to_its_end_and_every_claim_holds() {
    let db = TestDb::new().await;
    let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args([
            "demo",
            "--json",
            "--grace-secs",
            "3",
            "--override-secs",
            "2",
        ])
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for line in [
        "canonical tiers seeded: free, starter, professional, enterprise",
        "at once: voice off, SLA timers frozen, escalation frozen, routing degraded; still on professional",
        "upgraded to enterprise during the grace",
        "expired by its job",
        "grace ended — now on starter",
        "advancing the clock 7 days ran",
        "every restriction on",
        "the first 2 attempts got 503 with Retry-After: 1 and were retried when asked",
        "demo finished",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let report: Value = serde_json::from_str(&text[text.find("\n{").unwrap()..]).unwrap();

    let during = &report["acme_during_grace"];
    assert_eq!(during["tier"], "professional");
    for flag in [
        "voice_disabled",
        "sla_frozen",
        "escalation_frozen",
        "routing_degraded",
    ] {
        assert_eq!(during["restrictions"][flag], true, "{flag} during grace");
        assert_eq!(
            report["acme_after_grace"]["restrictions"][flag], false,
            "{flag} after grace"
        );
        assert_eq!(
            report["globex_after_upgrade"]["restrictions"][flag], false,
            "{flag} after upgrade"
        );
    }
    let kinds: Vec<&str> = during["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["voice_disable", "sla_freeze", "apply_downgrade"]);
    assert_eq!(report["acme_after_grace"]["tier"], "starter");
    assert_eq!(report["acme_after_grace"]["voice"]["value"], false);
    let late = report["acme_after_grace"]["lateness_seconds"]
        .as_f64()
        .unwrap();
    assert!(
        (0.0..1.0).contains(&late),
        "applied {late}s after the grace end"
    );
    assert_eq!(report["globex_after_upgrade"]["tier"], "enterprise");
    assert!(report["globex_after_upgrade"]["superseded"]["transition_id"].is_string());
    assert_eq!(report["globex_after_override"]["leads"]["source"], "plan");

    let attempts = report["webhooks"]["attempts"].as_array().unwrap();
    let statuses: Vec<u64> = attempts
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 2);
    assert!(attempts.iter().all(|a| a["signature_valid"] == true));
    // Each failed event was delivered later with the same idempotency key.
    for failed in attempts.iter().filter(|a| a["status"] == 503) {
        assert!(
            attempts
                .iter()
                .any(|a| a["event_id"] == failed["event_id"] && a["status"] == 204)
        );
    }
    assert!(report["webhooks"]["events_delivered"].as_u64().unwrap() >= 8);
    // The test clock's month in a second: the grace's jobs in due order, then the trial's end.
    let clock = &report["test_clock"];
    let ran: Vec<&str> = clock["ran_first_week"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert_eq!(ran[2], "apply_downgrade");
    assert_eq!(clock["tier_after_week"], "starter");
    assert_eq!(clock["ran_to_trial_end"][0]["kind"], "expire_entitlement");
    assert_eq!(clock["status_at_trial_end"], "expired");
    assert_eq!(
        report["acme_audit"].as_array().unwrap().first().unwrap(),
        "transition.provision"
    );
    assert_eq!(
        report["acme_audit"].as_array().unwrap().last().unwrap(),
        "action.apply_downgrade"
    );
    assert_eq!(report["metrics"]["jobs_dead"], 0.0);
}

/// Without DATABASE_URL, tierflow starts a private PostgreSQL in the data folder, keeps the data
/// for the next run, and stops the server when it exits.
#[test]
fn embedded_postgres_keeps_its_data_and_stops_on_exit() {
    let dir = std::env::temp_dir().join(format!(
        "tierflow-embedded-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tierflow"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = run(&["tenants", "provision", "acme", "--tier", "starter"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        !dir.join("postmaster.pid").exists(),
        "the server stopped on exit"
    );
    let again = run(&["tenants", "show", "acme", "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let e: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(e["tier_id"], "starter", "the data survived the restart");
    let migrate = run(&["migrate"]);
    assert!(
        stdout(&migrate).contains("0 queue, 0 tierflow"),
        "{}",
        stdout(&migrate)
    );
    assert!(!dir.join("postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
