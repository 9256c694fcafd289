//! Downstream events: every committed change to a tenant emits one `entitlement.changed` event
//! per webhook endpoint (managed through the API, [`crate::webhooks`], or configured by
//! environment), as a `deliver_event` job written in the change's own
//! transaction (an outbox): the event exists if and only if the change committed.
//!
//! The event carries the full effective entitlement after the change and a stable id,
//! `<action>:<subject id>` (`transition.downgrade:0190…`, `action.apply_downgrade:0190…`), which is
//! also the delivery's idempotency key: a receiver that sees an id twice has seen the same event.
//! With no endpoint, the event is only logged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tierflow_domain::effective::EffectiveEntitlement;
use tierflow_domain::ids::TenantId;
use tierflow_queue::{NewJob, enqueue};
use uuid::Uuid;

use crate::jobs::DeliverEvent;
use crate::{Context, StoreError};

/// The event type.
pub const ENTITLEMENT_CHANGED: &str = "entitlement.changed";

/// What caused an event: the audit action and its subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    pub action: String,
    pub subject_type: String,
    pub subject_id: String,
}

/// The body delivered to webhook endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementChanged {
    /// Stable per change; also the delivery's `Idempotency-Key`.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: String,
    /// The tenant's version after the change: receivers drop events older than one they applied.
    pub version: i64,
    pub cause: Cause,
    pub entitlement: EffectiveEntitlement,
}

/// Reads the tenant's effective entitlement after a change and emits the change's event, in the
/// change's transaction; returns the entitlement for the caller's response.
pub(crate) async fn announce(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    action: &str,
    subject_type: &str,
    subject_id: &str,
    now: DateTime<Utc>,
) -> Result<EffectiveEntitlement, StoreError> {
    let entitlement = crate::tenants::effective_at(conn, tenant_id, now).await?;
    emit(
        conn,
        ctx,
        action,
        subject_type,
        subject_id,
        &entitlement,
        now,
    )
    .await?;
    Ok(entitlement)
}

/// Emits the event of a change whose caller needs no entitlement back (a job's): with no webhook
/// endpoint configured there is nothing to deliver, so the entitlement is not read and the event
/// is only logged.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn announce_change(
    conn: &mut PgConnection,
    ctx: &Context,
    tenant_id: &TenantId,
    version: i64,
    action: &str,
    subject_type: &str,
    subject_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let managed = crate::webhooks::subscribed(conn).await?;
    announce_change_to(
        conn,
        ctx,
        managed,
        tenant_id,
        version,
        action,
        subject_type,
        subject_id,
        now,
    )
    .await
}

/// [`announce_change`] for a caller that read the managed endpoints (`(id, url)`) itself, in the
/// change's transaction (with [`crate::webhooks::subscribed_endpoints`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn announce_change_to(
    conn: &mut PgConnection,
    ctx: &Context,
    managed: Vec<(Uuid, String)>,
    tenant_id: &TenantId,
    version: i64,
    action: &str,
    subject_type: &str,
    subject_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let to = destinations_of(ctx, managed);
    if to.is_empty() {
        log_only(&event_id(action, subject_id), tenant_id.as_str(), version);
        return Ok(());
    }
    let entitlement = crate::tenants::effective_at(conn, tenant_id, now).await?;
    let event = event_of(action, subject_type, subject_id, &entitlement, now);
    enqueue(conn, deliveries(ctx, &to, &event, now)?).await?;
    Ok(())
}

fn event_id(action: &str, subject_id: &str) -> String {
    format!("{action}:{subject_id}")
}

fn log_only(event_id: &str, tenant_id: &str, version: i64) {
    tracing::info!(
        event_id,
        tenant_id,
        version,
        "entitlement.changed (no webhook endpoint configured; logged only)"
    );
}

