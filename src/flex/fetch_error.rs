//! [`FetchError`]: everything that can go wrong talking to the Flex Web Service, each kind
//! with a stable code. Wrapped by [`super::FlexError::Fetch`], whose `code()` delegates.

use std::time::Duration;

use super::envelope::{BodyKind, CodeClass};

/// Why a Flex request or poll failed (transport, HTTP, the service's own error codes, the
/// polling budget, the token).
///
/// No message ever contains the token: URLs are shown only through
/// [`redact_url`](super::redact_url), and IB's error messages are scrubbed of it.
///
/// | code | kind |
/// |---|---|
/// | `FLEX_TOKEN_MISSING` | [`FetchError::TokenMissing`] |
/// | `FLEX_TOKEN_INVALID` | [`FetchError::TokenInvalid`] |
/// | `FLEX_TOKEN_EXPIRED` | [`FetchError::TokenKnownExpired`] |
/// | `FLEX_BAD_URL` | [`FetchError::BadUrl`] |
/// | `FLEX_URL_REFUSED` | [`FetchError::UrlRefused`] |
/// | `FLEX_CONNECT` | [`FetchError::Connect`] |
/// | `FLEX_TIMEOUT` | [`FetchError::Timeout`] |
/// | `FLEX_DISCONNECTED` | [`FetchError::Disconnected`] |
/// | `FLEX_PROTOCOL` | [`FetchError::Protocol`] |
/// | `FLEX_HTTP_STATUS` | [`FetchError::HttpStatus`] |
/// | `FLEX_BODY_TRUNCATED` | [`FetchError::BodyTruncated`] |
/// | `FLEX_BODY_TOO_LARGE` | [`FetchError::BodyTooLarge`] |
/// | `FLEX_POLL_TIMEOUT` | [`FetchError::PollBudgetExhausted`] |
/// | `FLEX_1001` ... `FLEX_1021` | [`FetchError::Service`] with a code of IB's table |
/// | `FLEX_UNKNOWN_CODE` | [`FetchError::Service`] with any other code (kept in `raw_code`) |
///
/// Bodies that are not what was expected (an HTML page, CSV, truncated XML...) are
/// [`crate::flex::ParseError`]s (`FLEX_HTML_BODY`, `FLEX_CSV_BODY`, `FLEX_TRUNCATED`...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No token: the environment variable is unset or empty.
    #[error("no flex token (environment variable {source_name} is unset or empty)")]
    TokenMissing {
        /// Where the token was looked for.
        source_name: String,
    },

    /// The token is malformed (its value is never quoted).
    #[error("flex token is malformed: {reason}")]
    TokenInvalid {
        /// What is wrong with it.
        reason: String,
    },

    /// IB already answered that this token is expired or invalid (a previous run failed
    /// with `ib_code`); the gate refuses to spend requests on it until it is replaced.
    #[error("flex token {fingerprint} was refused by ib with code {ib_code} in run {run_id}; set a new token")]
    TokenKnownExpired {
        /// The token's fingerprint (never the token).
        fingerprint: String,
        /// The error code of the earlier refusal (`FLEX_1012`...).
        ib_code: String,
        /// The run that recorded it.
        run_id: i64,
    },

    /// The configured base URL (or IB's `<Url>`) cannot be used.
    #[error("bad flex url {url}: {reason}")]
    BadUrl {
        /// The URL, redacted.
        url: String,
        /// Why.
        reason: String,
    },

    /// IB's reply named a `<Url>` outside the allow-list (https, `*.interactivebrokers.com`).
    #[error("refusing to follow flex url to {scheme}://{host}: only https hosts under interactivebrokers.com are allowed")]
    UrlRefused {
        /// The URL's scheme.
        scheme: String,
        /// The URL's host.
        host: String,
    },

    /// No connection could be made (refused, unreachable, name not found, TLS failure).
    #[error("cannot connect to the flex service at {host}: {reason}")]
    Connect {
        /// `host:port`.
        host: String,
        /// What failed, in lower case.
        reason: String,
    },

    /// A configured timeout passed (connect, or waiting for the reply or its body).
    #[error("flex request timed out ({phase})")]
    Timeout {
        /// `connect`, `response` or `body`.
        phase: &'static str,
    },

    /// The server closed the connection before a complete reply.
    #[error("flex service closed the connection before replying")]
    Disconnected,

    /// The reply is not valid HTTP.
    #[error("flex service sent invalid http: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },

    /// A non-2xx HTTP status without a Flex envelope in the body.
    #[error("flex service answered http {status} with {} body", kind_name(*.body))]
    HttpStatus {
        /// The HTTP status.
        status: u16,
        /// What the body looked like.
        body: BodyKind,
    },

    /// The body ended before its announced length, or the connection broke mid-body.
    #[error("flex reply body cut off after {received} bytes{}", expected.map(|e| format!(" of {e}")).unwrap_or_default())]
    BodyTruncated {
        /// Bytes received.
        received: u64,
        /// `Content-Length`, when announced.
        expected: Option<u64>,
    },

    /// The body is larger than the configured cap (reading stopped at the cap).
    #[error("flex reply body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The cap in bytes.
        limit: u64,
    },

    /// The statement was still not ready when the polling budget ran out.
    #[error("flex statement {reference} still not ready after {polls} polls over {}s", waited.as_secs())]
    PollBudgetExhausted {
        /// The reference code polled.
        reference: String,
        /// GetStatement calls made.
        polls: u32,
        /// Time since the first request.
        waited: Duration,
    },

    /// IB answered with an error code.
    #[error("flex service error {raw_code}: {message}")]
    Service {
        /// The code as a number, when it is one.
        code: Option<u32>,
        /// The code verbatim.
        raw_code: String,
        /// IB's message (scrubbed of the token, at most 200 characters).
        message: String,
        /// How the poller treats it.
        class: CodeClass,
    },
}

