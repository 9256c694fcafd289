//! Observability end to end: a real Prometheus (Debian's package) scrapes a running worker and
//! API while work goes through; queue depth and the pickup-delay histogram are read back through
//! Prometheus's HTTP API; promtool checks the real /metrics output.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::api_support::TestApi;
use crate::support::{WorkerProc, wait_until};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    child: Child,
    dir: std::path::PathBuf,
    base: String,
}

impl Prometheus {
    fn start(targets: &[String]) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("tierflow-prom-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tierflow\n    static_configs:\n      - targets: [{}]\n",
            targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian package `prometheus`; .ci/run installs it)");
        Prometheus {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn query(&self, http: &reqwest::Client, q: &str) -> Vec<Value> {
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let r = http
            .get(format!("{}/api/v1/query?query={encoded}", self.base))
            .send()
            .await;
        let Ok(r) = r else { return vec![] };
        let body: Value = r.json().await.unwrap_or(Value::Null);
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn number(v: &Value) -> f64 {
    v["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Prometheus scrapes a worker and the API; after downgrades go through, queue depth and the
/// pickup-delay histogram come back through Prometheus's query API, and promtool accepts both
/// processes' /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_queue_depth_and_pickup_delay() {
    let api_metrics = format!("127.0.0.1:{}", free_port());
    let api = TestApi::spawn_cmd("api", &[("TIERFLOW_METRICS_LISTEN", api_metrics.as_str())]).await;
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let _worker = WorkerProc::start_with(
        &api.db.url(),
        "obs-1",
        &[("TIERFLOW_METRICS_LISTEN", worker_metrics.as_str())],
    );
    let prom = Prometheus::start(&[api_metrics.clone(), worker_metrics.clone()]);
    let http = reqwest::Client::new();

    for t in 0..5 {
        api.provision(&format!("t{t}"), "professional").await;
        let (s, b) = api
            .service(
                Method::POST,
                &format!("/v1/tenants/t{t}/transitions"),
                Some(json!({"tier_id": "starter", "grace_seconds": 2 + t})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }

    // Both targets are up.
    wait_until(
        Duration::from_secs(30),
        "both targets to be scraped",
        || async {
            let up = prom.query(&http, "up{job=\"tierflow\"} == 1").await;
            (up.len() == 2).then_some(())
        },
    )
    .await;
    // Queue depth: while grace periods run, the apply_downgrade jobs are scheduled.
    let scheduled = wait_until(Duration::from_secs(30), "scheduled apply_downgrade jobs in Prometheus", || async {
        let r = prom
            .query(&http, "max by (kind) (tierflow_queue_jobs{kind=\"apply_downgrade\",state=\"scheduled\"})")
            .await;
        r.first().map(number).filter(|n| *n > 0.0)
    })
    .await;
    assert!(scheduled >= 1.0);
    // The pickup-delay histogram: every job run so far is counted, with a p99 to read.
    let runs = wait_until(
        Duration::from_secs(40),
        "apply_downgrade pickups in Prometheus",
        || async {
            let r = prom
                .query(
                    &http,
                    "sum(tierflow_job_pickup_delay_seconds_count{kind=\"apply_downgrade\"})",
                )
                .await;
            r.first().map(number).filter(|n| *n >= 5.0)
        },
    )
    .await;
    assert_eq!(runs, 5.0);
    let p99 = prom
        .query(
            &http,
            "histogram_quantile(0.99, sum by (le) (tierflow_job_pickup_delay_seconds_bucket))",
        )
        .await;
    let p99 = p99.first().map(number).unwrap_or(f64::NAN);
    assert!(p99.is_finite() && p99 < 1.0, "pickup p99 {p99}");
    let depth_after = wait_until(Duration::from_secs(30), "the scheduled jobs to drain in Prometheus", || async {
        let r = prom
            .query(&http, "max by (kind) (tierflow_queue_jobs{kind=\"apply_downgrade\",state=\"scheduled\"})")
            .await;
        r.first().map(number).filter(|n| *n == 0.0)
    })
    .await;
    assert_eq!(depth_after, 0.0);

    // promtool accepts the real exposition of both processes.
    for addr in [&api_metrics, &worker_metrics] {
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("tierflow_build_info"), "{addr}");
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool is installed");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {addr}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
