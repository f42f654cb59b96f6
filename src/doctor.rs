//! `doctor`: checks every invariant of a runledger database from SQL and reports each
//! anomaly, without changing anything.
//!
//! The database enforces its own rules (CHECKs, triggers, indexes), so a healthy file has
//! no anomaly. Doctor exists for the files that were touched anyway: a dropped trigger, a
//! row written with `PRAGMA ignore_check_constraints`, a crashed host that left an expired
//! lease, a disk that flipped a page. It looks at the data itself, not at the rules, so it
//! also finds what the rules would have refused.
//!
//! Checks (each [`Anomaly::check`] is one of these names):
//! - `integrity` (`PRAGMA integrity_check`), `foreign_key` (`PRAGMA foreign_key_check`),
//!   `schema_version`;
//! - `schema_object`: every table, index and trigger the migrations create is present and
//!   unchanged (compared with a freshly migrated in-memory database), and no index or
//!   trigger was added to runledger's tables; `immutable_guard` is the same check for the
//!   triggers that make audit rows, events and raw data immutable. A host's own tables,
//!   views, and their indexes and triggers in the same file are expected and not reported,
//!   unless a host trigger names one of runledger's tables (it would write around the API);
//! - `state`: every state column holds only its machine's states (taken from the Rust
//!   tables, so the lists cannot drift);
//! - `timestamps`: fixed-width UTC text, and times that agree with the state (terminal rows
//!   finished, others not; `duration_ms` = finish - start);
//! - `outcome`: result and error columns agree with the state;
//! - `json`: JSON columns are valid and of the right type;
//! - `run_lock`: at most one started run per lock key;
//! - `event_seq`, `event_backlog`, `event_orphan`: gapless per-job sequences within the kept
//!   window, at most [`events::BACKLOG`] kept per job, no events of deleted jobs;
//! - `raw_payload`: stored size equals the payload's length and the key is its SHA-256;
//!   `raw_record`: a record's size is its payload's;
//! - `file_mode` (a warning): the database file, its `-wal` or `-shm` is readable or
//!   writable by other users (files are created `0600`);
//! - warnings (work for the sweepers, not damage): `abandoned_run` (a started run whose lease
//!   expired), `stale_job` (a running job without a heartbeat for
//!   [`DoctorOptions::stale_after`]), `stuck_slot` (a due slot claimed longer than
//!   [`DoctorOptions::claim_timeout`]).
//!
//! ```
//! use runledger::{doctor, Engine};
//!
//! let engine = Engine::open_in_memory()?;
//! let report = doctor::check(&engine, &doctor::DoctorOptions::default())?;
//! assert!(report.is_clean(), "{report:?}");
//! # Ok::<(), runledger::Error>(())
//! ```

pub mod damage;

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Connection;
use serde::Serialize;
use sha2::{Digest, Sha256};

mod chains;

use self::damage::Damage;
use crate::clock::Timestamp;
use crate::db::{self, DbOptions};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events;
use crate::job::JobState;
use crate::run::{RunStatus, Scope, TriggerKind};
use crate::schedule::{tzdb, Misfire, SlotStatus, Tzdb};
use crate::storage::check::Check;
use crate::storage::{self, job_events, jobs, raw};

/// What doctor considers late, and when "now" is.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The instant leases, heartbeats and claims are judged against. Default: the engine's
    /// clock.
    pub now: Option<Timestamp>,
    /// A running job whose heartbeat is older than this is reported `stale_job`. Default
    /// 30 s (the supervisor's default).
    pub stale_after: Duration,
    /// A due slot claimed longer ago than this is reported `stuck_slot`. Default 10 min (the
    /// scheduler's default).
    pub claim_timeout: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            now: None,
            stale_after: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(10 * 60),
        }
    }
}

pub use crate::storage::check::Severity;

/// One thing doctor found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Anomaly {
    /// The check that found it (see the module docs).
    pub check: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The table concerned (`""` for file-level findings).
    pub table: String,
    /// The row (id, lock key, object name) when there is one.
    pub row_id: Option<String>,
    /// What is wrong, in lower case.
    pub detail: String,
}

