//! The `FlexStatementResponse` envelope of SendRequest/GetStatement replies, the classifier
//! of a reply body, and IB's error-code table.
//!
//! ```
//! use runledger::flex::{parse_envelope, CodeClass, EnvelopeStatus};
//!
//! let reply = b"<FlexStatementResponse timestamp='01 October, 2021 10:38 AM EDT'>
//! <Status>Warn</Status><ErrorCode>1019</ErrorCode>
//! <ErrorMessage>Statement generation in progress.</ErrorMessage>
//! </FlexStatementResponse>";
//! let env = parse_envelope(reply).unwrap();
//! assert_eq!(env.status, EnvelopeStatus::Warn);
//! assert_eq!(env.code_class(), Some(CodeClass::NotReady));
//! ```

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::statement::{in_markup, in_tag};
use super::xml::{attr_text, push_reference, runaway_markup, runaway_tag, WellFormed};
use super::ParseError;

/// The root element of a reply envelope.
pub const ENVELOPE_ROOT: &str = "FlexStatementResponse";
/// The root element of a statement.
pub const STATEMENT_ROOT: &str = "FlexQueryResponse";

/// The `<Status>` of a reply envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EnvelopeStatus {
    /// The request was accepted (SendRequest: a reference code follows).
    Success,
    /// Not an outright failure, e.g. 1019 "statement generation in progress".
    Warn,
    /// The request failed; `ErrorCode` says why.
    Fail,
}

serde_display!(EnvelopeStatus);

/// A parsed `FlexStatementResponse`. Text values are trimmed; absent elements are `None`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// `<Status>`.
    pub status: EnvelopeStatus,
    /// The root's `timestamp` attribute, verbatim (`26 August, 2023 12:36 PM EDT`).
    pub timestamp: Option<String>,
    /// `<ReferenceCode>` of a successful SendRequest.
    pub reference_code: Option<String>,
    /// `<Url>` (or `<url>`): where IB says to fetch the statement from.
    pub url: Option<String>,
    /// `<ErrorCode>`, verbatim (kept even when it is not a number or not in the table).
    pub error_code: Option<String>,
    /// `<ErrorMessage>`.
    pub error_message: Option<String>,
}

impl Envelope {
    /// `<ErrorCode>` as a number, when it is one.
    pub fn error_code_number(&self) -> Option<u32> {
        self.error_code.as_deref()?.parse().ok()
    }

    /// How a client should react to this reply's error code: `None` when there is no
    /// `<ErrorCode>`; a code that is not a number, or not in [`ERROR_CODES`], is
    /// [`CodeClass::Fatal`].
    pub fn code_class(&self) -> Option<CodeClass> {
        let raw = self.error_code.as_deref()?;
        Some(raw.parse().map_or(CodeClass::Fatal, classify_code))
    }
}

/// How a client reacts to an IB Flex error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeClass {
    /// 1019: the statement is being generated; poll the same reference again.
    NotReady,
    /// 1018: too many requests from this token; back off (at least 60 s).
    Throttled,
    /// Try again later, a bounded number of times.
    Transient,
    /// Stop at once; retrying the same call cannot help.
    Fatal,
}

serde_display!(CodeClass);

/// One row of IB's error-code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    /// The numeric code.
    pub code: u32,
    /// How to react.
    pub class: CodeClass,
    /// IB's meaning, abridged.
    pub meaning: &'static str,
}

const fn row(code: u32, class: CodeClass, meaning: &'static str) -> CodeInfo {
    CodeInfo {
        code,
        class,
        meaning,
    }
}

