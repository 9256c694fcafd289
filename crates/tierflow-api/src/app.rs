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
}

/// A bound, ready-to-serve API.
pub struct Api {
    listener: TcpListener,
    router: Router,
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
        });
        let router = routes
            .fallback(|| async { ApiError::NotFound("no such route; see /openapi.json".into()) })
            .method_not_allowed_fallback(|| async {
                ApiError::MethodNotAllowed("this route does not take that method; see /openapi.json".into())
            })
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .layer(
                ServiceBuilder::new()
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
        Ok(Api { listener, router })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; in-flight requests finish first.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
