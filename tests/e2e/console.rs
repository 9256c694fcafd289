//! The operator console in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
//! installed by `.ci/run`), against a real `tierflow run`.
//!
//! The browser is driven over the W3C WebDriver protocol with the suite's own `reqwest` client
//! ([`Browser`]): the protocol is a dozen JSON calls, so a WebDriver crate (fantoccini pulls a
//! second HTTP and TLS stack) or a Python script (a second language and runner) would add more
//! than it saves. Every wait is for a condition (an element, a text, a URL), never a sleep.
//!
//! The dead job is a fixture made from a real one: the `voice_disable` job of a real downgrade,
//! once it has run, is marked `Dead` with its attempts spent. Reaching `Dead` through the worker
//! takes 10 attempts with backoff (minutes); the queue's own tests prove that path
//! (`backoff_is_persisted_then_dead_then_redriven`). Re-driven, the job runs its real handler,
//! which finds its effect already applied and finishes `Done`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::{ADMIN, SERVICE, TestApi};
use crate::support::wait_until;

/// How long any one condition may take on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// An admin signs in, finds a tenant mid-grace with its countdown and restrictions, opens a dead
/// job, re-drives it (after a form without its CSRF token is refused) and sees it done, and finds
/// the re-drive in the audit trail under its principal; a service-token session sees no re-drive
/// button and gets 403 from the form's endpoint; without a session every console URL redirects
/// to sign-in; no token ever appears in a page, a URL or the log.
#[tokio::test]
async fn an_operator_signs_in_finds_a_grace_tenant_and_redrives_a_dead_job() {
    let api = TestApi::spawn_cmd(
        "run",
        &[
            ("TIERFLOW_HEARTBEAT_INTERVAL_MS", "200"),
            ("TIERFLOW_POLL_INTERVAL_MS", "200"),
        ],
    )
    .await;
    // A tenant mid-grace, and another whose voice_disable job becomes the dead job.
    for tenant in ["grace-co", "dead-co"] {
        api.provision(tenant, "professional").await;
        let (s, b) = api
            .service(
                Method::POST,
                &format!("/v1/tenants/{tenant}/transitions"),
                Some(json!({"tier_id": "starter", "grace_seconds": 3600, "reason": "plan cancelled"})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    // The transition's action row names its job.
    let dead_job: String = sqlx::query_scalar(
        "SELECT a.job_id FROM transition_actions a JOIN tier_transitions t ON t.id = a.transition_id
          WHERE t.tenant_id = 'dead-co' AND t.status = 'pending' AND a.action = 'voice_disable'",
    )
    .fetch_one(api.db.pool())
    .await
    .unwrap();
    wait_until(WAIT, "the voice_disable job to run", || async {
        let s: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
            .bind(&dead_job)
            .fetch_one(api.db.pool())
            .await
            .unwrap();
        (s == "Done").then_some(())
    })
    .await;
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Dead', attempts = max_attempts, done_at = now(),
                last_result = '{\"Err\": \"fixture: the downstream answered 500 on every attempt\"}'
          WHERE id = $1",
    )
    .bind(&dead_job)
    .execute(api.db.pool())
    .await
    .unwrap();

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    println!("console screenshots: {}", shots.display());
    let b = Browser::start().await;
    let mut sources = Vec::new();

    // Without a session, every console URL lands on sign-in.
    let job_path = format!("/console/jobs/{dead_job}");
    for path in [
        "/console",
        "/console/tenants?q=grace",
        "/console/tenants/grace-co",
        "/console/jobs?state=Dead",
        job_path.as_str(),
        &format!("{job_path}/retry"),
        &format!("{job_path}/cancel"),
        "/console/fleet",
        "/console/audit",
        "/console/assets/console.js",
        "/console/no-such-page",
    ] {
        b.goto(&format!("{}{path}", api.base)).await;
        b.wait_for("#token", "").await;
        let url = b.url().await;
        assert!(url.contains("/console/sign-in"), "{path} went to {url}");
    }
    // POSTs without a session too (the browser only posts forms; these go straight).
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        format!("{job_path}/retry"),
        format!("{job_path}/cancel"),
        "/console/sign-out".into(),
    ] {
        let r = no_redirect
            .post(format!("{}{path}", api.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("csrf=x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/console/sign-in")
        );
    }

    // A service token reads, and cannot act.
    b.sign_in(&api.base, SERVICE).await;
    b.goto(&format!("{}{job_path}", api.base)).await;
    b.wait_for("#job-state", "Dead").await;
    assert!(
        b.find("#redrive").await.is_none(),
        "a service session sees no re-drive button"
    );
    let csrf = b.attribute("input[name=csrf]", "value").await;
    let cookie = b.cookie("tierflow_console").await;
    let posted = no_redirect
        .post(format!("{}{job_path}/retry", api.base))
        .header("cookie", format!("tierflow_console={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 403, "a service session may not re-drive");
    b.goto(&format!("{}{job_path}/retry", api.base)).await;
    b.wait_for("main", "needs an admin token").await;
    sources.push(b.source().await);
    b.goto(&format!("{}/console", api.base)).await;
    b.wait_for("h1", "Overview").await;
    b.click("form.who button").await; // sign out
    b.wait_for("#token", "").await;
    // The signed-out cookie opens nothing any more, on any replica.
    let after = no_redirect
        .get(format!("{}/console", api.base))
        .header("cookie", format!("tierflow_console={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303, "sign-out ended the session");

    // An admin: the overview, a tenant mid-grace, the dead job.
    b.sign_in(&api.base, ADMIN).await;
    b.wait_for("h1", "Overview").await;
    b.wait_for("main", "dead jobs").await;
    b.screenshot(&shots.join("overview.png")).await;
    sources.push(b.source().await);
    b.click("nav a[href='/console/tenants']").await;
    b.wait_for("#tenant-search", "").await;
    b.type_into("#tenant-search", "grace").await;
    b.click("form.filters button").await;
    b.wait_for("main table", "grace-co").await;
    b.click("main table a").await;
    b.wait_for("h1", "Tenant grace-co").await;
    let countdown = b.text("#grace-countdown").await;
    assert!(
        countdown.starts_with("in 59m") || countdown.starts_with("in 1h"),
        "{countdown}"
    );
    let restrictions = b.text("#restrictions + .table").await;
    for flag in [
        "voice_disabled",
        "sla_frozen",
        "escalation_frozen",
        "routing_degraded",
    ] {
        assert!(restrictions.contains(flag), "{restrictions}");
    }
    assert!(
        restrictions.contains("on") && restrictions.contains("downgrade:"),
        "{restrictions}"
    );
    b.screenshot(&shots.join("tenant.png")).await;
    sources.push(b.source().await);

    b.goto(&format!("{}/console/jobs?state=Dead", api.base))
        .await;
    b.wait_for("main table", &dead_job).await;
    b.click(&format!("a[href='/console/jobs/{dead_job}']"))
        .await;
    b.wait_for("#job-state", "Dead").await;
    b.wait_for("#last-result", "answered 500").await;
    // The job carries no key: its page names the transition and links its tenant.
    let transition: uuid::Uuid =
        sqlx::query_scalar("SELECT transition_id FROM transition_actions WHERE job_id = $1")
            .bind(&dead_job)
            .fetch_one(api.db.pool())
            .await
            .unwrap();
    b.wait_for("#job-transition", &transition.to_string()).await;
    let tenant_link = b.attribute("#job-tenant a", "href").await;
    assert!(
        tenant_link.ends_with("/console/tenants/dead-co"),
        "{tenant_link}"
    );
    b.screenshot(&shots.join("job.png")).await;
    b.click("#redrive").await;
    b.wait_for("#confirm", "Re-drive job").await;
    // A form posted without its CSRF token is refused, and changes nothing.
    b.execute("document.querySelector('#confirm-form input[name=csrf]').remove()")
        .await;
    b.click("#confirm").await;
    b.wait_for("main", "missing its CSRF token").await;
    let still: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(&dead_job)
        .fetch_one(api.db.pool())
        .await
        .unwrap();
    assert_eq!(still, "Dead");
    // With it, the re-drive goes through and the worker runs the job.
    b.goto(&format!("{}{job_path}/retry", api.base)).await;
    b.wait_for("#confirm", "Re-drive job").await;
    b.click("#confirm").await;
    b.wait_for("#flash", "Re-driven").await;
    wait_until(WAIT, "the re-driven job to be done on the page", || async {
        b.goto(&format!("{}{job_path}", api.base)).await;
        b.find_text("#job-state")
            .await
            .filter(|t| t.contains("Done"))
    })
    .await;
    sources.push(b.source().await);

    // The audit page shows the re-drive under the admin's principal.
    b.click("nav a[href='/console/audit']").await;
    b.wait_for("table.audit", "job.redriven").await;
    let audit = b.text("table.audit").await;
    let row = audit
        .lines()
        .find(|l| l.contains("job.redriven"))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        row.contains(&dead_job) && row.contains("ops") && row.contains("admin"),
        "{row}"
    );
    assert!(audit.contains("console.signed_in"), "{audit}");
    sources.push(b.source().await);
    b.goto(&format!("{}/console/fleet", api.base)).await;
    b.wait_for("#leader", "leads maintenance").await;
    sources.push(b.source().await);
    let url = b.url().await;

    // No token in any page, URL or log line.
    for secret in [ADMIN, SERVICE] {
        assert!(!url.contains(secret));
        for s in &sources {
            assert!(!s.contains(secret), "a page shows a token");
        }
        for level in ["ERROR", "WARN", "INFO", "DEBUG"] {
            assert!(
                api.lines_at(level).iter().all(|l| !l.contains(secret)),
                "a log line shows a token"
            );
        }
    }
    b.quit().await;
}

/// A headless Chromium behind chromedriver, spoken to over W3C WebDriver.
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    _profile: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop (the browser profile).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver; .ci/run does it)");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        wait_until(WAIT, "chromedriver to be ready", || async {
            let r = http.get(format!("{base}/status")).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = std::env::temp_dir().join(format!("tierflow-console-chromium-{port}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("TIERFLOW_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1100", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            _profile: tempdir::Dir(profile),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.call(Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects, if the page has one now.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()?
            .values()
            .next()
            .and_then(Value::as_str)
            .filter(|_| v.get("error").is_none())
            .map(str::to_owned)
    }

    /// The text of the element `css` selects, if there is one now.
    async fn find_text(&self, css: &str) -> Option<String> {
        let el = self.find(css).await?;
        self.call(Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// Waits until the element `css` selects exists and its text contains `text`.
    async fn wait_for(&self, css: &str, text: &str) {
        wait_until(WAIT, &format!("{css} to show {text:?}"), || async {
            self.find_text(css)
                .await
                .filter(|t| t.contains(text))
                .map(|_| ())
        })
        .await;
    }

    async fn text(&self, css: &str) -> String {
        self.find_text(css)
            .await
            .unwrap_or_else(|| panic!("no {css}"))
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        let el = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.call(Method::GET, &format!("/element/{el}/property/{name}"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.call(
            Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.call(
            Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn execute(&self, script: &str) {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await;
    }

    /// A cookie's value, HttpOnly ones included (WebDriver sees what scripts cannot).
    async fn cookie(&self, name: &str) -> String {
        let v = self
            .call(Method::GET, &format!("/cookie/{name}"), None)
            .await;
        v["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no cookie {name}: {v}"))
            .to_owned()
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/console/sign-in")).await;
        self.wait_for("#sign-in", "Sign in").await;
        self.type_into("#token", token).await;
        self.click("#sign-in").await;
        self.wait_for("form.who", "Sign out").await;
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let png = self.call(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    async fn quit(mut self) {
        self.call(Method::DELETE, "", None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