/// Everything doctor found in one database.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The instant used for leases, heartbeats and claims.
    pub checked_at: Timestamp,
    /// The schema version recorded in the file.
    pub schema_version: i64,
    /// The tz database schedules are computed with in this process ([`crate::schedule::tzdb`]).
    pub tzdb: &'static Tzdb,
    /// The names of the checks that ran.
    pub checks: Vec<&'static str>,
    /// Every anomaly, sorted by check, table and row.
    pub anomalies: Vec<Anomaly>,
    /// Set when the file itself is damaged: the cause, which tables still read, and what
    /// to do ([`crate::damage`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<Damage>,
}

impl DoctorReport {
    /// No anomaly at all.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The anomalies of severity [`Severity::Error`].
    pub fn errors(&self) -> impl Iterator<Item = &Anomaly> {
        self.anomalies
            .iter()
            .filter(|a| a.severity == Severity::Error)
    }

    /// The anomalies of severity [`Severity::Warning`].
    pub fn warnings(&self) -> impl Iterator<Item = &Anomaly> {
        self.anomalies
            .iter()
            .filter(|a| a.severity == Severity::Warning)
    }
}

/// Checks `engine`'s database. Reads only; never changes a row.
pub fn check(engine: &Engine, opts: &DoctorOptions) -> Result<DoctorReport> {
    let now = opts.now.unwrap_or_else(|| engine.now());
    let mut report = None;
    let read = engine.read(|conn| {
        report = Some(check_connection(conn, now, opts)?);
        Ok(())
    });
    if let (Some(report), Some(path)) = (report.as_mut(), engine.path()) {
        file_modes(path, report);
    }
    match (read, report) {
        (Ok(()), Some(report)) => Ok(report),
        // On a damaged file, ending the read snapshot meets the damage the report already
        // describes: the report stands.
        (Err(e), Some(report)) if report.damage.is_some() && damage::is_damage(&e) => Ok(report),
        (Err(e), _) => Err(e),
        (Ok(()), None) => unreachable!("the read returned Ok only after the check did"),
    }
}

/// Checks the file at `path` opened read-only, without migrating it: for a file that
/// [`Engine::open`] refuses (an edited migration history, a row a newer migration refuses).
pub fn check_path(path: &std::path::Path, opts: &DoctorOptions) -> Result<DoctorReport> {
    let conn = db::open_read_only(path)?;
    let now = opts
        .now
        .unwrap_or_else(|| crate::clock::Clock::now(&crate::clock::SystemClock));
    let mut report = check_connection(&conn, now, opts)?;
    file_modes(path, &mut report);
    Ok(report)
}

/// `file_mode`: the database file (and its `-wal`, `-shm`) readable or writable by anyone
/// but its owner is a warning: it holds account statements. Files are created `0600`
/// ([`crate::db::FILE_MODE`]).
fn file_modes(path: &std::path::Path, report: &mut DoctorReport) {
    report.checks.push("file_mode");
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        if let Some(mode) = db::loose_mode(&file) {
            report.anomalies.push(Anomaly {
                check: "file_mode",
                severity: Severity::Warning,
                table: String::new(),
                row_id: Some(file.display().to_string()),
                detail: format!(
                    "mode {mode:04o} lets other users in; the file holds account statements (chmod 600)"
                ),
            });
        }
    }
    report.anomalies.sort();
}

