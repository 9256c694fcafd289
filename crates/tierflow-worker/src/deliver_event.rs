//! `deliver_event`'s handler: POSTs one signed `entitlement.changed` event to one webhook
//! endpoint. The kind (payload, attempts, durable claims) is `tierflow_store::jobs::deliver_event`;
//! the handler lives here, with the HTTP client.
//!
//! 2xx is delivered. 408, 429 and 5xx, timeouts and connection errors are retried with backoff
//! (`tierflow_store::jobs::DeliverEvent` sets the attempts); any other 4xx means the endpoint will
//! never accept this event, so the job is dead at once and shows in `tierflow jobs dead`. Each
//! delivery is its own job, so a failing endpoint delays only its own events.
//!
//! A standalone kind: delivery touches no table, so it runs without a transaction — no
//! connection is held while an endpoint is slow — and its success is recorded by the batching
//! completer. A crash between the endpoint's 2xx and that record delivers the event again; the
//! event id (also the `Idempotency-Key`) lets the receiver drop the duplicate.
//!
//! Payload, kind name and attempts: `tierflow_store::jobs::DeliverEvent`. Tables: none besides
//! the job's own row. Proven by `crates/tierflow-worker/tests/webhooks.rs`.

use chrono::Utc;
use tierflow_queue::{HandlerFuture, JobError, Outcome};
use tierflow_store::jobs::DeliverEvent;

use crate::WorkerState;
use crate::webhook::{EVENT_ID_HEADER, SIGNATURE_HEADER, sign};

/// Webhook deliveries by outcome (delivered, failed_retrying, rejected).
pub const WEBHOOK_DELIVERIES: &str = "tierflow_webhook_deliveries_total";

/// Delivers one event.
pub fn handle(job: DeliverEvent, state: &WorkerState) -> HandlerFuture<'_> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", job.event.tenant_id.as_str());
        let Some(client) = state.webhooks.as_ref() else {
            return Err(JobError::Permanent(
                "no webhook secret configured in this worker; set TIERFLOW_WEBHOOK_SECRET and re-drive".into(),
            ));
        };
        let body = serde_json::to_vec(&job.event)
            .map_err(|e| JobError::Permanent(format!("event does not encode: {e}")))?;
        let signature = sign(&client.secret, Utc::now().timestamp(), &body);
        let sent = client
            .http
            .post(&job.endpoint)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &job.event.id)
            .header(EVENT_ID_HEADER, &job.event.id)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let result = match sent {
            Ok(r) if r.status().is_success() => {
                Ok(Outcome::Done(format!("delivered ({})", r.status())))
            }
            Ok(r) => {
                let status = r.status();
                let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
                let message = format!("endpoint answered {status}");
                Err(if retry {
                    JobError::Retry(message)
                } else {
                    JobError::Permanent(message)
                })
            }
            // Without the URL: it may carry a token.
            Err(e) => Err(JobError::Retry(format!(
                "delivery failed: {}",
                e.without_url()
            ))),
        };
        let outcome = match &result {
            Ok(_) => "delivered",
            Err(JobError::Retry(_) | JobError::Contended(_)) => "failed_retrying",
            Err(JobError::Permanent(_)) => "rejected",
        };
        metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
        result
    })
}
