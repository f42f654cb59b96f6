//! Interactive Brokers Flex Web Service: pure parsers, the section policy, the transport,
//! the polling driver and the ready-made pipeline.
//!
//! The parsers ([`envelope`], [`statement`], [`policy`]) are pure functions over bytes
//! (or over any [`std::io::BufRead`]); only [`client`] opens sockets.
//!
//! - [`envelope`]: the small `FlexStatementResponse` replies of SendRequest/GetStatement,
//!   the classifier of a reply body ([`classify_body`]) and IB's error-code table.
//! - [`statement`]: a streaming, constant-memory scan of a `FlexQueryResponse` statement
//!   that reports every statement's accounts, dates and sections with their row counts.
//! - [`policy`]: which sections must be present ([`SectionPolicy`]) and the check of a
//!   scanned report against it ([`SectionCheck`]).
//!
//! - [`client`]: `SendRequest`/`GetStatement` over ureq ([`FlexClient`]), transport only.
//! - [`token`]: [`FlexToken`], which never prints, and [`redact_url`].
//! - [`poll`]: the polling policy and IB's rate limits over an injected clock and sleeper.
//! - [`pipeline`](mod@pipeline): the ready-made `flex` ingestion [`Pipeline`](crate::Pipeline)
//!   (token gate; request, poll, download, section_preflight, persist).
//!
//! Parse failures are [`ParseError`]s, transport and service failures [`FetchError`]s,
//! each with a stable code.

pub mod client;
pub mod envelope;
mod error;
mod failure;
mod fetch_error;
pub mod pipeline;
pub mod policy;
pub mod poll;
pub mod statement;
pub mod token;
mod xml;

pub use client::{
    ClientConfig, FlexClient, FlexTransport, Requested, StatementBody, StatementPeriod,
    DEFAULT_BASE_URL, USER_AGENT,
};

pub use envelope::{
    classify_body, classify_code, parse_envelope, BodyKind, CodeClass, CodeInfo, Envelope,
    EnvelopeStatus, ERROR_CODES,
};
pub use error::ParseError;
pub use failure::FlexError;
pub use fetch_error::FetchError;
pub use pipeline::{build_pipeline, run_once, FlexConfig, TokenSource};
pub use policy::{
    check, check_account, check_period, is_known_section, parse_section_names, Missing,
    MissingSection, PolicyPreset, RequireRows, SectionCheck, SectionPolicy, KNOWN_SECTIONS,
};
pub use poll::{
    Pacer, PollSettings, RateLimiter, RateLimits, Wait, WaitObserver, WaitPhase, WaitReason,
};
pub use statement::{
    scan, scan_bytes, scan_with, RootType, ScanLimits, SectionCount, StatementInfo, StatementReport,
};
pub use token::{redact_url, FlexToken, DEFAULT_TOKEN_ENV};
