//! A streaming scan of a Flex statement (`FlexQueryResponse`): which statements it holds,
//! for which accounts and dates, and which sections each has with how many rows.
//!
//! The scan keeps no row in memory: it reuses one event buffer and a stack of open element
//! names, and every buffer is bounded by [`ScanLimits`], so memory stays constant whatever
//! the size of the file (tens of MB are common) and hostile input fails with
//! [`ParseError::LimitExceeded`] instead of exhausting memory. quick-xml does not expand
//! entities: a `<!DOCTYPE>` with entity declarations is skipped and `&name;` references are
//! never substituted.
//!
//! ```
//! use runledger::flex::{scan_bytes, RootType};
//!
//! let xml = br#"<FlexQueryResponse queryName="Daily" type="AF">
//! <FlexStatements count="1">
//! <FlexStatement accountId="U1" fromDate="20260101" toDate="20260101" period="LastBusinessDay" whenGenerated="20260102;080000">
//! <AccountInformation accountId="U1" currency="USD"/>
//! <Trades><Trade symbol="A"/><Trade symbol="B"/></Trades>
//! <TransactionTaxes>
//! </TransactionTaxes>
//! </FlexStatement>
//! </FlexStatements>
//! </FlexQueryResponse>"#;
//! let report = scan_bytes(xml).unwrap();
//! assert_eq!(report.root_type, RootType::Activity);
//! let st = &report.statements[0];
//! assert_eq!(st.rows("Trades"), Some(2));
//! assert_eq!(st.rows("AccountInformation"), Some(1));
//! assert_eq!(st.rows("TransactionTaxes"), Some(0)); // present, empty
//! assert_eq!(st.rows("OpenPositions"), None); // not selected in the query
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::envelope::{classify_body, BodyKind, ENVELOPE_ROOT, STATEMENT_ROOT};
use super::xml::{attr_text, runaway_markup, runaway_tag, Bounded, WellFormed};
use super::ParseError;

/// The `type` attribute of the root: which kind of Flex query produced the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootType {
    /// `AF`: an activity statement.
    Activity,
    /// `TCF`: trade confirmations.
    TradeConfirmation,
    /// Any other value, verbatim (empty when the attribute is absent).
    Other(String),
}

/// The `type` attribute as it appears in the file (`AF`, `TCF`, ...), as [`RootType::as_str`].
impl std::fmt::Display for RootType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RootType {
    fn parse(raw: &str) -> RootType {
        match raw {
            "AF" => RootType::Activity,
            "TCF" => RootType::TradeConfirmation,
            other => RootType::Other(other.to_string()),
        }
    }

    /// The attribute value as it appears in the file (`AF`, `TCF`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            RootType::Activity => "AF",
            RootType::TradeConfirmation => "TCF",
            RootType::Other(s) => s,
        }
    }
}

impl serde::Serialize for RootType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One section of a statement (a direct child of `FlexStatement`) and its row count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SectionCount {
    /// The element name (`Trades`, `CashReport`, `OptionEAE`...), unknown names included.
    pub name: String,
    /// Child elements of a container; 1 for a single element with attributes
    /// (`AccountInformation`, `ChangeInNAV`); 0 for `<X/>` or `<X></X>`.
    pub rows: u64,
}

/// One `FlexStatement`: an account over a period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementInfo {
    /// `accountId`.
    pub account_id: Option<String>,
    /// `fromDate`, verbatim (the date format is configurable per query).
    pub from_date: Option<String>,
    /// `toDate`, verbatim.
    pub to_date: Option<String>,
    /// `period` (`LastBusinessDay`, `YearToDate`...; may be empty).
    pub period: Option<String>,
    /// `whenGenerated`, verbatim.
    pub when_generated: Option<String>,
    /// Any other attribute of `FlexStatement` (at most [`MAX_EXTRA_ATTRIBUTES`], values cut
    /// at [`MAX_EXTRA_VALUE_CHARS`] characters).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub other_attributes: BTreeMap<String, String>,
    /// Every section present, in document order (a repeated name is counted once, rows
    /// added up).
    pub sections: Vec<SectionCount>,
}

/// At most this many unknown attributes of an element are kept in a report.
pub const MAX_EXTRA_ATTRIBUTES: usize = 32;
/// Kept unknown attribute values are cut to this many characters.
pub const MAX_EXTRA_VALUE_CHARS: usize = 256;

