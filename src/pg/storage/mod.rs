//! The PostgreSQL storage layer: the only place in `src/pg/` where SQL names a table. One
//! module per table (or tight group), each with its DML as named constants (positional
//! `$n` parameters, listed in each constant's comment: the `postgres` client has no named
//! parameters) and one row mapper per row type. The test `one_owner_per_table` scans these
//! files against their own owner table (`PG_OWNERS`).

pub(crate) mod ingest_runs;
pub(crate) mod job_events;
pub(crate) mod jobs;
pub(crate) mod schedules;

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
