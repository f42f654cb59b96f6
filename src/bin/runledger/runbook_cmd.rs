//! `runbook` (the named queries of runbook.sql with their comments) and `runbook NAME`.

use clap::Args;
use runledger::runbook::{self, QueryResult};
use runledger::Engine;
use serde_json::Value;

use crate::output::{clip, CliResult, Out, Table};

/// `runbook` arguments.
#[derive(Debug, Args)]
pub struct RunbookArgs {
    /// The query to run; without it, list the queries.
    name: Option<String>,
}

pub fn runbook(engine: &Engine, out: Out, args: RunbookArgs) -> CliResult {
    show(runbook::queries(), out, args, |name| {
        engine.with_connection(|c| runbook::run(c, name))
    })
}

/// `runbook` over `queries`, running one by `run` (a file's runbook.sql, or runbook.pg.sql
/// on a PostgreSQL ledger).
pub fn show(
    queries: &[runbook::Query],
    out: Out,
    args: RunbookArgs,
    run: impl FnOnce(&str) -> runledger::Result<QueryResult>,
) -> CliResult {
    let Some(name) = args.name else {
        let mut t = Table::new(&["name", "when to use it"]);
        for q in queries {
            t.row(vec![q.name.clone(), clip(&q.comment, 110)]);
        }
        out.listing(&t, queries);
        return Ok(());
    };
    let result = run(&name)?;
    out.listing(&result_table(&result), &result);
    Ok(())
}

/// A query result as a table (JSON values unquoted, null as `-`).
pub fn result_table(r: &QueryResult) -> Table {
    let headers: Vec<&str> = r.columns.iter().map(String::as_str).collect();
    let mut t = Table::new(&headers);
    for row in &r.rows {
        t.row(
            row.iter()
                .map(|v| match v {
                    Value::Null => "-".to_string(),
                    Value::String(s) => clip(s, 80),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    t
}