impl StatementInfo {
    /// The section named `name`, if present.
    pub fn section(&self, name: &str) -> Option<&SectionCount> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The row count of section `name`; `None` when the section is absent.
    pub fn rows(&self, name: &str) -> Option<u64> {
        self.section(name).map(|s| s.rows)
    }
}

/// What a scan found in a statement file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementReport {
    /// The root's `type`.
    pub root_type: RootType,
    /// The root's `queryName`.
    pub query_name: Option<String>,
    /// `FlexStatements count` (summed if the root holds several `FlexStatements`).
    pub declared_count: Option<u64>,
    /// One entry per `FlexStatement`, in document order; its length always equals
    /// `declared_count` when that is present (otherwise the scan fails).
    pub statements: Vec<StatementInfo>,
    /// Bytes of the document read (after a byte-order mark).
    pub bytes: u64,
}

/// Bounds that keep a scan's memory constant on any input; the defaults accept every real
/// Flex statement with a wide margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanLimits {
    /// Largest single tag or text run, in bytes (default 8 MiB; IB rows are a few KiB).
    pub max_element_bytes: u64,
    /// Deepest element nesting (default 32; Flex statements nest 5 deep).
    pub max_depth: usize,
    /// Most `FlexStatement` elements (accounts) in one file (default 100 000).
    pub max_statements: usize,
    /// Most distinct sections over all statements of the file (default 1 000 000).
    pub max_sections: usize,
    /// Longest section name in bytes (default 256).
    pub max_section_name_bytes: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_element_bytes: 8 << 20,
            max_depth: 32,
            max_statements: 100_000,
            max_sections: 1_000_000,
            max_section_name_bytes: 256,
        }
    }
}

/// How many leading bytes are kept to classify a body that is not XML.
const PREFIX_BYTES: usize = 4096;

/// [`scan_with`] over a byte slice, with default limits.
pub fn scan_bytes(bytes: &[u8]) -> Result<StatementReport, ParseError> {
    scan_with(bytes, &ScanLimits::default())
}

/// [`scan_with`] with default limits.
pub fn scan<R: BufRead>(reader: R) -> Result<StatementReport, ParseError> {
    scan_with(reader, &ScanLimits::default())
}

