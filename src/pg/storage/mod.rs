//! The PostgreSQL storage layer: the only place in `src/pg/` where SQL names a table. One
//! module per table (or tight group), each with its DML as named constants (positional
//! `$n` parameters, listed in each constant's comment: the `postgres` client has no named
//! parameters) and one row mapper per row type. The test `one_owner_per_table` scans these
//! files against their own owner table (`PG_OWNERS`).

pub(crate) mod ingest_runs;
pub(crate) mod job_events;
pub(crate) mod jobs;
pub(crate) mod listeners;
pub(crate) mod modules;
pub(crate) mod raw;
pub(crate) mod schedules;
pub(crate) mod supervisor_state;

use postgres::types::FromSql;
use postgres::Row;

use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// Reads column `column` of `row` (of `table`, key `id`); a value that cannot be decoded is
/// [`Error::CorruptRow`], as with SQLite.
pub(crate) fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    table: &'static str,
    id: &str,
    column: &str,
) -> Result<T> {
    row.try_get(column)
        .map_err(|e| corrupt(table, id, column, e.to_string()))
}

/// Parses canonical timestamp text through `Timestamp`'s serde form (the text form every
/// version of `Timestamp` reads, whatever its `parse` returns).
fn parse_ts(text: &str) -> Option<Timestamp> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).ok()
}

/// A canonical timestamp column.
pub(crate) fn ts(row: &Row, table: &'static str, id: &str, column: &str) -> Result<Timestamp> {
    let text: String = get(row, table, id, column)?;
    parse_ts(&text).ok_or_else(|| {
        corrupt(
            table,
            id,
            column,
            format!("{text:?} is not a canonical timestamp"),
        )
    })
}

/// A nullable canonical timestamp column.
pub(crate) fn opt_ts(
    row: &Row,
    table: &'static str,
    id: &str,
    column: &str,
) -> Result<Option<Timestamp>> {
    let text: Option<String> = get(row, table, id, column)?;
    text.map(|t| {
        parse_ts(&t).ok_or_else(|| {
            corrupt(
                table,
                id,
                column,
                format!("{t:?} is not a canonical timestamp"),
            )
        })
    })
    .transpose()
}

/// A text column holding one of a text enum's values.
pub(crate) fn parsed<T: std::str::FromStr>(
    row: &Row,
    table: &'static str,
    id: &str,
    column: &str,
) -> Result<T> {
    let text: String = get(row, table, id, column)?;
    text.parse()
        .map_err(|_| corrupt(table, id, column, format!("unknown value {text:?}")))
}

pub(crate) fn corrupt(table: &'static str, id: &str, column: &str, reason: String) -> Error {
    Error::CorruptRow {
        table,
        id: id.to_string(),
        column: column.to_string(),
        reason,
    }
}

// ---- what doctor and copy know of each table

pub(crate) use crate::storage::check::Severity;

/// A value a doctor check binds, in the order its `binds` lists them (`$1`, `$2`...).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bind {
    /// The instant leases are judged against (text).
    Now,
    /// A heartbeat older than this is stale (text).
    StaleBefore,
    /// A claim older than this is stuck (text).
    ClaimBefore,
    /// [`crate::events::BACKLOG`] (bigint).
    Backlog,
    /// The canonical timestamp shape, a regular expression (text).
    Ts,
    /// The job machine's states (text[]).
    JobStates,
    /// The run machine's statuses (text[]).
    RunStatuses,
    /// A run's scopes (text[]).
    Scopes,
    /// A run's trigger kinds (text[]).
    Triggers,
    /// The slot machine's statuses (text[]).
    SlotStatuses,
    /// The misfire policies (text[]).
    Misfires,
}

/// One doctor row check: a query listing `(row_id text, detail text)` per offending row.
#[derive(Debug)]
pub(crate) struct PgCheck {
    /// The check's name (shared with SQLite's doctor where the rule is the same).
    pub name: &'static str,
    /// How bad its findings are.
    pub severity: Severity,
    /// The table it reads.
    pub table: &'static str,
    /// The query.
    pub sql: &'static str,
    /// What `$1`, `$2`... are.
    pub binds: &'static [Bind],
}

pub(crate) const fn err(
    name: &'static str,
    table: &'static str,
    sql: &'static str,
    binds: &'static [Bind],
) -> PgCheck {
    PgCheck {
        name,
        severity: Severity::Error,
        table,
        sql,
        binds,
    }
}

pub(crate) const fn warn(
    name: &'static str,
    table: &'static str,
    sql: &'static str,
    binds: &'static [Bind],
) -> PgCheck {
    PgCheck {
        name,
        severity: Severity::Warning,
        table,
        sql,
        binds,
    }
}

/// Every table's row checks.
pub(crate) fn checks() -> impl Iterator<Item = &'static PgCheck> {
    [
        jobs::CHECKS,
        job_events::CHECKS,
        ingest_runs::CHECKS,
        schedules::CHECKS,
        supervisor_state::CHECKS,
        modules::CHECKS,
        raw::CHECKS,
    ]
    .into_iter()
    .flatten()
}

/// What copy and doctor run on one table as a whole.
#[derive(Debug)]
pub(crate) struct TableSql {
    /// The table.
    pub table: &'static str,
    /// `select exists (select 1 from T)`.
    pub any_row: &'static str,
    /// `lock table T in exclusive mode`: no other writer until the copy commits.
    pub lock: &'static str,
    /// `copy T (columns) from stdin`: every column, ids included (COPY writes identity
    /// columns as given).
    pub copy_in: &'static str,
    /// The largest id (0 when empty) and the identity sequence's last value (0 when none
    /// was handed out).
    pub sequence: &'static str,
    /// Moves the identity sequence to `$1` (the next id is `$1 + 1`).
    pub set_sequence: &'static str,
}

/// [`TableSql::sequence`] of a table without an identity column (keyed by a name or a
/// hash): nothing to compare, the answer is `(0, 0)`.
pub(crate) const NO_IDENTITY: &str = "select 0::bigint, 0::bigint";
/// [`TableSql::set_sequence`] of a table without an identity column: copy never calls it
/// (only SQLite's AUTOINCREMENT tables have a sequence to carry over); it changes nothing.
pub(crate) const NO_IDENTITY_SET: &str = "select $1::bigint";

/// Every table of the PostgreSQL schema, parents before children.
pub(crate) fn tables() -> impl Iterator<Item = &'static TableSql> {
    [
        jobs::TABLES,
        job_events::TABLES,
        ingest_runs::TABLES,
        schedules::TABLES,
        supervisor_state::TABLES,
        modules::TABLES,
        raw::TABLES,
    ]
    .into_iter()
    .flatten()
}
