//! The routes, one module per resource. [`router`] is the only place routes are registered; the
//! OpenAPI document is collected from the same registrations.

pub mod audit;
pub mod health;
pub mod holds;
pub mod jobs;
pub mod openapi;
pub mod overrides;
pub mod tenants;
pub mod test_clocks;
pub mod tiers;
pub mod transitions;
pub mod webhook_endpoints;

use std::sync::Arc;

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The document's fixed parts; paths come from the route registrations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tierflow",
        description = "Entitlement lifecycle API: tier transitions with grace periods, overrides, effective entitlements, jobs. Every route but /healthz, /readyz and /openapi.json needs `Authorization: Bearer <token>`; errors are RFC 9457 problem documents.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants", description = "Tenants and their effective entitlement"),
        (name = "transitions", description = "Tier transitions"),
        (name = "overrides", description = "Temporary limit overrides"),
        (name = "tiers", description = "The tier catalogue"),
        (name = "jobs", description = "The job queue"),
        (name = "webhooks", description = "Webhook endpoints (admin): where entitlement.changed events go, signed as Standard Webhooks 1.0"),
        (name = "test-clocks", description = "Test clocks: tenants that live by a frozen time, advanced on demand with their jobs"),
        (name = "health", description = "Liveness, readiness, this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route, with its OpenAPI description.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(openapi::router())
        .merge(tenants::router())
        .merge(audit::router())
        .merge(holds::router())
        .merge(transitions::router())
        .merge(overrides::router())
        .merge(tiers::router())
        .merge(jobs::router())
        .merge(test_clocks::router())
        .merge(webhook_endpoints::router())
}
