//! [`FlexToken`]: the Flex Web Service token, which must never be shown or stored
//! (invariant 7), and [`redact_url`], which masks it in any URL that is shown.
//!
//! ```
//! use runledger::flex::{redact_url, FlexToken};
//!
//! let token = FlexToken::new("123456789012345678901234").unwrap();
//! assert_eq!(format!("{token} {token:?}"), "*** FlexToken(***)");
//! assert_eq!(
//!     redact_url("https://h.example/GetStatement?t=123456789012345678901234&q=7&v=3"),
//!     "https://h.example/GetStatement?t=***&q=7&v=3"
//! );
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

use super::FetchError;

/// The environment variable [`FlexToken::from_env`] reads by default.
pub const DEFAULT_TOKEN_ENV: &str = "IBKR_FLEX_TOKEN";

/// The longest token accepted (IB's are 24 digits).
pub const MAX_TOKEN_LEN: usize = 128;

/// A Flex Web Service token. Its `Debug` and `Display` print `***`; it is not
/// serializable; the only way to read it is crate-private, for the query string of a
/// request. What may be stored is its [`fingerprint`](FlexToken::fingerprint).
#[derive(Clone, PartialEq, Eq)]
pub struct FlexToken(String);

impl FlexToken {
    /// A token passed in by the host: 1..=[`MAX_TOKEN_LEN`] ASCII letters and digits
    /// (surrounding whitespace is trimmed). Anything else is
    /// [`FetchError::TokenInvalid`], whose message never quotes the value.
    pub fn new(token: impl Into<String>) -> Result<Self, FetchError> {
        let token = token.into();
        let trimmed = token.trim();
        let ok = !trimmed.is_empty()
            && trimmed.len() <= MAX_TOKEN_LEN
            && trimmed.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(FetchError::TokenInvalid {
                reason: format!("must be 1..={MAX_TOKEN_LEN} ascii letters or digits"),
            });
        }
        Ok(FlexToken(trimmed.to_string()))
    }

    /// The token in environment variable `var` ([`DEFAULT_TOKEN_ENV`] is the usual one).
    /// Unset or empty is [`FetchError::TokenMissing`]; a malformed value is
    /// [`FetchError::TokenInvalid`].
    pub fn from_env(var: &str) -> Result<Self, FetchError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => FlexToken::new(v),
            _ => Err(FetchError::TokenMissing {
                source_name: var.to_string(),
            }),
        }
    }

    /// A short, stable, one-way identifier of the token (`sha256("runledger-flex-token:" +
    /// token)`, first 12 hex digits): safe to store, used by the token gate to remember
    /// that IB declared this token expired or invalid. It cannot be turned back into the
    /// token.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"runledger-flex-token:")
            .chain_update(self.0.as_bytes())
            .finalize();
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The secret itself, only for building a request.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FlexToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlexToken(***)")
    }
}

impl fmt::Display for FlexToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `url` with the value of every `t` query parameter (the token) replaced by `***`.
/// Every URL runledger shows (errors, timelines) goes through this.
pub fn redact_url(url: &str) -> String {
    let Some((base, rest)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("t") => format!("{k}=***"),
            None if pair.eq_ignore_ascii_case("t") => pair.to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(f) => format!("{base}?{query}#{f}"),
        None => format!("{base}?{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints() {
        let t = FlexToken::new(" 998877665544332211 ").unwrap();
        assert_eq!(t.secret(), "998877665544332211");
        let shown = format!("{t} {t:?} {:?}", Some(&t));
        assert!(!shown.contains("9988"), "{shown}");
        assert_eq!(t.fingerprint().len(), 12);
        assert_ne!(t.fingerprint(), FlexToken::new("1").unwrap().fingerprint());
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        for bad in ["", "   ", "abc&q=1", "x y", &"9".repeat(MAX_TOKEN_LEN + 1)] {
            let e = FlexToken::new(bad).unwrap_err();
            assert_eq!(e.code(), "FLEX_TOKEN_INVALID");
            if !bad.trim().is_empty() {
                assert!(!e.to_string().contains(bad.trim()), "{e}");
            }
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("http://h/a?t=SECRET&q=1&T=x#frag"),
            "http://h/a?t=***&q=1&T=***#frag"
        );
        assert_eq!(redact_url("http://h/a"), "http://h/a");
        assert_eq!(redact_url("http://h/a?q=1&tt=2"), "http://h/a?q=1&tt=2");
    }
}
