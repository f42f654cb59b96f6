//! Small helpers over quick-xml shared by the envelope and statement parsers.

use std::io::{self, BufRead, Read};

use quick_xml::events::attributes::{AttrError, Attribute};
use quick_xml::events::{BytesRef, BytesStart};
use quick_xml::XmlVersion;

use super::ParseError;

/// An attribute's value with the predefined and numeric entities resolved; an unknown
/// entity (quick-xml never expands DTD entities) leaves the raw value.
pub(crate) fn attr_text(attr: &Attribute<'_>) -> String {
    attr.normalized_value(XmlVersion::Implicit1_0)
        .map(|v| v.into_owned())
        .unwrap_or_else(|_| attr.value.to_string())
}

/// Appends the text of an entity reference met in character data: the five predefined
/// entities and character references resolve, any other stays as written (`&name;`).
pub(crate) fn push_reference(out: &mut String, r: &BytesRef<'_>) {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        out.push(c);
        return;
    }
    let name: &str = r;
    match name {
        "amp" => out.push('&'),
        "lt" => out.push('<'),
        "gt" => out.push('>'),
        "quot" => out.push('"'),
        "apos" => out.push('\''),
        other => {
            out.push('&');
            out.push_str(other);
            out.push(';');
        }
    }
}

/// A reader that fails once more than `limit` bytes are consumed without a call to
/// [`Bounded::reset`]: the scanner resets it after every XML event, so no single tag or
/// text run (and so no quick-xml buffer) can grow beyond the limit.
pub(crate) struct Bounded<R> {
    inner: R,
    since_reset: u64,
    limit: u64,
    tripped: bool,
}

impl<R> Bounded<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Bounded {
            inner,
            since_reset: 0,
            limit,
            tripped: false,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.since_reset = 0;
    }

    /// Whether the limit was hit (the following read error is ours, not the source's).
    pub(crate) fn tripped(&self) -> bool {
        self.tripped
    }
}

impl<R: BufRead> Read for Bounded<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Bounded<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_reset > self.limit {
            self.tripped = true;
            return Err(io::Error::other("flex element size limit exceeded"));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.since_reset += n as u64;
        self.inner.consume(n);
    }
}

/// The well-formedness checks quick-xml leaves to its caller, shared by the envelope and
/// statement parsers so that both refuse the same input the same way
/// ([`ParseError::Malformed`] with the byte offset): attribute syntax (a value in
/// typographic quotes or unquoted, a duplicate name), names that are not XML names (`“`
/// in a tag), a `<` in a value, and references: a bare `&`, or a reference to an entity
/// neither predefined (`amp`, `lt`, `gt`, `quot`, `apos`) nor declared in the document's
/// DOCTYPE (`&nbsp;`), or a character reference to no XML character.
#[derive(Debug, Default)]
pub(crate) struct WellFormed {
    /// Entity names declared in the DOCTYPE (never expanded: only known to be defined).
    declared: Vec<String>,
}

/// At most this many DOCTYPE entity names are remembered (more are refused as malformed
/// when referenced: no Flex document declares any).
const MAX_DECLARED: usize = 64;

fn malformed(position: u64, reason: impl Into<String>) -> ParseError {
    ParseError::Malformed {
        position,
        reason: reason.into(),
    }
}

impl WellFormed {
    /// Remembers the entity names a `<!DOCTYPE ... [<!ENTITY name ...>]>` declares.
    pub(crate) fn doctype(&mut self, text: &[u8]) {
        let mut rest = text;
        while let Some(i) = find(rest, b"<!ENTITY") {
            rest = &rest[i + 8..];
            let start = rest
                .iter()
                .position(|b| !b.is_ascii_whitespace() && *b != b'%')
                .unwrap_or(rest.len());
            let name: Vec<u8> = rest[start..]
                .iter()
                .take_while(|b| !b.is_ascii_whitespace())
                .copied()
                .collect();
            if self.declared.len() < MAX_DECLARED {
                if let Ok(name) = String::from_utf8(name) {
                    self.declared.push(name);
                }
            }
        }
    }

    /// Checks a start (or empty) tag read at byte `at` (its `<`): its name, every
    /// attribute's syntax and name, and every reference in every value.
    pub(crate) fn tag(&self, e: &BytesStart<'_>, at: u64) -> Result<(), ParseError> {
        let content: &str = e;
        let base = at + 1;
        let name = e.name();
        if let Some(bad) = bad_name(name.as_ref()) {
            return Err(malformed(base + bad as u64, "not a valid xml element name"));
        }
        for attr in e.attributes() {
            let attr = attr.map_err(|err| {
                let pos = match &err {
                    AttrError::ExpectedEq(p)
                    | AttrError::ExpectedValue(p)
                    | AttrError::UnquotedValue(p)
                    | AttrError::ExpectedQuote(p, _)
                    | AttrError::Duplicated(p, _) => *p,
                };
                malformed(base + pos as u64, attr_reason(&err))
            })?;
            let key: &str = attr.key.as_ref();
            let key_at = offset_in(content, key).unwrap_or(0);
            if let Some(bad) = bad_name(key) {
                return Err(malformed(
                    base + (key_at + bad) as u64,
                    "not a valid xml attribute name",
                ));
            }
            let value: &str = &attr.value;
            let value_at = base + offset_in(content, value).unwrap_or(key_at) as u64;
            if let Some(i) = value.find('<') {
                return Err(malformed(value_at + i as u64, "'<' in an attribute value"));
            }
            let mut from = 0;
            while let Some(i) = value[from..].find('&') {
                let amp = from + i;
                let tail = &value[amp + 1..];
                let Some(end) = tail.find(';').filter(|&e| e <= 64) else {
                    return Err(malformed(
                        value_at + amp as u64,
                        "a bare '&' (not a reference; write &amp;)",
                    ));
                };
                self.reference(&tail[..end], value_at + amp as u64)?;
                from = amp + 1 + end + 1;
            }
        }
        Ok(())
    }

