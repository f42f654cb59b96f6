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
//!   unchanged (compared with a freshly migrated in-memory database); `immutable_guard` is
//!   the same check for the triggers that make audit rows, events and raw data immutable;
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

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Connection;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::damage::{self, Damage};
use crate::db::{self, DbOptions};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events;
use crate::job::JobState;
use crate::run::{RunStatus, Scope, TriggerKind};
use crate::schedule::{Misfire, SlotStatus};

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

/// How bad an anomaly is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A broken invariant or damaged file.
    Error,
    /// Work left for a sweeper (expired lease, stale heartbeat, stuck claim).
    Warning,
}

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
    engine.with_connection(|conn| check_connection(conn, now, opts))
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
    for c in CHECKS {
        if !checks.contains(&c.name) {
            checks.push(c.name);
        }
        run_check(conn, c, &params, &mut found)?;
    }
    checks.push("raw_payload");
    raw_payload_hashes(conn, &mut found)?;
    found.sort();
    found.dedup();
    Ok(DoctorReport {
        checked_at: now,
        schema_version,
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
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
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
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
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

const SCHEMA_OBJECTS: &str = "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master
     WHERE name NOT LIKE 'sqlite_%' ORDER BY name";

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
    for (name, (kind, table, _)) in &actual {
        if !reference.contains_key(name) {
            found.push(Anomaly {
                check: "schema_object",
                severity: Severity::Warning,
                table: table.clone(),
                row_id: Some(name.clone()),
                detail: format!("{kind} {name} is not created by the migrations"),
            });
        }
    }
    Ok(())
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

/// One SQL check: a query returning `(row_id, detail)` per anomaly.
struct Check {
    name: &'static str,
    severity: Severity,
    table: &'static str,
    sql: &'static str,
}

const fn err(name: &'static str, table: &'static str, sql: &'static str) -> Check {
    Check {
        name,
        severity: Severity::Error,
        table,
        sql,
    }
}

const fn warn(name: &'static str, table: &'static str, sql: &'static str) -> Check {
    Check {
        name,
        severity: Severity::Warning,
        table,
        sql,
    }
}

const JOBS_STATE: &str = "SELECT id, 'state ' || quote(state) || ' is not a job state' FROM jobs
     WHERE state IS NULL OR state NOT IN (SELECT value FROM json_each(:job_states))";
const JOBS_TIMESTAMPS: &str = "SELECT id, CASE
       WHEN created_at IS NULL OR created_at NOT GLOB :ts OR updated_at IS NULL OR updated_at NOT GLOB :ts
         OR coalesce(started_at, created_at) NOT GLOB :ts OR coalesce(heartbeat_at, created_at) NOT GLOB :ts
         OR coalesce(finished_at, created_at) NOT GLOB :ts OR coalesce(checkpoint_at, created_at) NOT GLOB :ts
         THEN 'a timestamp is not fixed-width utc text'
       WHEN (state IN ('completed', 'failed', 'cancelled')) <> (finished_at IS NOT NULL)
         THEN 'state ' || state || (CASE WHEN finished_at IS NULL THEN ' without' ELSE ' with' END) || ' finished_at'
       WHEN finished_at < created_at THEN 'finished before it was created'
       WHEN started_at < created_at THEN 'started before it was created'
       WHEN state IN ('running', 'paused', 'completed') AND started_at IS NULL THEN 'state ' || state || ' without started_at'
       WHEN state = 'created' AND (started_at IS NOT NULL OR heartbeat_at IS NOT NULL OR worker_id IS NOT NULL)
         THEN 'created with a start, heartbeat or worker'
       WHEN state = 'running' AND (heartbeat_at IS NULL OR worker_id IS NULL OR attempt < 1)
         THEN 'running without heartbeat, worker or attempt'
       WHEN checkpoint IS NOT NULL AND checkpoint_at IS NULL THEN 'checkpoint without checkpoint_at'
     END AS detail FROM jobs
     WHERE detail IS NOT NULL AND state IN (SELECT value FROM json_each(:job_states))";
const JOBS_OUTCOME: &str = "SELECT id, CASE
       WHEN state <> 'completed' AND result IS NOT NULL THEN 'result on a ' || state || ' job'
       WHEN state = 'completed' AND progress <> 100 THEN 'completed at progress ' || progress
       WHEN (state = 'failed') <> (error_code IS NOT NULL) THEN 'error_code disagrees with state ' || state
       WHEN progress NOT BETWEEN 0 AND 100 THEN 'progress ' || progress || ' out of 0..100'
       WHEN attempt < 0 OR recovery_count < 0 OR max_retries < 0 THEN 'a negative counter'
     END AS detail FROM jobs
     WHERE detail IS NOT NULL AND state IN (SELECT value FROM json_each(:job_states))";
const JOBS_JSON: &str = "SELECT id, CASE
       WHEN NOT json_valid(input) THEN 'input is not json'
       WHEN result IS NOT NULL AND NOT json_valid(result) THEN 'result is not json'
       WHEN checkpoint IS NOT NULL AND NOT json_valid(checkpoint) THEN 'checkpoint is not json'
       WHEN NOT json_valid(tags) OR json_type(tags) <> 'array' THEN 'tags is not a json array'
     END AS detail FROM jobs WHERE detail IS NOT NULL";
const JOBS_STALE: &str =
    "SELECT id, 'running, last heartbeat ' || heartbeat_at || ' (needs the supervisor)'
     FROM jobs WHERE state = 'running' AND heartbeat_at < :stale_before";

const RUNS_STATE: &str = "SELECT id, CASE
       WHEN status IS NULL OR status NOT IN (SELECT value FROM json_each(:run_statuses))
         THEN 'status ' || quote(status) || ' is not a run status'
       WHEN scope IS NULL OR scope NOT IN (SELECT value FROM json_each(:scopes))
         THEN 'scope ' || quote(scope) || ' is not a scope'
       WHEN trigger IS NULL OR trigger NOT IN (SELECT value FROM json_each(:triggers))
         THEN 'trigger ' || quote(trigger) || ' is not a trigger kind'
     END AS detail FROM ingest_runs WHERE detail IS NOT NULL";
const RUNS_TIMESTAMPS: &str = "SELECT id, CASE
       WHEN started_at IS NULL OR started_at NOT GLOB :ts OR coalesce(finished_at, started_at) NOT GLOB :ts
         OR coalesce(lease_expires_at, started_at) NOT GLOB :ts
         THEN 'a timestamp is not fixed-width utc text'
       WHEN (status = 'started') <> (finished_at IS NULL)
         THEN 'status ' || status || (CASE WHEN finished_at IS NULL THEN ' without' ELSE ' with' END) || ' finished_at'
       WHEN (finished_at IS NULL) <> (duration_ms IS NULL) THEN 'duration_ms disagrees with finished_at'
       WHEN finished_at < started_at THEN 'finished before it started'
       WHEN duration_ms IS NOT
            CAST(round((julianday(finished_at) - julianday(started_at)) * 86400000) AS INTEGER)
         THEN 'duration_ms ' || duration_ms || ' is not finished_at - started_at'
       WHEN status = 'started' AND lease_expires_at IS NULL THEN 'started without a lease'
     END AS detail FROM ingest_runs
     WHERE detail IS NOT NULL AND status IN (SELECT value FROM json_each(:run_statuses))";
const RUNS_OUTCOME: &str = "SELECT id, CASE
       WHEN (status = 'failed') <> (error_code IS NOT NULL) THEN 'error_code disagrees with status ' || status
       WHEN status <> 'failed' AND error_message IS NOT NULL THEN 'error_message on a ' || status || ' run'
     END AS detail FROM ingest_runs
     WHERE detail IS NOT NULL AND status IN (SELECT value FROM json_each(:run_statuses))";
const RUNS_JSON: &str = "SELECT id, CASE
       WHEN NOT json_valid(timeline) OR json_type(timeline) <> 'array' THEN 'timeline is not a json array'
       WHEN EXISTS (SELECT 1 FROM json_each(timeline) WHERE type <> 'object')
         THEN 'a timeline entry is not an object'
       WHEN NOT json_valid(meta_json) OR json_type(meta_json) <> 'object' THEN 'meta_json is not a json object'
     END AS detail FROM ingest_runs WHERE detail IS NOT NULL";
const RUNS_LOCK: &str =
    "SELECT lock_key, count(*) || ' started runs hold this lock: ' || group_concat(id, ', ')
     FROM ingest_runs WHERE status = 'started' GROUP BY lock_key HAVING count(*) > 1";
const RUNS_ABANDONED: &str =
    "SELECT id, 'started, lease expired at ' || lease_expires_at || ' (needs a sweep)'
     FROM ingest_runs WHERE status = 'started' AND lease_expires_at < :now";

const SLOTS_STATE: &str =
    "SELECT id, 'status ' || quote(status) || ' is not a slot status' FROM due_runs
     WHERE status IS NULL OR status NOT IN (SELECT value FROM json_each(:slot_statuses))";
const SLOTS_TIMESTAMPS: &str = "SELECT id, CASE
       WHEN due_at IS NULL OR due_at NOT GLOB :ts OR created_at IS NULL OR created_at NOT GLOB :ts
         OR coalesce(claimed_at, created_at) NOT GLOB :ts OR coalesce(finished_at, created_at) NOT GLOB :ts
         THEN 'a timestamp is not fixed-width utc text'
       WHEN (status IN ('fired', 'skipped', 'failed')) <> (finished_at IS NOT NULL)
         THEN 'status ' || status || (CASE WHEN finished_at IS NULL THEN ' without' ELSE ' with' END) || ' finished_at'
       WHEN (claimed_at IS NULL) <> (claimed_by IS NULL) THEN 'claimed_at disagrees with claimed_by'
       WHEN status = 'pending' AND claimed_at IS NOT NULL THEN 'pending with a claim'
       WHEN status IN ('claimed', 'fired', 'failed') AND claimed_at IS NULL THEN 'status ' || status || ' without a claim'
       WHEN created_at < due_at THEN 'materialized before it was due'
       WHEN claimed_at < created_at OR finished_at < created_at OR finished_at < claimed_at
         THEN 'times out of order'
     END AS detail FROM due_runs
     WHERE detail IS NOT NULL AND status IN (SELECT value FROM json_each(:slot_statuses))";
const SLOTS_OUTCOME: &str = "SELECT id, CASE
       WHEN NOT json_valid(run_ids) OR json_type(run_ids) <> 'array' THEN 'run_ids is not a json array'
       WHEN EXISTS (SELECT 1 FROM json_each(run_ids) WHERE type <> 'integer') THEN 'run_ids holds a non-integer'
       WHEN status NOT IN ('fired', 'skipped', 'failed') AND (run_ids <> '[]' OR outcome_code IS NOT NULL)
         THEN 'outcome on a ' || status || ' slot'
       WHEN status = 'fired' AND (json_array_length(run_ids) = 0 OR outcome_code IS NOT NULL)
         THEN 'fired without runs or with an outcome code'
       WHEN (status IN ('skipped', 'failed')) <> (outcome_code IS NOT NULL)
         THEN 'outcome_code disagrees with status ' || status
     END AS detail FROM due_runs
     WHERE detail IS NOT NULL AND status IN (SELECT value FROM json_each(:slot_statuses))";
const SLOTS_STUCK: &str = "SELECT id, 'claimed at ' || claimed_at || ' by ' || claimed_by || ' and never recorded (needs a tick)'
     FROM due_runs WHERE status = 'claimed' AND claimed_at < :claim_before";

const SCHEDULES_ROWS: &str = "SELECT id, CASE
       WHEN misfire IS NULL OR misfire NOT IN (SELECT value FROM json_each(:misfires))
         THEN 'misfire ' || quote(misfire) || ' is not a misfire policy'
       WHEN enabled NOT IN (0, 1) THEN 'enabled is not 0 or 1'
       WHEN created_at NOT GLOB :ts OR updated_at NOT GLOB :ts OR coalesce(last_due_at, created_at) NOT GLOB :ts
         OR coalesce(next_due_at, created_at) NOT GLOB :ts
         THEN 'a timestamp is not fixed-width utc text'
       WHEN updated_at < created_at THEN 'updated before it was created'
       WHEN next_due_at <= last_due_at THEN 'next_due_at is not after last_due_at'
     END AS detail FROM schedules WHERE detail IS NOT NULL";

const EVENTS_SEQ: &str = "SELECT job_id, 'kept seqs ' || min(seq) || '..' || max(seq) || ' hold ' || count(*) || ' events'
     FROM job_events GROUP BY job_id
     HAVING count(*) <> max(seq) - min(seq) + 1 OR min(seq) > max(1, max(seq) - :backlog + 1)";
const EVENTS_BACKLOG: &str = "SELECT job_id, count(*) || ' events kept, more than ' || :backlog
     FROM job_events GROUP BY job_id HAVING count(*) > :backlog";
const EVENTS_ORPHAN: &str = "SELECT job_id, count(*) || ' events of a job that does not exist'
     FROM job_events WHERE job_id NOT IN (SELECT id FROM jobs) GROUP BY job_id";
const EVENTS_ROWS: &str = "SELECT cursor, CASE
       WHEN NOT json_valid(payload) OR json_type(payload) <> 'object' THEN 'payload is not a json object'
       WHEN at IS NULL OR at NOT GLOB :ts THEN 'a timestamp is not fixed-width utc text'
     END AS detail FROM job_events WHERE detail IS NOT NULL";
const AUDIT_ROWS: &str = "SELECT id, CASE
       WHEN NOT json_valid(detail) OR json_type(detail) <> 'object' THEN 'detail is not a json object'
       WHEN at IS NULL OR at NOT GLOB :ts THEN 'a timestamp is not fixed-width utc text'
     END AS d FROM audit_log WHERE d IS NOT NULL";
const MODULES_JSON: &str = "SELECT module, 'scopes is not a json array' FROM ingest_modules
     WHERE NOT json_valid(scopes) OR json_type(scopes) <> 'array'";
const RAW_SIZE: &str =
    "SELECT sha256, 'size ' || size || ' but the payload has ' || length(payload) || ' bytes'
     FROM raw_payloads WHERE typeof(payload) <> 'blob' OR length(payload) IS NOT size";
const RAW_RECORD_SIZE: &str =
    "SELECT r.id, 'size ' || r.size || ' but its payload has ' || p.size || ' bytes'
     FROM raw_records r JOIN raw_payloads p ON p.sha256 = r.sha256 WHERE r.size IS NOT p.size";

const CHECKS: &[Check] = &[
    err("state", "jobs", JOBS_STATE),
    err("timestamps", "jobs", JOBS_TIMESTAMPS),
    err("outcome", "jobs", JOBS_OUTCOME),
    err("json", "jobs", JOBS_JSON),
    warn("stale_job", "jobs", JOBS_STALE),
    err("state", "ingest_runs", RUNS_STATE),
    err("timestamps", "ingest_runs", RUNS_TIMESTAMPS),
    err("outcome", "ingest_runs", RUNS_OUTCOME),
    err("json", "ingest_runs", RUNS_JSON),
    err("run_lock", "ingest_runs", RUNS_LOCK),
    warn("abandoned_run", "ingest_runs", RUNS_ABANDONED),
    err("state", "due_runs", SLOTS_STATE),
    err("timestamps", "due_runs", SLOTS_TIMESTAMPS),
    err("outcome", "due_runs", SLOTS_OUTCOME),
    warn("stuck_slot", "due_runs", SLOTS_STUCK),
    err("state", "schedules", SCHEDULES_ROWS),
    err("event_seq", "job_events", EVENTS_SEQ),
    err("event_backlog", "job_events", EVENTS_BACKLOG),
    err("event_orphan", "job_events", EVENTS_ORPHAN),
    err("json", "job_events", EVENTS_ROWS),
    err("json", "audit_log", AUDIT_ROWS),
    err("json", "ingest_modules", MODULES_JSON),
    err("raw_payload", "raw_payloads", RAW_SIZE),
    err("raw_record", "raw_records", RAW_RECORD_SIZE),
];

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

const RAW_PAYLOADS: &str =
    "SELECT sha256, payload FROM raw_payloads WHERE typeof(payload) = 'blob'";

fn raw_payload_hashes(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let Ok(mut stmt) = conn.prepare_cached(RAW_PAYLOADS) else {
        return Ok(()); // reported by the schema check
    };
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let payload: Vec<u8> = row.get(1)?;
        let actual = hex(&Sha256::digest(&payload));
        if actual != key {
            found.push(Anomaly {
                check: "raw_payload",
                severity: Severity::Error,
                table: "raw_payloads".into(),
                row_id: Some(key),
                detail: format!("the payload's sha-256 is {actual}"),
            });
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_query_prepares_on_a_fresh_database() {
        let engine = Engine::open_in_memory().unwrap();
        let report = check(&engine, &DoctorOptions::default()).unwrap();
        assert!(report.is_clean(), "{:#?}", report.anomalies);
        for c in CHECKS {
            engine
                .with_connection(|conn| Ok(conn.prepare(c.sql).map(|_| ())?))
                .unwrap_or_else(|e| panic!("{} on {}: {e}", c.name, c.table));
        }
    }
}