/// Checks the database behind `conn` as of `now` (what [`check`] runs). A damaged file
/// (a check met `CORRUPT`, `NOT_A_DATABASE` or `IO_ERROR`, or integrity_check reported
/// pages) gives a report with [`DoctorReport::damage`] set, not an error.
pub fn check_connection(
    conn: &Connection,
    now: Timestamp,
    opts: &DoctorOptions,
) -> Result<DoctorReport> {
    match check_all(conn, now, opts) {
        Ok(mut report) => {
            let physical = |a: &&Anomaly| a.check == "integrity" && damage::is_physical(&a.detail);
            if let Some(first) = report.anomalies.iter().find(physical) {
                let cause = Error::Corrupt {
                    extended_code: rusqlite::ffi::SQLITE_CORRUPT,
                    detail: first.detail.clone(),
                };
                let (found, damage) = damage::survey(conn, &cause);
                report.anomalies.extend(found);
                report.anomalies.sort();
                report.anomalies.dedup();
                report.damage = Some(damage);
            }
            Ok(report)
        }
        Err(cause) if damage::is_damage(&cause) => {
            let (mut anomalies, damage) = damage::survey(conn, &cause);
            anomalies.sort();
            anomalies.dedup();
            Ok(DoctorReport {
                checked_at: now,
                schema_version: db::schema_version(conn).unwrap_or(-1),
                tzdb: tzdb(),
                checks: vec!["damage", "integrity", "table_read"],
                anomalies,
                damage: Some(damage),
            })
        }
        Err(e) => Err(e),
    }
}

/// Checks a file that the engine cannot open (damaged, truncated, not SQLite) through a
/// read-only connection that migrates nothing.
pub fn check_file(
    path: &std::path::Path,
    now: Timestamp,
    opts: &DoctorOptions,
) -> Result<DoctorReport> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )?;
    check_connection(&conn, now, opts)
}

fn check_all(conn: &Connection, now: Timestamp, opts: &DoctorOptions) -> Result<DoctorReport> {
    let mut found = Vec::new();
    let mut checks = vec![
        "integrity",
        "foreign_key",
        "schema_version",
        "schema_object",
    ];
    integrity(conn, &mut found)?;
    foreign_keys(conn, &mut found)?;
    let schema_version = db::schema_version(conn)?;
    let known = db::known_schema_version();
    if schema_version != known {
        found.push(Anomaly {
            check: "schema_version",
            severity: Severity::Error,
            table: "refinery_schema_history".into(),
            row_id: None,
            detail: format!("schema version {schema_version}, this build knows {known}"),
        });
    }
    schema_objects(conn, &mut found)?;
    let params = Params::new(now, opts);
    for c in storage::checks() {
        if !checks.contains(&c.name) {
            checks.push(c.name);
        }
        run_check(conn, c, &params, &mut found)?;
    }
    checks.push("event_orphan");
    event_orphans(conn, &mut found)?;
    raw_payload_hashes(conn, &mut found)?;
    checks.extend(chains::CHECK_NAMES);
    chains::doctor_checks(conn, &mut found);
    // `integrity_check` names only the table of a failed CHECK; a row check that found the
    // offending row of that table already says more.
    let named: Vec<String> = found
        .iter()
        .filter(|a| a.check != "integrity")
        .map(|a| format!("CHECK constraint failed in {}", a.table))
        .collect();
    found.retain(|a| a.check != "integrity" || !named.contains(&a.detail));
    found.sort();
    found.dedup();
    Ok(DoctorReport {
        checked_at: now,
        schema_version,
        tzdb: tzdb(),
        checks,
        anomalies: found,
        damage: None,
    })
}

/// The triggers that make rows immutable (invariant 5); their absence is `immutable_guard`.
pub const IMMUTABILITY_TRIGGERS: &[&str] = &[
    "audit_log_no_update",
    "audit_log_no_delete",
    "job_events_no_update",
    "job_events_no_delete",
    "raw_payloads_no_update",
    "raw_payloads_delete_unreferenced_only",
    "raw_records_no_update",
    "raw_records_delete_orphans_only",
];

/// `PRAGMA integrity_check`, each finding pushed as it is read (so that on a damaged file
/// the lines before a failure are kept; [`crate::damage`] relies on it).
pub(crate) fn integrity(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let mut stmt = conn.prepare("pragma integrity_check")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let msg: String = row.get(0)?;
        if msg != "ok" {
            found.push(Anomaly {
                check: "integrity",
                severity: Severity::Error,
                table: String::new(),
                row_id: None,
                detail: msg,
            });
        }
    }
    Ok(())
}

