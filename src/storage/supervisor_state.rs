//! SQL for `supervisor_state`: one bookkeeping row per supervisor name.

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::clock::Timestamp;
use crate::error::Result;

/// A supervisor's bookkeeping, as stored in `supervisor_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupervisorStatus {
    /// Its name.
    pub name: String,
    /// Its last tick, if it ever ticked.
    pub last_tick_at: Option<Timestamp>,
    /// Ticks so far.
    pub ticks: i64,
    /// Jobs it paused or requeued.
    pub jobs_recovered: i64,
    /// Jobs it failed (STALLED or RECOVERY_EXHAUSTED).
    pub jobs_failed: i64,
}

/// Every column of a [`SupervisorStatus`], the one list [`from_row`] reads by name.
macro_rules! columns {
    () => {
        "name, last_tick_at, ticks, jobs_recovered, jobs_failed"
    };
}

// Update, else insert: the table refuses any INSERT of an existing name (so a REPLACE can
// never reset the counters), which also refuses an upsert's insert half.
const RECORD_TICK: &str = "update supervisor_state set last_tick_at = :now, ticks = ticks + 1,
        jobs_recovered = jobs_recovered + :recovered, jobs_failed = jobs_failed + :failed
     where name = :name";
const FIRST_TICK: &str =
    "insert into supervisor_state (name, last_tick_at, ticks, jobs_recovered, jobs_failed)
     values (:name, :now, 1, :recovered, :failed)";
const STATUS: &str = concat!(
    "select ",
    columns!(),
    " from supervisor_state where name = :name"
);
const CLEANUP: &str = "delete from supervisor_state where name = :name";

/// Reads one row selected with [`columns!`], by column name.
fn from_row(r: &Row<'_>) -> rusqlite::Result<SupervisorStatus> {
    Ok(SupervisorStatus {
        name: r.get("name")?,
        last_tick_at: r.get("last_tick_at")?,
        ticks: r.get("ticks")?,
        jobs_recovered: r.get("jobs_recovered")?,
        jobs_failed: r.get("jobs_failed")?,
    })
}

/// Counts one tick of supervisor `name` (creating its row on the first).
pub(crate) fn record_tick(
    conn: &Connection,
    name: &str,
    recovered: usize,
    failed: usize,
    now: Timestamp,
) -> Result<()> {
    let tick = named_params! {
        ":name": name, ":now": now, ":recovered": recovered as i64, ":failed": failed as i64,
    };
    if conn.prepare_cached(RECORD_TICK)?.execute(tick)? == 0 {
        conn.prepare_cached(FIRST_TICK)?.execute(tick)?;
    }
    Ok(())
}

/// The bookkeeping row of supervisor `name`, if any.
pub(crate) fn status(conn: &Connection, name: &str) -> Result<Option<SupervisorStatus>> {
    Ok(conn
        .prepare_cached(STATUS)?
        .query_row(named_params! {":name": name}, from_row)
        .optional()?)
}

/// Deletes the row of supervisor `name`; whether there was one.
pub(crate) fn cleanup(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(CLEANUP)?
        .execute(named_params! {":name": name})?
        == 1)
}

// ---- the Trust UI's bounded reads (index-ordered LIMITs, capped counts)

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_SUPERVISORS: &str =
    "select name, last_tick_at, ticks, jobs_recovered, jobs_failed
     from supervisor_state order by last_tick_at desc, name limit 10";
/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[("supervisor_state", "select * from supervisor_state")];