/// Scans a Flex statement from `reader` as a stream, in constant memory.
///
/// Fails with [`ParseError::CountMismatch`] when `FlexStatements count` disagrees with the
/// number of statements, [`ParseError::WrongRoot`] for any root but `FlexQueryResponse`
/// (an envelope included), [`ParseError::Truncated`] when the input ends inside the
/// document, [`ParseError::Malformed`] for XML errors, and [`ParseError::EmptyBody`],
/// [`ParseError::HtmlBody`], [`ParseError::CsvBody`] or [`ParseError::NotXml`] for bodies
/// that are not XML documents. Unknown sections, elements and attributes are reported or
/// skipped, never an error.
pub fn scan_with<R: BufRead>(
    mut reader: R,
    limits: &ScanLimits,
) -> Result<StatementReport, ParseError> {
    // The first bytes (at most PREFIX_BYTES), kept only to name a body that is not XML,
    // then replayed in front of the rest of the stream: the outcome does not depend on how
    // the source splits its reads.
    let mut prefix = Vec::with_capacity(PREFIX_BYTES);
    while prefix.len() < PREFIX_BYTES {
        let chunk = reader.fill_buf().map_err(ParseError::Read)?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len().min(PREFIX_BYTES - prefix.len());
        prefix.extend_from_slice(&chunk[..n]);
        reader.consume(n);
    }
    // Not even starting like markup (CSV, plain text, binary): name it without parsing.
    let first = prefix
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&prefix)
        .iter()
        .find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'<') {
        return Err(not_a_document(&prefix));
    }
    let source = std::io::Cursor::new(&prefix[..]).chain(reader);
    let mut scanner = Scanner::new(limits);
    let mut xml = Reader::from_reader(Bounded::new(source, limits.max_element_bytes));
    let mut buf = Vec::with_capacity(16 * 1024);
    // A declaration, comment or doctype before EOF: an XML document cut before its root.
    let mut markup_seen = false;
    let mut wf = WellFormed::default();
    loop {
        buf.clear();
        xml.get_mut().reset();
        let at = xml.buffer_position();
        let event = match xml.read_event_into(&mut buf) {
            Ok(ev) => ev,
            Err(e) => {
                if in_markup(&e) {
                    if let Some(err) = runaway_markup(&buf, at) {
                        return Err(err);
                    }
                }
                if in_tag(&e) || xml.get_ref().tripped() {
                    if let Some(err) = runaway_tag(&buf, at) {
                        return Err(err);
                    }
                }
                if xml.get_ref().tripped() {
                    return Err(ParseError::LimitExceeded {
                        what: "element size in bytes",
                        limit: limits.max_element_bytes,
                    });
                }
                let open = scanner.innermost();
                let at_eof = xml.get_mut().fill_buf().is_ok_and(|b| b.is_empty());
                return Err(ParseError::from_xml(
                    e,
                    xml.error_position(),
                    xml.buffer_position(),
                    open.as_deref(),
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
            Event::Start(e) => scanner.start(&e, false)?,
            Event::Empty(e) => scanner.start(&e, true)?,
            Event::End(_) => scanner.end(),
            // Flex puts every value in an attribute: character data inside the document is a
            // changed or lost `<` (a row turned into text would silently vanish).
            Event::Text(t) if scanner.depth > 0 && !t.trim_ascii().is_empty() => {
                let lead = t
                    .bytes()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(0);
                return Err(ParseError::Malformed {
                    position: at + lead as u64,
                    reason: "text inside the document, where a flex statement has only elements"
                        .into(),
                });
            }
            Event::Text(t) if scanner.depth == 0 && !t.trim_ascii().is_empty() => {
                return Err(match (scanner.root_seen, markup_seen) {
                    (false, false) => not_a_document(&prefix),
                    (false, true) => ParseError::Malformed {
                        position: at,
                        reason: "text before the root element".into(),
                    },
                    (true, _) => ParseError::Malformed {
                        position: xml.buffer_position(),
                        reason: "text after the root element".into(),
                    },
                });
            }
            Event::CData(_) | Event::GeneralRef(_) if scanner.depth == 0 => {
                return Err(match (scanner.root_seen, markup_seen) {
                    (false, false) => not_a_document(&prefix),
                    (false, true) => ParseError::Malformed {
                        position: at,
                        reason: "text before the root element".into(),
                    },
                    (true, _) => ParseError::Malformed {
                        position: xml.buffer_position(),
                        reason: "text after the root element".into(),
                    },
                });
            }
            Event::Eof => {
                if !scanner.root_seen {
                    return Err(match (not_a_document(&prefix), markup_seen) {
                        (ParseError::NotXml, true) => ParseError::Truncated {
                            position: xml.buffer_position(),
                            inside: "the prolog, before the root element".into(),
                        },
                        (e, _) => e,
                    });
                }
                if scanner.depth > 0 {
                    return Err(ParseError::Truncated {
                        position: xml.buffer_position(),
                        inside: format!("<{}>", scanner.innermost().unwrap_or_default()),
                    });
                }
                return scanner.finish(xml.buffer_position());
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {
                markup_seen = true;
            }
            _ => {}
        }
        if scanner.second_root {
            return Err(ParseError::Malformed {
                position: xml.buffer_position(),
                reason: "a second root element".into(),
            });
        }
    }
}

/// Whether quick-xml failed inside a tag (an attribute value or the tag never closed).
pub(crate) fn in_tag(e: &quick_xml::Error) -> bool {
    use quick_xml::errors::SyntaxError as S;
    matches!(
        e,
        quick_xml::Error::Syntax(
            S::UnclosedTag
                | S::UnclosedSingleQuotedAttributeValue
                | S::UnclosedDoubleQuotedAttributeValue
        )
    )
}

/// Whether quick-xml failed inside a comment, PI, CDATA section or DOCTYPE never closed.
pub(crate) fn in_markup(e: &quick_xml::Error) -> bool {
    use quick_xml::errors::SyntaxError as S;
    matches!(
        e,
        quick_xml::Error::Syntax(
            S::UnclosedComment
                | S::UnclosedCData
                | S::UnclosedPI
                | S::UnclosedXmlDecl
                | S::UnclosedDoctype
        )
    )
}

/// The error for a body with no XML root element.
fn not_a_document(prefix: &[u8]) -> ParseError {
    match classify_body(prefix) {
        BodyKind::Empty => ParseError::EmptyBody,
        BodyKind::Html => ParseError::HtmlBody,
        BodyKind::Csv => ParseError::CsvBody,
        _ => ParseError::NotXml,
    }
}

/// What the element at each nesting level means to the scan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Statements,
    Statement,
    /// A section: index into the current statement's sections, whether its start tag had
    /// attributes, and its child count so far.
    Section {
        index: usize,
        attrs: bool,
        children: u64,
    },
    /// Anything the scan does not look into.
    Other,
}

struct Scanner<'l> {
    limits: &'l ScanLimits,
    depth: usize,
    /// Meaning of each open element, outermost first (length = depth, at most max_depth).
    levels: Vec<Level>,
    /// Names of the open elements, concatenated, and where each starts (for messages).
    names: Vec<u8>,
    name_starts: Vec<usize>,
    root_seen: bool,
    second_root: bool,
    root_type: RootType,
    query_name: Option<String>,
    declared: Option<u64>,
    declared_raw: Option<String>,
    statements: Vec<StatementInfo>,
    sections_total: usize,
}

impl<'l> Scanner<'l> {
    fn new(limits: &'l ScanLimits) -> Self {
        Scanner {
            limits,
            depth: 0,
            levels: Vec::with_capacity(limits.max_depth.min(64)),
            names: Vec::with_capacity(256),
            name_starts: Vec::with_capacity(limits.max_depth.min(64)),
            root_seen: false,
            second_root: false,
            root_type: RootType::Other(String::new()),
            query_name: None,
            declared: None,
            declared_raw: None,
            statements: Vec::new(),
            sections_total: 0,
        }
    }

    fn innermost(&self) -> Option<String> {
        let start = *self.name_starts.last()?;
        Some(String::from_utf8_lossy(&self.names[start..]).into_owned())
    }

    fn start(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<(), ParseError> {
        let qname = e.name();
        let name = AsRef::<str>::as_ref(&qname).as_bytes();
        let parent = self.levels.last().copied();
        let level = match parent {
            None if self.root_seen => {
                self.second_root = true;
                return Ok(());
            }
            None => self.root(e, name)?,
            Some(Level::Root) if name == b"FlexStatements" => {
                self.statements_element(e);
                Level::Statements
            }
            Some(Level::Statements) if name == b"FlexStatement" => {
                self.statement(e)?;
                Level::Statement
            }
            Some(Level::Statement) => self.section(e, name)?,
            Some(Level::Section {
                index,
                attrs,
                children,
            }) => {
                let idx = self.levels.len() - 1;
                self.levels[idx] = Level::Section {
                    index,
                    attrs,
                    children: children + 1,
                };
                Level::Other
            }
            Some(_) => Level::Other,
        };
        if empty {
            self.close(level);
            return Ok(());
        }
        if self.depth >= self.limits.max_depth {
            return Err(ParseError::LimitExceeded {
                what: "nesting depth",
                limit: self.limits.max_depth as u64,
            });
        }
        self.depth += 1;
        self.levels.push(level);
        self.name_starts.push(self.names.len());
        self.names.extend_from_slice(name);
        Ok(())
    }

    fn end(&mut self) {
        if let Some(level) = self.levels.pop() {
            self.depth -= 1;
            if let Some(start) = self.name_starts.pop() {
                self.names.truncate(start);
            }
            self.close(level);
        }
    }

    /// Books a closing element: a section adds its rows to its statement.
    fn close(&mut self, level: Level) {
        if let Level::Section {
            index,
            attrs,
            children,
        } = level
        {
            let rows = if children == 0 && attrs { 1 } else { children };
            if let Some(st) = self.statements.last_mut() {
                st.sections[index].rows += rows;
            }
        }
    }

    fn root(&mut self, e: &BytesStart<'_>, name: &[u8]) -> Result<Level, ParseError> {
        self.root_seen = true;
        if name != STATEMENT_ROOT.as_bytes() {
            if name.eq_ignore_ascii_case(b"html") {
                return Err(ParseError::HtmlBody);
            }
            let found = if name == ENVELOPE_ROOT.as_bytes() {
                ENVELOPE_ROOT.to_string()
            } else {
                String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned()
            };
            return Err(ParseError::WrongRoot {
                expected: STATEMENT_ROOT,
                found,
            });
        }
        for attr in e.attributes().flatten() {
            match AsRef::<str>::as_ref(&attr.key).as_bytes() {
                b"type" => self.root_type = RootType::parse(attr_text(&attr).trim()),
                b"queryName" => self.query_name = Some(attr_text(&attr)),
                _ => {}
            }
        }
        Ok(Level::Root)
    }

    fn statements_element(&mut self, e: &BytesStart<'_>) {
        if let Some(attr) = e
            .attributes()
            .flatten()
            .find(|a| AsRef::<str>::as_ref(&a.key) == "count")
        {
            let raw = attr_text(&attr);
            match (raw.trim().parse::<u64>(), self.declared_raw.is_some()) {
                (Ok(n), false) => self.declared = Some(self.declared.unwrap_or(0) + n),
                _ => {
                    self.declared_raw
                        .get_or_insert_with(|| raw.chars().take(32).collect());
                }
            }
        }
    }

    fn statement(&mut self, e: &BytesStart<'_>) -> Result<(), ParseError> {
        if self.statements.len() >= self.limits.max_statements {
            return Err(ParseError::LimitExceeded {
                what: "statements",
                limit: self.limits.max_statements as u64,
            });
        }
        let mut st = StatementInfo {
            account_id: None,
            from_date: None,
            to_date: None,
            period: None,
            when_generated: None,
            other_attributes: BTreeMap::new(),
            sections: Vec::new(),
        };
        for attr in e.attributes().flatten() {
            let slot = match AsRef::<str>::as_ref(&attr.key).as_bytes() {
                b"accountId" => &mut st.account_id,
                b"fromDate" => &mut st.from_date,
                b"toDate" => &mut st.to_date,
                b"period" => &mut st.period,
                b"whenGenerated" => &mut st.when_generated,
                other => {
                    if st.other_attributes.len() < MAX_EXTRA_ATTRIBUTES {
                        let value = attr_text(&attr)
                            .chars()
                            .take(MAX_EXTRA_VALUE_CHARS)
                            .collect();
                        st.other_attributes
                            .insert(String::from_utf8_lossy(other).into_owned(), value);
                    }
                    continue;
                }
            };
            *slot = Some(attr_text(&attr));
        }
        self.statements.push(st);
        Ok(())
    }

    fn section(&mut self, e: &BytesStart<'_>, name: &[u8]) -> Result<Level, ParseError> {
        let Some(st) = self.statements.last_mut() else {
            return Ok(Level::Other);
        };
        let attrs = e.attributes().next().is_some();
        if let Some(index) = st.sections.iter().position(|s| s.name.as_bytes() == name) {
            return Ok(Level::Section {
                index,
                attrs,
                children: 0,
            });
        }
        if name.len() > self.limits.max_section_name_bytes {
            return Err(ParseError::LimitExceeded {
                what: "section name length in bytes",
                limit: self.limits.max_section_name_bytes as u64,
            });
        }
        if self.sections_total >= self.limits.max_sections {
            return Err(ParseError::LimitExceeded {
                what: "sections",
                limit: self.limits.max_sections as u64,
            });
        }
        self.sections_total += 1;
        st.sections.push(SectionCount {
            name: String::from_utf8_lossy(name).into_owned(),
            rows: 0,
        });
        Ok(Level::Section {
            index: st.sections.len() - 1,
            attrs,
            children: 0,
        })
    }

    fn finish(self, bytes: u64) -> Result<StatementReport, ParseError> {
        let actual = self.statements.len() as u64;
        if let Some(raw) = self.declared_raw {
            return Err(ParseError::CountMismatch {
                declared: raw,
                actual,
            });
        }
        if let Some(declared) = self.declared {
            if declared != actual {
                return Err(ParseError::CountMismatch {
                    declared: declared.to_string(),
                    actual,
                });
            }
        }
        Ok(StatementReport {
            root_type: self.root_type,
            query_name: self.query_name,
            declared_count: self.declared,
            statements: self.statements,
            bytes,
        })
    }
}
