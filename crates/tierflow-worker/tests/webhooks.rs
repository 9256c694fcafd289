//! Downstream events as Standard Webhooks: deliveries the reference verifier accepts across a
//! secret rotation, no redirects followed, `410 Gone` disabling the endpoint, `Retry-After`
//! honoured, the three-day retry schedule in the job rows, and a failing endpoint that never
//! holds up other work. The receiver is a fake (it stands for a system outside
//! tierflow): a bare HTTP/1.1 server answering from a script.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use sqlx::PgPool;
use tierflow_domain::ids::{Actor, TenantId, TierId};
use tierflow_domain::transition::{GracePeriod, Target};
use tierflow_store::events::EntitlementChanged;
use tierflow_store::webhooks::{self, NewEndpoint};
use tierflow_store::{Context, TransitionRequest, request_transition};
use tierflow_worker::WorkerState;
use tierflow_worker::deliver_event::message_id;
use tierflow_worker::webhook::{Secret, WebhookClient, verify};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    /// Wall-clock time of receipt, to compare with the job row's times.
    wall: chrono::DateTime<chrono::Utc>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
}

/// An answer: a status and extra header lines (`"retry-after: 3\r\n"`).
type Reply = (u16, String);

/// A receiver answering each request with the next reply of `script`, then `then` forever.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<Reply>, then: Reply) -> Receiver {
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
                let (log, script, then) = (log.clone(), script.clone(), then.clone());
                tokio::spawn(async move {
                    while let Some((headers, body)) = read_request(&mut sock).await {
                        log.lock().unwrap().push(Received {
                            at: Instant::now(),
                            wall: chrono::Utc::now(),
                            headers,
                            body,
                        });
                        let (status, extra) = script
                            .lock()
                            .unwrap()
                            .next()
                            .unwrap_or_else(|| then.clone());
                        let reply =
                            format!("HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\n\r\n");
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, got }
    }

    /// Answers 200 to everything.
    async fn ok() -> Receiver {
        Self::start(vec![], ok()).await
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn ok() -> Reply {
    (200, String::new())
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

/// Worker state delivering to the endpoints of `ctx` (environment ones signed with `secret`) and
/// to the managed endpoints in `pool`.
fn state(ctx: &Context, pool: &PgPool, secret: Option<Secret>) -> Arc<WorkerState> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(WorkerState {
        store: ctx.clone(),
        webhooks: Some(WebhookClient::new(pool.clone(), secret).unwrap()),
        reconcile_interval: tierflow_store::reconciler::DEFAULT_INTERVAL,
    })
}

/// A managed endpoint for `url`; returns its id and secret.
async fn endpoint(pool: &PgPool, url: &str) -> (Uuid, String) {
    let mut conn = pool.acquire().await.unwrap();
    let out = webhooks::create(
        &mut conn,
        &system_ctx(),
        NewEndpoint {
            url: url.to_owned(),
            description: String::new(),
            event_types: vec![],
        },
    )
    .await
    .unwrap();
    (out.endpoint.id, out.secret)
}

/// The single `deliver_event` job for endpoint `id`, once it exists.
async fn job_for(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE job_type = 'deliver_event'
            AND convert_from(job, 'UTF8')::jsonb ->> 'endpoint_id' = $1::text",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Runs the reference Standard Webhooks verifier (PyPI `standardwebhooks`) over `deliveries`
/// with each of `secrets`: one row per delivery, one bool per secret.
fn reference_verify(secrets: &[&str], deliveries: &[Received]) -> Vec<Vec<bool>> {
    use std::io::Write;
    let request = serde_json::json!({
        "secrets": secrets,
        "deliveries": deliveries.iter().map(|d| serde_json::json!({
            "id": d.headers["webhook-id"],
            "timestamp": d.headers["webhook-timestamp"],
            "signature": d.headers["webhook-signature"],
            "body": String::from_utf8(d.body.clone()).unwrap(),
        })).collect::<Vec<_>>(),
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/receiver/verify_standard_webhooks.py"
    );
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference verifier failed (is `standardwebhooks` installed? `pip install standardwebhooks`; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(v["verified"].clone()).unwrap()
}

/// Deliveries carry Standard Webhooks headers that the reference verifier accepts; after a
/// secret rotation they carry both signatures until the overlap ends, then only the new one.
/// Every retry keeps the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_verifier_accepts_deliveries_before_during_and_after_a_rotation() {
    let db = db().await;
    let receiver = Receiver::ok().await;
    let (id, first) = endpoint(db.pool(), &receiver.url).await;
    let ctx = (*system_ctx()).clone();
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx, db.pool(), None),
        fast_config(),
    ));
    let delivered = |n: usize| {
        let receiver = &receiver;
        wait_until(Duration::from_secs(15), "deliveries", move || async move {
            let got = receiver.received();
            (got.len() >= n).then_some(got)
        })
    };
    provision(db.pool(), &ctx, "t1").await;
    delivered(1).await;

    let mut conn = db.pool().acquire().await.unwrap();
    let second = webhooks::rotate_secret(&mut conn, &ctx, id, 3600)
        .await
        .unwrap();
    assert!(second.endpoint.previous_secret_expires_at.is_some());
    provision(db.pool(), &ctx, "t2").await;
    delivered(2).await;
    let third = webhooks::rotate_secret(&mut conn, &ctx, id, 0)
        .await
        .unwrap();
    provision(db.pool(), &ctx, "t3").await;
    let got = delivered(3).await;

    let mut by_tenant = got.clone();
    by_tenant.sort_by_key(|r| {
        serde_json::from_slice::<EntitlementChanged>(&r.body)
            .unwrap()
            .tenant_id
    });
    let signatures: Vec<usize> = by_tenant
        .iter()
        .map(|r| r.headers["webhook-signature"].split(' ').count())
        .collect();
    assert_eq!(signatures, [1, 2, 1], "signatures per delivery");
    let secrets = [
        first.as_str(),
        second.secret.as_str(),
        third.secret.as_str(),
    ];
    assert_eq!(
        reference_verify(&secrets, &by_tenant),
        [
            [true, false, false],
            [true, true, false],
            [false, false, true],
        ],
        "which secret verifies which delivery (t1 before, t2 during, t3 after the overlap)"
    );
    // Our own receiver check agrees, and a tampered body fails it.
    let r = &by_tenant[1];
    let now = chrono::Utc::now().timestamp();
    let check = |secret: &str, body: &[u8]| {
        verify(
            &Secret::parse(secret).unwrap(),
            r.id(),
            &r.headers["webhook-timestamp"],
            &r.headers["webhook-signature"],
            body,
            now,
            300,
        )
    };
    assert_eq!(check(&second.secret, &r.body), Ok(()));
    assert!(check(&second.secret, b"{}").is_err());
    let event: EntitlementChanged = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        message_id(&event.id),
        r.id(),
        "webhook-id is derived from the event id"
    );
    assert!(!r.id().contains('.'));
    assert_eq!(event.kind, "entitlement.changed");
    fleet.stop().await;
}

