//! What doctor can still tell about a damaged file (issue 13, item 4).
//!
//! On a file with an overwritten or truncated page, `PRAGMA integrity_check` and the row
//! checks may themselves fail with `SQLITE_CORRUPT`. Doctor then reports the damage instead
//! of failing: the cause (with SQLite's extended code), which tables still read to the end
//! and which stop (after how many rows), and what to do.

use rusqlite::Connection;
use serde::Serialize;

use super::{Anomaly, Severity};
use crate::error::Error;

/// What an operator should do with a damaged file.
pub const ADVICE: &str = "stop every process using the file; restore the newest backup \
(`runledger backup` writes one), or salvage what still reads with \
`sqlite3 DAMAGED.db .recover | sqlite3 SALVAGED.db`, then run doctor on the result";

/// One table's full scan on a damaged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRead {
    /// The table.
    pub table: &'static str,
    /// Rows read before the end or the first failure.
    pub rows: u64,
    /// Whether every row read.
    pub readable: bool,
    /// The failure, when one stopped the scan.
    pub error: Option<String>,
}

/// What doctor found on a file it could not check in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The first failure, with its code (`CORRUPT`, `NOT_A_DATABASE`, `IO_ERROR`).
    pub cause: String,
    /// Every table of the schema, scanned row by row.
    pub tables: Vec<TableRead>,
    /// What to do (see [`ADVICE`]).
    pub advice: &'static str,
}

/// Whether `e` means the file itself is damaged, so doctor reports instead of failing.
pub fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::NotADatabase | Error::DiskIo { .. }
    )
}

/// Whether an `integrity_check` line is damage to the file's structure (pages, b-trees,
/// indexes), not a row that breaks a CHECK or NOT NULL rule (which doctor's row checks
/// report on their own).
pub fn is_physical(integrity_line: &str) -> bool {
    !(integrity_line.starts_with("CHECK constraint failed")
        || integrity_line.starts_with("NULL value in")
        || integrity_line.starts_with("NOT NULL constraint failed"))
}

/// Full scans (every column of every row, so overflow pages are read too) of the tables
/// no storage module owns; each table's own scan lives with its owner
/// (`storage::table_scans`). Names are fixed: no SQL is built from text.
const SCHEMA_SCANS: &[(&str, &str)] = &[
    ("sqlite_master", "select * from sqlite_master"),
    (
        "refinery_schema_history",
        "select * from refinery_schema_history",
    ),
];

/// The schema's own tables, then every table's scan from its owner in `storage`.
pub(crate) fn table_scans() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    SCHEMA_SCANS.iter().chain(crate::storage::table_scans())
}

fn scan(conn: &Connection, table: &'static str, sql: &str) -> TableRead {
    let mut rows = 0;
    let result = (|| -> rusqlite::Result<()> {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        let mut q = stmt.query([])?;
        while let Some(row) = q.next()? {
            for i in 0..n {
                row.get_ref(i)?;
            }
            rows += 1;
        }
        Ok(())
    })();
    let error = result.err().map(|e| {
        let e = Error::from(e);
        format!("{} [{}]", e, e.code())
    });
    TableRead {
        table,
        rows,
        readable: error.is_none(),
        error,
    }
}

/// Surveys a damaged file: integrity rows as far as they go, then every table's scan.
/// Returns the anomalies to report and the survey.
pub(crate) fn survey(conn: &Connection, cause: &Error) -> (Vec<Anomaly>, Damage) {
    let mut found = vec![Anomaly {
        check: "damage",
        severity: Severity::Error,
        table: String::new(),
        row_id: None,
        detail: format!("the file is damaged ({cause} [{}]): {ADVICE}", cause.code()),
    }];
    // integrity_check may report some pages and then raise: keep what it said.
    let integrity = super::integrity(conn, &mut found);
    if let Err(e) = integrity {
        found.push(Anomaly {
            check: "integrity",
            severity: Severity::Error,
            table: String::new(),
            row_id: None,
            detail: format!("integrity_check stopped: {e} [{}]", e.code()),
        });
    }
    let tables: Vec<TableRead> = table_scans()
        .map(|&(table, sql)| scan(conn, table, sql))
        .collect();
    for t in tables.iter().filter(|t| !t.readable) {
        found.push(Anomaly {
            check: "table_read",
            severity: Severity::Error,
            table: t.table.to_string(),
            row_id: None,
            detail: format!(
                "stops after {} row(s): {}",
                t.rows,
                t.error.as_deref().unwrap_or_default()
            ),
        });
    }
    let damage = Damage {
        cause: format!("{cause} [{}]", cause.code()),
        tables,
        advice: ADVICE,
    };
    (found, damage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, DbOptions};

    #[test]
    fn the_scans_cover_every_table_the_migrations_create() {
        let conn = db::open_in_memory(&DbOptions::default()).unwrap();
        let mut stmt = conn
            .prepare("select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name")
            .unwrap();
        let mut names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        names.push("sqlite_master".into());
        names.sort();
        let mut scanned: Vec<&str> = table_scans().map(|t| t.0).collect();
        scanned.sort();
        assert_eq!(names, scanned);
        for &(table, sql) in table_scans() {
            assert!(scan(&conn, table, sql).readable, "{table}");
        }
    }
}
