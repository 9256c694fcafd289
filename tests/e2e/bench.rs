//! `tierflow bench --quick` as a smoke test: it runs every section to the end and reports its
//! figures with what was measured and how. No thresholds here: performance is judged from the
//! full benchmark's figures (docs/performance.md), not by tests.

use std::process::Command;

use serde_json::Value;

use crate::support::stderr;

#[test]
fn quick_benchmark_runs_every_section() {
    let url = std::env::var("TIERFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| tierflow_testdb::DEFAULT_URL.to_owned());
    let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(["bench", "--quick", "--json"])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "bench failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(
        report["machine"]["postgresql"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL")
    );
    let figures = report["figures"].as_array().unwrap();
    for section in [
        "enqueue",
        "drain",
        "pickup",
        "schedule",
        "rescue",
        "table growth",
        "scale",
    ] {
        let of_section: Vec<&Value> = figures.iter().filter(|f| f["section"] == section).collect();
        assert!(!of_section.is_empty(), "no figure for {section}");
        for f in of_section {
            assert!(f["value"].as_f64().is_some_and(f64::is_finite), "{f}");
            assert!(!f["how"].as_str().unwrap().is_empty(), "{f}");
        }
    }
    // Real jobs run in production order (voice_disable and sla_freeze at request, apply_downgrade
    // at grace end), so each does its work: none is a no-op.
    let real: Vec<&Value> = figures
        .iter()
        .filter(|f| {
            f["what"]
                .as_str()
                .unwrap_or("")
                .starts_with("real transition jobs")
        })
        .collect();
    assert!(!real.is_empty());
    for f in real {
        assert!(
            f["how"].as_str().unwrap().ends_with(", 0 of them no-ops"),
            "{f}"
        );
    }
    // The real jobs are compared with pgbench -N run on the same server, and their WAL counted.
    for what in [
        "pgbench -N, 16 clients",
        "real jobs vs pgbench -N",
        "WAL per real transition job, 1 × 16",
    ] {
        let f = figures
            .iter()
            .find(|f| f["what"] == what)
            .unwrap_or_else(|| panic!("no figure {what}"));
        assert!(f["value"].as_f64().unwrap() > 0.0, "{f}");
    }
    // Progress lines went to stderr while it ran.
    assert!(stderr(&out).contains("drain:"));
}

/// A section whose worker processes die stops at once and says why, instead of waiting out its
/// timeout for jobs nobody runs. Here every `bench-worker` refuses its configuration.
#[test]
fn bench_stops_when_its_workers_die() {
    let url = std::env::var("TIERFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| tierflow_testdb::DEFAULT_URL.to_owned());
    let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(["bench", "--quick", "--only", "drain"])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        // Read by the bench's worker processes only.
        .env("TIERFLOW_RESCUE_AFTER_SECS", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bench-worker 0 exited"), "{err}");
    assert!(
        err.contains("soon"),
        "the worker's own error is shown: {err}"
    );
    assert!(
        !err.contains("still not done"),
        "it waited out the timeout: {err}"
    );
}

/// `tierflow bench --sustained` as a smoke test, shortened: it starts its own PostgreSQL (whose
/// autovacuum is on: the report shows the table's live and dead rows as the server counts
/// them), runs producers (direct enqueues and HTTP changes) and a worker together, reports every
/// phase window by window — steady, half rate, the pinned xmin and the burst — and runs pgbench's
/// plain-SQL queue on the same server. Every offered job is completed and every HTTP request
/// is an accepted change.
#[test]
fn sustained_benchmark_reports_every_phase() {
    let out = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args([
            "bench",
            "--sustained",
            "6s",
            "--rate",
            "200",
            "--http-rate",
            "10",
            "--window",
            "3s",
            "--pressure",
            "4s",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "bench failed: {}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let windows = report["windows"].as_array().unwrap();
    let phases: Vec<&str> = windows
        .iter()
        .map(|w| w["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["steady", "steady", "half", "clean", "pin", "burst"],
        "{report}"
    );
    for w in windows {
        assert!(w["completed_per_s"].as_f64().unwrap() > 0.0, "{w}");
        // The machine's CPU beside the queue's: a share of the window, and the checkpoints.
        let busy = w["host_busy_pct"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&busy) && busy > 0.0, "{w}");
        assert!(w["host_steal_pct"].as_f64().unwrap() >= 0.0, "{w}");
        assert!(w["checkpoints"].as_i64().unwrap() >= 0, "{w}");
        assert!(w["live_tuples"].as_i64().unwrap() > 0, "{w}");
        assert!(w["wal_bytes_per_job"].as_f64().unwrap() > 0.0, "{w}");
        assert!(w["pg_cpu_us_per_job"].as_f64().unwrap() > 0.0, "{w}");
        assert_eq!(w["http_errors"], 0, "{w}");
        assert_eq!(w["http_refused"], 0, "{w}");
    }
    let summary = &report["summary"];
    assert_eq!(summary["sustainable_per_s"], 200.0);
    // Every job offered was done: the steady windows completed about what was offered.
    let steady = summary["steady_completed_per_s"].as_f64().unwrap();
    assert!((150.0..=250.0).contains(&steady), "{summary}");
    // It says whether the steady phase kept up, by its own rule, in the summary and on stderr.
    let depth = summary["steady_last_depth"].as_i64().unwrap();
    let held = steady >= 0.95 * 200.0 && depth < 200;
    assert_eq!(summary["steady_held"].as_bool(), Some(held), "{summary}");
    let verdict = if held {
        "steady: kept up with 200 jobs/s"
    } else {
        "steady: did NOT keep up with 200 jobs/s"
    };
    assert!(stderr(&out).contains(verdict), "{}", stderr(&out));
    assert!(
        summary["pgbench_jobs_per_s"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert!(stderr(&out).contains("starting a private PostgreSQL"));
}

/// A sustained run stopped by SIGTERM (an operator's Ctrl-C, a CI timeout) is abandoned and
/// still cleans up: it says it was interrupted, and the PostgreSQL server it started is stopped
/// and its temporary folder removed — no server is left running on /tmp.
#[test]
fn a_stopped_sustained_benchmark_leaves_no_server_behind() {
    stop_a_sustained_run_after("sustainable rate: 100 jobs/s");
}

/// The same when the signal comes while the run is still starting its server (initdb and the
/// server's start take seconds): the signal is held until the run can stop what it started.
#[test]
fn a_sustained_benchmark_stopped_while_starting_its_server_leaves_nothing_behind() {
    stop_a_sustained_run_after("starting a private PostgreSQL in ");
}

/// Starts `tierflow bench --sustained`, sends it SIGTERM once its stderr has shown `marker`,
/// and checks that it says it was interrupted and that neither its folder nor any process
/// naming it is left.
fn stop_a_sustained_run_after(marker: &str) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args([
            "bench",
            "--sustained",
            "10m",
            "--rate",
            "100",
            "--http-rate",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut folder = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {marker:?}: {seen:#?}"));
        if let Some(rest) = line.split("starting a private PostgreSQL in ").nth(1) {
            folder = rest.split(" (").next().map(std::path::PathBuf::from);
        }
        let reached = line.contains(marker);
        seen.push(line);
        if reached {
            break;
        }
    }
    let folder = folder.unwrap_or_else(|| panic!("no folder named: {seen:#?}"));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert!(!exit.success(), "{seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("interrupted")),
        "it says it was interrupted: {seen:#?}"
    );
    assert!(!folder.exists(), "{} was left behind", folder.display());
    // No process (the postmaster, a backend, initdb, a bench-worker) still names the folder.
    let needle = folder.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect();
    assert!(left.is_empty(), "still running: {left:#?}");
}
