//! The demo's downstream system: a webhook receiver that verifies every delivery's signature and
//! answers 503 (with `Retry-After: 1`) to the first `fail_first` requests, to show retries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tierflow_worker::webhook::{
    ID_HEADER, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER, TOLERANCE_SECS, verify,
};

/// One delivery the receiver saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    pub event_id: String,
    pub status: u16,
    pub signature_valid: bool,
    #[serde(skip)]
    pub at: Instant,
}

#[derive(Clone)]
struct Shared {
    secret: Secret,
    fail_first: usize,
    log: Arc<Mutex<Vec<Delivery>>>,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    log: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    /// Serves on a free loopback port until the process ends.
    pub async fn start(secret: Secret, fail_first: usize) -> anyhow::Result<Receiver> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            secret,
            fail_first,
            log: log.clone(),
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(shared);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, log })
    }

    /// Every delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn receive(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let event_id = header(ID_HEADER);
    let valid = verify(
        &s.secret,
        &event_id,
        &header(TIMESTAMP_HEADER),
        &header(SIGNATURE_HEADER),
        &body,
        chrono::Utc::now().timestamp(),
        TOLERANCE_SECS,
    )
    .is_ok();
    // Busy answers say when to come back, which tierflow honours over its own schedule.
    let retry_after = [("retry-after", "1")];
    let Ok(mut log) = s.log.lock() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, retry_after);
    };
    let status = if !valid {
        StatusCode::UNAUTHORIZED
    } else if log.len() < s.fail_first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    log.push(Delivery {
        event_id,
        status: status.as_u16(),
        signature_valid: valid,
        at: Instant::now(),
    });
    (status, retry_after)
}
