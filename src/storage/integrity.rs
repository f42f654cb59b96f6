//! SQL for `integrity_legacy` (where each hash chain starts: rows written before V5 carry no
//! hash) and the `sqlite_sequence` read of doctor's `sequence` check.

use rusqlite::{named_params, Connection, OptionalExtension};

use crate::error::Result;

const LEGACY: &str = "select through_id from integrity_legacy where tbl = :tbl";
const SEQUENCE: &str = "select seq from sqlite_sequence where name = :name";

/// The last id of `tbl` written before V5 (0 when none): rows up to it carry no hash.
pub(crate) fn legacy_through(conn: &Connection, tbl: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(LEGACY)?
        .query_row(named_params! {":tbl": tbl}, |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// An AUTOINCREMENT table, its `sqlite_sequence` entry and its largest id.
pub(crate) type Sequence = (&'static str, Option<i64>, Option<i64>);

/// Every AUTOINCREMENT table with its `sqlite_sequence` entry (`None`: no entry) and its
/// largest id (`None`: empty). Each table's max-id query lives in its owner module.
pub(crate) fn sequences(conn: &Connection) -> Result<Vec<Sequence>> {
    let lists = [
        super::jobs::MAX_IDS,
        super::job_events::MAX_IDS,
        super::ingest_runs::MAX_IDS,
        super::modules::MAX_IDS,
        super::raw::MAX_IDS,
        super::schedules::MAX_IDS,
    ];
    let mut out = Vec::new();
    for (table, max_id) in lists.into_iter().flatten() {
        let seq: Option<i64> = conn
            .prepare_cached(SEQUENCE)?
            .query_row(named_params! {":name": table}, |r| r.get(0))
            .optional()?;
        let max: Option<i64> = conn.prepare_cached(max_id)?.query_row([], |r| r.get(0))?;
        out.push((*table, seq, max));
    }
    Ok(out)
}

/// This module's table read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[("integrity_legacy", "select * from integrity_legacy")];
