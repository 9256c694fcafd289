//! A real `tierflow api` (or `tierflow run`) process on a private database, and a typed client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::Value;
use tierflow_testdb::TestDb;

pub const SERVICE: &str = "svc-secret-0123456789";
pub const ADMIN: &str = "adm-secret-0123456789";

/// A running API process; killed on drop.
pub struct TestApi {
    child: Child,
    /// Every line the process logged (JSON), in order.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub base: String,
    pub db: TestDb,
    pub http: reqwest::Client,
}

impl TestApi {
    /// `tierflow api` on a fresh database.
    pub async fn spawn() -> TestApi {
        Self::spawn_cmd("api", &[]).await
    }

    /// `tierflow <cmd>` (api or run) with extra environment.
    pub async fn spawn_cmd(cmd: &str, env: &[(&str, &str)]) -> TestApi {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tierflow"));
        command.arg(cmd);
        Self::spawn_command(command, env).await
    }

    /// `tierflow <cmd>` whose process may open at most `files` files (`ulimit -n`).
    pub async fn spawn_with_file_limit(cmd: &str, files: u32, env: &[(&str, &str)]) -> TestApi {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {files} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_tierflow"),
            cmd,
        ]);
        Self::spawn_command(command, env).await
    }

    async fn spawn_command(mut command: Command, env: &[(&str, &str)]) -> TestApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::new().await;
        let mut child = command
            .env("DATABASE_URL", db.url())
            .env("TIERFLOW_LISTEN", "127.0.0.1:0")
            .env("TIERFLOW_METRICS_LISTEN", "127.0.0.1:0")
            .env("TIERFLOW_SERVICE_TOKENS", format!("billing:{SERVICE}"))
            .env("TIERFLOW_ADMIN_TOKENS", format!("ops:{ADMIN}"))
            .env("TIERFLOW_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tierflow");
        // The one startup line that names the bound address.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let keep = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent
                    && let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "api listening"
                {
                    let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or_default().to_owned());
                    sent = true;
                }
                if std::env::var("TIERFLOW_TEST_LOG").is_ok() {
                    eprintln!("{line}");
                }
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the api logged its address");
        TestApi {
            child,
            log,
            base: format!("http://{addr}"),
            db,
            http: reqwest::Client::new(),
        }
    }

    /// Every line logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The lines logged at `level` (`"ERROR"`, `"INFO"`, …) so far.
    pub fn lines_at(&self, level: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] == level))
            .cloned()
            .collect()
    }

    /// A request with `token` (or none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request sent")
    }

    /// A request as the service token, returning status and JSON body.
    pub async fn service(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        json(self.call(method, path, Some(SERVICE), body).await).await
    }

    /// A request as the admin token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        json(self.call(method, path, Some(ADMIN), body).await).await
    }

    /// Provisions a tenant on `tier`.
    pub async fn provision(&self, tenant: &str, tier: &str) {
        let (status, body) = self
            .service(
                Method::POST,
                "/v1/tenants",
                Some(serde_json::json!({"tenant_id": tenant, "tier_id": tier})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and JSON body (Null when empty).
pub async fn json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
