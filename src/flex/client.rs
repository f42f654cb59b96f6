//! The Flex Web Service transport (ureq): `SendRequest` and `GetStatement`, nothing else.
//!
//! [`FlexClient`] sends one request per call, reads the reply under a size cap and
//! timeouts, and maps every fault to a typed error ([`FetchError`] for transport, HTTP and
//! IB's codes; [`ParseError`] for bodies that are not what a Flex reply is). Deciding what
//! to do about an error (poll again, back off, stop) is [`super::poll`]'s job; the
//! [`FlexTransport`] trait lets that driver run over a fake in tests.
//!
//! Security rules kept here:
//! - the token only ever travels in the query string of a request; every URL shown goes
//!   through [`redact_url`]; IB's error messages are scrubbed of the token;
//! - plain `http` base URLs are accepted only for loopback hosts (mock servers in tests);
//! - IB's `<Url>` is followed only when [`ClientConfig::follow_url`] is set, and only to
//!   `https` hosts under `interactivebrokers.com`;
//! - redirects are not followed (a 3xx is [`FetchError::HttpStatus`]).

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use ureq::http::Uri;

use super::envelope::{
    classify_body, kind_error, parse_envelope, BodyKind, EnvelopeStatus, ENVELOPE_ROOT,
    STATEMENT_ROOT,
};
use super::failure::{FlexError, Result};
use super::{redact_url, FetchError, FlexToken, ParseError};

/// IB's current, documented base URL.
pub const DEFAULT_BASE_URL: &str =
    "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService";

/// The `User-Agent` IB requires: `runledger/<version>`.
pub const USER_AGENT: &str = concat!("runledger/", env!("CARGO_PKG_VERSION"));

/// How many leading bytes of a reply are read to tell an envelope from a statement.
const SNIFF_BYTES: usize = 64 * 1024;

/// Transport settings. `Default` is IB's base URL, `<Url>` not followed, 64 MiB body cap,
/// 10 s to connect, 60 s for the reply headers and for each read of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `{base}/SendRequest` and `{base}/GetStatement` are called. `https`, or `http` to a
    /// loopback host (a mock or a local proxy).
    pub base_url: String,
    /// Fetch the statement from the SendRequest reply's `<Url>` (when present) instead of
    /// `{base}/GetStatement`; only `https` hosts under `interactivebrokers.com` are
    /// followed, anything else is [`FetchError::UrlRefused`].
    pub follow_url: bool,
    /// Largest reply body accepted, enforced while reading ([`FetchError::BodyTooLarge`]).
    pub max_body_bytes: u64,
    /// Connection setup limit (DNS, TCP, TLS).
    pub connect_timeout: Duration,
    /// Limit for the reply headers, and for each read of the body.
    pub read_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: DEFAULT_BASE_URL.to_string(),
            follow_url: false,
            max_body_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Which dates the statement covers: the query's own, an explicit range or a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementPeriod {
    /// The dates saved in the Flex query.
    #[default]
    Query,
    /// `fd`/`td`: from and to, inclusive, at most 365 days apart.
    Range {
        /// First day.
        from: time::Date,
        /// Last day.
        to: time::Date,
    },
    /// `p`: the last `days` days (1..=365).
    Days {
        /// How many days.
        days: u16,
    },
}

const YMD: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]");

impl serde::Serialize for StatementPeriod {
    /// `{"kind":"query"}`, `{"kind":"range","from":"yyyymmdd","to":"yyyymmdd"}` or
    /// `{"kind":"days","days":N}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut v = serde_json::json!({ "kind": match self {
            StatementPeriod::Query => "query",
            StatementPeriod::Range { .. } => "range",
            StatementPeriod::Days { .. } => "days",
        }});
        for (k, val) in self.query_pairs() {
            let key = match k {
                "fd" => "from",
                "td" => "to",
                _ => "days",
            };
            v[key] = serde_json::json!(val);
        }
        serde::Serialize::serialize(&v, s)
    }
}

