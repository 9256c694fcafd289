//! `deliver_event`'s handler: POSTs one `entitlement.changed` event to one webhook endpoint,
//! signed as Standard Webhooks specifies ([`crate::webhook`]). The kind (payload, attempts,
//! retry schedule, durable claims) is `tierflow_store::jobs::deliver_event`; the handler lives
//! here, with the HTTP client.
//!
//! - 2xx: delivered.
//! - `410 Gone`: the endpoint asked for nothing more; it is disabled (audited) and the job is dead.
//! - 3xx: not followed (a redirect would turn the POST into a body-less GET elsewhere); retried,
//!   so an operator can fix the endpoint's URL in the meantime.
//! - any other status, a timeout or a connection error: retried on the schedule of
//!   `tierflow_store::jobs::deliver_event::RETRY_SCHEDULE` (about three days), or after the
//!   response's `Retry-After` when it has one (1 s to a day; during the event's first hour such
//!   an answer does not spend an attempt, so a deploy answering `503 Retry-After: 1` cannot use
//!   up the schedule in seconds). After the last attempt the job is dead and shows
//!   in `tierflow jobs dead`; `tierflow jobs retry <job>` (or `POST /v1/jobs/{id}/retry`)
//!   delivers it again.
//!
//! A managed endpoint's URL, status and secrets are read at each attempt, so a rotation, a URL
//! fix or a disable applies to queued deliveries too; a disabled or deleted endpoint's deliveries
//! die with a message saying so. Each delivery is its own job, so a failing endpoint delays only
//! its own events.
//!
//! A standalone kind: no transaction is held while an endpoint is slow, and its success is
//! recorded by the batching completer. A crash between the endpoint's 2xx and that record
//! delivers the event again with the same `webhook-id`, which receivers deduplicate on.
//!
//! Tables: `webhook_endpoints` (read; written on 410) besides the job's own row. Proven by
//! `crates/tierflow-worker/tests/webhooks.rs`.

use std::time::Duration;

use chrono::Utc;
use tierflow_queue::{HandlerFuture, Job, JobError, Outcome};
use tierflow_store::audit::Principal;
use tierflow_store::jobs::DeliverEvent;
use tierflow_store::jobs::deliver_event::MAX_RETRY_AFTER;
use tierflow_store::webhooks::{self, EndpointStatus};

use crate::WorkerState;
use crate::webhook::{ID_HEADER, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER, WebhookClient, sign};

/// Webhook deliveries by outcome (delivered, failed_retrying, rejected).
pub const WEBHOOK_DELIVERIES: &str = "tierflow_webhook_deliveries_total";

/// Delivers one event.
pub fn handle(job: DeliverEvent, state: &WorkerState) -> HandlerFuture<'_> {
    Box::pin(async move {
        tracing::Span::current().record("tenant_id", job.event.tenant_id.as_str());
        let Some(client) = state.webhooks.as_ref() else {
            return Err(JobError::Permanent(
                "this worker process has no webhook client; re-drive the job on a `tierflow worker`".into(),
            ));
        };
        let result = deliver(client, state, &job).await;
        let outcome = match &result {
            Ok(_) => "delivered",
            Err(JobError::Permanent(_)) => "rejected",
            Err(_) => "failed_retrying",
        };
        metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
        result
    })
}

async fn deliver(
    client: &WebhookClient,
    state: &WorkerState,
    job: &DeliverEvent,
) -> Result<Outcome, JobError> {
    let (url, secrets) = target(client, job).await?;
    let body = serde_json::to_vec(&job.event)
        .map_err(|e| JobError::Permanent(format!("event does not encode: {e}")))?;
    let timestamp = Utc::now().timestamp();
    let id = message_id(&job.event.id);
    let sent = client
        .http
        .post(&url)
        .header("Content-Type", "application/json")
        .header(ID_HEADER, &id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(&secrets, &id, timestamp, &body))
        .body(body)
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        // Without the URL: it may carry a token.
        Err(e) => return Err(JobError::Retry(format!("delivery failed: {}", causes(e)))),
    };
    let status = r.status();
    if status.is_success() {
        return Ok(Outcome::Done(format!("delivered ({status})")));
    }
    if status == reqwest::StatusCode::GONE {
        let Some(id) = job.endpoint_id else {
            return Err(JobError::Permanent(
                "endpoint answered 410 Gone: remove it from TIERFLOW_WEBHOOK_URLS (an endpoint configured by environment cannot be disabled here)".into(),
            ));
        };
        let ctx = state.store.acting_as(Principal::job(DeliverEvent::KIND));
        let mut conn = client.db.acquire().await.map_err(retry_db)?;
        webhooks::disable_gone(&mut conn, &ctx, id)
            .await
            .map_err(|e| JobError::Retry(format!("could not disable endpoint {id}: {e}")))?;
        tracing::warn!(endpoint_id = %id, "webhook endpoint answered 410 Gone; disabled it");
        return Err(JobError::Permanent(format!(
            "endpoint answered 410 Gone: it is disabled and gets no more events; `tierflow webhooks enable {id}` resumes it"
        )));
    }
    let message = if status.is_redirection() {
        format!(
            "endpoint answered {status}; redirects are not followed — set the endpoint's URL to where it points"
        )
    } else {
        format!("endpoint answered {status}")
    };
    Err(match retry_after(r.headers()) {
        Some(after) => JobError::RetryAfter {
            after,
            counted: spends_an_attempt(&job.event, Utc::now()),
            message: format!("{message}; Retry-After {}s", after.as_secs()),
        },
        None => JobError::Retry(message),
    })
}

