//! Signed webhook delivery, and the check a receiver runs.
//!
//! Each delivery is a `POST` of the event's JSON with these headers:
//! - `Tierflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! - `Idempotency-Key` and `Tierflow-Event-Id`: the event's stable id (the same on every retry)
//!
//! A receiver recomputes the HMAC over the timestamp and the raw body with the shared secret
//! ([`verify`]), rejects timestamps outside its tolerance (replays), and drops event ids it has
//! processed (retries).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Tierflow-Signature";
/// The event id header (also sent as `Idempotency-Key`).
pub const EVENT_ID_HEADER: &str = "Tierflow-Event-Id";
/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The shared signing secret; never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

fn mac(secret: &Secret, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header is malformed; expected t=<unix seconds>,v1=<hex>")]
    Malformed,
    #[error("signature timestamp is outside the tolerance; possible replay")]
    Stale,
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks a signature header against the raw body, at `now` (unix seconds), accepting timestamps
/// at most `tolerance_secs` away. The comparison is constant-time.
pub fn verify(
    secret: &Secret,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(VerifyError::Malformed);
    };
    if (now - t).abs() > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| VerifyError::Mismatch)
}

/// The HTTP side of deliveries: a client and the secret.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    pub(crate) http: reqwest::Client,
    pub(crate) secret: Secret,
}

impl WebhookClient {
    /// A client signing with `secret`. Needs a rustls crypto provider installed in the process
    /// (`rustls::crypto::ring::default_provider().install_default()`).
    pub fn new(secret: Secret) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("tierflow/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let secret = Secret::new("s3cret");
        let body = br#"{"id":"x"}"#;
        let header = sign(&secret, 1_700_000_000, body);
        assert_eq!(verify(&secret, &header, body, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(&secret, &header, br#"{"id":"y"}"#, 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&Secret::new("other"), &header, body, 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret, &header, body, 1_700_001_000, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&secret, "v1=zz", body, 0, 300),
            Err(VerifyError::Malformed)
        );
    }
}