/// Emits the events of one change that reached many tenants (a tier edit's batch), with one
/// insert for all of them; `changes` holds each event's subject id and entitlement. With no
/// endpoint configured, one line is logged for the batch.
pub(crate) async fn emit_many(
    conn: &mut PgConnection,
    ctx: &Context,
    action: &str,
    subject_type: &str,
    changes: &[(String, EffectiveEntitlement)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let to = destinations(conn, ctx).await?;
    if to.is_empty() {
        tracing::info!(
            action,
            tenants = changes.len(),
            "entitlement.changed for a batch of tenants (no webhook endpoint configured; logged only)"
        );
        return Ok(());
    }
    let mut jobs = Vec::with_capacity(changes.len() * to.len());
    for (subject_id, entitlement) in changes {
        let event = event_of(action, subject_type, subject_id, entitlement, now);
        jobs.extend(deliveries(ctx, &to, &event, now)?);
    }
    enqueue(conn, jobs).await?;
    Ok(())
}

/// One endpoint an event goes to: a managed one (by id) or one configured by environment.
#[derive(Debug, Clone)]
struct Destination {
    endpoint_id: Option<Uuid>,
    url: String,
}

/// Where an `entitlement.changed` event goes now: the endpoints configured by environment, and
/// the enabled managed endpoints subscribed to it — read in the change's transaction, so an
/// endpoint created before the change commits gets its event.
async fn destinations(
    conn: &mut PgConnection,
    ctx: &Context,
) -> Result<Vec<Destination>, StoreError> {
    let managed = crate::webhooks::subscribed(conn).await?;
    Ok(destinations_of(ctx, managed))
}

/// The endpoints configured by environment, then the managed ones (`(id, url)`).
fn destinations_of(ctx: &Context, managed: Vec<(Uuid, String)>) -> Vec<Destination> {
    ctx.webhooks
        .iter()
        .map(|url| Destination {
            endpoint_id: None,
            url: url.clone(),
        })
        .chain(managed.into_iter().map(|(id, url)| Destination {
            endpoint_id: Some(id),
            url,
        }))
        .collect()
}

/// One `deliver_event` job per destination for `event`, keyed `<event id>@<endpoint id or URL>`.
fn deliveries(
    ctx: &Context,
    to: &[Destination],
    event: &EntitlementChanged,
    now: DateTime<Utc>,
) -> Result<Vec<NewJob>, StoreError> {
    to.iter()
        .map(|d| {
            let key = match d.endpoint_id {
                Some(id) => format!("{}@{id}", event.id),
                None => format!("{}@{}", event.id, d.url),
            };
            let job = DeliverEvent {
                endpoint: d.url.clone(),
                endpoint_id: d.endpoint_id,
                event: event.clone(),
            };
            Ok(NewJob::new(&job, deliver_at(ctx, now))?.with_key(key))
        })
        .collect()
}

fn event_of(
    action: &str,
    subject_type: &str,
    subject_id: &str,
    entitlement: &EffectiveEntitlement,
    now: DateTime<Utc>,
) -> EntitlementChanged {
    EntitlementChanged {
        id: event_id(action, subject_id),
        kind: ENTITLEMENT_CHANGED.to_owned(),
        occurred_at: now,
        tenant_id: entitlement.tenant_id.to_string(),
        version: entitlement.version,
        cause: Cause {
            action: action.to_owned(),
            subject_type: subject_type.to_owned(),
            subject_id: subject_id.to_owned(),
        },
        entitlement: entitlement.clone(),
    }
}

/// Emits the event for a change, in the change's transaction.
pub(crate) async fn emit(
    conn: &mut PgConnection,
    ctx: &Context,
    action: &str,
    subject_type: &str,
    subject_id: &str,
    entitlement: &EffectiveEntitlement,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let event = event_of(action, subject_type, subject_id, entitlement, now);
    let to = destinations(conn, ctx).await?;
    if to.is_empty() {
        log_only(&event.id, &event.tenant_id, event.version);
        return Ok(());
    }
    enqueue(conn, deliveries(ctx, &to, &event, now)?).await?;
    Ok(())
}

/// When an event's delivery is due: with the change, or — for a test-clock tenant, whose `now`
/// is its clock's — right away in real time.
fn deliver_at(ctx: &Context, now: DateTime<Utc>) -> DateTime<Utc> {
    if ctx.on_test_clock { Utc::now() } else { now }
}
