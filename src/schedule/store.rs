//! SQL for `schedules` and `due_runs`: named-constant statements, `prepare_cached`, named
//! parameters, and `now` always passed in. No policy lives here: the facade in
//! [`super`] and the tick in [`super::tick`] decide, this module reads and writes rows.

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::rule::{Rule, Zone};
use super::state::SlotStatus;
use super::{Misfire, Schedule, Slot};
use crate::clock::Timestamp;
use crate::error::{Error, Result};

const INSERT_SCHEDULE: &str = "
    insert into schedules (name, pipeline, scope, rule, zone, enabled, misfire,
                           last_due_at, next_due_at, created_at, updated_at)
    values (:name, :pipeline, :scope, :rule, :zone, :enabled, :misfire,
            null, :next_due_at, :now, :now)";

const SELECT_SCHEDULE_BY_NAME: &str = "
    select id, name, pipeline, scope, rule, zone, enabled, misfire,
           last_due_at, next_due_at, created_at, updated_at
    from schedules where name = :name";

const SELECT_SCHEDULE_BY_ID: &str = "
    select id, name, pipeline, scope, rule, zone, enabled, misfire,
           last_due_at, next_due_at, created_at, updated_at
    from schedules where id = :id";

const SELECT_SCHEDULES: &str = "
    select id, name, pipeline, scope, rule, zone, enabled, misfire,
           last_due_at, next_due_at, created_at, updated_at
    from schedules order by name";

/// The tick's first query; served by the partial index `schedules_due`.
const SELECT_DUE_SCHEDULES: &str = "
    select id, name, pipeline, scope, rule, zone, enabled, misfire,
           last_due_at, next_due_at, created_at, updated_at
    from schedules
    where enabled = 1 and next_due_at is not null and next_due_at <= :now
    order by next_due_at, id";

const SELECT_NEXT_DUE: &str = "
    select min(next_due_at) from schedules
    where enabled = 1 and next_due_at is not null";

const UPDATE_SCHEDULE_CONFIG: &str = "
    update schedules
    set pipeline = :pipeline, scope = :scope, rule = :rule, zone = :zone, misfire = :misfire,
        next_due_at = :next_due_at, updated_at = max(:now, created_at)
    where id = :id";

const UPDATE_SCHEDULE_ENABLED: &str = "
    update schedules
    set enabled = :enabled, next_due_at = :next_due_at, updated_at = max(:now, created_at)
    where id = :id";

const UPDATE_SCHEDULE_CURSOR: &str = "
    update schedules set last_due_at = :last_due_at, next_due_at = :next_due_at
    where id = :id";

const DELETE_SCHEDULE: &str = "delete from schedules where id = :id";

const INSERT_SLOT: &str = "
    insert into due_runs (schedule_id, due_at, status, created_at)
    values (:schedule_id, :due_at, 'pending', :now)";

const SELECT_ALL_SLOTS: &str = "
    select d.id, s.name, d.schedule_id, d.due_at, d.status, d.created_at, d.claimed_at,
           d.claimed_by, d.finished_at, d.run_ids, d.outcome_code, d.outcome_message
    from due_runs d join schedules s on s.id = d.schedule_id
    order by d.due_at, d.id";

const SELECT_SLOT: &str = "
    select d.id, s.name, d.schedule_id, d.due_at, d.status, d.created_at, d.claimed_at,
           d.claimed_by, d.finished_at, d.run_ids, d.outcome_code, d.outcome_message
    from due_runs d join schedules s on s.id = d.schedule_id
    where d.id = :id";

const SELECT_SLOTS_OF_SCHEDULE: &str = "
    select d.id, s.name, d.schedule_id, d.due_at, d.status, d.created_at, d.claimed_at,
           d.claimed_by, d.finished_at, d.run_ids, d.outcome_code, d.outcome_message
    from due_runs d join schedules s on s.id = d.schedule_id
    where d.schedule_id = :schedule_id
    order by d.due_at";

/// The claim query, exactly as the partial index `due_runs_claim` is shaped.
const SELECT_CLAIMABLE: &str = "
    select id, schedule_id, due_at from due_runs
    where status = 'pending' and due_at <= :now
    order by due_at, id";

const SELECT_PENDING_OF_SCHEDULE: &str = "
    select id from due_runs
    where schedule_id = :schedule_id and status = 'pending'
    order by due_at";

/// The abandoned-claim sweep; served by the partial index `due_runs_claimed`.
const SELECT_ABANDONED: &str = "
    select id from due_runs
    where status = 'claimed' and claimed_at < :cutoff
    order by claimed_at, id";

/// Guarded claim: only a pending slot can be claimed, by exactly one ticker.
const CLAIM_SLOT: &str = "
    update due_runs set status = 'claimed', claimed_at = :now, claimed_by = :ticker
    where id = :id and status = 'pending'";