/// A redirect is not followed (the target never hears of the event; the delivery waits for a
/// retry, saying why), and `410 Gone` disables the endpoint: the job is dead, the endpoint is
/// audited as disabled by the worker, and later changes enqueue nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_410_disables_the_endpoint() {
    let db = db().await;
    let target = Receiver::ok().await;
    // It also says to come back in an hour, so the test sees exactly one attempt.
    let moved = Receiver::start(
        vec![],
        (
            301,
            format!("location: {}\r\nretry-after: 3600\r\n", target.url),
        ),
    )
    .await;
    let gone = Receiver::start(vec![], (410, String::new())).await;
    let (moved_id, _) = endpoint(db.pool(), &moved.url).await;
    let (gone_id, _) = endpoint(db.pool(), &gone.url).await;
    let ctx = (*system_ctx()).clone();
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx, db.pool(), None),
        fast_config(),
    ));
    provision(db.pool(), &ctx, "acme").await;

    let gone_job = job_for(db.pool(), gone_id).await;
    wait_for_status(db.pool(), &gone_job, "Dead", Duration::from_secs(15)).await;
    let moved_job = job_for(db.pool(), moved_id).await;
    let why: String = wait_until(
        Duration::from_secs(15),
        "the redirect to be answered",
        || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT last_result ->> 'Err' FROM apalis.jobs WHERE id = $1 AND status = 'Failed'",
            )
            .bind(&moved_job)
            .fetch_optional(db.pool())
            .await
            .unwrap()
            .flatten()
        },
    )
    .await;
    assert!(why.contains("301") && why.contains("not followed"), "{why}");
    assert_eq!(moved.received().len(), 1);
    assert!(target.received().is_empty(), "the redirect was followed");

    let mut conn = db.pool().acquire().await.unwrap();
    let e = webhooks::get(&mut conn, gone_id).await.unwrap();
    assert_eq!(e.status, webhooks::EndpointStatus::Disabled);
    assert!(e.disabled_reason.unwrap().contains("410"));
    let (action, principal): (String, String) = sqlx::query_as(
        "SELECT action, principal FROM audit_events WHERE subject_type = 'webhook_endpoint'
            AND subject_id = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(gone_id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), principal.as_str()),
        ("webhook_endpoint.disabled", "job:deliver_event")
    );

    provision(db.pool(), &ctx, "beta").await;
    let for_gone: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = 'deliver_event'
            AND convert_from(job, 'UTF8')::jsonb ->> 'endpoint_id' = $1::text",
    )
    .bind(gone_id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(for_gone, 1, "a disabled endpoint gets no new deliveries");
    assert_eq!(gone.received().len(), 1);
    fleet.stop().await;
}

