//! The API's error bodies and status mapping, and the extractors that turn bad input
//! (malformed JSON, wrong types, unknown fields, huge bodies, bad paths and queries) into
//! typed errors before any handler runs.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::error::Error;

/// An error as the API sends it: a status and a JSON body `{"code", "message", ...context}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body: at least `code` and `message`.
    pub body: Map<String, Value>,
}

/// The one status mapping of the API (documented in openapi.json and the README).
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "INVALID_INPUT" | "INVALID_RECORD" | "UNSUPPORTED_VERSION" => StatusCode::BAD_REQUEST,
        "UNAUTHORIZED" => StatusCode::UNAUTHORIZED,
        "FORBIDDEN" => StatusCode::FORBIDDEN,
        "NOT_FOUND" => StatusCode::NOT_FOUND,
        "METHOD_NOT_ALLOWED" => StatusCode::METHOD_NOT_ALLOWED,
        "RUN_ALREADY_ACTIVE"
        | "ILLEGAL_TRANSITION"
        | "STALE_ATTEMPT"
        | "JOB_NOT_RUNNING"
        | "IMMUTABLE"
        | "CONSTRAINT_VIOLATION" => StatusCode::CONFLICT,
        "EVENTS_PRUNED" => StatusCode::GONE,
        "TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
        "BUSY" | "DATABASE_FULL" | "READ_ONLY" | "UNREACHABLE" => StatusCode::SERVICE_UNAVAILABLE,
        "UNSUPPORTED_BACKEND" => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error with `code` (its status from [`status_of`]) and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("code".into(), json!(code));
        body.insert("message".into(), json!(message.into()));
        Self {
            status: status_of(code),
            body,
        }
    }

    /// Adds a context field.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.body.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// `INVALID_INPUT` for `field`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Error::invalid(field, reason).into()
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from(&e)
    }
}

impl From<&Error> for ApiError {
    fn from(e: &Error) -> Self {
        let code = e.code();
        // The database's own failure text stays in the server; the client gets the code.
        let message = match e {
            Error::Database(_) | Error::Postgres { .. } => "database error".to_string(),
            _ => e.to_string(),
        };
        let err = ApiError::new(code, message);
        match e {
            Error::NotFound { entity, id } => err.with("entity", entity).with("id", id),
            Error::IllegalTransition {
                entity,
                id,
                from,
                to,
            } => err
                .with("entity", entity)
                .with("id", id)
                .with("from", from)
                .with("to", to),
            Error::StaleAttempt {
                job_id,
                attempt,
                current,
                state,
            } => err
                .with("job_id", job_id)
                .with("attempt", attempt)
                .with("current_attempt", current)
                .with("state", state),
            Error::JobNotRunning { job_id, state } => {
                err.with("job_id", job_id).with("state", state)
            }
            Error::InvalidInput { field, .. } => err.with("field", field),
            Error::TooLarge { field, size, limit } => err
                .with("field", field)
                .with("size", size)
                .with("limit", limit),
            Error::InvalidRecord { errors, .. } => err.with("errors", errors),
            Error::EventsPruned {
                job_id,
                requested,
                oldest_kept,
                newest,
            } => err
                .with("job_id", job_id)
                .with("requested", requested)
                .with("oldest_kept", oldest_kept)
                .with("newest", newest),
            Error::RunAlreadyActive {
                lock_key,
                active_run_id,
                recorded_run_id,
                ..
            } => err
                .with("message", "run already active")
                .with("lock_key", lock_key)
                .with("active_run_id", active_run_id)
                .with("refusal_run_id", recorded_run_id),
            _ => err,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let busy = self.code() == "BUSY";
        let mut res = (status, axum::Json(Value::Object(self.body))).into_response();
        if busy {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"runledger\""),
            );
        }
        res
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

fn too_large() -> ApiError {
    ApiError::new("TOO_LARGE", "request body is over the size limit").with("field", "body")
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::invalid("body", "the request body could not be read")
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's message names the field and the expected type; it never quotes the body.
        ApiError::invalid("body", e.to_string())
    })
}

/// A JSON body, parsed strictly (the request types deny unknown fields); an empty body
/// is refused.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// The body's bytes: refused at once when its declared length is over the limit (the
/// router's `DefaultBodyLimit` stops an undeclared one as it streams in).
async fn body_bytes(req: Request, state: &AppState) -> ApiResult<axum::body::Bytes> {
    let limit = state.opts.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(body_rejection)
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(parse_json(&body_bytes(req, state).await?)?))
    }
}

/// An optional JSON body: an empty body is `T::default()`.
#[derive(Debug)]
pub struct OptBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

/// Query parameters, parsed strictly.
#[derive(Debug)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::invalid("query", e.body_text()))
    }
}

/// Path parameters; a malformed one (a non-numeric id) is `INVALID_INPUT`.
#[derive(Debug)]
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError::invalid("path", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_backed_ledger_s_codes_have_their_status_and_its_sql_text_stays_inside() {
        assert_eq!(status_of("UNREACHABLE"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of("UNSUPPORTED_BACKEND"),
            StatusCode::NOT_IMPLEMENTED
        );
        let e = ApiError::from(Error::Postgres {
            sqlstate: "42P01".into(),
            message: "relation \"secret_table\" does not exist".into(),
        });
        assert_eq!(
            (e.status, e.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, "DATABASE")
        );
        assert_eq!(e.body["message"], "database error");
        let e = ApiError::from(Error::Unsupported {
            backend: "postgres",
            operation: "events.data_version",
        });
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            e.body["message"],
            "events.data_version is not available on the postgres backend"
        );
    }
}