fn foreign_keys(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let mut stmt = conn.prepare("pragma foreign_key_check")?;
    let rows: Vec<(String, Option<i64>, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (table, rowid, parent) in rows {
        found.push(Anomaly {
            check: "foreign_key",
            severity: Severity::Error,
            table,
            row_id: rowid.map(|r| r.to_string()),
            detail: format!("references a missing {parent} row"),
        });
    }
    Ok(())
}

const SCHEMA_OBJECTS: &str = "select type, name, tbl_name, coalesce(sql, '') from sqlite_master
     where name not like 'sqlite_%' order by name";

type SchemaMap = BTreeMap<String, (String, String, String)>;

fn schema_map(conn: &Connection) -> Result<SchemaMap> {
    let mut stmt = conn.prepare(SCHEMA_OBJECTS)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(1)?,
            (r.get(0)?, r.get(2)?, r.get::<_, String>(3)?),
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn schema_objects(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let reference = schema_map(&db::open_in_memory(&DbOptions::default())?)?;
    let actual = schema_map(conn)?;
    for (name, (kind, table, sql)) in &reference {
        let check = if IMMUTABILITY_TRIGGERS.contains(&name.as_str()) {
            "immutable_guard"
        } else {
            "schema_object"
        };
        let detail = match actual.get(name) {
            None => format!("{kind} {name} is missing"),
            Some((k, _, s)) if k != kind || s != sql => {
                format!("{kind} {name} differs from the migrations")
            }
            Some(_) => continue,
        };
        found.push(Anomaly {
            check,
            severity: Severity::Error,
            table: table.clone(),
            row_id: Some(name.clone()),
            detail,
        });
    }
    // runledger's own tables: what a rogue trigger or index must not touch.
    let ours: Vec<&str> = reference
        .values()
        .filter(|(kind, _, _)| kind == "table")
        .map(|(_, table, _)| table.as_str())
        .collect();
    for (name, (kind, table, sql)) in &actual {
        if reference.contains_key(name) {
            continue;
        }
        let detail = if ours.contains(&table.as_str()) {
            // A rogue trigger or index on runledger's tables can change what the rules
            // mean: an error.
            format!("{kind} {name} is not created by the migrations")
        } else if kind == "trigger" && names_any(sql, &ours) {
            // A host's trigger that writes runledger's tables goes around the API.
            format!("trigger {name} on the host's table {table} names a runledger table")
        } else {
            // The host's own table, view, index or trigger in the same file: expected.
            continue;
        };
        found.push(Anomaly {
            check: "schema_object",
            severity: Severity::Error,
            table: table.clone(),
            row_id: Some(name.clone()),
            detail,
        });
    }
    Ok(())
}

/// Whether `sql` names one of `tables` as a whole word (case-insensitive).
fn names_any(sql: &str, tables: &[&str]) -> bool {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| tables.iter().any(|t| t.eq_ignore_ascii_case(w)))
}

/// The values every check query may bind by name.
struct Params {
    values: Vec<(&'static str, Box<dyn ToSql>)>,
}

fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::from(items.into_iter().collect::<Vec<_>>()).to_string()
}

impl Params {
    fn new(now: Timestamp, opts: &DoctorOptions) -> Self {
        let values: Vec<(&'static str, Box<dyn ToSql>)> = vec![
            (":now", Box::new(now)),
            (":stale_before", Box::new(now - opts.stale_after)),
            (":claim_before", Box::new(now - opts.claim_timeout)),
            (":backlog", Box::new(events::BACKLOG)),
            (":ts", Box::new(TS_GLOB)),
            (
                ":job_states",
                Box::new(json_list(JobState::ALL.iter().map(|s| s.as_str()))),
            ),
            (
                ":run_statuses",
                Box::new(json_list(RunStatus::ALL.iter().map(|s| s.as_str()))),
            ),
            (
                ":scopes",
                Box::new(json_list(Scope::ALL.iter().map(|s| s.as_str()))),
            ),
            (
                ":triggers",
                Box::new(json_list(TriggerKind::ALL.iter().map(|s| s.as_str()))),
            ),
            (
                ":slot_statuses",
                Box::new(json_list(SlotStatus::ALL.iter().map(|s| s.as_str()))),
            ),
            (
                ":misfires",
                Box::new(json_list(Misfire::ALL.iter().map(|s| s.as_str()))),
            ),
        ];
        Self { values }
    }
}

const TS_GLOB: &str =
    "[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z";

fn run_check(conn: &Connection, c: &Check, p: &Params, found: &mut Vec<Anomaly>) -> Result<()> {
    let mut stmt = match conn.prepare_cached(c.sql) {
        Ok(stmt) => stmt,
        Err(e) => {
            // A dropped table or column: the schema check reports it; say the check could
            // not run instead of failing the whole report.
            found.push(Anomaly {
                check: c.name,
                severity: Severity::Error,
                table: c.table.into(),
                row_id: None,
                detail: format!("check could not run: {e}"),
            });
            return Ok(());
        }
    };
    let mut bound: Vec<(&str, &dyn ToSql)> = Vec::new();
    for (name, value) in &p.values {
        if stmt.parameter_index(name)?.is_some() {
            bound.push((name, value.as_ref()));
        }
    }
    let rows = stmt.query_map(bound.as_slice(), |r| {
        let id: rusqlite::types::Value = r.get(0)?;
        let detail: Option<String> = r.get(1)?;
        Ok((id, detail))
    })?;
    for row in rows {
        let (id, detail) = row?;
        found.push(Anomaly {
            check: c.name,
            severity: c.severity,
            table: c.table.into(),
            row_id: value_text(id),
            detail: detail.unwrap_or_default(),
        });
    }
    Ok(())
}

fn value_text(v: rusqlite::types::Value) -> Option<String> {
    use rusqlite::types::Value;
    match v {
        Value::Null => None,
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(f) => Some(f.to_string()),
        Value::Text(t) => Some(t),
        Value::Blob(b) => Some(format!("blob of {} bytes", b.len())),
    }
}

/// `event_orphan`: events whose job does not exist. It spans two tables, so it lives here:
/// `job_events` lists the jobs it holds events of, `jobs` says which of them are missing.
fn event_orphans(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let Some(counts) = job_events::count_per_job(conn)? else {
        return Ok(()); // a dropped table or column: reported by the schema check
    };
    let ids: Vec<i64> = counts.keys().copied().collect();
    for id in jobs::missing(conn, &ids)? {
        found.push(Anomaly {
            check: "event_orphan",
            severity: Severity::Error,
            table: "job_events".into(),
            row_id: Some(id.to_string()),
            detail: format!("{} events of a job that does not exist", counts[&id]),
        });
    }
    Ok(())
}

/// `raw_payload`: every payload's key is the SHA-256 of its bytes (hashed here, in Rust).
fn raw_payload_hashes(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    // `false` (a dropped table or column) is reported by the schema check.
    raw::for_each_payload(conn, |key, payload| {
        let actual = hex(&Sha256::digest(payload));
        if actual != key {
            found.push(Anomaly {
                check: "raw_payload",
                severity: Severity::Error,
                table: "raw_payloads".into(),
                row_id: Some(key.to_string()),
                detail: format!("the payload's sha-256 is {actual}"),
            });
        }
    })?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_query_prepares_on_a_fresh_database_and_each_name_is_listed_once() {
        let engine = Engine::open_in_memory().unwrap();
        let report = check(&engine, &DoctorOptions::default()).unwrap();
        assert!(report.is_clean(), "{:#?}", report.anomalies);
        let mut names = report.checks.clone();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), report.checks.len(), "{:?}", report.checks);
        for c in storage::checks() {
            engine
                .with_connection(|conn| Ok(conn.prepare(c.sql).map(|_| ())?))
                .unwrap_or_else(|e| panic!("{} on {}: {e}", c.name, c.table));
        }
    }
}
