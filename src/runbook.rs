//! The operators' `runbook.sql`, embedded: named queries that run as they are in a stock
//! `sqlite3` shell, and here through [`run`].

use std::sync::OnceLock;

use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::Value;

use crate::error::{Error, Result};

/// The text of `runbook.sql` at the repository root.
pub const RUNBOOK_SQL: &str = include_str!("../runbook.sql");

/// One named query of the runbook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Query {
    /// Its name (`latest_runs`).
    pub name: String,
    /// When to use it (the comment lines after the name).
    pub comment: String,
    /// The SQL, as written in the file.
    pub sql: String,
}

/// The rows a query returned.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// One array of values per row (blobs as `"<blob N bytes>"`).
    pub rows: Vec<Vec<Value>>,
}

/// Parses runbook text: each query starts at a `-- name: <name>` line, continues with its
/// `-- ` comment lines, then its SQL up to the next name. Text before the first name is a
/// header. Refuses a query without a comment or SQL, and duplicate names.
pub fn parse(text: &str) -> Result<Vec<Query>> {
    let mut out: Vec<Query> = Vec::new();
    let mut in_comment = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- name:") {
            let name = name.trim();
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(Error::invalid(
                    "runbook",
                    format!("bad query name {name:?}"),
                ));
            }
            if out.iter().any(|q| q.name == name) {
                return Err(Error::invalid(
                    "runbook",
                    format!("query {name} is defined twice"),
                ));
            }
            out.push(Query {
                name: name.to_string(),
                comment: String::new(),
                sql: String::new(),
            });
            in_comment = true;
            continue;
        }
        let Some(q) = out.last_mut() else { continue };
        match line.strip_prefix("--") {
            Some(c) if in_comment => {
                if !q.comment.is_empty() {
                    q.comment.push(' ');
                }
                q.comment.push_str(c.trim());
            }
            _ => {
                in_comment = false;
                q.sql.push_str(line);
                q.sql.push('\n');
            }
        }
    }
    for q in &mut out {
        q.sql = q.sql.trim().to_string();
        if q.comment.is_empty() || q.sql.is_empty() {
            return Err(Error::invalid(
                "runbook",
                format!("query {} needs a comment line and SQL", q.name),
            ));
        }
    }
    Ok(out)
}

/// The queries of the embedded `runbook.sql`, in file order.
pub fn queries() -> &'static [Query] {
    static QUERIES: OnceLock<Vec<Query>> = OnceLock::new();
    QUERIES.get_or_init(|| parse(RUNBOOK_SQL).expect("runbook.sql parses (tested)"))
}

/// The embedded query called `name`.
pub fn query(name: &str) -> Result<&'static Query> {
    find(queries(), name)
}

/// The query called `name` in `queries` (`NOT_FOUND` otherwise): this runbook's or its
/// PostgreSQL twin's.
pub(crate) fn find<'q>(queries: &'q [Query], name: &str) -> Result<&'q Query> {
    queries
        .iter()
        .find(|q| q.name == name)
        .ok_or_else(|| Error::not_found("runbook query", name))
}

/// Runs the embedded query `name` on `conn` (read-only use; see
/// [`Engine::with_connection`](crate::Engine::with_connection)).
pub fn run(conn: &Connection, name: &str) -> Result<QueryResult> {
    run_sql(conn, &query(name)?.sql)
}

/// Runs one SQL query and returns its rows as JSON values.
pub fn run_sql(conn: &Connection, sql: &str) -> Result<QueryResult> {
    let mut stmt = conn.prepare(sql)?;
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut rows = Vec::new();
    let mut cursor = stmt.query([])?;
    while let Some(row) = cursor.next()? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::from(v),
                ValueRef::Real(v) => Value::from(v),
                ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::from(format!("<blob {} bytes>", b.len())),
            });
        }
        rows.push(vals);
    }
    Ok(QueryResult { columns, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_runbook_parses_with_the_design_queries_first() {
        let names: Vec<&str> = queries().iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            &names[..3],
            ["latest_runs", "blocked_failures", "health_summary"]
        );
        assert!(queries()
            .iter()
            .all(|q| !q.comment.is_empty() && q.sql.ends_with(';')));
    }

    #[test]
    fn malformed_runbooks_are_refused() {
        for bad in [
            "-- name: a\nselect 1;",
            "-- name: a\n-- c\n",
            "-- name: A b\n-- c\nselect 1;",
            "-- name: a\n-- c\nselect 1;\n-- name: a\n-- c\nselect 2;",
        ] {
            assert_eq!(parse(bad).unwrap_err().code(), "INVALID_INPUT", "{bad}");
        }
        let ok = parse("-- header\n-- name: a\n-- when\n-- more\nselect 1;\n").unwrap();
        assert_eq!(ok[0].comment, "when more");
        assert_eq!(ok[0].sql, "select 1;");
    }
}