    /// Checks a reference `&name;` met in character data at byte `at` (its `&`).
    pub(crate) fn general_ref(&self, r: &BytesRef<'_>, at: u64) -> Result<(), ParseError> {
        self.reference(r, at)
    }

    fn reference(&self, name: &str, at: u64) -> Result<(), ParseError> {
        if let Some(num) = name.strip_prefix('#') {
            let code = match num.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            let ok = num
                .bytes()
                .skip(usize::from(num.starts_with('x')))
                .all(|b| b.is_ascii_hexdigit())
                && code.and_then(char::from_u32).is_some_and(is_xml_char);
            return match ok {
                true => Ok(()),
                false => Err(malformed(at, "a character reference to no xml character")),
            };
        }
        if matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
            || self.declared.iter().any(|d| d == name)
        {
            return Ok(());
        }
        let shown: String = name.chars().take(32).collect();
        Err(malformed(
            at,
            match bad_name(name) {
                None => format!(
                    "undefined entity &{shown}; (only &amp; &lt; &gt; &quot; &apos; exist in xml)"
                ),
                Some(_) => "a bare '&' (not a reference; write &amp;)".to_string(),
            },
        ))
    }
}

/// When quick-xml failed inside a tag (an unclosed quote, a tag never closed, the element
/// size limit), `partial` is what it had read of the tag from the byte after its `<` at
/// `at`. A tag that ran into another `<` was not cut off: a quote is unbalanced (a value
/// in typographic quotes, or a quote missing), so the document is malformed, not
/// truncated. Returns the error to report then, located at the first value that does not
/// open with an ASCII quote when there is one.
pub(crate) fn runaway_tag(partial: &[u8], at: u64) -> Option<ParseError> {
    let partial = partial.strip_prefix(b"<").unwrap_or(partial);
    // A name no cut can produce (`</Trades“` at the end): malformed, not truncated.
    let skip = usize::from(partial.first() == Some(&b'/'));
    let name_end = partial[skip..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>')
        .map_or(partial.len(), |i| skip + i);
    if let Ok(name) = std::str::from_utf8(&partial[skip..name_end]) {
        if let Some(bad) = bad_name(name).filter(|_| !name.is_empty()) {
            return Some(malformed(
                at + 1 + (skip + bad) as u64,
                "not a valid xml element name",
            ));
        }
    }
    let lt = partial.iter().position(|&b| b == b'<')?;
    let head = &partial[..lt];
    let mut pos = None;
    for (i, &b) in head.iter().enumerate() {
        if b == b'=' {
            let v = head[i + 1..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .map(|j| i + 1 + j);
            if let Some(v) = v.filter(|&v| head[v] != b'"' && head[v] != b'\'') {
                pos = Some(v);
                break;
            }
        }
    }
    Some(match pos {
        Some(v) => malformed(
            at + 1 + v as u64,
            "attribute value not enclosed in ascii quotes (\" or ')",
        ),
        None => malformed(at, "unbalanced quotes: this tag runs into the next one"),
    })
}

/// When quick-xml failed inside a comment, processing instruction, CDATA section or
/// DOCTYPE that never closes, `partial` is what it read of it from `at`. One that ran into
/// elements (`<Name`) lost its closing `?>` or `-->` to a changed byte (a download cut
/// there would hold no element after it): malformed, not truncated.
pub(crate) fn runaway_markup(partial: &[u8], at: u64) -> Option<ParseError> {
    let swallowed = partial
        .windows(2)
        .skip(1)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'_' || w[1] == b'/'));
    swallowed.then(|| {
        malformed(
            at,
            "markup never closed: it runs into the elements that follow",
        )
    })
}

fn attr_reason(err: &AttrError) -> String {
    match err {
        AttrError::UnquotedValue(_) | AttrError::ExpectedQuote(..) => {
            "attribute value not enclosed in ascii quotes (\" or ')".to_string()
        }
        AttrError::Duplicated(..) => "duplicate attribute".to_string(),
        AttrError::ExpectedEq(_) | AttrError::ExpectedValue(_) => {
            "attribute without '=' and a quoted value".to_string()
        }
    }
}

/// Byte offset of `part` inside `whole` when it is a sub-slice of it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    (p >= w && p + part.len() <= w + whole.len()).then(|| p - w)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The byte offset of the first character that makes `name` not an XML `Name`, if any.
fn bad_name(name: &str) -> Option<usize> {
    if name.is_empty() {
        return Some(0);
    }
    for (i, c) in name.char_indices() {
        let ok = if i == 0 {
            is_name_start(c)
        } else {
            is_name_start(c) || is_name_char(c)
        };
        if !ok {
            return Some(i);
        }
    }
    None
}

/// XML 1.0 (fifth edition) `NameStartChar`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// The rest of XML 1.0 `NameChar`.
fn is_name_char(c: char) -> bool {
    matches!(c,
        '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// XML 1.0 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}
