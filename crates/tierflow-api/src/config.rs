//! API settings.

use std::net::SocketAddr;

use crate::auth::Role;

/// A bearer token: a name (the caller's identity, used as the default actor) and its secret.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub secret: String,
    pub role: Role,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, {:?}, …)", self.name, self.role)
    }
}

impl Token {
    /// Parses `name:secret` (or a bare secret, named after its role).
    pub fn parse(spec: &str, role: Role) -> Result<Token, String> {
        let (name, secret) = match spec.split_once(':') {
            Some((n, s)) => (n.trim().to_owned(), s.trim().to_owned()),
            None => (role.as_str().to_owned(), spec.trim().to_owned()),
        };
        if secret.len() < 16 {
            return Err(format!(
                "the {} token named '{name}' is shorter than 16 characters; use a long random secret",
                role.as_str()
            ));
        }
        if name.is_empty() {
            return Err("a token name before ':' must not be empty".into());
        }
        Ok(Token { name, secret, role })
    }
}

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<Token>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a request may take; past it the answer is 503 with `Retry-After` (a database
    /// that is frozen or cut off cannot make a request hang).
    pub request_timeout: std::time::Duration,
    /// A connection that sends no complete request headers within this long (after opening,
    /// or idle between requests) is closed.
    pub header_read_timeout: std::time::Duration,
    /// Most connections open at once (never more than half the file-descriptor limit); at the
    /// cap the oldest is closed to let a new one in.
    pub max_connections: usize,
}

impl ApiConfig {
    /// The default body limit: 64 KiB, far above any legitimate request.
    pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
    /// The default request timeout, in milliseconds: well above a request's few milliseconds,
    /// well below a client's patience.
    pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5000;
    /// The default header-read (and idle) timeout, in milliseconds.
    pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    /// The default connection cap.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
}
