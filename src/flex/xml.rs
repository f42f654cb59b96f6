//! Small helpers over quick-xml shared by the envelope and statement parsers.

use std::io::{self, BufRead, Read};

use quick_xml::events::attributes::Attribute;
use quick_xml::events::BytesRef;
use quick_xml::XmlVersion;

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
