//! [feature `postgres`] Moving a SQLite ledger into an empty PostgreSQL ledger:
//! [`copy_from_sqlite`] (the CLI's `runledger copy --from FILE.db --to postgres://...`).
//!
//! Every row of every table both schemas have (`jobs`, `audit_log`, `job_events`,
//! `ingest_runs`, `schedules`, `due_runs`, `supervisor_state`, `ingest_modules`,
//! `ingest_probes`, `raw_payloads`, `raw_records`) is copied with its ids, timestamps, JSON
//! text, bytes and hashes as stored, so the hash chains verify on the other side; each identity sequence is
//! set past the table's largest id (and past SQLite's `sqlite_sequence`, so a deleted id is
//! never handed out again).
//!
//! In order:
//! 1. SQLite's [`doctor`](crate::doctor::check) on the source: a source with errors is
//!    refused (`COPY_SOURCE_REFUSED`), warnings (an expired lease, a stale heartbeat) are
//!    copied as they are. Every SQLite table has a PostgreSQL twin since schema version 3
//!    (a future SQLite-only table would be refused unless
//!    [`CopyOptions::skip_sqlite_only`] leaves it behind). `zones` is reference data of the
//!    SQLite migrations and is not copied; a row without its hash (written before SQLite V5, see `integrity_legacy`) is refused.
//! 2. One PostgreSQL transaction: the target is migrated, its tables locked (`EXCLUSIVE`)
//!    and checked empty (`COPY_TARGET_NOT_EMPTY`), then `SET LOCAL session_replication_role
//!    = replica` (the standard mechanism of restores: the state-machine triggers, which
//!    refuse a row born in a late state, and the foreign keys do not fire; CHECK
//!    constraints still apply). That needs a superuser or a role granted the setting
//!    (`COPY_PRIVILEGE` otherwise).
//! 3. Each table through `COPY ... FROM STDIN`, streamed from one SQLite read snapshot.
//! 4. The PostgreSQL [`doctor`](super::doctor) inside the same transaction: any error and
//!    the copy is rolled back (`COPY_VERIFY_FAILED`, naming the checks); else COMMIT.
//!
//! A copy that fails or is killed at any point leaves the target as it was: empty.

use std::io::Write;
use std::time::Duration;

use rusqlite::types::ValueRef;
use serde::Serialize;

use super::db;
use super::doctor as pg_doctor;
use super::error::from_pg;
use super::storage::{self, TableSql};
use crate::clock::Stopwatch;
use crate::doctor::{self, DoctorOptions, DoctorReport, Severity};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage as sqlite;

/// How a copy runs.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Leave the rows of SQLite tables PostgreSQL has no twin for behind (listed in
    /// [`CopyReport::left_behind`]) instead of refusing the source. Obsolete since
    /// PostgreSQL schema version 3, which has a twin for every SQLite table: accepted, and
    /// changes nothing today.
    pub skip_sqlite_only: bool,
    /// What the doctors on both sides consider late (and "now").
    pub doctor: DoctorOptions,
}

/// How many rows of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRows {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
}

/// What a copy did.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    /// The rows copied, per table, in copy order.
    pub copied: Vec<TableRows>,
    /// SQLite-only tables whose rows were left behind ([`CopyOptions::skip_sqlite_only`]).
    pub left_behind: Vec<TableRows>,
    /// How long the copy took, doctors included.
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
    /// SQLite's doctor on the source (its warnings were copied as they are).
    pub source: DoctorReport,
    /// PostgreSQL's doctor on the copy, run before the commit.
    pub target: DoctorReport,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

impl CopyReport {
    /// Rows copied, all tables together.
    pub fn rows(&self) -> u64 {
        self.copied.iter().map(|t| t.rows).sum()
    }
}

/// Where a copy is, handed to the progress callback every [`PROGRESS_EVERY`] rows and at
/// the end of each table.
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress<'a> {
    /// The table being copied.
    pub table: &'a str,
    /// Rows of it copied so far.
    pub rows: u64,
    /// Whether the table is done.
    pub done: bool,
}

/// How often (in rows) the progress callback is called within a table.
pub const PROGRESS_EVERY: u64 = 10_000;

/// The SQLite tables with no PostgreSQL twin that a copy does not need: the SQLite
/// migrations' own reference data, and where each hash chain starts (a row without its
/// hash, written before V5, is refused as the copy meets it).
const NOT_COPIED: &[&str] = &["zones", "integrity_legacy"];