/// The `webhook-id` of an event: Standard Webhooks wants ids with no `.` that callers do not
/// choose, and event ids are `<action>:<subject>` (tenant ids included), so the header carries
/// `msg_` and the first 32 hex digits of the event id's SHA-256 — stable across retries and
/// re-deliveries, like the event id in the body.
pub fn message_id(event_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(event_id.as_bytes());
    format!("msg_{}", &hex::encode(digest)[..32])
}

/// Whether an answer with `Retry-After` spends one of the event's attempts: not during the
/// event's first hour (a deploy behind a load balancer answering `503 Retry-After: 1` must not
/// use up three days of attempts in seconds), always after it. An event stamped in the future
/// (a test clock's time) always spends one.
fn spends_an_attempt(
    event: &tierflow_store::events::EntitlementChanged,
    now: chrono::DateTime<Utc>,
) -> bool {
    let age = now - event.occurred_at;
    !(age >= chrono::Duration::zero() && age < chrono::Duration::hours(1))
}

/// An error with its causes, for the job's last error (reqwest's own text says only "error
/// sending request"); without the URL, which may carry a token.
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Where to deliver and with which secrets: a managed endpoint's as they stand now, or the
/// environment's.
async fn target(
    client: &WebhookClient,
    job: &DeliverEvent,
) -> Result<(String, Vec<Secret>), JobError> {
    let Some(id) = job.endpoint_id else {
        let secret = client.static_secret.clone().ok_or_else(|| {
            JobError::Permanent(
                "no TIERFLOW_WEBHOOK_SECRET in this worker for an endpoint configured by environment; set it and re-drive with `tierflow jobs retry`".into(),
            )
        })?;
        return Ok((job.endpoint.clone(), vec![secret]));
    };
    let mut conn = client.db.acquire().await.map_err(retry_db)?;
    let target = webhooks::delivery_target(&mut conn, id, Utc::now())
        .await
        .map_err(|e| match e {
            // A secret that does not parse will not parse on the next attempt either.
            tierflow_store::StoreError::Corrupt(_) => JobError::Permanent(format!(
                "endpoint {id}: {e}; rotate its secret (`tierflow webhooks rotate-secret {id} --overlap-secs 0`) and re-deliver"
            )),
            e => JobError::Retry(format!("could not read endpoint {id}: {e}")),
        })?;
    match target {
        None => Err(JobError::Permanent(format!(
            "webhook endpoint {id} no longer exists"
        ))),
        Some(t) if t.status == EndpointStatus::Disabled => Err(JobError::Permanent(format!(
            "webhook endpoint {id} is disabled; enable it, then re-deliver with `tierflow jobs retry <job>`"
        ))),
        Some(t) => Ok((t.url, t.secrets)),
    }
}

fn retry_db(e: sqlx::Error) -> JobError {
    JobError::Retry(format!("database: {e}"))
}

/// A `Retry-After` of seconds or an HTTP date, at least [`MIN_RETRY_AFTER`] and at most
/// [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let after = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&Utc) - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(after.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
}

/// The shortest wait a `Retry-After` may ask for: `0` or a past date must not make a tight loop.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let soon = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert("retry-after", soon.parse().unwrap());
        let d = retry_after(&h).unwrap().as_secs();
        assert!((115..=120).contains(&d), "{d}");
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(MIN_RETRY_AFTER));
        h.insert("retry-after", "0".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MIN_RETRY_AFTER));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn message_ids_are_stable_opaque_and_dot_free() {
        let a = message_id("transition.downgrade:0190a0a0-0000-7000-8000-000000000000");
        assert_eq!(
            a,
            message_id("transition.downgrade:0190a0a0-0000-7000-8000-000000000000")
        );
        assert_ne!(
            a,
            message_id("transition.upgrade:0190a0a0-0000-7000-8000-000000000000")
        );
        assert!(
            a.starts_with("msg_") && a.len() == 36 && !a.contains('.'),
            "{a}"
        );
    }
}