impl StatementPeriod {
    /// A range from two `yyyymmdd` strings (as the CLI takes them); refused when a date
    /// is malformed, `from > to`, or the span exceeds 365 days.
    pub fn range(from: &str, to: &str) -> Result<Self> {
        let parse = |field: &str, s: &str| {
            time::Date::parse(s, YMD)
                .map_err(|_| FlexError::invalid(field, "must be a yyyymmdd date"))
        };
        let p = StatementPeriod::Range {
            from: parse("from", from)?,
            to: parse("to", to)?,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the bounds IB enforces.
    pub fn validate(&self) -> Result<()> {
        match *self {
            StatementPeriod::Query => Ok(()),
            StatementPeriod::Range { from, to } => {
                if from > to {
                    return Err(FlexError::invalid("period", "from is after to"));
                }
                if (to - from).whole_days() > 365 {
                    return Err(FlexError::invalid(
                        "period",
                        "a range spans at most 365 days",
                    ));
                }
                Ok(())
            }
            StatementPeriod::Days { days } if (1..=365).contains(&days) => Ok(()),
            StatementPeriod::Days { .. } => {
                Err(FlexError::invalid("period", "days must be 1..=365"))
            }
        }
    }

    fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let ymd = |d: time::Date| d.format(YMD).expect("dates always format");
        match *self {
            StatementPeriod::Query => vec![],
            StatementPeriod::Range { from, to } => vec![("fd", ymd(from)), ("td", ymd(to))],
            StatementPeriod::Days { days } => vec![("p", days.to_string())],
        }
    }
}

/// Checks a Flex query id: 1..=32 ASCII letters, digits, `_` or `-` (IB's are digits).
pub fn validate_query_id(query_id: &str) -> Result<()> {
    let ok = !query_id.is_empty()
        && query_id.len() <= 32
        && query_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FlexError::invalid(
            "query_id",
            "must be 1..=32 ascii letters, digits, '_' or '-'",
        ))
    }
}

/// A successful SendRequest: the reference code to poll with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// `<ReferenceCode>`.
    pub reference: String,
    /// `<Url>` as IB sent it (never contains the token).
    pub url: Option<String>,
}

/// A statement reply whose body has not been read whole yet: the sniffed prefix and the
/// rest of the stream. [`StatementBody::read_to_end`] reads it under the size cap.
pub struct StatementBody {
    prefix: Vec<u8>,
    rest: Box<dyn Read + Send>,
    content_length: Option<u64>,
    limit: u64,
}

impl fmt::Debug for StatementBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementBody")
            .field("prefix_len", &self.prefix.len())
            .field("content_length", &self.content_length)
            .field("limit", &self.limit)
            .finish()
    }
}

impl StatementBody {
    /// A body already in memory (fakes and tests); `limit` as the client's cap.
    pub fn from_bytes(bytes: Vec<u8>, limit: u64) -> Self {
        let len = bytes.len() as u64;
        StatementBody {
            prefix: bytes,
            rest: Box::new(io::empty()),
            content_length: Some(len),
            limit,
        }
    }

    /// `Content-Length`, when the server announced one.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Reads the rest of the body: [`FetchError::BodyTooLarge`] past the cap,
    /// [`FetchError::BodyTruncated`] when the stream breaks or ends before
    /// `Content-Length`, [`FetchError::Timeout`] when a read times out.
    pub fn read_to_end(self) -> Result<Vec<u8>> {
        let StatementBody {
            mut prefix,
            rest,
            content_length,
            limit,
        } = self;
        if prefix.len() as u64 > limit {
            return Err(FetchError::BodyTooLarge { limit }.into());
        }
        read_capped(rest, &mut prefix, limit, content_length)?;
        Ok(prefix)
    }
}

