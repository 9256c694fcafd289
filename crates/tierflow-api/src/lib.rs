//! tierflow's HTTP API for upstream services (billing, admin tools, support).
//!
//! Every route but `/healthz` and `/readyz` needs a bearer token: a `service` token may request
//! transitions and overrides and read everything; an `admin` token may also edit tiers and
//! re-drive or cancel jobs. Errors are RFC 9457 `application/problem+json` with a stable `type` per
//! class ([`error`]). The OpenAPI document (`/openapi.json`) is generated from the same route
//! registrations the router serves ([`routes::router`]), so the two cannot drift.
//!
//! # Layout
//! - [`app`] — [`Api::build`] binds the listener; [`Api::run_until`] serves until shutdown.
//! - [`config`] — listen address, tokens, body limit, timeouts, connection cap.
//! - [`listener`] — serves connections with a header-read timeout and a connection cap.
//! - [`auth`] — bearer tokens and roles, as extractors.
//! - [`error`] — [`ApiError`], the only type that becomes an HTTP error response.
//! - [`extract`] — JSON, path, query and `Idempotency-Key` extractors that reject with [`ApiError`].
//! - [`input`] — input rules without a domain type (job ids, cursors, names), each its check and
//!   its OpenAPI schema.
//! - [`routes`] — one module per resource.
//! - [`console`] — the operator console under `/console`: server-rendered pages, sessions.
//! - [`ops`] — `/metrics`, `/healthz`, `/readyz` on their own listener, for every process.

pub mod app;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod input;
pub mod listener;
pub mod ops;
pub mod routes;

pub use app::{Api, AppState};
pub use config::{ApiConfig, Token};
pub use error::ApiError;