/// Copies the SQLite ledger of `source` into the empty PostgreSQL ledger at `url` (see the
/// [module docs](self)). `progress` is called as tables are copied; an error it returns
/// stops the copy, which is rolled back.
pub fn copy_from_sqlite(
    source: &Engine,
    url: &str,
    opts: &CopyOptions,
    progress: &mut dyn FnMut(&CopyProgress<'_>) -> Result<()>,
) -> Result<CopyReport> {
    let started = Stopwatch::start();
    let now = opts.doctor.now.unwrap_or_else(|| source.now());
    let doctor_opts = DoctorOptions {
        now: Some(now),
        ..opts.doctor.clone()
    };
    let source_report = doctor::check(source, &doctor_opts)?;
    let failing = failing_checks(&source_report);
    if !failing.is_empty() {
        return Err(Error::CopySourceRefused {
            reason: format!("SQLite's doctor reports errors: {}", failing.join(", ")),
            names: failing,
        });
    }

    let mut client = db::connect(url)?;
    db::migrate(&mut client)?;
    let mut tx = client.transaction().map_err(from_pg)?;
    let mut non_empty = Vec::new();
    for t in storage::tables() {
        tx.batch_execute(t.lock).map_err(from_pg)?;
        let any: bool = tx.query_one(t.any_row, &[]).map_err(from_pg)?.get(0);
        if any {
            non_empty.push(t.table.to_string());
        }
    }
    if !non_empty.is_empty() {
        return Err(Error::CopyTargetNotEmpty { tables: non_empty });
    }
    tx.batch_execute(REPLICA).map_err(|e| {
        if e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
            Error::CopyPrivilege {
                detail: e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            }
        } else {
            from_pg(e)
        }
    })?;

    // the events load with their own cursors: fenced first, so a feed reading this schema
    // meanwhile never hands out a cursor this transaction may still commit under
    tx.batch_execute(storage::job_events::FENCE)
        .map_err(from_pg)?;
    let (copied, left_behind) = source.read(|conn| {
        let left_behind = sqlite_only_rows(conn, opts.skip_sqlite_only)?;
        let mut copied = Vec::new();
        for t in storage::tables() {
            let rows = copy_table(conn, &mut tx, t, progress)?;
            copied.push(TableRows {
                table: t.table.to_string(),
                rows,
            });
        }
        set_sequences(conn, &mut tx)?;
        Ok((copied, left_behind))
    })?;

    tx.batch_execute(ORIGIN).map_err(from_pg)?;
    let target = pg_doctor::check_transaction(&mut tx, now, &doctor_opts)?;
    let failing = failing_checks(&target);
    if !failing.is_empty() {
        tx.rollback().map_err(from_pg)?;
        return Err(Error::CopyVerifyFailed { checks: failing });
    }
    tx.commit().map_err(from_pg)?;
    Ok(CopyReport {
        copied,
        left_behind,
        elapsed: started.elapsed(),
        source: source_report,
        target,
    })
}

/// Triggers and foreign keys off for this transaction (restores' standard mechanism).
const REPLICA: &str = "set local session_replication_role = replica";
const ORIGIN: &str = "set local session_replication_role = origin";

/// The distinct names of the checks that found errors (warnings do not count).
fn failing_checks(report: &DoctorReport) -> Vec<String> {
    let mut names: Vec<String> = report
        .anomalies
        .iter()
        .filter(|a| a.severity == Severity::Error)
        .map(|a| a.check.to_string())
        .collect();
    names.dedup();
    names
}

/// The SQLite table a PostgreSQL table is copied from: `select * from T` of the damage
/// survey's scans (every column, in the table's order).
fn sqlite_scan(table: &str) -> Result<&'static str> {
    sqlite::table_scans()
        .find(|(t, _)| *t == table)
        .map(|(_, sql)| *sql)
        .ok_or_else(|| Error::Postgres {
            sqlstate: String::new(),
            message: format!("no SQLite table {table} to copy from"),
        })
}

/// The rows of the SQLite tables without a PostgreSQL twin: refused unless `skip`.
fn sqlite_only_rows(conn: &rusqlite::Connection, skip: bool) -> Result<Vec<TableRows>> {
    let twins: Vec<&str> = storage::tables().map(|t| t.table).collect();
    let mut found = Vec::new();
    for (table, scan) in sqlite::table_scans() {
        if twins.contains(table) || NOT_COPIED.contains(table) {
            continue;
        }
        let mut stmt = conn.prepare(scan)?;
        let mut rows = stmt.query([])?;
        let mut n = 0u64;
        while rows.next()?.is_some() {
            n += 1;
        }
        if n > 0 {
            found.push(TableRows {
                table: (*table).to_string(),
                rows: n,
            });
        }
    }
    if !found.is_empty() && !skip {
        let list: Vec<String> = found
            .iter()
            .map(|t| format!("{} ({} rows)", t.table, t.rows))
            .collect();
        return Err(Error::CopySourceRefused {
            names: found.iter().map(|t| t.table.clone()).collect(),
            reason: format!(
                "PostgreSQL has no table yet for {}; leave them behind with --skip-sqlite-only",
                list.join(", ")
            ),
        });
    }
    Ok(found)
}

/// The column list of a `copy T (a, b, c) from stdin` statement.
fn copy_columns(copy_in: &str) -> Vec<&str> {
    let open = copy_in.find('(').map_or(0, |i| i + 1);
    let close = copy_in.rfind(')').unwrap_or(copy_in.len());
    copy_in[open..close].split(',').map(str::trim).collect()
}