/// Reads `reader` to its end into `out` (which may hold a prefix), at most `limit` bytes
/// in all.
fn read_capped(
    reader: impl Read,
    out: &mut Vec<u8>,
    limit: u64,
    content_length: Option<u64>,
) -> Result<()> {
    let room = limit.saturating_sub(out.len() as u64);
    let mut capped = reader.take(room.saturating_add(1));
    if let Err(e) = capped.read_to_end(out) {
        return Err(body_error(e, out.len() as u64, content_length).into());
    }
    if out.len() as u64 > limit {
        return Err(FetchError::BodyTooLarge { limit }.into());
    }
    if let Some(expected) = content_length {
        if (out.len() as u64) < expected {
            return Err(FetchError::BodyTruncated {
                received: out.len() as u64,
                expected: Some(expected),
            }
            .into());
        }
    }
    Ok(())
}

/// Reads just enough of the body to classify it: 256 bytes, then four times more while
/// the prefix is still unrecognised (a long comment before the root), up to
/// [`SNIFF_BYTES`]. The rest of a statement is left to [`StatementBody::read_to_end`], so
/// a large or cut-off statement is reported by the download, not by the poll.
fn read_prefix(reader: &mut impl Read, limit: u64, content_length: Option<u64>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut want: u64 = 256;
    loop {
        let target = want.min(SNIFF_BYTES as u64).min(limit.saturating_add(1));
        let need = target.saturating_sub(buf.len() as u64);
        if let Err(e) = (&mut *reader).take(need).read_to_end(&mut buf) {
            return Err(body_error(e, buf.len() as u64, content_length).into());
        }
        if buf.len() as u64 > limit {
            return Err(FetchError::BodyTooLarge { limit }.into());
        }
        let at_end = (buf.len() as u64) < target;
        let unknown = matches!(classify_body(&buf), BodyKind::Other | BodyKind::Empty);
        if at_end || !unknown || target >= SNIFF_BYTES as u64 || target > limit {
            return Ok(buf);
        }
        want *= 4;
    }
}

/// A failed body read: a timeout, or a body cut off.
fn body_error(e: io::Error, received: u64, expected: Option<u64>) -> FetchError {
    match ureq::Error::from(e) {
        ureq::Error::Timeout(_) => FetchError::Timeout { phase: "body" },
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            FetchError::Timeout { phase: "body" }
        }
        _ => FetchError::BodyTruncated { received, expected },
    }
}

/// What the poll driver needs from a transport: the two Flex calls. [`FlexClient`] is the
/// real one; tests substitute scripted fakes.
pub trait FlexTransport: Send + Sync {
    /// `SendRequest` for `query_id` over `period`: the reference code, or the service's
    /// error ([`FetchError::Service`]) or any transport fault.
    fn send_request(
        &self,
        token: &FlexToken,
        query_id: &str,
        period: &StatementPeriod,
    ) -> Result<Requested>;

    /// `GetStatement` for `reference` (at IB's `url` when following it is enabled): the
    /// statement's body, or the service's error (`1019` while it is being generated).
    fn get_statement(
        &self,
        token: &FlexToken,
        reference: &str,
        url: Option<&str>,
    ) -> Result<StatementBody>;

    /// The URL a call goes to, redacted, for timelines (`call` is `SendRequest` or
    /// `GetStatement`).
    fn shown_url(&self, call: &str) -> String;
}

/// The ureq-based Flex client.
#[derive(Clone)]
pub struct FlexClient {
    config: ClientConfig,
    base: String,
    agent: ureq::Agent,
}

