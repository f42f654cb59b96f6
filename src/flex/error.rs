//! [`ParseError`]: everything the Flex parsers can refuse, each kind with a stable code.

/// Why a Flex reply or statement could not be parsed.
///
/// Messages never quote the body beyond element and attribute names, byte offsets and the
/// values the parser was asked to read, so that a body echoing a request URL cannot leak
/// the token into a log line or the database.
///
/// | code | kind |
/// |---|---|
/// | `FLEX_EMPTY_BODY` | [`ParseError::EmptyBody`] |
/// | `FLEX_HTML_BODY` | [`ParseError::HtmlBody`] |
/// | `FLEX_CSV_BODY` | [`ParseError::CsvBody`] |
/// | `FLEX_NOT_XML` | [`ParseError::NotXml`] |
/// | `FLEX_MALFORMED_XML` | [`ParseError::Malformed`] |
/// | `FLEX_TRUNCATED` | [`ParseError::Truncated`] |
/// | `FLEX_WRONG_ROOT` | [`ParseError::WrongRoot`] |
/// | `FLEX_COUNT_MISMATCH` | [`ParseError::CountMismatch`] |
/// | `FLEX_BAD_ENVELOPE` | [`ParseError::BadEnvelope`] |
/// | `FLEX_LIMIT_EXCEEDED` | [`ParseError::LimitExceeded`] |
/// | `FLEX_READ_FAILED` | [`ParseError::Read`] |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is empty or only whitespace.
    #[error("flex body is empty")]
    EmptyBody,

    /// The body is an HTML page (an error or login page), not a Flex document.
    #[error("flex body is an html page, not xml")]
    HtmlBody,

    /// The body is CSV text (a Flex query configured for CSV output).
    #[error("flex body is csv, not xml (the query's format must be xml)")]
    CsvBody,

    /// The body is neither XML nor a recognised text format.
    #[error("flex body is not xml")]
    NotXml,

    /// The XML is not well formed.
    #[error("malformed flex xml at byte {position}: {reason}")]
    Malformed {
        /// Byte offset where the problem was found.
        position: u64,
        /// What is wrong, in lower case.
        reason: String,
    },

    /// The input ended before the document did (a cut-off download).
    #[error("flex xml is truncated at byte {position}, inside {inside}")]
    Truncated {
        /// Number of bytes read when the input ended.
        position: u64,
        /// Where the input ended: the innermost open element (`<Trades>`), or the construct
        /// being read and its parent (`a tag in <Trades>`).
        inside: String,
    },

    /// The document's root element is not the one expected.
    #[error("flex document has root <{found}>, expected <{expected}>")]
    WrongRoot {
        /// The root element this parser reads.
        expected: &'static str,
        /// The root element found.
        found: String,
    },

    /// `FlexStatements count` disagrees with the number of `FlexStatement` elements.
    #[error("FlexStatements declares count {declared} but holds {actual} statements")]
    CountMismatch {
        /// The declared `count` attribute, verbatim.
        declared: String,
        /// The number of `FlexStatement` elements found.
        actual: u64,
    },

    /// A `FlexStatementResponse` that lacks what every reply carries.
    #[error("bad flex reply envelope: {reason}")]
    BadEnvelope {
        /// What is missing or unknown, in lower case.
        reason: String,
    },

    /// A size or nesting limit of the scanner was reached (hostile or broken input).
    #[error("flex document exceeds the limit on {what} ({limit})")]
    LimitExceeded {
        /// Which limit (`element size in bytes`, `nesting depth`, `statements`...).
        what: &'static str,
        /// The configured limit.
        limit: u64,
    },

    /// The underlying reader failed.
    #[error("reading the flex document failed")]
    Read(#[source] std::io::Error),
}

impl ParseError {
    /// A stable, upper-case code for this kind of error; safe to store and match on.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::EmptyBody => "FLEX_EMPTY_BODY",
            ParseError::HtmlBody => "FLEX_HTML_BODY",
            ParseError::CsvBody => "FLEX_CSV_BODY",
            ParseError::NotXml => "FLEX_NOT_XML",
            ParseError::Malformed { .. } => "FLEX_MALFORMED_XML",
            ParseError::Truncated { .. } => "FLEX_TRUNCATED",
            ParseError::WrongRoot { .. } => "FLEX_WRONG_ROOT",
            ParseError::CountMismatch { .. } => "FLEX_COUNT_MISMATCH",
            ParseError::BadEnvelope { .. } => "FLEX_BAD_ENVELOPE",
            ParseError::LimitExceeded { .. } => "FLEX_LIMIT_EXCEEDED",
            ParseError::Read(_) => "FLEX_READ_FAILED",
        }
    }

    /// Maps a quick-xml failure at `position` to a typed error: an `Unclosed*` syntax
    /// error at the end of the input (`at_eof`) means the input ended inside a construct,
    /// i.e. a truncated document; so does a `<!` cut off at the end of the input. Before
    /// the end it is malformed XML.
    /// `position` is where quick-xml located the error, `read` how many bytes it had read.
    pub(crate) fn from_xml(
        err: quick_xml::Error,
        position: u64,
        read: u64,
        open: Option<&str>,
        at_eof: bool,
    ) -> Self {
        use quick_xml::errors::SyntaxError as S;
        let construct = match &err {
            quick_xml::Error::Io(e) => {
                return ParseError::Read(std::io::Error::new(e.kind(), e.to_string()))
            }
            quick_xml::Error::Syntax(s) => match s {
                S::UnclosedTag
                | S::UnclosedSingleQuotedAttributeValue
                | S::UnclosedDoubleQuotedAttributeValue => Some("a tag"),
                S::UnclosedComment => Some("a comment"),
                S::UnclosedCData => Some("a cdata section"),
                S::UnclosedPI | S::UnclosedXmlDecl => Some("a processing instruction"),
                S::UnclosedDoctype => Some("a doctype"),
                S::InvalidBangMarkup if at_eof => Some("markup"),
                _ => None,
            },
            _ => None,
        };
        match construct {
            // The input did not end there: something else is wrong (a `<!` that opens
            // no known construct, a closing `-->` changed).
            Some(_) if !at_eof => ParseError::Malformed {
                position,
                reason: err.to_string(),
            },
            Some(c) => ParseError::Truncated {
                position: read,
                inside: match open {
                    Some(name) => format!("{c} in <{name}>"),
                    None => c.to_string(),
                },
            },
            None => ParseError::Malformed {
                position,
                reason: err.to_string(),
            },
        }
    }
}
