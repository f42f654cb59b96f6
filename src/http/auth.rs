//! Bearer tokens: a read-write token for mutating endpoints and an optional read-only one.
//! Tokens are compared in constant time (over their SHA-256 digests, so neither content nor
//! length leaks through timing), and never appear in a log line, an error or a Debug print.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

/// A secret bearer token. Debug prints `***`; the value itself is kept only as a digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// A token with this value; `None` when it is empty.
    pub fn new(value: &str) -> Option<Self> {
        (!value.is_empty()).then(|| Self {
            digest: Sha256::digest(value.as_bytes()).into(),
        })
    }

    /// The token from the environment variable `var` (unset or empty: `None`).
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().and_then(|v| Self::new(&v))
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Which tokens the server accepts.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Read-write (`RUNLEDGER_API_TOKEN`): every endpoint.
    pub write: Option<Token>,
    /// Read-only (`RUNLEDGER_API_READ_TOKEN`): GET endpoints only.
    pub read: Option<Token>,
}

impl Auth {
    /// The tokens from `RUNLEDGER_API_TOKEN` and `RUNLEDGER_API_READ_TOKEN`.
    pub fn from_env() -> Self {
        Self {
            write: Token::from_env("RUNLEDGER_API_TOKEN"),
            read: Token::from_env("RUNLEDGER_API_READ_TOKEN"),
        }
    }

    /// Whether no token is configured (the server is open).
    pub fn is_open(&self) -> bool {
        self.write.is_none() && self.read.is_none()
    }

    /// Checks a request's `Authorization` value for `method`.
    pub fn check(&self, method: &Method, authorization: Option<&str>) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = authorization.and_then(|h| h.strip_prefix("Bearer "));
        let is_write = presented.is_some_and(|p| self.write.as_ref().is_some_and(|t| t.matches(p)));
        let is_read = presented.is_some_and(|p| self.read.as_ref().is_some_and(|t| t.matches(p)));
        let reading = matches!(*method, Method::GET | Method::HEAD);
        if is_write || (reading && is_read) {
            return Ok(());
        }
        if is_read {
            return Err(ApiError::new(
                "FORBIDDEN",
                "the read-only token cannot change anything",
            ));
        }
        if reading && self.read.is_none() && self.write.is_some() {
            // Only a write token configured: reads stay open, writes need it.
            return Ok(());
        }
        Err(ApiError::new(
            "UNAUTHORIZED",
            "a valid bearer token is required (Authorization: Bearer ...)",
        ))
    }
}

/// Paths every client may read without a token: liveness and the API's description.
const PUBLIC: [&str; 2] = ["/health", "/openapi.json"];

pub(super) async fn require(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !PUBLIC.contains(&req.uri().path()) {
        let mut authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A browser signed in to the UI reads (the UI follows `GET /events`) with its
        // SameSite=Strict cookie; writes always need the header.
        if authorization.is_none() && matches!(*req.method(), Method::GET | Method::HEAD) {
            authorization = super::ui::cookie_token(req.headers()).map(|t| format!("Bearer {t}"));
        }
        if let Err(e) = app.opts.auth.check(req.method(), authorization.as_deref()) {
            return e.into_response();
        }
    }
    next.run(req).await
}
