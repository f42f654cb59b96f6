//! SQL for `supervisor_state` on PostgreSQL: one bookkeeping row per supervisor name, the
//! twin of the SQLite module. Supervisors on several nodes under one name share the row: a
//! tick adds to it with one upsert (the update half is what the table's
//! `supervisor_state_counters_grow` rule guards), so two first ticks at once never collide.

use super::{get, opt_ts};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::pg::engine::Tx;
use crate::storage::supervisor_state::SupervisorStatus;

/// Every column of a [`SupervisorStatus`], as [`from_row`] reads them by name.
macro_rules! columns {
    () => {
        "name, last_tick_at, ticks, jobs_recovered, jobs_failed"
    };
}

/// $1 name, $2 now, $3 recovered, $4 failed
const RECORD_TICK: &str =
    "insert into supervisor_state (name, last_tick_at, ticks, jobs_recovered, jobs_failed)
     values ($1, $2, 1, $3, $4)
     on conflict (name) do update set last_tick_at = excluded.last_tick_at,
        ticks = supervisor_state.ticks + 1,
        jobs_recovered = supervisor_state.jobs_recovered + excluded.jobs_recovered,
        jobs_failed = supervisor_state.jobs_failed + excluded.jobs_failed";

/// $1 name
const STATUS: &str = concat!(
    "select ",
    columns!(),
    " from supervisor_state where name = $1"
);

/// $1 name
const CLEANUP: &str = "delete from supervisor_state where name = $1";

/// Reads one row selected with [`columns!`], by column name.
fn from_row(r: &postgres::Row) -> Result<SupervisorStatus> {
    let name: String = get(r, "supervisor_state", "?", "name")?;
    let k = name.as_str();
    Ok(SupervisorStatus {
        last_tick_at: opt_ts(r, "supervisor_state", k, "last_tick_at")?,
        ticks: get(r, "supervisor_state", k, "ticks")?,
        jobs_recovered: get(r, "supervisor_state", k, "jobs_recovered")?,
        jobs_failed: get(r, "supervisor_state", k, "jobs_failed")?,
        name,
    })
}

/// Counts one tick of supervisor `name` (creating its row on the first).
pub(crate) fn record_tick(
    tx: &mut Tx<'_>,
    name: &str,
    recovered: usize,
    failed: usize,
    now: Timestamp,
) -> Result<()> {
    let (recovered, failed) = (recovered as i64, failed as i64);
    tx.execute(RECORD_TICK, &[&name, &now.to_string(), &recovered, &failed])?;
    Ok(())
}

/// The bookkeeping row of supervisor `name`, if any.
pub(crate) fn status(tx: &mut Tx<'_>, name: &str) -> Result<Option<SupervisorStatus>> {
    tx.query_opt(STATUS, &[&name])?
        .map(|r| from_row(&r))
        .transpose()
}

/// Deletes the row of supervisor `name`; whether there was one.
pub(crate) fn cleanup(tx: &mut Tx<'_>, name: &str) -> Result<bool> {
    Ok(tx.execute(CLEANUP, &[&name])? == 1)
}

// ---- doctor checks and copy

use super::{err, Bind, PgCheck, TableSql, NO_IDENTITY, NO_IDENTITY_SET};

const SUPERVISOR_ROWS: &str = "select name, d from (select name, case
       when coalesce(last_tick_at, '2000-01-01T00:00:00.000Z') !~ $1::text then 'last_tick_at is not fixed-width utc text'
       when ticks < 0 or jobs_recovered < 0 or jobs_failed < 0 then 'a negative counter'
     end as d from supervisor_state) t where d is not null";

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[err(
    "timestamps",
    "supervisor_state",
    SUPERVISOR_ROWS,
    &[Bind::Ts],
)];

/// This module's table, for copy and doctor.
pub(crate) const TABLES: &[TableSql] = &[TableSql {
    table: "supervisor_state",
    any_row: "select exists (select 1 from supervisor_state)",
    lock: "lock table supervisor_state in exclusive mode",
    copy_in:
        "copy supervisor_state (name, last_tick_at, ticks, jobs_recovered, jobs_failed) from stdin",
    sequence: NO_IDENTITY,
    set_sequence: NO_IDENTITY_SET,
}];

// ---- the Trust UI's bounded read (the twin of the SQLite module's `UI_SUPERVISORS`)

/// No parameters. SQLite sorts NULL below every value, so `desc` puts it last there; here
/// `nulls last` says so.
#[cfg(feature = "http")]
const UI_SUPERVISORS: &str = concat!(
    "select ",
    columns!(),
    " from supervisor_state order by last_tick_at desc nulls last, name limit 10"
);

/// Every supervisor's bookkeeping, newest tick first (at most 10).
#[cfg(feature = "http")]
pub(crate) fn ui_supervisors(tx: &mut Tx<'_>) -> Result<Vec<crate::storage::ui::SupervisorTick>> {
    tx.query(UI_SUPERVISORS, &[])?
        .iter()
        .map(|r| {
            let s = from_row(r)?;
            Ok(crate::storage::ui::SupervisorTick {
                name: s.name,
                last_tick_at: s.last_tick_at,
                ticks: s.ticks,
                jobs_recovered: s.jobs_recovered,
                jobs_failed: s.jobs_failed,
            })
        })
        .collect()
}