/// IB's Flex Web Service v3 error codes (there is no 1002), sorted by code: the single
/// source of truth for [`classify_code`]. Codes not listed are [`CodeClass::Fatal`].
pub const ERROR_CODES: &[CodeInfo] = &[
    row(
        1001,
        CodeClass::Transient,
        "statement could not be generated at this time",
    ),
    row(1003, CodeClass::Fatal, "statement is not available"),
    row(
        1004,
        CodeClass::Transient,
        "statement is incomplete at this time",
    ),
    row(
        1005,
        CodeClass::Transient,
        "settlement data is not ready at this time",
    ),
    row(
        1006,
        CodeClass::Transient,
        "fifo p/l data is not ready at this time",
    ),
    row(
        1007,
        CodeClass::Transient,
        "mtm p/l data is not ready at this time",
    ),
    row(
        1008,
        CodeClass::Transient,
        "mtm and fifo p/l data is not ready at this time",
    ),
    row(1009, CodeClass::Transient, "the server is under heavy load"),
    row(
        1010,
        CodeClass::Fatal,
        "legacy flex queries are no longer supported",
    ),
    row(1011, CodeClass::Fatal, "service account is inactive"),
    row(1012, CodeClass::Fatal, "token has expired"),
    row(1013, CodeClass::Fatal, "ip restriction"),
    row(1014, CodeClass::Fatal, "query is invalid"),
    row(1015, CodeClass::Fatal, "token is invalid"),
    row(1016, CodeClass::Fatal, "account is invalid"),
    row(1017, CodeClass::Fatal, "reference code is invalid"),
    row(
        1018,
        CodeClass::Throttled,
        "too many requests from this token",
    ),
    row(
        1019,
        CodeClass::NotReady,
        "statement generation in progress",
    ),
    row(
        1020,
        CodeClass::Fatal,
        "invalid request or unable to validate request",
    ),
    row(
        1021,
        CodeClass::Transient,
        "statement could not be retrieved at this time",
    ),
];

/// The table row of `code`, if IB documents it.
pub fn code_info(code: u32) -> Option<&'static CodeInfo> {
    ERROR_CODES
        .binary_search_by_key(&code, |c| c.code)
        .ok()
        .map(|i| &ERROR_CODES[i])
}

/// How to react to `code`; unknown codes (e.g. 1025, token locked) are fatal.
pub fn classify_code(code: u32) -> CodeClass {
    code_info(code).map_or(CodeClass::Fatal, |c| c.class)
}

/// What a reply body looks like, judged from its first element (or first line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// Root `FlexStatementResponse`: a reply envelope.
    Envelope,
    /// Root `FlexQueryResponse`: a statement.
    Statement,
    /// An HTML page (`<!DOCTYPE html>` or `<html>`).
    Html,
    /// Comma-separated text (a query set to CSV output).
    Csv,
    /// Nothing but whitespace.
    Empty,
    /// Anything else: another XML root, binary, plain text, or no root at all.
    Other,
}

serde_display!(BodyKind);

/// Strips a UTF-8 byte-order mark and leading XML whitespace.
fn trim_start(body: &[u8]) -> &[u8] {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    &body[start..]
}

/// Classifies a reply body without parsing it whole: the transport uses this to tell an
/// envelope from a statement, and both from an HTML error page, CSV, or an empty body.
/// A truncated statement or envelope is still classified by its root element (parsing it
/// then reports [`ParseError::Truncated`]).
pub fn classify_body(body: &[u8]) -> BodyKind {
    let body = trim_start(body);
    if body.is_empty() {
        return BodyKind::Empty;
    }
    if body[0] != b'<' {
        return if looks_like_csv(body) {
            BodyKind::Csv
        } else {
            BodyKind::Other
        };
    }
    let lower_prefix = body[..body.len().min(14)].to_ascii_lowercase();
    if lower_prefix.starts_with(b"<!doctype html") || lower_prefix.starts_with(b"<html") {
        return BodyKind::Html;
    }
    let mut reader = Reader::from_reader(body);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let at = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let name = e.name();
                let name: &str = name.as_ref();
                return if name == ENVELOPE_ROOT {
                    BodyKind::Envelope
                } else if name == STATEMENT_ROOT {
                    BodyKind::Statement
                } else if name.eq_ignore_ascii_case("html") {
                    BodyKind::Html
                } else {
                    BodyKind::Other
                };
            }
            Ok(Event::DocType(d)) => {
                let d = d.trim_ascii_start();
                if d.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("html")) {
                    return BodyKind::Html;
                }
            }
            Ok(Event::Text(t)) if !t.trim_ascii().is_empty() => return BodyKind::Other,
            Ok(Event::Eof) => return BodyKind::Other,
            // A first tag quick-xml cannot read (a value in typographic quotes, a quote
            // missing) still names its root: classify by the name, so the parser of that
            // kind reports the document as malformed rather than "not xml".
            Err(_) => return root_by_name(body.get(at..).unwrap_or_default()),
            Ok(_) => {}
        }
    }
}

