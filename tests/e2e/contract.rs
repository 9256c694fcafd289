//! The contract of `/openapi.json`, checked from outside by the tools integrators use, against a
//! live API: a Python client generated from the served document runs the downgrade story with
//! its typed models, and schemathesis, with every check, finds no failure with either role.
//!
//! The tools are pinned (see `.ci/run`, which installs them); the Python helpers they run live in
//! `tests/e2e/contract/`. The schemathesis test runs in the nextest group `process-fleets` (it
//! keeps a core busy for minutes, which would slow a fleet test beside it past its deadlines).
//!
//! Both APIs get a request timeout of 30 s rather than 5 s: that limit is there for a frozen
//! database, and on a machine shared with the rest of the suite a slow answer (a 503) is the
//! machine's doing, not a break in the contract.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::api_support::{ADMIN, SERVICE, TestApi};

/// The versions `.ci/run` installs; a different one on the machine is refused, not trusted.
const OPENAPI_PYTHON_CLIENT: &str = "0.29.1";
const SCHEMATHESIS: &str = "4.32.5";

/// See the module doc.
const SLOW_MACHINE: (&str, &str) = ("TIERFLOW_REQUEST_TIMEOUT_MS", "30000");

/// The Python helpers of these tests.
fn helpers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/contract")
}

/// A directory of its own for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "tierflow-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a finished tool printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn both(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` in `dir`, its output going to files there (no pipe to fill), and kills it past
/// `limit`: a hung tool fails the test instead of hanging it.
fn run(mut cmd: Command, dir: &Path, label: &str, limit: Duration) -> Ran {
    let out = dir.join(format!("{label}.out"));
    let err = dir.join(format!("{label}.err"));
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create the stdout file"))
        .stderr(std::fs::File::create(&err).expect("create the stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {label}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the tool") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ran = Ran {
        ok: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{label} did not finish within {limit:?}:\n{}",
        ran.both()
    );
    ran
}

/// Fails with how to install `program` unless it reports `version`.
fn require(program: &str, version: &str, package: &str) {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        found.contains(version),
        "{program} {version} is needed (found: {:?}); install it with \
         `python3 -m pip install \"{package}=={version}\"` (.ci/run does)",
        found.trim()
    );
}

/// The served document, written to `dir`.
async fn document(api: &TestApi, dir: &Path) -> PathBuf {
    let r = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status(), 200);
    let path = dir.join("openapi.json");
    std::fs::write(&path, r.text().await.expect("the document")).expect("write the document");
    path
}

/// A Python client generated from the live document (openapi-python-client, no warning
/// allowed: a schema it cannot model would drop a model or an operation) runs the downgrade story
/// against `tierflow run` — provision, downgrade with grace, read the entitlement, cancel —
/// asserting on typed fields, enums and provenance unions (`contract/client_scenario.py`).
#[tokio::test]
async fn a_client_generated_from_the_document_runs_the_downgrade_story() {
    require(
        "openapi-python-client",
        OPENAPI_PYTHON_CLIENT,
        "openapi-python-client",
    );
    let api = TestApi::spawn_cmd("run", &[SLOW_MACHINE]).await;
    let scratch = Scratch::new("client");
    let doc = document(&api, &scratch.0).await;

    let mut generate = Command::new("openapi-python-client");
    generate
        .args(["generate", "--meta", "none", "--fail-on-warning", "--path"])
        .arg(&doc)
        .arg("--output-path")
        .arg(scratch.0.join("tierflow_client"));
    let generated = run(generate, &scratch.0, "generate", Duration::from_secs(120));
    assert!(
        generated.ok,
        "the client did not generate cleanly:\n{}",
        generated.both()
    );

    let mut scenario = Command::new("python3");
    scenario
        .arg(helpers().join("client_scenario.py"))
        .args([api.base.as_str(), SERVICE, "contract-acme"])
        .env("PYTHONPATH", &scratch.0)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let ran = run(scenario, &scratch.0, "scenario", Duration::from_secs(120));
    assert!(
        ran.ok && ran.stdout.contains("scenario passed"),
        "the generated client's scenario failed:\n{}",
        ran.both()
    );
}

/// schemathesis (`st run`, all checks: status codes, content types, response schemas and
/// headers, negative data refused, positive data accepted, unsupported methods, ignored auth,
/// use after free, …) finds no failure, once with a service token and once with an admin token.
///
/// Bounded and reproducible: deterministic generation (which keeps no example database), few
/// examples per operation, health checks off (they judge the machine's speed, not the API), one worker.
/// `contract/schemathesis_hooks.py` drops the one refusal JSON Schema cannot foresee (a time
/// relative to now) and nothing else.
#[tokio::test]
async fn schemathesis_finds_no_failure_with_a_service_or_an_admin_token() {
    require("st", SCHEMATHESIS, "schemathesis");
    let api = TestApi::spawn_cmd("api", &[SLOW_MACHINE]).await;
    let scratch = Scratch::new("schemathesis");
    for (role, token) in [("service", SERVICE), ("admin", ADMIN)] {
        let mut st = Command::new("st");
        st.arg("run")
            .arg(format!("{}/openapi.json", api.base))
            .args(["--checks", "all"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", "15"])
            .arg("--generation-deterministic")
            .args(["--suppress-health-check", "all"])
            .args(["--request-timeout", "60"])
            .args(["--workers", "1"])
            .arg("--no-color")
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", helpers())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let ran = run(st, &scratch.0, role, Duration::from_secs(420));
        let summary = ran
            .stdout
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or("no summary")
            .trim()
            .to_owned();
        assert!(
            ran.ok,
            "schemathesis found failures with the {role} token:\n{}",
            ran.both()
        );
        eprintln!("schemathesis, {role} token: {summary}");
    }
    assert!(
        api.lines_at("ERROR").is_empty(),
        "the API logged errors: {:?}",
        api.lines_at("ERROR")
    );
}
