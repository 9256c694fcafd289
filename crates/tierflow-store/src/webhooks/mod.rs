//! Webhook endpoints managed through the admin API: create, list, disable, enable, rotate the
//! secret. Each endpoint has its own Standard Webhooks secret ([`signature`]) and event filter;
//! [`crate::events`] enqueues one delivery per enabled endpoint whose filter takes the event.
//!
//! Every change here is audited (rows with no tenant, subject `webhook_endpoint`). Secrets are
//! returned only by [`create`] and [`rotate_secret`], never by a read, and never logged.
//!
//! Table: `webhook_endpoints` (migration 0015). Proven by `crates/tierflow-worker/tests/webhooks.rs`
//! (deliveries, rotation, 410, redirects) and `tests/e2e/api.rs` (the routes).

pub mod signature;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::audit_columns;
use crate::events::ENTITLEMENT_CHANGED;
use crate::{Context, StoreError};
use signature::Secret;

/// The event types an endpoint can subscribe to.
pub const EVENT_TYPES: &[&str] = &[ENTITLEMENT_CHANGED];
/// How long a rotated-out secret keeps signing when the caller names no overlap: a day, time for
/// every receiver replica to pick up the new one.
pub const DEFAULT_ROTATION_OVERLAP_SECS: i64 = 24 * 3600;
/// The longest overlap a rotation may ask for (30 days).
pub const MAX_ROTATION_OVERLAP_SECS: i64 = 30 * 24 * 3600;
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;

/// Whether an endpoint gets deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

/// An endpoint as reads show it: everything but its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    /// Where deliveries are POSTed; redirects are not followed.
    pub url: String,
    pub description: String,
    /// The event types delivered; empty means every type.
    pub event_types: Vec<String>,
    pub status: EndpointStatus,
    /// Why the endpoint was disabled (by an operator, or `410 Gone` from the endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Until when a rotated-out secret still signs deliveries beside the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with the secret just made for it: shown once, to its creator or rotator.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`: verify deliveries with it (Standard Webhooks). Not shown again.
    pub secret: String,
}

impl std::fmt::Debug for EndpointWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointWithSecret")
            .field("endpoint", &self.endpoint)
            .field("secret", &"whsec_…")
            .finish()
    }
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
}

/// Where and with what one delivery is signed, read at delivery time.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub url: String,
    pub status: EndpointStatus,
    /// The current secret first, then the previous one while its overlap lasts.
    pub secrets: Vec<Secret>,
}

fn invalid(field: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::InvalidField {
        field,
        detail: detail.into(),
    }
}

/// Checks an endpoint URL: at most 2,048 characters, absolute http(s) with a host, no
/// `user:password@`, no whitespace or control characters. The URL itself is not echoed: it may
/// carry a token.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "url",
            format!(
                "the URL must be at most {MAX_URL_LEN} characters with no spaces or control characters"
            ),
        ));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid(
            "url",
            "the URL must start with https:// or http://",
        ));
    }
    let parsed = url::Url::parse(url)
        .map_err(|e| invalid("url", format!("the URL does not parse ({e})")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "the URL needs a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "url",
            "the URL must not carry a user:password@ part; an endpoint authenticates deliveries by their signature",
        ));
    }
    Ok(())
}

/// The URL without its query and fragment, for audit rows: a query may carry a token.
fn audited_url(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_owned()
}

fn check(new: &NewEndpoint) -> Result<(), StoreError> {
    check_url(&new.url)?;
    check_description(&new.description)?;
    check_event_types(&new.event_types)
}

fn check_description(d: &str) -> Result<(), StoreError> {
    if d.chars().count() > MAX_DESCRIPTION_LEN || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_LEN} characters, no control characters"),
        ));
    }
    Ok(())
}

