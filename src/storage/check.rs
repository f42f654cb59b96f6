//! What a table's doctor check is: a query listing `(row_id, detail)` per offending row.
//! Each table module restates its rows' rules (written once in the migrations' DDL, once in
//! Rust) as such queries in its `CHECKS`; `doctor` collects and runs them.

use serde::Serialize;

/// How bad an anomaly is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A broken invariant or damaged file.
    Error,
    /// Work left for a sweeper (expired lease, stale heartbeat, stuck claim).
    Warning,
}

serde_display!(Severity);

/// One SQL check: a query returning `(row_id, detail)` per anomaly. It may bind any of the
/// named values `doctor` offers (`:now`, `:ts`, `:job_states`...).
#[derive(Debug)]
pub(crate) struct Check {
    /// The check's name (several tables may share one, such as `state`).
    pub name: &'static str,
    /// How bad its findings are.
    pub severity: Severity,
    /// The table it reads.
    pub table: &'static str,
    /// The query.
    pub sql: &'static str,
}

/// A check whose findings are errors.
pub(crate) const fn err(name: &'static str, table: &'static str, sql: &'static str) -> Check {
    Check {
        name,
        severity: Severity::Error,
        table,
        sql,
    }
}

/// A check whose findings are warnings.
pub(crate) const fn warn(name: &'static str, table: &'static str, sql: &'static str) -> Check {
    Check {
        name,
        severity: Severity::Warning,
        table,
        sql,
    }
}
