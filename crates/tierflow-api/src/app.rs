//! Building and running the API: [`Api::build`] binds the listener (port 0 works) and assembles
//! the router; [`Api::run_until`] serves until a shutdown future completes, then lets in-flight
//! requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use sqlx::PgPool;
use tierflow_store::Context;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Tokens;
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::routes;

/// What every handler shares.
pub struct AppState {
    pub pool: PgPool,
    pub ctx: Context,
    pub tokens: Tokens,
    /// The OpenAPI document, rendered once.
    pub openapi_json: String,
    /// The largest body accepted (`--max-body-bytes`), named in the 413's detail.
    pub max_body_bytes: usize,
}

/// A bound, ready-to-serve API.
pub struct Api {
    listener: TcpListener,
    router: Router,
    limits: crate::listener::Limits,
}

impl Api {
    /// Binds `config.listen` and builds the router.
    pub async fn build(config: &ApiConfig, pool: PgPool, ctx: Context) -> std::io::Result<Api> {
        let listener = TcpListener::bind(config.listen).await?;
        let (routes, openapi) = routes::router().split_for_parts();
        let openapi_json = openapi.to_pretty_json().map_err(std::io::Error::other)?;
        let state = Arc::new(AppState {
            pool,
            ctx,
            tokens: Tokens::new(&config.tokens),
            openapi_json,
            max_body_bytes: config.max_body_bytes,
        });
        let router = routes
            .merge(crate::console::router())
            .fallback(|| async { ApiError::NotFound("no such route; see /openapi.json".into()) })
            .method_not_allowed_fallback(|| async {
                ApiError::MethodNotAllowed("this route does not take that method; see /openapi.json".into())
            })
            .layer(axum::middleware::from_fn_with_state(
                config.request_timeout,
                within_timeout,
            ))
            .layer(axum::middleware::from_fn_with_state(
                config.max_body_bytes,
                refuse_oversized,
            ))
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .layer(
                ServiceBuilder::new()
                    .layer(axum::middleware::map_request(drop_unsafe_request_id))
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }))
                    .layer(PropagateRequestIdLayer::x_request_id()),
            )
            .with_state(state);
        Ok(Api {
            listener,
            router,
            limits: crate::listener::Limits {
                header_read_timeout: config.header_read_timeout,
                max_connections: config.max_connections,
            },
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; in-flight requests finish first. Connections are
    /// served under the listener's limits (see [`crate::listener`]).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::listener::serve(self.listener, self.router, self.limits, shutdown).await
    }
}

/// Longest `X-Request-Id` taken from a caller; it is repeated on every log line of the request.
const MAX_REQUEST_ID: usize = 128;

/// Removes a caller's `X-Request-Id` that is not a short run of letters, digits and `-_.:` (a
/// crafted value could forge log fields; a huge one would repeat on every log line), so that a
/// fresh one is generated in its place.
async fn drop_unsafe_request_id<B>(mut req: Request<B>) -> Request<B> {
    let safe = |v: &axum::http::HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_REQUEST_ID
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    };
    if req.headers().get("x-request-id").is_some_and(|v| !safe(v)) {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// Answers 503 with `Retry-After` if the request takes longer than `limit` — a database that is
/// frozen or partitioned away holds a request's statement forever, and the server-side
/// `statement_timeout` cannot fire on a server that is not running. Dropping the handler's
/// future drops its connection, which the pool then replaces.
async fn within_timeout(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!(
            "the request took longer than {} ms (the database did not answer)",
            limit.as_millis()
        ))
        .into_response(),
    }
}

/// Refuses at once, with 413, a request whose `Content-Length` is far over the body limit (more
/// than 16 times it) — rather than waiting for a body it would refuse anyway. A body only
/// somewhat too large is read up to the limit and refused by the JSON extractor as before:
/// answering before a client has sent it can reset the connection under the client's feet.
async fn refuse_oversized(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > (limit as u64).saturating_mul(16) => ApiError::TooLarge(format!(
            "the body is {len} bytes; send at most {limit} bytes (this server's --max-body-bytes)"
        ))
        .into_response(),
        _ => next.run(req).await,
    }
}