/// Guarded skip of a slot nobody claimed. A clock behind the row's creation time is
/// clamped so that the row's own time order holds.
const SKIP_PENDING_SLOT: &str = "
    update due_runs
    set status = 'skipped', finished_at = max(:now, created_at),
        outcome_code = :code, outcome_message = :message
    where id = :id and status = 'pending'";

/// Guarded finish: only the ticker holding the claim records the outcome.
const FINISH_CLAIMED_SLOT: &str = "
    update due_runs
    set status = :status, finished_at = max(:now, claimed_at), run_ids = :run_ids,
        outcome_code = :code, outcome_message = :message
    where id = :id and status = 'claimed' and claimed_by = :ticker";

/// The runs started for a slot (each names it in `meta_json.slotId`, written in the run's
/// own start transaction), and whether each was a lock refusal.
const SLOT_RUNS: &str = "
    select id, coalesce(json_extract(meta_json, '$.blockedStage') = 'lock', 0) from ingest_runs
    where json_extract(meta_json, '$.slotId') = :id
    order by id";

/// The recovery's finish of a timed-out claim that runs name, whoever holds it.
const FINISH_TIMED_OUT_SLOT: &str = "
    update due_runs
    set status = :status, finished_at = max(:now, claimed_at), run_ids = :run_ids,
        outcome_code = :code, outcome_message = :message
    where id = :id and status = 'claimed' and claimed_at < :cutoff";

/// Gives a timed-out claim back (no run names its slot): another ticker fires it.
const GIVE_BACK_SLOT: &str = "
    update due_runs set status = 'pending', claimed_at = NULL, claimed_by = NULL
    where id = :id and status = 'claimed' and claimed_at < :cutoff";

/// The fence of a run started for a slot: the slot is still this claim's.
const HOLDS_CLAIM: &str = "
    select exists(select 1 from due_runs
                  where id = :id and status = 'claimed' and claimed_by = :ticker
                    and claimed_at = :claimed_at)";

