//! The HTTP side of webhook deliveries. Signing lives in `tierflow_store::webhooks::signature`
//! (the API creates secrets, the worker signs with them); it is re-exported here for receivers.

use std::time::Duration;

pub use tierflow_store::webhooks::signature::*;

/// How long one delivery may take (Standard Webhooks recommends 15 to 30 s).
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// What deliveries need: an HTTP client that never follows redirects, the database holding the
/// managed endpoints (their URLs, status and secrets are read at each delivery, so a rotation or
/// a disable takes effect at once), and the secret for endpoints configured by environment
/// (`TIERFLOW_WEBHOOK_URLS`).
#[derive(Debug, Clone)]
pub struct WebhookClient {
    pub(crate) http: reqwest::Client,
    pub(crate) db: sqlx::PgPool,
    pub(crate) static_secret: Option<Secret>,
}

impl WebhookClient {
    /// A client signing deliveries to environment-configured endpoints with `static_secret`.
    /// Needs a rustls crypto provider installed in the process
    /// (`rustls::crypto::ring::default_provider().install_default()`).
    pub fn new(db: sqlx::PgPool, static_secret: Option<Secret>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect would turn the POST into a body-less GET somewhere else; an endpoint that
            // moved must be updated, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tierflow/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            db,
            static_secret,
        })
    }
}
