//! The routes, one module per resource. [`router`] is the only place routes are registered; the
//! OpenAPI document is collected from the same registrations.
//!
//! How a route declares its contract (`tests` below hold every route to it):
//! - success bodies are named types deriving `utoipa::ToSchema` — the very types the handler
//!   serializes (`axum::Json<TransitionOutcome>`), never `serde_json::Value`;
//! - input fields name their rule: a domain id type (`value_type = TenantId`) or an
//!   [`crate::input`] type, whose check the handler calls;
//! - errors are the sets of [`crate::error::responses`] (`Authenticated`, `BadParameters`,
//!   `JsonBody`, `AdminOnly`) plus the route's own 404/409 as
//!   `(status = 404, description = "`not-found`: …", body = Problem, content_type = PROBLEM_JSON)`;
//! - an admin-only route lists `AdminOnly`, carries `extensions(("x-tierflow-role" =
//!   json!("admin")))` and says "Admin only." in its description.

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

use tierflow_domain::ids::{HoldName, IdempotencyKey, TenantId, TierId};
use tierflow_queue::JobState;

use crate::app::AppState;
use crate::error::{Problem, ProblemType};
use crate::input::{AuditCursor, AuditKind, HistoryCursor, JobId, JobKindFilter, UuidParam};

/// The document's fixed parts; paths come from the route registrations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tierflow",
        description = "Entitlement lifecycle API: tier transitions with grace periods, overrides, effective entitlements, jobs. Every route but /healthz, /readyz and /openapi.json needs `Authorization: Bearer <token>`: a service token may do everything but the routes marked `x-tierflow-role: admin` (\"Admin only.\"), which answer 403 to it. Errors are RFC 9457 problem documents (`application/problem+json`, schema `Problem`), whose `type` is one of `ProblemType`.",
    ),
    // What bodies do not reach: the problem document (error responses are declared by hand, see
    // `error::responses`) and the types only parameters name.
    components(schemas(
        Problem, ProblemType, TenantId, TierId, HoldName, IdempotencyKey, UuidParam, JobId,
        JobKindFilter, JobState, HistoryCursor, AuditCursor, AuditKind
    )),
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        let (_, openapi) = router().split_for_parts();
        serde_json::to_value(&openapi).unwrap()
    }

    /// Every operation of the document, as (method, path, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .iter()
                    .map(move |(m, op)| (m.clone(), path.clone(), op.clone()))
            })
            .collect()
    }

    /// The contract every route keeps (see the module doc): named success bodies, problem
    /// documents for every error, and the error sets its token, body and role call for.
    #[test]
    fn every_route_declares_its_contract() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let at = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            for (status, response) in responses {
                let content = response["content"].as_object();
                let Some(content) = content else {
                    panic!("{at} {status}: no body");
                };
                if status.starts_with('2') || path == "/readyz" {
                    let schema = &content["application/json"]["schema"];
                    let named = schema["$ref"].is_string() || schema["items"]["$ref"].is_string();
                    assert!(
                        named,
                        "{at} {status}: the body is not a named schema: {schema}"
                    );
                } else {
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        ["application/problem+json"],
                        "{at} {status}"
                    );
                    assert_eq!(
                        content["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{at} {status}"
                    );
                }
            }
            if op.get("security").is_some() {
                for s in ["401", "500", "503"] {
                    assert!(has(s), "{at}: no {s}");
                }
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(has(s), "{at}: takes a body but has no {s}");
                }
            }
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                assert!(has("400"), "{at}: takes parameters but has no 400");
            }
            if path.contains('{') {
                assert!(has("404"), "{at}: has a path id but no 404");
            }
            let admin = op["x-tierflow-role"] == "admin";
            assert_eq!(admin, has("403"), "{at}: admin role and 403 go together");
            if admin {
                let text = format!(
                    "{} {}",
                    op["summary"].as_str().unwrap_or(""),
                    op["description"].as_str().unwrap_or("")
                );
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                assert!(text.contains("Admin only."), "{at}: an admin route says so");
            }
        }
    }

    /// Every `$ref` names a schema of the document.
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1) {
            let name: String = name.chars().take_while(|c| *c != '"').collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "{name} is referenced but not in components"
            );
        }
    }

    /// Every problem `type` is the base URI and a slug, and the schema lists them all.
    #[test]
    fn problem_types_are_uris_listed_in_the_schema() {
        let doc = document();
        let listed = doc["components"]["schemas"]["ProblemType"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(listed.len(), 12);
        for t in listed {
            let t = t.as_str().unwrap();
            let slug = t.strip_prefix(crate::error::PROBLEM_BASE).unwrap();
            assert!(
                slug.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{t}"
            );
        }
    }

    /// Pages leave `next_cursor` out rather than sending null, and say so.
    #[test]
    fn page_cursors_are_absent_not_null() {
        let doc = document();
        for page in ["HistoryPage", "AuditPage"] {
            let schema = &doc["components"]["schemas"][page];
            assert_eq!(
                schema["properties"]["next_cursor"]["type"], "string",
                "{page}"
            );
            assert!(
                !schema["required"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from("next_cursor")),
                "{page}"
            );
            assert!(
                schema["properties"]["items"]["items"]["$ref"].is_string(),
                "{page}"
            );
        }
    }
}