/// The kind named by a tag that starts `rest` (`<FlexQueryResponse ...`), read as text.
fn root_by_name(rest: &[u8]) -> BodyKind {
    let rest = trim_start(rest);
    for (root, kind) in [
        (ENVELOPE_ROOT, BodyKind::Envelope),
        (STATEMENT_ROOT, BodyKind::Statement),
    ] {
        if let Some(after) = rest
            .strip_prefix(b"<")
            .and_then(|r| r.strip_prefix(root.as_bytes()))
        {
            if after
                .first()
                .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
            {
                return kind;
            }
        }
    }
    BodyKind::Other
}

/// Whether the first line is comma-separated printable text with at least two fields.
fn looks_like_csv(body: &[u8]) -> bool {
    let line_end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = &body[..line_end.min(64 * 1024)];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.contains(&b',')
        && std::str::from_utf8(line).is_ok_and(|s| !s.chars().any(|c| c.is_control() && c != '\t'))
}

/// The error for a body that is not of the expected kind (`expected` is a root name).
pub(crate) fn kind_error(body: &[u8], expected: &'static str) -> ParseError {
    match classify_body(body) {
        BodyKind::Empty => ParseError::EmptyBody,
        BodyKind::Html => ParseError::HtmlBody,
        BodyKind::Csv => ParseError::CsvBody,
        BodyKind::Envelope => ParseError::WrongRoot {
            expected,
            found: ENVELOPE_ROOT.into(),
        },
        BodyKind::Statement => ParseError::WrongRoot {
            expected,
            found: STATEMENT_ROOT.into(),
        },
        BodyKind::Other => ParseError::NotXml,
    }
}

#[derive(Clone, Copy)]
enum Field {
    Status,
    ReferenceCode,
    Url,
    ErrorCode,
    ErrorMessage,
}

