//! Webhook signing as Standard Webhooks 1.0 specifies it (<https://www.standardwebhooks.com>), and
//! the check a receiver runs.
//!
//! Each delivery is a `POST` of the event's JSON with three headers:
//! - `webhook-id`: the event's stable id, the same on every retry (the receiver's dedup key);
//! - `webhook-timestamp`: the attempt's time in unix seconds;
//! - `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`,
//!   one per secret the endpoint currently signs with — two while a rotated-out secret is still
//!   in its overlap window, so receivers can switch secrets without a moment of failed checks.
//!
//! Secrets are `whsec_<base64 key>`; the key is the decoded bytes. Any Standard Webhooks library
//! verifies these deliveries (the suite checks with the reference `standardwebhooks` from PyPI).
//! The signing is the 40 lines below rather than the `standardwebhooks` crate, which would bring
//! a third `base64` and `time` for the same HMAC over the same bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The event id header.
pub const ID_HEADER: &str = "webhook-id";
/// The attempt's timestamp header (unix seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature header: `v1,<base64>` entries separated by spaces.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// The tolerance receivers are advised to use for `webhook-timestamp` (Standard Webhooks: 5 min).
pub const TOLERANCE_SECS: i64 = 300;

/// A signing key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Why a secret's text is not a Standard Webhooks secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "a webhook secret is `whsec_` followed by base64 of 24 to 64 random bytes; generate one with `tierflow webhooks new-secret`"
    )]
    Malformed,
}

impl Secret {
    /// Parses `whsec_<base64>` (24 to 64 key bytes).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let key = BASE64.decode(b64).map_err(|_| SecretError::Malformed)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Malformed);
        }
        Ok(Self(key))
    }

    /// A fresh secret of 32 random bytes.
    pub fn generate() -> Self {
        Self(rand::random::<[u8; 32]>().to_vec())
    }

    /// The `whsec_` text form, for showing once to whoever created it.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.0))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

fn mac(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for `body` with id `id` sent at `timestamp`: one `v1,` entry per
/// secret, in the order given.
pub fn sign(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| {
            let tag = mac(s, id, timestamp, body).finalize().into_bytes();
            format!("v1,{}", BASE64.encode(tag))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a delivery did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a unix time in seconds")]
    Malformed,
    #[error("webhook-timestamp is outside the tolerance; possible replay")]
    Stale,
    #[error("no v1 signature in webhook-signature matches the body")]
    Mismatch,
}

/// Checks a delivery as a receiver does: the timestamp within `tolerance_secs` of `now` (unix
/// seconds), and any `v1` signature in `signature` matching `id.timestamp.body` under `secret`.
/// The comparison is constant-time.
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let t: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed)?;
    // abs_diff: a hostile timestamp (i64::MIN) must not overflow the check.
    if now.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let matches = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .any(|tag| mac(secret, id, t, body).verify_slice(&tag).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification (and its libraries' tests).
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(
            &[secret()],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            verify(
                &secret(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &sig,
                body,
                1614265331,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn any_listed_signature_verifies_and_tampering_is_caught() {
        let (old, new) = (secret(), Secret::generate());
        let body = br#"{"id":"x"}"#;
        let both = sign(&[new.clone(), old.clone()], "e1", 1_700_000_000, body);
        assert_eq!(both.split(' ').count(), 2);
        for s in [&old, &new] {
            assert_eq!(
                verify(s, "e1", "1700000000", &both, body, 1_700_000_010, 300),
                Ok(())
            );
        }
        let other = Secret::generate();
        let cases = [
            (
                &old,
                "e1",
                br#"{"id":"y"}"#.as_slice(),
                VerifyError::Mismatch,
            ),
            (&old, "e2", body.as_slice(), VerifyError::Mismatch),
            (&other, "e1", body.as_slice(), VerifyError::Mismatch),
        ];
        for (s, id, b, want) in cases {
            assert_eq!(
                verify(s, id, "1700000000", &both, b, 1_700_000_010, 300),
                Err(want)
            );
        }
        assert_eq!(
            verify(&old, "e1", "1700000000", &both, body, 1_700_001_000, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&old, "e1", "soon", &both, body, 0, 300),
            Err(VerifyError::Malformed)
        );
        // A hostile timestamp is stale, not an overflow.
        let far = i64::MIN.to_string();
        assert_eq!(
            verify(&old, "e1", &far, &both, body, i64::MAX, 300),
            Err(VerifyError::Stale)
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = Secret::generate();
        assert_eq!(Secret::parse(&s.expose()), Ok(s.clone()));
        assert!(s.expose().starts_with("whsec_"));
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
        for bad in ["", "whsec_", "secret", "whsec_!!!!", "whsec_c2hvcnQ="] {
            assert_eq!(Secret::parse(bad), Err(SecretError::Malformed), "{bad}");
        }
    }
}
