//! Time: the [`Clock`] trait and the fixed-width UTC [`Timestamp`] stored in every table.
//!
//! Nothing else in the crate reads the wall clock. Store functions take `now` as an argument;
//! the [`Engine`](crate::Engine) reads its clock once per operation and passes it down, so a
//! test with a [`ManualClock`] controls every timestamp that reaches the database.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use time::format_description::well_known::Rfc3339;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// How a waiting loop sleeps (the run orchestrator between retries, the Flex poller
/// between polls): inject an instant one in tests.
pub type Sleeper = Arc<dyn Fn(Duration) + Send + Sync>;

/// The one text format of every timestamp column: UTC, millisecond precision, fixed width,
/// so that text order is time order and SQLite's date functions read it.
const FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Why a text is not a [`Timestamp`] ([`Timestamp::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTimestampError {
    text: String,
    reason: String,
}

impl ParseTimestampError {
    fn new(text: &str, reason: String) -> Self {
        // Long input is cut in the message (a timestamp is 35 bytes at most).
        let text = text.chars().take(64).collect();
        Self { text, reason }
    }

    /// The text that was refused (its first 64 characters).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ParseTimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a timestamp: {}", self.text, self.reason)
    }
}

impl std::error::Error for ParseTimestampError {}

/// A UTC instant with millisecond precision, stored as `2026-11-22T11:30:00.000Z`.
///
/// Only years 0000..=9999 are representable, which keeps the text fixed-width.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// First and last millisecond whose text form is four-digit-year fixed width.
const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

impl Timestamp {
    /// The earliest representable instant, 0000-01-01T00:00:00.000Z.
    pub const MIN: Timestamp = Timestamp(MIN_MS);
    /// The latest representable instant, 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(MAX_MS);

    /// The instant `ms` milliseconds after the Unix epoch, or `None` outside years 0..=9999.
    pub fn from_unix_ms(ms: i64) -> Option<Self> {
        (MIN_MS..=MAX_MS).contains(&ms).then_some(Self(ms))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> i64 {
        self.0
    }

    /// Parses a timestamp: the fixed-width text form (`2026-11-22T11:30:00.000Z`) or any
    /// RFC 3339 date-time (`2026-11-22T19:30:00+08:00`, `2026-11-22T11:30:00.5Z`), normalized
    /// to UTC and truncated to the millisecond. The error says why the text is refused.
    pub fn parse(text: &str) -> Result<Self, ParseTimestampError> {
        if let Ok(t) = Self::parse_canonical(text) {
            return Ok(t);
        }
        let dt = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            ParseTimestampError::new(
                text,
                format!("not an RFC 3339 date-time like 2026-11-22T11:30:00.000Z ({e})"),
            )
        })?;
        Self::from_offset_datetime(dt).ok_or_else(|| {
            ParseTimestampError::new(text, "outside the years 0000..=9999 (UTC)".to_string())
        })
    }

    /// Parses only the fixed-width stored form (`2026-11-22T11:30:00.000Z`, UTC, exactly
    /// three fraction digits): what every timestamp column holds.
    pub fn parse_canonical(text: &str) -> Result<Self, ParseTimestampError> {
        let dt = PrimitiveDateTime::parse(text, FORMAT)
            .map_err(|e| {
                ParseTimestampError::new(
                    text,
                    format!("not the stored form YYYY-MM-DDTHH:MM:SS.mmmZ ({e})"),
                )
            })?
            .assume_utc();
        Self::from_offset_datetime(dt).ok_or_else(|| {
            ParseTimestampError::new(text, "outside the years 0000..=9999".to_string())
        })
    }

    /// Converts from a `time` value (any offset), truncating to the millisecond.
    pub fn from_offset_datetime(dt: OffsetDateTime) -> Option<Self> {
        let ms = i64::try_from(dt.unix_timestamp_nanos().div_euclid(1_000_000)).ok()?;
        Self::from_unix_ms(ms)
    }

    /// The same instant as a `time` value in UTC.
    pub fn to_offset_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .expect("timestamps are constructed within range")
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }
}

/// `t + d`: later by `d`, saturating at the last representable instant.
impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms).min(MAX_MS))
    }
}

/// `t - d`: earlier by `d`, saturating at the first representable instant.
impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms).max(MIN_MS))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .to_offset_datetime()
            .format(FORMAT)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Timestamp::parse_canonical(text).map_err(|e| FromSqlError::Other(e.into()))
    }
}

/// A source of the current time. The engine reads it once per operation.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The production clock: the operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(MAX_MS),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(-MIN_MS),
        };
        Timestamp(ms.clamp(MIN_MS, MAX_MS))
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// Sets the time (it may go backwards: tests of clock faults rely on it).
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let now = self.now();
        self.set(now + d);
    }

    /// Moves the time backward by `d`.
    pub fn rewind(&self, d: Duration) {
        let now = self.now();
        self.set(now - d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    /// Regression: src/pg/listener.rs and src/pg/copy.rs read `Instant::now()` themselves,
    /// out of reach of tests; this module must stay the only reader of the machine's clocks.
    #[test]
    fn no_module_but_clock_reads_the_machines_clocks() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&root, &mut files);
        assert!(files.len() > 20, "src/ not found");
        let readers = [
            ["Instant", "::now("].concat(),
            ["SystemTime", "::now("].concat(),
        ];
        let offenders: Vec<String> = files
            .iter()
            .filter(|f| !f.ends_with("src/clock.rs"))
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                let name = f.strip_prefix(&root).unwrap().display().to_string();
                text.lines()
                    .enumerate()
                    .filter(|(_, l)| readers.iter().any(|r| l.contains(r.as_str())))
                    .map(|(n, _)| format!("src/{name}:{}", n + 1))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            offenders.is_empty(),
            "clocks read outside src/clock.rs: {offenders:?}"
        );
    }

    use super::*;

    #[test]
    fn text_form_is_fixed_width_and_round_trips() {
        for ms in [MIN_MS, 0, 1_795_000_000_123, MAX_MS, -1, 1_700_000_000_001] {
            let t = Timestamp::from_unix_ms(ms).unwrap();
            let s = t.to_string();
            assert_eq!(s.len(), 24, "{s}");
            assert_eq!(Timestamp::parse(&s), Ok(t), "{s}");
            assert_eq!(Timestamp::parse_canonical(&s), Ok(t), "{s}");
        }
        assert_eq!(
            Timestamp::from_unix_ms(0).unwrap().to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn out_of_range_and_garbage_are_refused() {
        assert_eq!(Timestamp::from_unix_ms(MAX_MS + 1), None);
        assert_eq!(Timestamp::from_unix_ms(MIN_MS - 1), None);
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22 11:30:00",
            "2026-11-22T11:30:00",
            "2026-13-22T11:30:00.000Z",
            "2026-11-22T11:30:00.000+25:00",
            "yesterday",
        ] {
            let e = Timestamp::parse(bad).unwrap_err();
            assert_eq!(e.text(), bad);
            assert!(e.to_string().contains("is not a timestamp"), "{e}");
            assert!(!e.reason().is_empty());
        }
        // The stored form only: no offsets, exactly three fraction digits.
        for not_stored in ["2026-11-22T11:30:00Z", "2026-11-22T11:30:00.000+01:00"] {
            assert!(
                Timestamp::parse_canonical(not_stored).is_err(),
                "{not_stored}"
            );
            assert!(Timestamp::parse(not_stored).is_ok(), "{not_stored}");
        }
    }

    #[test]
    fn rfc3339_offsets_are_normalized_to_utc() {
        let utc = Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap();
        for same in [
            "2026-11-22T19:30:00+08:00",
            "2026-11-22T06:30:00-05:00",
            "2026-11-22T11:30:00Z",
            "2026-11-22T11:30:00.000+00:00",
            "2026-11-22T11:30:00.000-00:00",
            "2026-11-22T17:00:00.000049+05:30",
        ] {
            assert_eq!(Timestamp::parse(same), Ok(utc), "{same}");
        }
        assert_eq!(
            Timestamp::parse("2026-11-22T11:30:00.123456Z")
                .unwrap()
                .to_string(),
            "2026-11-22T11:30:00.123Z",
            "truncated to the millisecond"
        );
        // An offset that crosses the last representable instant is refused with the reason.
        let e = Timestamp::parse("9999-12-31T23:59:59-01:00").unwrap_err();
        assert!(e.reason().contains("outside"), "{e}");
    }

    #[test]
    fn text_order_is_time_order() {
        let a = Timestamp::from_unix_ms(1_000).unwrap();
        let b = Timestamp::from_unix_ms(999_999_999_999).unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_unix_ms(0).unwrap());
        let shared = c.clone();
        c.advance(Duration::from_secs(5));
        assert_eq!(shared.now().unix_ms(), 5_000);
        c.rewind(Duration::from_secs(10));
        assert_eq!(shared.now().unix_ms(), -5_000);
    }
}

/// A monotonic deadline for waits inside the engine (worker shutdown). Kept here so that
/// this module stays the only reader of the machine's clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(std::time::Instant);

impl Deadline {
    /// A deadline `after` from now.
    pub(crate) fn after(after: Duration) -> Self {
        let now = std::time::Instant::now();
        Self(now.checked_add(after).unwrap_or(now))
    }

    /// Time left (zero once passed).
    pub(crate) fn remaining(self) -> Duration {
        self.0.saturating_duration_since(std::time::Instant::now())
    }

    /// Whether the deadline has passed.
    #[cfg(feature = "postgres")]
    pub(crate) fn passed(self) -> bool {
        self.remaining().is_zero()
    }
}

/// Monotonic time since a start, for reports of how long work took (a copy's duration).
/// Kept here so that this module stays the only reader of the machine's clocks.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch(std::time::Instant);

#[cfg(feature = "postgres")]
impl Stopwatch {
    /// A stopwatch started now.
    pub(crate) fn start() -> Self {
        Self(std::time::Instant::now())
    }

    /// Time since [`Stopwatch::start`].
    pub(crate) fn elapsed(self) -> Duration {
        self.0.elapsed()
    }
}