fn check_event_types(types: &[String]) -> Result<(), StoreError> {
    if let Some(bad) = types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        return Err(invalid(
            "event_types",
            format!(
                "'{bad}' is not an event type; known: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The columns a read returns (never the secrets).
macro_rules! columns {
    () => {
        "id, url, description, event_types, status, disabled_reason, previous_secret_expires_at, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    url: String,
    description: String,
    event_types: Vec<String>,
    status: String,
    disabled_reason: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn status_of(s: &str) -> Result<EndpointStatus, StoreError> {
    match s {
        "enabled" => Ok(EndpointStatus::Enabled),
        "disabled" => Ok(EndpointStatus::Disabled),
        other => Err(StoreError::Corrupt(format!(
            "webhook endpoint status '{other}'"
        ))),
    }
}

impl TryFrom<Row> for WebhookEndpoint {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            status: status_of(&r.status)?,
            disabled_reason: r.disabled_reason,
            previous_secret_expires_at: r.previous_secret_expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

async fn audit(
    conn: &mut PgConnection,
    ctx: &Context,
    now: DateTime<Utc>,
    action: &str,
    id: Uuid,
    reason: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") VALUES (NULL, $1, $2, $3, 'webhook_endpoint', $4, $5, NULL, $6, $7, $8)"
    ))
    .bind(now)
    .bind(&ctx.principal.name)
    .bind(action)
    .bind(id.to_string())
    .bind(reason)
    .bind(&details)
    .bind(&ctx.principal.name)
    .bind(ctx.principal.role.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates an enabled endpoint with a fresh secret.
pub async fn create(
    conn: &mut PgConnection,
    ctx: &Context,
    new: NewEndpoint,
) -> Result<EndpointWithSecret, StoreError> {
    check(&new)?;
    let now = ctx.clock.now();
    let secret = Secret::generate();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let row: Row = sqlx::query_as(concat!(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, secret, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
        columns!(),
        ""
    ))
    .bind(Uuid::now_v7())
    .bind(&new.url)
    .bind(&new.description)
    .bind(&new.event_types)
    .bind(secret.expose())
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let endpoint = WebhookEndpoint::try_from(row)?;
    let details = serde_json::json!({
        "url": audited_url(&endpoint.url), "event_types": endpoint.event_types,
    });
    audit(
        &mut tx,
        ctx,
        now,
        "webhook_endpoint.created",
        endpoint.id,
        None,
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(EndpointWithSecret {
        endpoint,
        secret: secret.expose(),
    })
}

/// Every endpoint, oldest first.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<WebhookEndpoint>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM webhook_endpoints ORDER BY created_at, id"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(WebhookEndpoint::try_from).collect()
}

/// One endpoint.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<WebhookEndpoint, StoreError> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or_else(|| StoreError::UnknownWebhookEndpoint(id.to_string()))?
        .try_into()
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
}

/// Changes an endpoint's URL, description or event filter (its secret and status stay). Queued
/// and dead deliveries follow: each attempt reads the endpoint as it is then, so an endpoint that
/// moved gets its backlog at the new URL. Audited with the URL before and after.
pub async fn update(
    conn: &mut PgConnection,
    ctx: &Context,
    id: Uuid,
    change: EndpointUpdate,
) -> Result<WebhookEndpoint, StoreError> {
    if let Some(u) = &change.url {
        check_url(u)?;
    }
    if let Some(d) = &change.description {
        check_description(d)?;
    }
    if let Some(t) = &change.event_types {
        check_event_types(t)?;
    }
    let now = ctx.clock.now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let before: Option<String> =
        sqlx::query_scalar("SELECT url FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let before = before.ok_or_else(|| StoreError::UnknownWebhookEndpoint(id.to_string()))?;
    let row: Row = sqlx::query_as(concat!(
        "UPDATE webhook_endpoints
            SET url = coalesce($2, url), description = coalesce($3, description),
                event_types = coalesce($4, event_types), updated_at = $5
          WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(&change.url)
    .bind(&change.description)
    .bind(&change.event_types)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let endpoint = WebhookEndpoint::try_from(row)?;
    let details = serde_json::json!({
        "url_before": audited_url(&before), "url": audited_url(&endpoint.url),
        "event_types": endpoint.event_types,
    });
    audit(
        &mut tx,
        ctx,
        now,
        "webhook_endpoint.updated",
        id,
        None,
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// Enables or disables an endpoint (idempotent: setting the status it has changes nothing and
/// writes no audit row). A disabled endpoint gets no new deliveries; its queued ones fail.
pub async fn set_status(
    conn: &mut PgConnection,
    ctx: &Context,
    id: Uuid,
    status: EndpointStatus,
    reason: Option<&str>,
) -> Result<WebhookEndpoint, StoreError> {
    let now = ctx.clock.now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let (text, action) = match status {
        EndpointStatus::Enabled => ("enabled", "webhook_endpoint.enabled"),
        EndpointStatus::Disabled => ("disabled", "webhook_endpoint.disabled"),
    };
    let row: Option<Row> = sqlx::query_as(concat!(
        "UPDATE webhook_endpoints
            SET status = $2, updated_at = $3,
                disabled_reason = CASE WHEN $2 = 'disabled' THEN $4 END
          WHERE id = $1 AND status <> $2
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(text)
    .bind(now)
    .bind(reason)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.rollback().await?;
        return get(conn, id).await;
    };
    let endpoint = WebhookEndpoint::try_from(row)?;
    audit(&mut tx, ctx, now, action, id, reason, serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// Replaces the endpoint's secret with a fresh one; the old one keeps signing beside it for
/// `overlap_secs` (0 ends it at once). Returns the new secret.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    ctx: &Context,
    id: Uuid,
    overlap_secs: i64,
) -> Result<EndpointWithSecret, StoreError> {
    if !(0..=MAX_ROTATION_OVERLAP_SECS).contains(&overlap_secs) {
        return Err(invalid(
            "overlap_seconds",
            format!(
                "{overlap_secs} is out of range; use 0 to {MAX_ROTATION_OVERLAP_SECS} (30 days)"
            ),
        ));
    }
    let now = ctx.clock.now();
    let secret = Secret::generate();
    let until = now + chrono::Duration::seconds(overlap_secs);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // A second rotation while the first one's overlap runs would drop the secret receivers may
    // still verify with; only one with no overlap (replace everything now) may cut it short.
    let overlap_ends: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT previous_secret_expires_at FROM webhook_endpoints WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let overlap_ends =
        overlap_ends.ok_or_else(|| StoreError::UnknownWebhookEndpoint(id.to_string()))?;
    if let Some(ends) = overlap_ends.filter(|e| *e > now && overlap_secs > 0) {
        return Err(StoreError::RotationOverlap {
            id: id.to_string(),
            ends,
        });
    }
    let row: Option<Row> = sqlx::query_as(concat!(
        "UPDATE webhook_endpoints
            SET previous_secret = CASE WHEN $4 > 0 THEN secret END,
                previous_secret_expires_at = CASE WHEN $4 > 0 THEN $3::timestamptz END,
                secret = $2, updated_at = $5
          WHERE id = $1
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .bind(secret.expose())
    .bind(until)
    .bind(overlap_secs)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| StoreError::UnknownWebhookEndpoint(id.to_string()))?;
    let endpoint = WebhookEndpoint::try_from(row)?;
    let details = serde_json::json!({ "overlap_seconds": overlap_secs });
    audit(
        &mut tx,
        ctx,
        now,
        "webhook_endpoint.secret_rotated",
        id,
        None,
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(EndpointWithSecret {
        endpoint,
        secret: secret.expose(),
    })
}

/// What a delivery to endpoint `id` needs at `now`: its URL, status and signing secrets. `None`
/// if the endpoint is gone.
pub async fn delivery_target(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<DeliveryTarget>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Signing {
        url: String,
        status: String,
        secret: String,
        previous_secret: Option<String>,
        previous_secret_expires_at: Option<DateTime<Utc>>,
    }
    let row: Option<Signing> = sqlx::query_as(
        "SELECT url, status, secret, previous_secret, previous_secret_expires_at
           FROM webhook_endpoints WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(Signing {
        url,
        status,
        secret,
        previous_secret: previous,
        previous_secret_expires_at: until,
    }) = row
    else {
        return Ok(None);
    };
    let parse = |s: &str| {
        Secret::parse(s).map_err(|_| StoreError::Corrupt(format!("webhook endpoint {id}'s secret")))
    };
    let mut secrets = vec![parse(&secret)?];
    if let (Some(p), Some(until)) = (previous, until)
        && until > now
    {
        secrets.push(parse(&p)?);
    }
    Ok(Some(DeliveryTarget {
        url,
        status: status_of(&status)?,
        secrets,
    }))
}

/// Disables an endpoint that answered `410 Gone`: it asked to receive nothing more. Audited with
/// the worker's principal.
pub async fn disable_gone(
    conn: &mut PgConnection,
    ctx: &Context,
    id: Uuid,
) -> Result<(), StoreError> {
    set_status(
        conn,
        ctx,
        id,
        EndpointStatus::Disabled,
        Some("the endpoint answered 410 Gone"),
    )
    .await
    .map(|_| ())
}

/// The enabled endpoints taking `entitlement.changed` events, as one row of two arrays in
/// creation order — `ids` (uuid[]) and `urls` (text[]), both NULL when there are none — for a
/// statement to read beside its own work (`LEFT JOIN LATERAL <this> w ON true`): a job's hot
/// transaction saves a round trip by not asking for them apart. The one definition of who is
/// subscribed; [`subscribed`] reads it alone.
macro_rules! subscribed_endpoints {
    () => {
        "(SELECT array_agg(id ORDER BY created_at) AS ids, array_agg(url ORDER BY created_at) AS urls
            FROM webhook_endpoints
           WHERE status = 'enabled' AND (event_types = '{}' OR 'entitlement.changed' = ANY (event_types)))"
    };
}
pub(crate) use subscribed_endpoints;

/// The enabled endpoints taking `entitlement.changed` events: `(id, url)`, read in the change's
/// transaction.
pub(crate) async fn subscribed(conn: &mut PgConnection) -> Result<Vec<(Uuid, String)>, StoreError> {
    let (ids, urls): (Option<Vec<Uuid>>, Option<Vec<String>>) = sqlx::query_as(concat!(
        "SELECT w.ids, w.urls FROM ",
        subscribed_endpoints!(),
        " w"
    ))
    .fetch_one(&mut *conn)
    .await?;
    Ok(zip_endpoints(ids, urls))
}

/// The `(id, url)` pairs of [`subscribed_endpoints`]'s two arrays.
pub(crate) fn zip_endpoints(
    ids: Option<Vec<Uuid>>,
    urls: Option<Vec<String>>,
) -> Vec<(Uuid, String)> {
    ids.unwrap_or_default()
        .into_iter()
        .zip(urls.unwrap_or_default())
        .collect()
}