/// Streams one table from SQLite into PostgreSQL's `COPY ... FROM STDIN` (text format);
/// the number of rows.
fn copy_table(
    conn: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    t: &TableSql,
    progress: &mut dyn FnMut(&CopyProgress<'_>) -> Result<()>,
) -> Result<u64> {
    let mut stmt = conn.prepare(sqlite_scan(t.table)?)?;
    let theirs: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let ours = copy_columns(t.copy_in);
    if theirs != ours {
        return Err(Error::Postgres {
            sqlstate: String::new(),
            message: format!(
                "{}: the SQLite columns {theirs:?} are not the PostgreSQL columns {ours:?}",
                t.table
            ),
        });
    }
    let width = ours.len();
    let hash = ours.iter().position(|c| *c == "hash");
    let mut writer = tx.copy_in(t.copy_in).map_err(from_pg)?;
    let mut buf = Vec::with_capacity(1 << 17);
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(row) = rows.next()? {
        for i in 0..width {
            if i > 0 {
                buf.push(b'\t');
            }
            let value = row.get_ref(i)?;
            if Some(i) == hash && value == ValueRef::Null {
                return Err(Error::CopySourceRefused {
                    names: vec!["integrity_legacy".into()],
                    reason: format!(
                        "{} holds rows written before SQLite V5, without their chain hash: PostgreSQL requires every hash",
                        t.table
                    ),
                });
            }
            write_value(&mut buf, value);
        }
        buf.push(b'\n');
        n += 1;
        if buf.len() >= 1 << 16 {
            writer.write_all(&buf).map_err(copy_io)?;
            buf.clear();
        }
        if n.is_multiple_of(PROGRESS_EVERY) {
            progress(&CopyProgress {
                table: t.table,
                rows: n,
                done: false,
            })?;
        }
    }
    writer.write_all(&buf).map_err(copy_io)?;
    writer.finish().map_err(from_pg)?;
    progress(&CopyProgress {
        table: t.table,
        rows: n,
        done: true,
    })?;
    Ok(n)
}

fn copy_io(e: std::io::Error) -> Error {
    Error::Unreachable {
        detail: format!("copy stream: {e}"),
    }
}

/// One value in COPY's text format: `\N` for NULL; backslash, tab, newline and carriage
/// return escaped.
fn write_value(buf: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => buf.extend_from_slice(b"\\N"),
        ValueRef::Integer(i) => buf.extend_from_slice(i.to_string().as_bytes()),
        ValueRef::Real(f) => buf.extend_from_slice(f.to_string().as_bytes()),
        ValueRef::Text(bytes) => {
            for &b in bytes {
                match b {
                    b'\\' => buf.extend_from_slice(b"\\\\"),
                    b'\t' => buf.extend_from_slice(b"\\t"),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    b'\r' => buf.extend_from_slice(b"\\r"),
                    _ => buf.push(b),
                }
            }
        }
        // bytea's hex form, its backslash escaped for COPY's text format
        ValueRef::Blob(bytes) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.reserve(3 + 2 * bytes.len());
            buf.extend_from_slice(b"\\\\x");
            for &b in bytes {
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 15)]);
            }
        }
    }
}

/// Every identity sequence past its table's largest id and SQLite's `sqlite_sequence`.
fn set_sequences(conn: &rusqlite::Connection, tx: &mut postgres::Transaction<'_>) -> Result<()> {
    let sequences = sqlite::integrity::sequences(conn)?;
    for t in storage::tables() {
        let (seq, max) = sequences
            .iter()
            .find(|(table, _, _)| *table == t.table)
            .map_or((None, None), |(_, s, m)| (*s, *m));
        let past = seq.unwrap_or(0).max(max.unwrap_or(0));
        if past > 0 {
            tx.query_one(t.set_sequence, &[&past]).map_err(from_pg)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_postgres_table_copies_from_the_sqlite_columns_of_the_same_names() {
        let engine = Engine::open_in_memory().unwrap();
        for t in storage::tables() {
            let names: Vec<String> = engine
                .with_connection(|conn| {
                    let stmt = conn.prepare(sqlite_scan(t.table)?)?;
                    Ok(stmt.column_names().map(|c| c.to_string()).collect())
                })
                .unwrap();
            assert_eq!(names, copy_columns(t.copy_in), "{}", t.table);
        }
    }

    #[test]
    fn text_values_are_escaped_for_copy() {
        let mut buf = Vec::new();
        write_value(&mut buf, ValueRef::Text(b"a\\b\tc\nd\re"));
        assert_eq!(buf, b"a\\\\b\\tc\\nd\\re");
        buf.clear();
        write_value(&mut buf, ValueRef::Null);
        assert_eq!(buf, b"\\N");
        buf.clear();
        write_value(&mut buf, ValueRef::Blob(&[0x00, 0xab, 0x5c]));
        assert_eq!(buf, b"\\\\x00ab5c", "bytea hex, its backslash escaped");
    }
}