impl Field {
    /// Child element names are matched ignoring ASCII case (`Url` and `url` both occur).
    fn of(name: &str) -> Option<Field> {
        const NAMES: [(&str, Field); 5] = [
            ("status", Field::Status),
            ("referencecode", Field::ReferenceCode),
            ("url", Field::Url),
            ("errorcode", Field::ErrorCode),
            ("errormessage", Field::ErrorMessage),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }
}

/// Checks the root element and returns its `timestamp` attribute.
fn envelope_root(e: &BytesStart<'_>, body: &[u8]) -> Result<Option<String>, ParseError> {
    if AsRef::<str>::as_ref(&e.name()) != ENVELOPE_ROOT {
        return Err(kind_error(body, ENVELOPE_ROOT));
    }
    Ok(e.attributes()
        .flatten()
        .find(|a| AsRef::<str>::as_ref(&a.key) == "timestamp")
        .map(|a| attr_text(&a).trim().to_string()))
}

/// Parses a SendRequest/GetStatement reply envelope.
///
/// Tolerates a missing XML declaration, a byte-order mark, single or double quotes,
/// `<Url>` or `<url>`, any whitespace around values, and unknown children. A body that is
/// not an envelope fails with the matching kind: [`ParseError::EmptyBody`],
/// [`ParseError::HtmlBody`], [`ParseError::CsvBody`], [`ParseError::NotXml`],
/// [`ParseError::WrongRoot`] (e.g. a statement), [`ParseError::Truncated`],
/// [`ParseError::Malformed`]; an envelope without a known `<Status>` is
/// [`ParseError::BadEnvelope`].
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, ParseError> {
    let mut reader = Reader::from_reader(body);
    let mut buf = Vec::new();
    // (field, text) of each known child, first occurrence wins.
    let mut values: [Option<String>; 5] = Default::default();
    let mut timestamp = None;
    let mut depth = 0usize;
    let mut root_seen = false;
    let mut current: Option<Field> = None;
    let mut text = String::new();
    let mut wf = WellFormed::default();
    loop {
        buf.clear();
        let at = reader.buffer_position();
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(e) => {
                if in_markup(&e) {
                    if let Some(err) = runaway_markup(&buf, at) {
                        return Err(err);
                    }
                }
                if in_tag(&e) {
                    if let Some(err) = runaway_tag(&buf, at) {
                        return Err(err);
                    }
                }
                let at_eof = reader.get_ref().is_empty();
                return Err(ParseError::from_xml(
                    e,
                    reader.error_position(),
                    reader.buffer_position(),
                    None,
                    at_eof,
                ));
            }
        };
        match &event {
            Event::Start(e) | Event::Empty(e) => wf.tag(e, at)?,
            Event::GeneralRef(r) => wf.general_ref(r, at)?,
            Event::DocType(d) => wf.doctype(AsRef::<str>::as_ref(d).as_bytes()),
            _ => {}
        }
        match event {
            Event::Start(e) if !root_seen => {
                timestamp = envelope_root(&e, body)?;
                root_seen = true;
                depth = 1;
            }
            Event::Empty(e) if !root_seen => {
                timestamp = envelope_root(&e, body)?;
                break;
            }
            Event::Start(e) => {
                depth += 1;
                if depth == 2 {
                    current = Field::of(e.name().as_ref());
                    text.clear();
                }
            }
            Event::Empty(e) if depth == 1 => {
                if let Some(f) = Field::of(e.name().as_ref()) {
                    values[f as usize].get_or_insert_with(String::new);
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some(f) = current.take() {
                        values[f as usize].get_or_insert_with(|| text.trim().to_string());
                    }
                }
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Event::Text(t) => {
                if !root_seen {
                    if !t.trim_ascii().is_empty() {
                        return Err(kind_error(body, ENVELOPE_ROOT));
                    }
                } else if depth == 2 && current.is_some() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) if depth == 2 && current.is_some() => {
                text.push_str(&t.xml10_content());
            }
            Event::GeneralRef(r) if depth == 2 && current.is_some() => {
                push_reference(&mut text, &r);
            }
            Event::Eof => {
                if !root_seen {
                    return Err(kind_error(body, ENVELOPE_ROOT));
                }
                if depth > 0 {
                    return Err(ParseError::Truncated {
                        position: reader.buffer_position(),
                        inside: format!("<{ENVELOPE_ROOT}>"),
                    });
                }
                break;
            }
            _ => {}
        }
    }
    let [status, reference_code, url, error_code, error_message] = values;
    let status = match status {
        None => {
            return Err(ParseError::BadEnvelope {
                reason: "missing <Status>".into(),
            })
        }
        Some(s) if s.eq_ignore_ascii_case("success") => EnvelopeStatus::Success,
        Some(s) if s.eq_ignore_ascii_case("warn") => EnvelopeStatus::Warn,
        Some(s) if s.eq_ignore_ascii_case("fail") => EnvelopeStatus::Fail,
        Some(s) => {
            return Err(ParseError::BadEnvelope {
                reason: format!(
                    "unknown status {:?}",
                    s.chars().take(32).collect::<String>()
                ),
            })
        }
    };
    let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
    Ok(Envelope {
        status,
        timestamp,
        reference_code: non_empty(reference_code),
        url: non_empty(url),
        error_code: non_empty(error_code),
        error_message: non_empty(error_message),
    })
}
