//! `runbook.pg.sql`, embedded: the PostgreSQL twin of [`crate::runbook`], the same named
//! queries answering the same questions, run on a [`PgEngine`] in a read-only transaction
//! (the CLI's `runbook` on `--db postgres://`). The file runs as is in `psql` too.

use std::sync::OnceLock;

use postgres::types::Type;
use postgres::SimpleQueryMessage;
use serde_json::Value;

use super::engine::PgEngine;
use super::error::from_pg;
use crate::error::Result;
use crate::runbook::{parse, Query, QueryResult};

/// The text of `runbook.pg.sql` at the repository root.
pub const RUNBOOK_PG_SQL: &str = include_str!("../../runbook.pg.sql");

/// The queries of the embedded `runbook.pg.sql`, in file order.
pub fn queries() -> &'static [Query] {
    static QUERIES: OnceLock<Vec<Query>> = OnceLock::new();
    QUERIES.get_or_init(|| parse(RUNBOOK_PG_SQL).expect("runbook.pg.sql parses (tested)"))
}

/// The embedded query called `name`.
pub fn query(name: &str) -> Result<&'static Query> {
    crate::runbook::find(queries(), name)
}

/// Runs the embedded query `name` on `engine`, in a read-only transaction. Values are typed
/// as on SQLite: integers and floats as numbers, JSON as JSON, booleans as booleans,
/// everything else as its text.
pub fn run(engine: &PgEngine, name: &str) -> Result<QueryResult> {
    let sql = &query(name)?.sql;
    engine.read(|tx| {
        let tx = tx.raw();
        // the statement's column types, then its rows as text (one execution)
        let types: Vec<Type> = tx
            .prepare(sql)
            .map_err(from_pg)?
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        for message in tx.simple_query(sql).map_err(from_pg)? {
            match message {
                SimpleQueryMessage::RowDescription(cols) => {
                    columns = cols.iter().map(|c| c.name().to_string()).collect();
                }
                SimpleQueryMessage::Row(row) => {
                    if columns.is_empty() {
                        columns = row.columns().iter().map(|c| c.name().to_string()).collect();
                    }
                    rows.push(
                        (0..row.len())
                            .map(|i| typed(row.get(i), types.get(i)))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        Ok(QueryResult { columns, rows })
    })
}

/// A value in PostgreSQL's text form as JSON, by its column's type.
fn typed(text: Option<&str>, ty: Option<&Type>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    let as_text = || Value::from(text);
    match ty {
        Some(t) if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(t) => {
            text.parse::<i64>().map_or_else(|_| as_text(), Value::from)
        }
        Some(t) if [Type::FLOAT4, Type::FLOAT8, Type::NUMERIC].contains(t) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(as_text, Value::Number),
        Some(&Type::BOOL) => Value::from(text == "t"),
        Some(t) if [Type::JSON, Type::JSONB].contains(t) => {
            serde_json::from_str(text).unwrap_or_else(|_| as_text())
        }
        _ => as_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twin_names_the_same_queries_as_runbook_sql() {
        let names = |qs: &[Query]| qs.iter().map(|q| q.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(queries()), names(crate::runbook::queries()));
    }

    #[test]
    fn text_values_are_typed_by_their_column() {
        assert_eq!(typed(Some("42"), Some(&Type::INT8)), Value::from(42));
        assert_eq!(typed(Some("1.5"), Some(&Type::NUMERIC)), Value::from(1.5));
        assert_eq!(typed(Some("t"), Some(&Type::BOOL)), Value::from(true));
        assert_eq!(
            typed(Some("[1, 2]"), Some(&Type::JSONB)),
            serde_json::json!([1, 2])
        );
        assert_eq!(typed(Some("x"), Some(&Type::TEXT)), Value::from("x"));
        assert_eq!(typed(None, Some(&Type::INT8)), Value::Null);
    }
}
