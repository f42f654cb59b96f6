//! Interactive Brokers Flex Web Service: pure parsers and the section policy.
//!
//! Everything here is a pure function over bytes (or over any [`std::io::BufRead`]); no
//! module in this folder opens a socket or a file.
//!
//! - [`envelope`]: the small `FlexStatementResponse` replies of SendRequest/GetStatement,
//!   the classifier of a reply body ([`classify_body`]) and IB's error-code table.
//! - [`statement`]: a streaming, constant-memory scan of a `FlexQueryResponse` statement
//!   that reports every statement's accounts, dates and sections with their row counts.
//! - [`policy`]: which sections must be present ([`SectionPolicy`]) and the check of a
//!   scanned report against it ([`SectionCheck`]).
//!
//! Every failure is a [`ParseError`] with a stable [`ParseError::code`].

pub mod envelope;
mod error;
pub mod policy;
pub mod statement;
mod xml;

pub use envelope::{
    classify_body, classify_code, parse_envelope, BodyKind, CodeClass, CodeInfo, Envelope,
    EnvelopeStatus, ERROR_CODES,
};
pub use error::ParseError;
pub use policy::{check, Missing, MissingSection, RequireRows, SectionCheck, SectionPolicy};
pub use statement::{
    scan, scan_bytes, scan_with, RootType, ScanLimits, SectionCount, StatementInfo, StatementReport,
};