impl FetchError {
    /// A stable, upper-case code for this kind of error; safe to store and match on.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::TokenMissing { .. } => "FLEX_TOKEN_MISSING",
            FetchError::TokenInvalid { .. } => "FLEX_TOKEN_INVALID",
            FetchError::TokenKnownExpired { .. } => "FLEX_TOKEN_EXPIRED",
            FetchError::BadUrl { .. } => "FLEX_BAD_URL",
            FetchError::UrlRefused { .. } => "FLEX_URL_REFUSED",
            FetchError::Connect { .. } => "FLEX_CONNECT",
            FetchError::Timeout { .. } => "FLEX_TIMEOUT",
            FetchError::Disconnected => "FLEX_DISCONNECTED",
            FetchError::Protocol { .. } => "FLEX_PROTOCOL",
            FetchError::HttpStatus { .. } => "FLEX_HTTP_STATUS",
            FetchError::BodyTruncated { .. } => "FLEX_BODY_TRUNCATED",
            FetchError::BodyTooLarge { .. } => "FLEX_BODY_TOO_LARGE",
            FetchError::PollBudgetExhausted { .. } => "FLEX_POLL_TIMEOUT",
            FetchError::Service { code, .. } => service_code(*code),
        }
    }

    /// Whether the same call may succeed if tried again a little later: network faults,
    /// timeouts, HTTP 5xx/429, a cut-off body and IB's transient codes. The poller retries
    /// these a bounded number of times.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Timeout { .. }
            | FetchError::Disconnected
            | FetchError::BodyTruncated { .. } => true,
            FetchError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            FetchError::Service { class, .. } => *class == CodeClass::Transient,
            _ => false,
        }
    }
}

/// How a body kind reads in a message.
fn kind_name(kind: BodyKind) -> &'static str {
    match kind {
        BodyKind::Envelope => "a flex reply",
        BodyKind::Statement => "a statement",
        BodyKind::Html => "an html",
        BodyKind::Csv => "a csv",
        BodyKind::Empty => "an empty",
        BodyKind::Other => "an unrecognised",
    }
}

/// `FLEX_<code>` for the codes of IB's table, `FLEX_UNKNOWN_CODE` otherwise.
fn service_code(code: Option<u32>) -> &'static str {
    match code {
        Some(1001) => "FLEX_1001",
        Some(1003) => "FLEX_1003",
        Some(1004) => "FLEX_1004",
        Some(1005) => "FLEX_1005",
        Some(1006) => "FLEX_1006",
        Some(1007) => "FLEX_1007",
        Some(1008) => "FLEX_1008",
        Some(1009) => "FLEX_1009",
        Some(1010) => "FLEX_1010",
        Some(1011) => "FLEX_1011",
        Some(1012) => "FLEX_1012",
        Some(1013) => "FLEX_1013",
        Some(1014) => "FLEX_1014",
        Some(1015) => "FLEX_1015",
        Some(1016) => "FLEX_1016",
        Some(1017) => "FLEX_1017",
        Some(1018) => "FLEX_1018",
        Some(1019) => "FLEX_1019",
        Some(1020) => "FLEX_1020",
        Some(1021) => "FLEX_1021",
        _ => "FLEX_UNKNOWN_CODE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::envelope::{classify_code, ERROR_CODES};

    #[test]
    fn every_table_code_has_its_own_stable_code() {
        for row in ERROR_CODES {
            let e = FetchError::Service {
                code: Some(row.code),
                raw_code: row.code.to_string(),
                message: String::new(),
                class: classify_code(row.code),
            };
            assert_eq!(e.code(), format!("FLEX_{}", row.code));
            assert_eq!(e.is_transient(), row.class == CodeClass::Transient);
        }
        let unknown = FetchError::Service {
            code: Some(1025),
            raw_code: "1025".into(),
            message: "locked".into(),
            class: CodeClass::Fatal,
        };
        assert_eq!(unknown.code(), "FLEX_UNKNOWN_CODE");
        assert!(unknown.to_string().contains("1025"));
    }
}
