//! [`FlexError`]: the error of every Flex call. It wraps the core [`crate::Error`] (the
//! engine, the run store) beside the Flex-only kinds, so the core error type knows nothing
//! of Flex.

use super::error::ParseError;
use super::fetch_error::FetchError;
use super::policy::{describe, MissingSection};
use crate::run::StageError;

/// The result type of the Flex API (crate-private: the public signatures read
/// `Result<T, FlexError>`, so no two public types share the name `Result`).
pub(crate) type Result<T, E = FlexError> = std::result::Result<T, E>;

/// Everything a Flex call can fail with. Match on [`FlexError::code`] for a stable string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlexError {
    /// A Flex reply or statement could not be parsed; the code is the inner
    /// [`ParseError::code`] (`FLEX_*`).
    #[error(transparent)]
    Parse(#[from] ParseError),

    /// Talking to the Flex Web Service failed (transport, HTTP, an IB error code, the
    /// polling budget, the token); the code is the inner [`FetchError::code`]
    /// (`FLEX_CONNECT`, `FLEX_1012`...).
    #[error(transparent)]
    Fetch(#[from] FetchError),

    /// A statement lacks sections its policy requires (absent, or without rows when rows
    /// are required), named per account. Code `MISSING_REQUIRED_SECTION`.
    #[error("missing required sections: {}", describe(.missing))]
    MissingRequiredSection {
        /// Every missing section, per account, in statement order.
        missing: Vec<MissingSection>,
    },

    /// The statement covers another period than the one requested (`--from`/`--to`).
    /// Code `FLEX_PERIOD_MISMATCH`.
    #[error("the statement for {account} covers {returned_from}..{returned_to}, but {requested_from}..{requested_to} was requested")]
    PeriodMismatch {
        /// The statement's account (`#n` when it has none).
        account: String,
        /// The requested first day, `yyyymmdd`.
        requested_from: String,
        /// The requested last day, `yyyymmdd`.
        requested_to: String,
        /// The statement's `fromDate`, verbatim (empty when absent).
        returned_from: String,
        /// The statement's `toDate`, verbatim (empty when absent).
        returned_to: String,
    },

    /// The run was interrupted (Ctrl-C or SIGTERM in the CLI, or a host's interrupt flag on
    /// the [`Pacer`](super::Pacer)) while it waited on the service. Code `INTERRUPTED`.
    #[error("interrupted during {during}")]
    Interrupted {
        /// What the run was doing (`throttle back-off`, `poll wait`...).
        during: String,
    },

    /// A core failure (invalid argument, database, run lock...); the code is the inner
    /// [`crate::Error::code`].
    #[error(transparent)]
    Core(#[from] crate::Error),
}

impl FlexError {
    /// A stable, upper-case code for this kind of error; safe to store and match on.
    pub fn code(&self) -> &'static str {
        match self {
            FlexError::Parse(e) => e.code(),
            FlexError::Fetch(e) => e.code(),
            FlexError::MissingRequiredSection { .. } => "MISSING_REQUIRED_SECTION",
            FlexError::PeriodMismatch { .. } => "FLEX_PERIOD_MISMATCH",
            FlexError::Interrupted { .. } => "INTERRUPTED",
            FlexError::Core(e) => e.code(),
        }
    }

    /// Shorthand for a core [`crate::Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FlexError::Core(crate::Error::invalid(field, reason))
    }

    /// Whether retrying the same call later may succeed (a transient transport or service
    /// failure, a busy or full database).
    pub fn is_transient(&self) -> bool {
        match self {
            FlexError::Fetch(e) => e.is_transient(),
            FlexError::Core(e) => e.is_transient(),
            FlexError::Parse(_)
            | FlexError::MissingRequiredSection { .. }
            | FlexError::PeriodMismatch { .. }
            | FlexError::Interrupted { .. } => false,
        }
    }
}

/// A Flex failure as a stage's failure. Retryable only when the database was busy or full:
/// the Flex stages run their own retry loop ([`super::poll`]) for transient service errors.
impl From<FlexError> for StageError {
    fn from(e: FlexError) -> Self {
        match e {
            FlexError::Core(e) => StageError::from(e),
            other => StageError::fatal(other.code(), other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for FlexError {
    fn from(e: rusqlite::Error) -> Self {
        FlexError::Core(e.into())
    }
}
