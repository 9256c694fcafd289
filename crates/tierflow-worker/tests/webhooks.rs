//! Downstream events: signed deliveries a receiver can verify, retried with backoff, and a failing
//! endpoint that never holds up other work. The receiver is a fake (it stands for a system outside
//! tierflow): a bare HTTP/1.1 server answering from a script.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tierflow_domain::ids::{Actor, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::events::EntitlementChanged;
use tierflow_store::{Context, TransitionRequest, request_transition};
use tierflow_worker::WorkerState;
use tierflow_worker::webhook::{Secret, WebhookClient, verify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A receiver answering each request with the next status of `script` (then 200 forever).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<u16>, always: Option<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let log = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    while let Some((headers, body)) = read_request(&mut sock).await {
                        log.lock().unwrap().push(Received {
                            at: Instant::now(),
                            headers,
                            body,
                        });
                        let status =
                            always.unwrap_or_else(|| script.lock().unwrap().next().unwrap_or(200));
                        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn read_request(
    sock: &mut tokio::net::TcpStream,
) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((headers, body))
}

const SECRET: &str = "whsec-test";

fn state(ctx: &Context) -> Arc<WorkerState> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(WorkerState {
        store: ctx.clone(),
        webhooks: Some(WebhookClient::new(Secret::new(SECRET)).unwrap()),
        reconcile_interval: tierflow_store::reconciler::DEFAULT_INTERVAL,
    })
}

/// The receiver verifies every delivery's signature; a delivery that fails twice is retried with
/// backoff and the same idempotency key, and then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_verifies_signed_events_retried_with_backoff() {
    let db = db().await;
    let receiver = Receiver::start(vec![503, 503], None).await;
    let ctx = (*system_ctx())
        .clone()
        .with_webhooks(vec![receiver.url.clone()]);
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx),
        fast_config(),
    ));
    provision(db.pool(), &ctx, "acme").await;

    let job: String =
        sqlx::query_scalar("SELECT id FROM apalis.jobs WHERE job_type = 'deliver_event'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    wait_for_status(db.pool(), &job, "Done", Duration::from_secs(15)).await;
    assert_eq!(job_state(db.pool(), &job).await.1, 3);

    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let secret = Secret::new(SECRET);
    let now = chrono::Utc::now().timestamp();
    for r in &got {
        let sig = &r.headers["tierflow-signature"];
        assert_eq!(verify(&secret, sig, &r.body, now, 300), Ok(()));
        assert!(verify(&Secret::new("wrong"), sig, &r.body, now, 300).is_err());
        assert_eq!(
            r.headers["idempotency-key"],
            got[0].headers["idempotency-key"]
        );
    }
    let event: EntitlementChanged = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(event.kind, "entitlement.changed");
    assert_eq!(event.id, got[0].headers["idempotency-key"]);
    assert_eq!(event.tenant_id, "acme");
    assert_eq!(event.entitlement.tier_id.as_str(), "professional");
    assert!(event.entitlement.features["voice"].value);
    // Backoff: about 1 s, then about 2 s (±20 %).
    let gaps: Vec<f64> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    assert!(
        gaps[0] >= 0.75 && gaps[1] >= 1.5,
        "retries were not backed off: {gaps:?}"
    );
    fleet.stop().await;
}

/// With one endpoint failing every delivery and another healthy, the downgrade's jobs still run
/// on time and the healthy endpoint receives every event, in version order per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_never_blocks_other_work() {
    let db = db().await;
    let bad = Receiver::start(vec![], Some(500)).await;
    let good = Receiver::start(vec![], None).await;
    let ctx = (*system_ctx())
        .clone()
        .with_webhooks(vec![bad.url.clone(), good.url.clone()]);
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx),
        fast_config(),
    ));
    provision(db.pool(), &ctx, "acme").await;
    let mut conn = db.pool().acquire().await.unwrap();
    let out = request_transition(
        &mut conn,
        &ctx,
        TransitionRequest {
            tenant_id: TenantId::parse("acme").unwrap(),
            target: Target::Tier(TierId::parse("starter").unwrap()),
            grace: Some(GracePeriod::from_duration(chrono::Duration::milliseconds(700)).unwrap()),
            reason: None,
            requested_by: Actor::parse("billing").unwrap(),
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
    wait_for_status(db.pool(), &apply.job_id, "Done", Duration::from_secs(10)).await;

    // provision, downgrade, voice_disable, sla_freeze, apply_downgrade: five events.
    let events = wait_until(
        Duration::from_secs(10),
        "five deliveries to the good endpoint",
        || async {
            let got = good.received();
            (got.len() == 5).then_some(got)
        },
    )
    .await;
    let mut causes: Vec<String> = events
        .iter()
        .map(|r| {
            serde_json::from_slice::<EntitlementChanged>(&r.body)
                .unwrap()
                .cause
                .action
        })
        .collect();
    causes.sort();
    assert_eq!(
        causes,
        [
            "action.apply_downgrade",
            "action.sla_freeze",
            "action.voice_disable",
            "transition.downgrade",
            "transition.provision"
        ]
    );
    assert!(!bad.received().is_empty(), "the bad endpoint was tried");
    let retrying: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'deliver_event' AND status IN ('Failed', 'Running', 'Pending')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(
        retrying > 0,
        "the bad endpoint's deliveries wait for their retry"
    );
    fleet.stop().await;
}