/// The validated values of a new schedule.
pub(crate) struct ScheduleRow<'a> {
    pub name: &'a str,
    pub pipeline: &'a str,
    pub scope: &'a str,
    pub rule: &'a Rule,
    pub zone: &'a Zone,
    pub enabled: bool,
    pub misfire: Misfire,
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let text = |i: usize| -> rusqlite::Result<String> { row.get(i) };
    let parse_err = |i: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    Ok(Schedule {
        id: row.get(0)?,
        name: text(1)?,
        pipeline: text(2)?,
        scope: text(3)?,
        rule: text(4)?.parse().map_err(|e| parse_err(4, e))?,
        zone: Zone::new(&text(5)?).map_err(|e| parse_err(5, e))?,
        enabled: row.get(6)?,
        misfire: text(7)?.parse().map_err(|e| parse_err(7, e))?,
        last_due_at: row.get(8)?,
        next_due_at: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn slot_from_row(row: &Row<'_>) -> rusqlite::Result<Slot> {
    let run_ids: String = row.get(9)?;
    let run_ids: Vec<i64> = serde_json::from_str(&run_ids).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Slot {
        id: row.get(0)?,
        schedule: row.get(1)?,
        schedule_id: row.get(2)?,
        due_at: row.get(3)?,
        status: row.get(4)?,
        created_at: row.get(5)?,
        claimed_at: row.get(6)?,
        claimed_by: row.get(7)?,
        finished_at: row.get(8)?,
        run_ids,
        outcome_code: row.get(10)?,
        outcome_message: row.get(11)?,
    })
}

pub(crate) fn insert_schedule(
    conn: &Connection,
    s: &ScheduleRow<'_>,
    next_due_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<i64> {
    let mut stmt = conn.prepare_cached(INSERT_SCHEDULE)?;
    stmt.execute(named_params! {
        ":name": s.name,
        ":pipeline": s.pipeline,
        ":scope": s.scope,
        ":rule": s.rule.to_string(),
        ":zone": s.zone.name(),
        ":enabled": s.enabled,
        ":misfire": s.misfire.as_str(),
        ":next_due_at": next_due_at,
        ":now": now,
    })?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn schedule_by_name(conn: &Connection, name: &str) -> Result<Option<Schedule>> {
    let mut stmt = conn.prepare_cached(SELECT_SCHEDULE_BY_NAME)?;
    Ok(stmt
        .query_row(named_params! { ":name": name }, schedule_from_row)
        .optional()?)
}

pub(crate) fn schedule_by_id(conn: &Connection, id: i64) -> Result<Option<Schedule>> {
    let mut stmt = conn.prepare_cached(SELECT_SCHEDULE_BY_ID)?;
    Ok(stmt
        .query_row(named_params! { ":id": id }, schedule_from_row)
        .optional()?)
}

pub(crate) fn list_schedules(conn: &Connection) -> Result<Vec<Schedule>> {
    let mut stmt = conn.prepare_cached(SELECT_SCHEDULES)?;
    let rows = stmt.query_map([], schedule_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn due_schedules(conn: &Connection, now: Timestamp) -> Result<Vec<Schedule>> {
    let mut stmt = conn.prepare_cached(SELECT_DUE_SCHEDULES)?;
    let rows = stmt.query_map(named_params! { ":now": now }, schedule_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn next_due(conn: &Connection) -> Result<Option<Timestamp>> {
    let mut stmt = conn.prepare_cached(SELECT_NEXT_DUE)?;
    Ok(stmt.query_row([], |r| r.get(0))?)
}

pub(crate) fn update_config(
    conn: &Connection,
    id: i64,
    s: &ScheduleRow<'_>,
    next_due_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(UPDATE_SCHEDULE_CONFIG)?;
    stmt.execute(named_params! {
        ":id": id,
        ":pipeline": s.pipeline,
        ":scope": s.scope,
        ":rule": s.rule.to_string(),
        ":zone": s.zone.name(),
        ":misfire": s.misfire.as_str(),
        ":next_due_at": next_due_at,
        ":now": now,
    })?;
    Ok(())
}

pub(crate) fn update_enabled(
    conn: &Connection,
    id: i64,
    enabled: bool,
    next_due_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(UPDATE_SCHEDULE_ENABLED)?;
    stmt.execute(named_params! {
        ":id": id, ":enabled": enabled, ":next_due_at": next_due_at, ":now": now,
    })?;
    Ok(())
}

pub(crate) fn update_cursor(
    conn: &Connection,
    id: i64,
    last_due_at: Timestamp,
    next_due_at: Option<Timestamp>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(UPDATE_SCHEDULE_CURSOR)?;
    stmt.execute(named_params! {
        ":id": id, ":last_due_at": last_due_at, ":next_due_at": next_due_at,
    })?;
    Ok(())
}

pub(crate) fn delete_schedule(conn: &Connection, id: i64) -> Result<()> {
    let mut stmt = conn.prepare_cached(DELETE_SCHEDULE)?;
    stmt.execute(named_params! { ":id": id })?;
    Ok(())
}

pub(crate) fn insert_slot(
    conn: &Connection,
    schedule_id: i64,
    due_at: Timestamp,
    now: Timestamp,
) -> Result<i64> {
    let mut stmt = conn.prepare_cached(INSERT_SLOT)?;
    stmt.execute(named_params! {
        ":schedule_id": schedule_id, ":due_at": due_at, ":now": now,
    })?;
    Ok(conn.last_insert_rowid())
}

pub(crate) fn slot(conn: &Connection, id: i64) -> Result<Option<Slot>> {
    let mut stmt = conn.prepare_cached(SELECT_SLOT)?;
    Ok(stmt
        .query_row(named_params! { ":id": id }, slot_from_row)
        .optional()?)
}

pub(crate) fn slots_of_schedule(conn: &Connection, schedule_id: i64) -> Result<Vec<Slot>> {
    let mut stmt = conn.prepare_cached(SELECT_SLOTS_OF_SCHEDULE)?;
    let rows = stmt.query_map(named_params! { ":schedule_id": schedule_id }, slot_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every slot of every schedule, by due time then id (for tests and diagnostics).
pub(crate) fn all_slots(conn: &Connection) -> Result<Vec<Slot>> {
    let mut stmt = conn.prepare_cached(SELECT_ALL_SLOTS)?;
    let rows = stmt.query_map([], slot_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// `(slot id, schedule id, due_at)` of every pending slot due at `now`, oldest first.
pub(crate) fn claimable(conn: &Connection, now: Timestamp) -> Result<Vec<(i64, i64, Timestamp)>> {
    let mut stmt = conn.prepare_cached(SELECT_CLAIMABLE)?;
    let rows = stmt.query_map(named_params! { ":now": now }, |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn pending_of_schedule(conn: &Connection, schedule_id: i64) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(SELECT_PENDING_OF_SCHEDULE)?;
    let rows = stmt.query_map(named_params! { ":schedule_id": schedule_id }, |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn abandoned(conn: &Connection, cutoff: Timestamp) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(SELECT_ABANDONED)?;
    let rows = stmt.query_map(named_params! { ":cutoff": cutoff }, |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Claims a pending slot; `false` if it was no longer pending.
pub(crate) fn claim_slot(conn: &Connection, id: i64, ticker: &str, now: Timestamp) -> Result<bool> {
    let mut stmt = conn.prepare_cached(CLAIM_SLOT)?;
    Ok(stmt.execute(named_params! { ":id": id, ":ticker": ticker, ":now": now })? == 1)
}

/// Skips a pending slot with a reason; `false` if it was no longer pending.
pub(crate) fn skip_pending_slot(
    conn: &Connection,
    id: i64,
    code: &str,
    message: Option<&str>,
    now: Timestamp,
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(SKIP_PENDING_SLOT)?;
    Ok(stmt.execute(named_params! {
        ":id": id, ":code": code, ":message": message, ":now": now,
    })? == 1)
}

/// The outcome of a claimed slot, as recorded.
pub(crate) struct Finish<'a> {
    pub status: SlotStatus,
    pub run_ids: &'a [i64],
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Records the outcome of a slot claimed by `ticker`; `false` if it is no longer that
/// ticker's claim (the sweep failed it as abandoned).
pub(crate) fn finish_claimed_slot(
    conn: &Connection,
    id: i64,
    ticker: &str,
    f: &Finish<'_>,
    now: Timestamp,
) -> Result<bool> {
    debug_assert!(SlotStatus::Claimed.can_transition_to(f.status));
    let run_ids = serde_json::to_string(f.run_ids).expect("a list of integers serializes");
    let mut stmt = conn.prepare_cached(FINISH_CLAIMED_SLOT)?;
    Ok(stmt.execute(named_params! {
        ":id": id,
        ":ticker": ticker,
        ":status": f.status,
        ":run_ids": run_ids,
        ":code": f.code,
        ":message": f.message,
        ":now": now,
    })? == 1)
}

/// The runs started for slot `id`: `(run id, was a lock refusal)`, oldest first.
pub(crate) fn slot_runs(conn: &Connection, id: i64) -> Result<Vec<(i64, bool)>> {
    let mut stmt = conn.prepare_cached(SLOT_RUNS)?;
    let rows = stmt.query_map(named_params! { ":id": id }, |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Finishes a claim older than `cutoff` from the runs that name it; `false` if it was
/// finished meanwhile.
pub(crate) fn finish_timed_out_slot(
    conn: &Connection,
    id: i64,
    cutoff: Timestamp,
    f: &Finish<'_>,
    now: Timestamp,
) -> Result<bool> {
    let run_ids = serde_json::to_string(f.run_ids).expect("a list of integers serializes");
    let mut stmt = conn.prepare_cached(FINISH_TIMED_OUT_SLOT)?;
    Ok(stmt.execute(named_params! {
        ":id": id, ":cutoff": cutoff, ":status": f.status, ":run_ids": run_ids,
        ":code": f.code, ":message": f.message, ":now": now,
    })? == 1)
}

/// Gives a claim older than `cutoff` back to `pending`; `false` if it was finished meanwhile.
pub(crate) fn give_back_slot(conn: &Connection, id: i64, cutoff: Timestamp) -> Result<bool> {
    let mut stmt = conn.prepare_cached(GIVE_BACK_SLOT)?;
    Ok(stmt.execute(named_params! { ":id": id, ":cutoff": cutoff })? == 1)
}

/// Whether slot `claim.slot_id` is still claimed by `claim` (the fence of a run start).
pub(crate) fn holds_claim(conn: &Connection, claim: &super::SlotClaim) -> Result<bool> {
    let mut stmt = conn.prepare_cached(HOLDS_CLAIM)?;
    Ok(stmt.query_row(
        named_params! {
            ":id": claim.slot_id, ":ticker": claim.ticker, ":claimed_at": claim.claimed_at,
        },
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, DbOptions};

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("explain query plan {sql}")).unwrap();
        let names: Vec<String> = (1..=stmt.parameter_count())
            .map(|i| stmt.parameter_name(i).unwrap().to_string())
            .collect();
        let now = "2026-11-22T11:30:00.000Z";
        let params: Vec<(&str, &dyn rusqlite::ToSql)> = names
            .iter()
            .map(|n| (n.as_str(), &now as &dyn rusqlite::ToSql))
            .collect();
        let rows = stmt
            .query_map(params.as_slice(), |r| r.get::<_, String>(3))
            .unwrap();
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("; ")
    }

    #[test]
    fn the_tick_queries_use_their_partial_indexes() {
        let conn = db::open_in_memory(&DbOptions::default()).unwrap();
        for (sql, index) in [
            (SELECT_CLAIMABLE, "due_runs_claim"),
            (SELECT_ABANDONED, "due_runs_claimed"),
            (SELECT_DUE_SCHEDULES, "schedules_due"),
            (SELECT_NEXT_DUE, "schedules_due"),
        ] {
            let p = plan(&conn, sql);
            assert!(p.contains(index), "{sql}\nplan: {p}");
            assert!(
                !p.contains("SCAN due_runs") && !p.contains("SCAN schedules "),
                "{p}"
            );
        }
    }
}
