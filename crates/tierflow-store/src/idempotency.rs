//! Idempotent requests: the same key and payload returns the first result; the same key with
//! another payload is a conflict.
//!
//! Keys are kept for a retention (`TIERFLOW_IDEMPOTENCY_RETENTION_HOURS`, default 24 h) and then
//! pruned by the queue's cleaner ([`prune_rule`]); a key repeated after that starts a new request.
//!
//! Keys are scoped per tenant. The lookup and the save both run after the tenant's row lock is
//! taken, so two requests with one key are serialized by that lock: the second sees the first's
//! committed row and replays it. The fingerprint is a SHA-256 over the operation name and the
//! request's canonical JSON.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::StoreError;

/// How long a key (and its stored response) is kept by default: a day, as Stripe keeps them. A
/// request repeated after that is a new request.
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The queue cleaner's rule for pruning keys older than `retention`, in its bounded batches.
pub fn prune_rule(retention: std::time::Duration) -> tierflow_queue::maintenance::cleaner::Prune {
    tierflow_queue::maintenance::cleaner::Prune {
        table: "idempotency_keys",
        column: "created_at",
        retention,
    }
}

/// The fingerprint of a request.
pub fn fingerprint<T: Serialize>(operation: &str, request: &T) -> Result<String, StoreError> {
    let body = serde_json::to_vec(request)
        .map_err(|e| StoreError::Corrupt(format!("request does not encode: {e}")))?;
    let mut h = Sha256::new();
    h.update(operation.as_bytes());
    h.update([0]);
    h.update(&body);
    Ok(hex::encode(h.finalize()))
}

/// A response stored under a key, as read.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct Stored {
    pub operation: String,
    pub fingerprint: String,
    pub response: serde_json::Value,
}

/// The stored response for `key`, if any, checked against `fingerprint`.
pub async fn lookup<R: DeserializeOwned>(
    conn: &mut PgConnection,
    tenant_id: &str,
    key: &str,
    operation: &str,
    fingerprint: &str,
) -> Result<Option<R>, StoreError> {
    let stored: Option<Stored> = sqlx::query_as(
        "SELECT operation, fingerprint, response FROM idempotency_keys
          WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    check(stored, key, operation, fingerprint)
}

/// What a request with `key` gets from the row stored under it (read by [`lookup`] or inside
/// the caller's own statement): the earlier response if it was the same request, a conflict if
/// it was another, nothing if the key is new.
pub(crate) fn check<R: DeserializeOwned>(
    stored: Option<Stored>,
    key: &str,
    operation: &str,
    fingerprint: &str,
) -> Result<Option<R>, StoreError> {
    match stored {
        None => Ok(None),
        Some(s) if s.operation == operation && s.fingerprint == fingerprint => {
            serde_json::from_value(s.response)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("stored response for key '{key}': {e}")))
        }
        Some(s) => Err(StoreError::IdempotencyConflict {
            key: key.to_owned(),
            operation: s.operation,
        }),
    }
}

/// Saves the response for `key`.
pub async fn save<R: Serialize>(
    conn: &mut PgConnection,
    tenant_id: &str,
    key: &str,
    operation: &str,
    fingerprint: &str,
    response: &R,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let response = serde_json::to_value(response)
        .map_err(|e| StoreError::Corrupt(format!("response does not encode: {e}")))?;
    sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, idempotency_key, operation, fingerprint, response, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(operation)
    .bind(fingerprint)
    .bind(response)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
