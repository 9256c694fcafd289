//! Bearer-token authentication, as extractors: a handler's parameters say what it requires
//! ([`Caller`] for any valid token, [`Admin`] for an admin token).
//!
//! Tokens come from configuration (never from requests or logs). Each is compared by SHA-256
//! digest in constant time, so neither the timing of a comparison nor the length of a guess says
//! anything about a token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use tierflow_store::Context;
use tierflow_store::audit::{Principal, PrincipalRole};

use crate::app::AppState;
use crate::config::Token;
use crate::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Transitions, overrides, reads.
    Service,
    /// Everything, including tiers and job re-drive.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

/// The configured tokens, by digest.
pub struct Tokens(Vec<(String, Role, [u8; 32])>);

impl Tokens {
    pub fn new(tokens: &[Token]) -> Self {
        Tokens(
            tokens
                .iter()
                .map(|t| (t.name.clone(), t.role, digest(&t.secret)))
                .collect(),
        )
    }

    /// Whether a token named `name` with `role` is configured (a console session stays valid
    /// only while its token does).
    pub(crate) fn has(&self, name: &str, role: Role) -> bool {
        self.0.iter().any(|(n, r, _)| n == name && *r == role)
    }

    /// The caller a presented secret belongs to. Every configured token is compared, matched or not.
    pub(crate) fn find(&self, presented: &str) -> Option<Caller> {
        let d = digest(presented);
        let mut found = None;
        for (name, role, known) in &self.0 {
            let diff = known
                .iter()
                .zip(d.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name; the default actor of the caller's changes.
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// The caller as the audit trail records it, whatever actor its request names.
    pub fn principal(&self) -> Principal {
        let role = match self.role {
            Role::Service => PrincipalRole::Service,
            Role::Admin => PrincipalRole::Admin,
        };
        Principal::new(self.name.clone(), role)
    }

    /// The store context for this caller's changes: the server's, acting as the caller.
    pub fn context(&self, state: &AppState) -> Context {
        state.ctx.acting_as(self.principal())
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
        })?;
        let value = header.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not valid text".into())
        })?;
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer x` is `Bearer x`.
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        state
            .tokens
            .find(token.trim())
            .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))
    }
}

/// An authenticated caller with the admin role.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden(format!(
                "this needs an admin token; '{}' is a {} token",
                caller.name,
                caller.role.as_str()
            )));
        }
        Ok(Admin(caller))
    }
}