/// `Retry-After: 3` replaces the schedule's first wait (5 s): the row's next run is 3 s after the
/// failure, the endpoint hears the retry no sooner, and (in the event's first hour) the refused
/// attempt is not counted against the schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_sets_the_next_attempt() {
    let db = db().await;
    let receiver = Receiver::start(vec![(503, "retry-after: 3\r\n".into())], ok()).await;
    let (id, _) = endpoint(db.pool(), &receiver.url).await;
    let ctx = (*system_ctx()).clone();
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx, db.pool(), None),
        fast_config(),
    ));
    provision(db.pool(), &ctx, "acme").await;
    let job = job_for(db.pool(), id).await;
    wait_for_status(db.pool(), &job, "Done", Duration::from_secs(15)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id(), got[1].id(), "a retry keeps its webhook-id");
    // The retry's due time (kept in the row) is 3 s after the refused attempt — not the
    // schedule's 5 s (at least 4.5 s with jitter) — and the endpoint heard no sooner.
    let run_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT run_at FROM apalis.jobs WHERE id = $1")
            .bind(&job)
            .fetch_one(db.pool())
            .await
            .unwrap();
    let wait = (run_at - got[0].wall).as_seconds_f64();
    assert!(
        (2.9..4.5).contains(&wait),
        "retry due {wait} s after the 503"
    );
    let gap = (got[1].at - got[0].at).as_secs_f64();
    assert!(gap >= 2.9, "retried after {gap} s");
    // In the event's first hour an answer with Retry-After spends no attempt: one counted.
    assert_eq!(job_state(db.pool(), &job).await.1, 1);
    fleet.stop().await;
}

/// The whole retry schedule, attempt by attempt, as the job row records it: after each failure
/// the row's next run is the schedule's next wait (±10 % jitter); the test then makes it due at
/// once instead of waiting hours. After the last attempt the job is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_schedule_spans_three_days_in_the_job_rows() {
    use tierflow_store::jobs::deliver_event::RETRY_SCHEDULE;
    let db = db().await;
    let receiver = Receiver::start(vec![], (500, String::new())).await;
    let (id, _) = endpoint(db.pool(), &receiver.url).await;
    let ctx = (*system_ctx()).clone();
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx, db.pool(), None),
        fast_config(),
    ));
    provision(db.pool(), &ctx, "acme").await;
    let job = job_for(db.pool(), id).await;
    let mut waits = Vec::new();
    for failed in 1..=RETRY_SCHEDULE.len() as i32 {
        let wait: f64 = wait_until(Duration::from_secs(15), "the attempt to fail", || async {
            sqlx::query_scalar::<_, f64>(
                "SELECT extract(epoch FROM run_at - now())::float8 FROM apalis.jobs
                  WHERE id = $1 AND status = 'Failed' AND attempts = $2",
            )
            .bind(&job)
            .bind(failed)
            .fetch_optional(db.pool())
            .await
            .unwrap()
        })
        .await;
        waits.push(wait);
        sqlx::query("UPDATE apalis.jobs SET run_at = now() WHERE id = $1 AND status = 'Failed'")
            .bind(&job)
            .execute(db.pool())
            .await
            .unwrap();
    }
    wait_for_status(db.pool(), &job, "Dead", Duration::from_secs(15)).await;
    for (wait, plain) in waits.iter().zip(RETRY_SCHEDULE) {
        let plain = plain.as_secs_f64();
        assert!(
            *wait >= plain * 0.9 - 2.0 && *wait <= plain * 1.1,
            "waits {waits:?} do not follow the schedule {RETRY_SCHEDULE:?}"
        );
    }
    let hours: f64 = waits.iter().sum::<f64>() / 3600.0;
    assert!((64.0..80.0).contains(&hours), "{hours} h");
    assert_eq!(receiver.received().len(), RETRY_SCHEDULE.len() + 1);
    fleet.stop().await;
}

/// Endpoints configured by environment still work, signed with the static secret; with one
/// endpoint failing every delivery and another healthy, the downgrade's jobs still run on time
/// and the healthy endpoint receives every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_never_blocks_other_work() {
    let db = db().await;
    let bad = Receiver::start(vec![], (500, String::new())).await;
    let good = Receiver::ok().await;
    let ctx = (*system_ctx())
        .clone()
        .with_webhooks(vec![bad.url.clone(), good.url.clone()]);
    let secret = Secret::generate();
    let fleet = start(tierflow_worker::fleet::build(
        db.pool().clone(),
        state(&ctx, db.pool(), Some(secret.clone())),
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
    let now = chrono::Utc::now().timestamp();
    for r in &events {
        let sig = &r.headers["webhook-signature"];
        let ts = &r.headers["webhook-timestamp"];
        assert_eq!(verify(&secret, r.id(), ts, sig, &r.body, now, 300), Ok(()));
    }
    assert_eq!(
        reference_verify(&[&secret.expose()], &events),
        vec![vec![true]; 5]
    );
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