impl fmt::Debug for FlexClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlexClient")
            .field("config", &self.config)
            .finish()
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses and checks a base URL: `https`, or `http` to a loopback host; no query, no
/// user info.
fn check_base(url: &str) -> Result<String, FetchError> {
    let bad = |reason: &str| FetchError::BadUrl {
        url: redact_url(url),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a url"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => return Err(bad("plain http is allowed only to a loopback host")),
        _ => return Err(bad("scheme must be https")),
    }
    if uri.query().is_some() {
        return Err(bad("must not carry a query string"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("must not carry user info"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Checks IB's `<Url>` against the allow-list before it is followed.
pub fn check_follow_url(url: &str) -> Result<(), FetchError> {
    let uri: Uri = url.trim().parse().map_err(|_| FetchError::BadUrl {
        url: redact_url(url),
        reason: "not a url".into(),
    })?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let host = uri.host().unwrap_or("").to_ascii_lowercase();
    let allowed_host =
        host == "interactivebrokers.com" || host.ends_with(".interactivebrokers.com");
    let clean = uri.query().is_none()
        && !uri.authority().is_some_and(|a| a.as_str().contains('@'))
        && uri.port().is_none();
    if scheme != "https" || !allowed_host || !clean {
        return Err(FetchError::UrlRefused { scheme, host });
    }
    Ok(())
}

impl FlexClient {
    /// A client for `config`; refuses a base URL that is not `https` (or `http` to
    /// loopback) with [`FetchError::BadUrl`].
    pub fn new(config: ClientConfig) -> Result<Self> {
        let base = check_base(&config.base_url)?;
        if config.max_body_bytes == 0 {
            return Err(FlexError::invalid("max_body_bytes", "must be at least 1"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(USER_AGENT)
            .accept("application/xml, text/xml, */*")
            .timeout_connect(Some(config.connect_timeout))
            .timeout_recv_response(Some(config.read_timeout))
            .timeout_per_read(Some(config.read_timeout))
            // At most one request a second: keeping connections alive gains nothing.
            .max_idle_connections(0)
            .build()
            .into();
        Ok(FlexClient {
            config,
            base,
            agent,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// One GET of `endpoint` with `query`: the status, the sniffed prefix, the rest.
    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<RawReply> {
        let host = endpoint
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let mut req = self.agent.get(endpoint).header("Connection", "close");
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let resp = req.call().map_err(|e| call_error(e, endpoint, &host))?;
        let status = resp.status().as_u16();
        let body = resp.into_body();
        let content_length = body.content_length();
        let mut reader = body.into_reader();
        let prefix = read_prefix(&mut reader, self.config.max_body_bytes, content_length)?;
        Ok(RawReply {
            status,
            prefix,
            rest: Box::new(reader),
            content_length,
        })
    }

    /// Reads the rest of a small reply (an envelope, an error page) under the cap.
    fn finish_small(
        &self,
        mut prefix: Vec<u8>,
        rest: Box<dyn Read + Send>,
        content_length: Option<u64>,
    ) -> Result<Vec<u8>> {
        read_capped(
            rest,
            &mut prefix,
            self.config.max_body_bytes,
            content_length,
        )?;
        Ok(prefix)
    }

    /// Interprets an envelope: `Ok` for a success, the service's error otherwise.
    fn envelope(&self, token: &FlexToken, body: &[u8]) -> Result<super::Envelope> {
        let env = parse_envelope(body)?;
        if let Some(raw) = &env.error_code {
            let code = env.error_code_number();
            let class = env.code_class().expect("an error code is present");
            let message = scrub(env.error_message.as_deref().unwrap_or(""), token);
            return Err(FetchError::Service {
                code,
                raw_code: scrub(raw, token),
                message,
                class,
            }
            .into());
        }
        if env.status != EnvelopeStatus::Success {
            return Err(ParseError::BadEnvelope {
                reason: "status is not success and there is no <ErrorCode>".into(),
            }
            .into());
        }
        Ok(env)
    }

    /// Common handling of a non-2xx status: an envelope in the body wins (IB's own error),
    /// anything else is [`FetchError::HttpStatus`].
    fn non_success(
        &self,
        token: &FlexToken,
        status: u16,
        prefix: Vec<u8>,
        rest: Box<dyn Read + Send>,
        content_length: Option<u64>,
    ) -> FlexError {
        let kind = classify_body(&prefix);
        if kind == BodyKind::Envelope {
            if let Ok(body) = self.finish_small(prefix, rest, content_length) {
                if let Err(e @ FlexError::Fetch(FetchError::Service { .. })) =
                    self.envelope(token, &body)
                {
                    return e;
                }
            }
        }
        FetchError::HttpStatus { status, body: kind }.into()
    }
}

/// A reply whose body has only been sniffed.
struct RawReply {
    status: u16,
    prefix: Vec<u8>,
    rest: Box<dyn Read + Send>,
    content_length: Option<u64>,
}

/// IB's text with the token masked, cut to 200 characters.
fn scrub(text: &str, token: &FlexToken) -> String {
    text.replace(token.secret(), "***")
        .chars()
        .take(200)
        .collect()
}

/// Maps a ureq failure before the body (connect, headers) to a typed error. ureq's own
/// messages are never shown: some quote the URL, which carries the token.
fn call_error(e: ureq::Error, endpoint: &str, host: &str) -> FlexError {
    use ureq::Error as U;
    let connect = |reason: &str| FetchError::Connect {
        host: host.to_string(),
        reason: reason.to_string(),
    };
    let err = match e {
        U::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            FetchError::Timeout { phase: "connect" }
        }
        U::Timeout(_) => FetchError::Timeout { phase: "response" },
        U::HostNotFound => connect("host not found"),
        U::ConnectionFailed => connect("connection failed"),
        U::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => connect("connection refused"),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                FetchError::Timeout { phase: "response" }
            }
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FetchError::Disconnected,
            io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable => connect("unreachable"),
            _ => connect("i/o error"),
        },
        U::Tls(_) | U::Rustls(_) | U::Pem(_) => connect("tls failure"),
        U::BadUri(_) | U::Http(_) => FetchError::BadUrl {
            url: redact_url(endpoint),
            reason: "rejected by the http client".into(),
        },
        U::Protocol(_) | U::LargeResponseHeader(..) => FetchError::Protocol {
            reason: "malformed http response".into(),
        },
        _ => FetchError::Protocol {
            reason: "http client failure".into(),
        },
    };
    err.into()
}

impl FlexTransport for FlexClient {
    fn send_request(
        &self,
        token: &FlexToken,
        query_id: &str,
        period: &StatementPeriod,
    ) -> Result<Requested> {
        validate_query_id(query_id)?;
        period.validate()?;
        let endpoint = format!("{}/SendRequest", self.base);
        let extra = period.query_pairs();
        let mut query: Vec<(&str, &str)> = vec![("t", token.secret()), ("q", query_id), ("v", "3")];
        query.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let RawReply {
            status,
            prefix,
            rest,
            content_length: len,
        } = self.get(&endpoint, &query)?;
        if !(200..300).contains(&status) {
            return Err(self.non_success(token, status, prefix, rest, len));
        }
        match classify_body(&prefix) {
            BodyKind::Envelope => {}
            BodyKind::Statement => {
                return Err(ParseError::WrongRoot {
                    expected: ENVELOPE_ROOT,
                    found: STATEMENT_ROOT.into(),
                }
                .into())
            }
            _ => return Err(kind_error(&prefix, ENVELOPE_ROOT).into()),
        }
        let body = self.finish_small(prefix, rest, len)?;
        let env = self.envelope(token, &body)?;
        let reference = env.reference_code.ok_or_else(|| ParseError::BadEnvelope {
            reason: "success without <ReferenceCode>".into(),
        })?;
        if reference.len() > 64 || !reference.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ParseError::BadEnvelope {
                reason: "<ReferenceCode> is not 1..=64 ascii letters or digits".into(),
            }
            .into());
        }
        Ok(Requested {
            reference,
            url: env.url,
        })
    }

    fn get_statement(
        &self,
        token: &FlexToken,
        reference: &str,
        url: Option<&str>,
    ) -> Result<StatementBody> {
        let endpoint = match url {
            Some(u) if self.config.follow_url => {
                check_follow_url(u)?;
                u.trim().to_string()
            }
            _ => format!("{}/GetStatement", self.base),
        };
        let query = [("t", token.secret()), ("q", reference), ("v", "3")];
        let RawReply {
            status,
            prefix,
            rest,
            content_length: len,
        } = self.get(&endpoint, &query)?;
        if !(200..300).contains(&status) {
            return Err(self.non_success(token, status, prefix, rest, len));
        }
        match classify_body(&prefix) {
            BodyKind::Statement => Ok(StatementBody {
                prefix,
                rest,
                content_length: len,
                limit: self.config.max_body_bytes,
            }),
            BodyKind::Envelope => {
                let body = self.finish_small(prefix, rest, len)?;
                self.envelope(token, &body)?;
                Err(ParseError::BadEnvelope {
                    reason: "GetStatement answered success without a statement".into(),
                }
                .into())
            }
            _ => {
                // Read what is left (bounded) so a cut-off or oversized body is reported
                // as such rather than by its first bytes.
                let body = self.finish_small(prefix, rest, len)?;
                Err(kind_error(&body, STATEMENT_ROOT).into())
            }
        }
    }

    fn shown_url(&self, call: &str) -> String {
        redact_url(&format!("{}/{call}", self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_https_or_loopback_http() {
        for ok in [
            DEFAULT_BASE_URL,
            "http://127.0.0.1:8080/x",
            "http://localhost/x/",
            "http://[::1]:9/x",
        ] {
            assert!(check_base(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/x",
            "ftp://127.0.0.1/x",
            "https://h/x?t=SECRET",
            "https://u:p@h/x",
            "not a url",
        ] {
            let e = check_base(bad).unwrap_err();
            assert_eq!(e.code(), "FLEX_BAD_URL", "{bad}");
            assert!(!e.to_string().contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn follow_url_allow_list() {
        check_follow_url(
            "https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement",
        )
        .unwrap();
        for bad in [
            "http://gdcdyn.interactivebrokers.com/x",
            "https://interactivebrokers.com.evil.example/x",
            "https://evilinteractivebrokers.com/x",
            "https://gdcdyn.interactivebrokers.com:8443/x",
            "https://gdcdyn.interactivebrokers.com/x?t=1",
            "https://127.0.0.1/x",
        ] {
            let e = check_follow_url(bad).unwrap_err();
            assert!(
                matches!(e.code(), "FLEX_URL_REFUSED" | "FLEX_BAD_URL"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn periods_are_validated() {
        let p = StatementPeriod::range("20260101", "20260131").unwrap();
        assert_eq!(
            p.query_pairs(),
            vec![
                ("fd", "20260101".to_string()),
                ("td", "20260131".to_string())
            ]
        );
        assert!(StatementPeriod::range("20260201", "20260101").is_err());
        assert!(StatementPeriod::range("20250101", "20260102").is_err());
        assert!(StatementPeriod::range("2026-01-01", "20260102").is_err());
        assert!(StatementPeriod::Days { days: 0 }.validate().is_err());
        assert_eq!(
            StatementPeriod::Days { days: 7 }.query_pairs(),
            vec![("p", "7".to_string())]
        );
    }

    #[test]
    fn capped_reads() {
        let body = StatementBody::from_bytes(vec![b'x'; 10], 10);
        assert_eq!(body.read_to_end().unwrap().len(), 10);
        let body = StatementBody::from_bytes(vec![b'x'; 11], 10);
        assert_eq!(
            body.read_to_end().unwrap_err().code(),
            "FLEX_BODY_TOO_LARGE"
        );
        let mut out = Vec::new();
        let e = read_capped(&b"abc"[..], &mut out, 100, Some(10)).unwrap_err();
        assert_eq!(e.code(), "FLEX_BODY_TRUNCATED");
    }
}
