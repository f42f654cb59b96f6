//! SQL for `schedules` and `due_runs` on PostgreSQL: materializing a slot under the
//! schedule's row lock (so nodes racing for the same instant create it once), claiming due
//! slots with `FOR UPDATE SKIP LOCKED`, and recording each slot's outcome behind the
//! claim's fence (the ticker and the claim time), so each slot is fired once across nodes.

use serde_json::Value;

use super::{get, opt_ts, parsed, ts};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::pg::engine::Tx;
use crate::schedule::rule::{Rule, Zone};
use crate::schedule::state::{SlotClaim, SlotStatus};
use crate::storage::schedules::{Finish, Misfire, Schedule, ScheduleRow, Slot};

/// Every column of a [`Slot`], as [`slot_from_row`] reads them by name.
macro_rules! slot_columns {
    () => {
        "d.id, s.name as schedule, d.schedule_id, d.due_at, d.status, d.created_at, d.claimed_at, \
         d.claimed_by, d.finished_at, d.run_ids, d.outcome_code, d.outcome_message"
    };
}

/// $1 name, $2 pipeline, $3 scope, $4 rule, $5 zone, $6 now
const INSERT_SCHEDULE: &str =
    "insert into schedules (name, pipeline, scope, rule, zone, created_at, updated_at)
     values ($1, $2, $3, $4, $5, $6, $6)
     returning id";

/// $1 schedule id: its high-water mark, the row locked until the transaction ends.
const LOCK_SCHEDULE: &str = "select last_due_at from schedules where id = $1 for update";

/// $1 schedule id, $2 due_at, $3 now
const INSERT_SLOT: &str = "insert into due_runs (schedule_id, due_at, created_at)
     values ($1, $2, greatest($3, $2))
     returning id";

/// $1 schedule id, $2 due_at, $3 now
const ADVANCE: &str =
    "update schedules set last_due_at = $2, updated_at = greatest($3, updated_at) where id = $1";

/// $1 ticker, $2 now, $3 limit: the oldest due pending slots, skipping the ones another
/// ticker is claiming.
const CLAIM_DUE: &str = "update due_runs set status = 'claimed', claimed_by = $1,
        claimed_at = greatest($2, created_at)
     where id in (select id from due_runs
                  where status = 'pending' and due_at <= $2
                  order by due_at, id limit $3
                  for update skip locked)
     returning id, claimed_by, claimed_at";

/// $1 id, $2 ticker, $3 claimed_at, $4 now, $5 run_ids: claimed -> fired, behind the fence
/// (the ticker's keep-alive may have moved `claimed_at` forward since, never back: P5).
const FIRED: &str = "update due_runs set status = 'fired', run_ids = $5,
        finished_at = greatest($4, claimed_at)
     where id = $1 and status = 'claimed' and claimed_by = $2 and claimed_at >= $3";

/// $1 id, $2 ticker, $3 claimed_at, $4 now, $5 status, $6 code, $7 message: claimed ->
/// skipped or failed, behind the fence.
const ENDED: &str = "update due_runs set status = $5, outcome_code = $6, outcome_message = $7,
        finished_at = greatest($4, claimed_at)
     where id = $1 and status = 'claimed' and claimed_by = $2 and claimed_at >= $3";

/// $1 id
const GET_SLOT: &str = concat!(
    "select ",
    slot_columns!(),
    " from due_runs d join schedules s on s.id = d.schedule_id where d.id = $1"
);

/// $1 id
const SLOT_STATUS: &str = "select status from due_runs where id = $1";

fn slot_from_row(r: &postgres::Row) -> Result<Slot> {
    let id: i64 = get(r, "due_runs", "?", "id")?;
    let key = id.to_string();
    let k = key.as_str();
    let run_ids: Value = get(r, "due_runs", k, "run_ids")?;
    let run_ids = serde_json::from_value(run_ids)
        .map_err(|e| super::corrupt("due_runs", k, "run_ids", e.to_string()))?;
    Ok(Slot {
        id,
        schedule: get(r, "due_runs", k, "schedule")?,
        schedule_id: get(r, "due_runs", k, "schedule_id")?,
        due_at: ts(r, "due_runs", k, "due_at")?,
        status: parsed(r, "due_runs", k, "status")?,
        created_at: ts(r, "due_runs", k, "created_at")?,
        claimed_at: opt_ts(r, "due_runs", k, "claimed_at")?,
        claimed_by: get(r, "due_runs", k, "claimed_by")?,
        finished_at: opt_ts(r, "due_runs", k, "finished_at")?,
        run_ids,
        outcome_code: get(r, "due_runs", k, "outcome_code")?,
        outcome_message: get(r, "due_runs", k, "outcome_message")?,
    })
}

/// A validated new schedule; its id.
pub(crate) fn insert_schedule(
    tx: &mut Tx<'_>,
    name: &str,
    pipeline: &str,
    scope: &str,
    rule: &str,
    zone: &str,
    now: Timestamp,
) -> Result<i64> {
    Ok(tx
        .query_one(
            INSERT_SCHEDULE,
            &[&name, &pipeline, &scope, &rule, &zone, &now.to_string()],
        )?
        .get(0))
}

/// Creates the slot of `schedule_id` at `due_at` unless the schedule's high-water mark is
/// already there; the new slot's id, or `None`.
pub(crate) fn materialize(
    tx: &mut Tx<'_>,
    schedule_id: i64,
    due_at: Timestamp,
    now: Timestamp,
) -> Result<Option<i64>> {
    let row = tx
        .query_opt(LOCK_SCHEDULE, &[&schedule_id])?
        .ok_or_else(|| Error::not_found("schedule", schedule_id))?;
    let mark = opt_ts(&row, "schedules", &schedule_id.to_string(), "last_due_at")?;
    if mark.is_some_and(|m| m >= due_at) {
        return Ok(None);
    }
    let (due, now) = (due_at.to_string(), now.to_string());
    let id: i64 = tx
        .query_one(INSERT_SLOT, &[&schedule_id, &due, &now])?
        .get(0);
    tx.execute(ADVANCE, &[&schedule_id, &due, &now])?;
    Ok(Some(id))
}

/// Claims up to `limit` due pending slots for `ticker`, oldest first.
pub(crate) fn claim_due(
    tx: &mut Tx<'_>,
    ticker: &str,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<SlotClaim>> {
    let limit = i64::from(limit);
    let rows = tx.query(CLAIM_DUE, &[&ticker, &now.to_string(), &limit])?;
    let mut claims = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            Ok(SlotClaim {
                slot_id: id,
                ticker: get(r, "due_runs", &id.to_string(), "claimed_by")?,
                claimed_at: ts(r, "due_runs", &id.to_string(), "claimed_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    claims.sort_by_key(|c| c.slot_id);
    Ok(claims)
}

/// The refusal of a write behind a claim that no longer holds.
fn fence(tx: &mut Tx<'_>, claim: &SlotClaim, to: SlotStatus) -> Error {
    let from = match tx.query_opt(SLOT_STATUS, &[&claim.slot_id]) {
        Ok(Some(r)) => r.get::<_, String>(0),
        Ok(None) => return Error::not_found("due_run", claim.slot_id),
        Err(e) => return e,
    };
    Error::IllegalTransition {
        entity: "due_run",
        id: claim.slot_id.to_string(),
        from: format!(
            "{from} (not claimed by {} at {})",
            claim.ticker, claim.claimed_at
        ),
        to: to.to_string(),
    }
}

/// claimed -> fired with the runs the fire started.
pub(crate) fn fired(
    tx: &mut Tx<'_>,
    claim: &SlotClaim,
    run_ids: &[i64],
    now: Timestamp,
) -> Result<()> {
    if run_ids.is_empty() {
        return Err(Error::invalid("run_ids", "a fired slot names its runs"));
    }
    let runs = Value::from(run_ids.to_vec());
    let n = tx.execute(
        FIRED,
        &[
            &claim.slot_id,
            &claim.ticker,
            &claim.claimed_at.to_string(),
            &now.to_string(),
            &runs,
        ],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(fence(tx, claim, SlotStatus::Fired))
    }
}

/// claimed -> skipped or failed with an outcome code.
pub(crate) fn ended(
    tx: &mut Tx<'_>,
    claim: &SlotClaim,
    status: SlotStatus,
    code: &str,
    message: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    if !matches!(status, SlotStatus::Skipped | SlotStatus::Failed) {
        return Err(Error::IllegalTransition {
            entity: "due_run",
            id: claim.slot_id.to_string(),
            from: SlotStatus::Claimed.to_string(),
            to: status.to_string(),
        });
    }
    let n = tx.execute(
        ENDED,
        &[
            &claim.slot_id,
            &claim.ticker,
            &claim.claimed_at.to_string(),
            &now.to_string(),
            &status.as_str(),
            &code,
            &message,
        ],
    )?;
    if n == 1 {
        Ok(())
    } else {
        Err(fence(tx, claim, status))
    }
}

/// The slot with this id.
pub(crate) fn get_slot(tx: &mut Tx<'_>, id: i64) -> Result<Slot> {
    match tx.query_opt(GET_SLOT, &[&id])? {
        Some(row) => slot_from_row(&row),
        None => Err(Error::not_found("due_run", id)),
    }
}

// ---- the `Schedules` facade's twins (an `Engine` opened on PostgreSQL): the statements of
// src/storage/schedules.rs, with row locks where SQLite has its one writer

/// Every column of a [`Schedule`], as [`schedule_from_row`] reads them by name.
macro_rules! schedule_columns {
    () => {
        "id, name, pipeline, scope, rule, zone, enabled, misfire, \
         last_due_at, next_due_at, created_at, updated_at"
    };
}

/// $1 name, $2 pipeline, $3 scope, $4 rule, $5 zone, $6 enabled, $7 misfire, $8 next_due_at,
/// $9 now: no row when the name is taken.
const INSERT_SCHEDULE_ROW: &str = "insert into schedules (name, pipeline, scope, rule, zone,
        enabled, misfire, last_due_at, next_due_at, created_at, updated_at)
     values ($1, $2, $3, $4, $5, $6, $7, null, $8, $9, $9)
     on conflict (name) do nothing
     returning id";

/// $1 name
const SCHEDULE_BY_NAME: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules where name = $1"
);

/// $1 name: the schedule, locked until the transaction ends (a change of it waits for a
/// tick materializing its slots, and the other way round).
const SCHEDULE_BY_NAME_LOCKED: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules where name = $1 for update"
);

/// $1 id
const SCHEDULE_BY_ID: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules where id = $1"
);

/// By name in byte order, as SQLite sorts text.
const SCHEDULES: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules order by name collate \"C\""
);

/// $1 now: the enabled schedules due by now, locked; one another ticker is materializing
/// is skipped (that ticker does it).
const DUE_SCHEDULES: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules
     where enabled and next_due_at is not null and next_due_at <= $1
     order by next_due_at, id
     for update skip locked"
);

const NEXT_DUE: &str =
    "select min(next_due_at) from schedules where enabled and next_due_at is not null";

/// $1 id, $2 pipeline, $3 scope, $4 rule, $5 zone, $6 misfire, $7 next_due_at, $8 now
const UPDATE_CONFIG: &str = "update schedules
     set pipeline = $2, scope = $3, rule = $4, zone = $5, misfire = $6, next_due_at = $7,
         updated_at = greatest($8, created_at)
     where id = $1";

/// $1 id, $2 enabled, $3 next_due_at, $4 now
const UPDATE_ENABLED: &str = "update schedules
     set enabled = $2, next_due_at = $3, updated_at = greatest($4, created_at)
     where id = $1";

/// $1 id, $2 last_due_at, $3 next_due_at
const UPDATE_CURSOR: &str = "update schedules set last_due_at = $2, next_due_at = $3 where id = $1";

/// $1 id
const DELETE_SCHEDULE: &str = "delete from schedules where id = $1";

/// $1 schedule id
const SLOTS_OF_SCHEDULE: &str = concat!(
    "select ",
    slot_columns!(),
    " from due_runs d join schedules s on s.id = d.schedule_id
     where d.schedule_id = $1 order by d.due_at"
);

const ALL_SLOTS: &str = concat!(
    "select ",
    slot_columns!(),
    " from due_runs d join schedules s on s.id = d.schedule_id order by d.due_at, d.id"
);

/// $1 now: the pending due slots, oldest first, locked; those another ticker is claiming
/// are skipped.
const CLAIMABLE: &str = "select id, schedule_id, due_at from due_runs
     where status = 'pending' and due_at <= $1
     order by due_at, id
     for update skip locked";

/// $1 schedule id
const PENDING_OF_SCHEDULE: &str = "select id from due_runs
     where schedule_id = $1 and status = 'pending' order by due_at";

/// $1 cutoff: claims older than the cutoff, locked; those another ticker is sweeping are
/// skipped.
const ABANDONED: &str = "select id from due_runs
     where status = 'claimed' and claimed_at < $1
     order by claimed_at, id
     for update skip locked";

/// $1 id, $2 ticker, $3 now: guarded claim of a pending slot; its claim time.
const CLAIM_SLOT: &str = "update due_runs
     set status = 'claimed', claimed_by = $2, claimed_at = greatest($3, created_at)
     where id = $1 and status = 'pending'
     returning claimed_at";

/// $1 id, $2 ticker, $3 now: the claim's keep-alive, by its own ticker, forward only (P5).
const RENEW_CLAIM: &str = "update due_runs set claimed_at = $3
     where id = $1 and status = 'claimed' and claimed_by = $2 and claimed_at < $3";

/// $1 id, $2 now, $3 code, $4 message: guarded skip of a slot nobody claimed.
const SKIP_PENDING: &str = "update due_runs
     set status = 'skipped', finished_at = greatest($2, created_at),
         outcome_code = $3, outcome_message = $4
     where id = $1 and status = 'pending'";

/// $1 id, $2 ticker, $3 status, $4 now, $5 run_ids, $6 code, $7 message: only the ticker
/// holding the claim records its outcome.
const FINISH_CLAIMED: &str = "update due_runs
     set status = $3, finished_at = greatest($4, claimed_at), run_ids = $5,
         outcome_code = $6, outcome_message = $7
     where id = $1 and status = 'claimed' and claimed_by = $2";

/// $1 id, $2 cutoff, $3 status, $4 now, $5 run_ids, $6 code, $7 message: the sweep's
/// finish of a timed-out claim that runs name, whoever holds it.
const FINISH_TIMED_OUT: &str = "update due_runs
     set status = $3, finished_at = greatest($4, claimed_at), run_ids = $5,
         outcome_code = $6, outcome_message = $7
     where id = $1 and status = 'claimed' and claimed_at < $2";

/// $1 id, $2 cutoff: a timed-out claim no run names goes back to pending.
const GIVE_BACK: &str = "update due_runs set status = 'pending', claimed_at = null,
         claimed_by = null
     where id = $1 and status = 'claimed' and claimed_at < $2";

const LAST_CLAIMED_AT: &str = "select max(claimed_at) from due_runs";

fn schedule_from_row(r: &postgres::Row) -> Result<Schedule> {
    let id: i64 = get(r, "schedules", "?", "id")?;
    let key = id.to_string();
    let k = key.as_str();
    let zone: String = get(r, "schedules", k, "zone")?;
    Ok(Schedule {
        id,
        name: get(r, "schedules", k, "name")?,
        pipeline: get(r, "schedules", k, "pipeline")?,
        scope: get(r, "schedules", k, "scope")?,
        rule: parsed::<Rule>(r, "schedules", k, "rule")?,
        zone: Zone::new(&zone)
            .map_err(|e| super::corrupt("schedules", k, "zone", e.to_string()))?,
        enabled: get(r, "schedules", k, "enabled")?,
        misfire: parsed::<Misfire>(r, "schedules", k, "misfire")?,
        last_due_at: opt_ts(r, "schedules", k, "last_due_at")?,
        next_due_at: opt_ts(r, "schedules", k, "next_due_at")?,
        created_at: ts(r, "schedules", k, "created_at")?,
        updated_at: ts(r, "schedules", k, "updated_at")?,
    })
}

fn schedules_of(rows: &[postgres::Row]) -> Result<Vec<Schedule>> {
    rows.iter().map(schedule_from_row).collect()
}

fn slots_of(rows: &[postgres::Row]) -> Result<Vec<Slot>> {
    rows.iter().map(slot_from_row).collect()
}

fn opt_text(t: Option<Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

/// A validated schedule with its first slot `next_due_at`; its id, or `None` when the name
/// is taken.
pub(crate) fn insert_schedule_row(
    tx: &mut Tx<'_>,
    s: &ScheduleRow<'_>,
    next_due_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<Option<i64>> {
    let row = tx.query_opt(
        INSERT_SCHEDULE_ROW,
        &[
            &s.name,
            &s.pipeline,
            &s.scope,
            &s.rule.to_string(),
            &s.zone.name(),
            &s.enabled,
            &s.misfire.as_str(),
            &opt_text(next_due_at),
            &now.to_string(),
        ],
    )?;
    Ok(row.map(|r| r.get(0)))
}

/// The schedule called `name`; `lock` holds its row until the transaction ends.
pub(crate) fn schedule_by_name(
    tx: &mut Tx<'_>,
    name: &str,
    lock: bool,
) -> Result<Option<Schedule>> {
    let sql = if lock {
        SCHEDULE_BY_NAME_LOCKED
    } else {
        SCHEDULE_BY_NAME
    };
    tx.query_opt(sql, &[&name])?
        .as_ref()
        .map(schedule_from_row)
        .transpose()
}

/// The schedule with this id.
pub(crate) fn schedule_by_id(tx: &mut Tx<'_>, id: i64) -> Result<Option<Schedule>> {
    tx.query_opt(SCHEDULE_BY_ID, &[&id])?
        .as_ref()
        .map(schedule_from_row)
        .transpose()
}

/// Every schedule, by name.
pub(crate) fn list_schedules(tx: &mut Tx<'_>) -> Result<Vec<Schedule>> {
    schedules_of(&tx.query(SCHEDULES, &[])?)
}

/// The enabled schedules due by `now`, locked (skipping those locked elsewhere).
pub(crate) fn due_schedules(tx: &mut Tx<'_>, now: Timestamp) -> Result<Vec<Schedule>> {
    schedules_of(&tx.query(DUE_SCHEDULES, &[&now.to_string()])?)
}

/// The earliest next slot of any enabled schedule.
pub(crate) fn next_due(tx: &mut Tx<'_>) -> Result<Option<Timestamp>> {
    opt_ts(&tx.query_one(NEXT_DUE, &[])?, "schedules", "?", "min")
}

/// A schedule's new configuration and cursor.
pub(crate) fn update_config(
    tx: &mut Tx<'_>,
    id: i64,
    s: &ScheduleRow<'_>,
    next_due_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<()> {
    tx.execute(
        UPDATE_CONFIG,
        &[
            &id,
            &s.pipeline,
            &s.scope,
            &s.rule.to_string(),
            &s.zone.name(),
            &s.misfire.as_str(),
            &opt_text(next_due_at),
            &now.to_string(),
        ],
    )?;
    Ok(())
}

/// A schedule enabled or disabled, with its cursor's next slot.
pub(crate) fn update_enabled(
    tx: &mut Tx<'_>,
    id: i64,
    enabled: bool,
    next_due_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<()> {
    tx.execute(
        UPDATE_ENABLED,
        &[&id, &enabled, &opt_text(next_due_at), &now.to_string()],
    )?;
    Ok(())
}

/// A schedule's cursor after materializing up to `last_due_at`.
pub(crate) fn update_cursor(
    tx: &mut Tx<'_>,
    id: i64,
    last_due_at: Timestamp,
    next_due_at: Option<Timestamp>,
) -> Result<()> {
    tx.execute(
        UPDATE_CURSOR,
        &[&id, &last_due_at.to_string(), &opt_text(next_due_at)],
    )?;
    Ok(())
}

/// Deletes a schedule and its slots (refused by the schema while one is claimed).
pub(crate) fn delete_schedule(tx: &mut Tx<'_>, id: i64) -> Result<()> {
    tx.execute(DELETE_SCHEDULE, &[&id])?;
    Ok(())
}

/// A pending slot of `schedule_id` at `due_at` (after the high-water mark: the caller
/// holds the schedule's row lock and moves its cursor).
pub(crate) fn insert_slot(
    tx: &mut Tx<'_>,
    schedule_id: i64,
    due_at: Timestamp,
    now: Timestamp,
) -> Result<i64> {
    Ok(tx
        .query_one(
            INSERT_SLOT,
            &[&schedule_id, &due_at.to_string(), &now.to_string()],
        )?
        .get(0))
}

/// Every slot of a schedule, oldest first.
pub(crate) fn slots_of_schedule(tx: &mut Tx<'_>, schedule_id: i64) -> Result<Vec<Slot>> {
    slots_of(&tx.query(SLOTS_OF_SCHEDULE, &[&schedule_id])?)
}

/// Every slot, by due time then id.
pub(crate) fn all_slots(tx: &mut Tx<'_>) -> Result<Vec<Slot>> {
    slots_of(&tx.query(ALL_SLOTS, &[])?)
}

/// `(slot id, schedule id, due_at)` of the pending slots due at `now`, oldest first,
/// locked (skipping those locked elsewhere).
pub(crate) fn claimable(tx: &mut Tx<'_>, now: Timestamp) -> Result<Vec<(i64, i64, Timestamp)>> {
    tx.query(CLAIMABLE, &[&now.to_string()])?
        .iter()
        .map(|r| {
            let id: i64 = get(r, "due_runs", "?", "id")?;
            let key = id.to_string();
            Ok((
                id,
                get(r, "due_runs", &key, "schedule_id")?,
                ts(r, "due_runs", &key, "due_at")?,
            ))
        })
        .collect()
}

/// The pending slots of a schedule, oldest first.
pub(crate) fn pending_of_schedule(tx: &mut Tx<'_>, schedule_id: i64) -> Result<Vec<i64>> {
    Ok(tx
        .query(PENDING_OF_SCHEDULE, &[&schedule_id])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The claims older than `cutoff`, locked (skipping those locked elsewhere).
pub(crate) fn abandoned(tx: &mut Tx<'_>, cutoff: Timestamp) -> Result<Vec<i64>> {
    Ok(tx
        .query(ABANDONED, &[&cutoff.to_string()])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Claims a pending slot for `ticker`: its claim time, or `None` if it was no longer
/// pending.
pub(crate) fn claim_slot(
    tx: &mut Tx<'_>,
    id: i64,
    ticker: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    tx.query_opt(CLAIM_SLOT, &[&id, &ticker, &now.to_string()])?
        .map(|r| ts(&r, "due_runs", &id.to_string(), "claimed_at"))
        .transpose()
}

/// Renews `ticker`'s claim on slot `id` at `now`; `false` if it is no longer that ticker's
/// claim (or `now` is not later than its claim time).
pub(crate) fn renew_claim(tx: &mut Tx<'_>, id: i64, ticker: &str, now: Timestamp) -> Result<bool> {
    Ok(tx.execute(RENEW_CLAIM, &[&id, &ticker, &now.to_string()])? == 1)
}

/// Skips a pending slot with a reason; `false` if it was no longer pending.
pub(crate) fn skip_pending_slot(
    tx: &mut Tx<'_>,
    id: i64,
    code: &str,
    message: Option<&str>,
    now: Timestamp,
) -> Result<bool> {
    Ok(tx.execute(SKIP_PENDING, &[&id, &now.to_string(), &code, &message])? == 1)
}

/// Records the outcome of a slot claimed by `ticker`; `false` if it is no longer that
/// ticker's claim.
pub(crate) fn finish_claimed_slot(
    tx: &mut Tx<'_>,
    id: i64,
    ticker: &str,
    f: &Finish<'_>,
    now: Timestamp,
) -> Result<bool> {
    let runs = Value::from(f.run_ids.to_vec());
    let n = tx.execute(
        FINISH_CLAIMED,
        &[
            &id,
            &ticker,
            &f.status.as_str(),
            &now.to_string(),
            &runs,
            &f.code,
            &f.message,
        ],
    )?;
    Ok(n == 1)
}

/// Finishes a claim older than `cutoff` from the runs that name it; `false` if it was
/// finished meanwhile.
pub(crate) fn finish_timed_out_slot(
    tx: &mut Tx<'_>,
    id: i64,
    cutoff: Timestamp,
    f: &Finish<'_>,
    now: Timestamp,
) -> Result<bool> {
    let runs = Value::from(f.run_ids.to_vec());
    let n = tx.execute(
        FINISH_TIMED_OUT,
        &[
            &id,
            &cutoff.to_string(),
            &f.status.as_str(),
            &now.to_string(),
            &runs,
            &f.code,
            &f.message,
        ],
    )?;
    Ok(n == 1)
}

/// Gives a claim older than `cutoff` back to pending; `false` if it was finished meanwhile.
pub(crate) fn give_back_slot(tx: &mut Tx<'_>, id: i64, cutoff: Timestamp) -> Result<bool> {
    Ok(tx.execute(GIVE_BACK, &[&id, &cutoff.to_string()])? == 1)
}

/// When a ticker last claimed a due slot (`None` before the first).
pub(crate) fn last_claimed_at(tx: &mut Tx<'_>) -> Result<Option<Timestamp>> {
    opt_ts(&tx.query_one(LAST_CLAIMED_AT, &[])?, "due_runs", "?", "max")
}

// ---- doctor checks and copy

use super::{err, warn, Bind, PgCheck, TableSql};

const SLOTS_STATE: &str =
    "select id::text, 'status ' || quote_nullable(status) || ' is not a slot status' from due_runs
     where status is null or not status = any($1::text[])";

const SLOTS_TIMESTAMPS: &str = "select id::text, d from (select id, case
       when due_at is null or due_at !~ $1::text or created_at is null or created_at !~ $1::text
         or coalesce(claimed_at, created_at) !~ $1::text or coalesce(finished_at, created_at) !~ $1::text
         then 'a timestamp is not fixed-width utc text'
       when (status in ('fired', 'skipped', 'failed')) <> (finished_at is not null)
         then 'status ' || status || (case when finished_at is null then ' without' else ' with' end) || ' finished_at'
       when (claimed_at is null) <> (claimed_by is null) then 'claimed_at disagrees with claimed_by'
       when status = 'pending' and claimed_at is not null then 'pending with a claim'
       when status in ('claimed', 'fired', 'failed') and claimed_at is null then 'status ' || status || ' without a claim'
       when created_at < due_at then 'materialized before it was due'
       when claimed_at < created_at or finished_at < created_at or finished_at < claimed_at
         then 'times out of order'
     end as d from due_runs where status = any($2::text[])) t where d is not null";

const SLOTS_OUTCOME: &str = "select id::text, d from (select id, case
       when run_ids is null or jsonb_typeof(run_ids) <> 'array' then 'run_ids is not a json array'
       when exists (select 1 from jsonb_array_elements(run_ids) r where jsonb_typeof(r) <> 'number')
         then 'run_ids holds a non-integer'
       when status not in ('fired', 'skipped', 'failed') and (run_ids <> '[]' or outcome_code is not null)
         then 'outcome on a ' || status || ' slot'
       when status = 'fired' and (jsonb_array_length(run_ids) = 0 or outcome_code is not null)
         then 'fired without runs or with an outcome code'
       when (status in ('skipped', 'failed')) <> (outcome_code is not null)
         then 'outcome_code disagrees with status ' || status
     end as d from due_runs where status = any($1::text[])) t where d is not null";

const SLOTS_STUCK: &str = "select id::text, 'claimed at ' || claimed_at || ' by ' || claimed_by || ' and never recorded (needs a tick)'
     from due_runs where status = 'claimed' and claimed_at < $1::text";

const SLOTS_SCHEDULE: &str =
    "select d.id::text, 'schedule_id ' || d.schedule_id || ' names no schedule'
     from due_runs d where not exists (select 1 from schedules s where s.id = d.schedule_id)";

const SCHEDULES_ROWS: &str = "select id::text, d from (select id, case
       when misfire is null or not misfire = any($1::text[])
         then 'misfire ' || quote_nullable(misfire) || ' is not a misfire policy'
       when enabled is null then 'enabled is null'
       when created_at !~ $2::text or updated_at !~ $2::text or coalesce(last_due_at, created_at) !~ $2::text
         or coalesce(next_due_at, created_at) !~ $2::text
         then 'a timestamp is not fixed-width utc text'
       when updated_at < created_at then 'updated before it was created'
       when next_due_at <= last_due_at then 'next_due_at is not after last_due_at'
     end as d from schedules) t where d is not null";

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[
    err("state", "due_runs", SLOTS_STATE, &[Bind::SlotStatuses]),
    err(
        "timestamps",
        "due_runs",
        SLOTS_TIMESTAMPS,
        &[Bind::Ts, Bind::SlotStatuses],
    ),
    err("outcome", "due_runs", SLOTS_OUTCOME, &[Bind::SlotStatuses]),
    err("foreign_key", "due_runs", SLOTS_SCHEDULE, &[]),
    warn("stuck_slot", "due_runs", SLOTS_STUCK, &[Bind::ClaimBefore]),
    err(
        "state",
        "schedules",
        SCHEDULES_ROWS,
        &[Bind::Misfires, Bind::Ts],
    ),
];

/// This module's tables, for copy and doctor (schedules before their slots).
pub(crate) const TABLES: &[TableSql] = &[
    TableSql {
        table: "schedules",
        any_row: "select exists (select 1 from schedules)",
        lock: "lock table schedules in exclusive mode",
        copy_in: "copy schedules (id, name, pipeline, scope, rule, zone, enabled, misfire, last_due_at, next_due_at, created_at, updated_at) from stdin",
        sequence: "select coalesce(max(id), 0)::bigint,
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('schedules', 'id')), 0)::bigint from schedules",
        set_sequence: "select setval(pg_get_serial_sequence('schedules', 'id'), $1::bigint)",
    },
    TableSql {
        table: "due_runs",
        any_row: "select exists (select 1 from due_runs)",
        lock: "lock table due_runs in exclusive mode",
        copy_in: "copy due_runs (id, schedule_id, due_at, status, created_at, claimed_at, claimed_by, finished_at, run_ids, outcome_code, outcome_message) from stdin",
        sequence: "select coalesce(max(id), 0)::bigint,
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('due_runs', 'id')), 0)::bigint from due_runs",
        set_sequence: "select setval(pg_get_serial_sequence('due_runs', 'id'), $1::bigint)",
    },
];

/// $1 slot id, $2 ticker, $3 claimed at: whether the slot is still claimed by that claim
/// (the fence of a run started for a slot), held until the start commits.
const HOLDS_CLAIM: &str = "select exists(select 1 from due_runs
    where id = $1 and status = 'claimed' and claimed_by = $2 and claimed_at >= $3
    for share)";

/// Whether slot `claim` is still claimed by its ticker (the fence of a slot's run start).
pub(crate) fn holds_claim(tx: &mut Tx<'_>, claim: &SlotClaim) -> Result<bool> {
    let row = tx.query_one(
        HOLDS_CLAIM,
        &[&claim.slot_id, &claim.ticker, &claim.claimed_at.to_string()],
    )?;
    Ok(row.get(0))
}

// ---- the Trust UI's bounded reads (the twins of the SQLite module's `UI_*`)

/// No parameters.
#[cfg(feature = "http")]
const UI_LAST_SLOT: &str = "select s.name, d.due_at, d.status, d.created_at
     from due_runs d join schedules s on s.id = d.schedule_id order by d.id desc limit 1";

/// $1 schedule id
#[cfg(feature = "http")]
const UI_SCHEDULE_LAST_SLOT: &str =
    "select due_at, status, outcome_code, outcome_message from due_runs
     where schedule_id = $1 and status not in ('pending', 'claimed') order by due_at desc limit 1";

/// $1 schedule id, $2 cap
#[cfg(feature = "http")]
const UI_SCHEDULE_MISSED: &str = "select count(*) as n from (select 1 from due_runs
     where schedule_id = $1 and status in ('skipped', 'failed') limit $2) m";

/// The newest slot materialized: `(schedule, due_at, status, created_at)`.
#[cfg(feature = "http")]
pub(crate) fn ui_last_slot(tx: &mut Tx<'_>) -> Result<Option<crate::storage::ui::LastSlot>> {
    tx.query_opt(UI_LAST_SLOT, &[])?
        .map(|r| {
            Ok((
                get(&r, "due_runs", "?", "name")?,
                ts(&r, "due_runs", "?", "due_at")?,
                get(&r, "due_runs", "?", "status")?,
                ts(&r, "due_runs", "?", "created_at")?,
            ))
        })
        .transpose()
}

/// Schedule `schedule_id`'s last finished slot and its capped count of missed slots.
#[cfg(feature = "http")]
pub(crate) fn ui_schedule_history(
    tx: &mut Tx<'_>,
    schedule_id: i64,
) -> Result<crate::storage::ui::ScheduleHistory> {
    use crate::storage::ui::{Capped, ScheduleHistory, COUNT_CAP};
    let k = schedule_id.to_string();
    let last = tx
        .query_opt(UI_SCHEDULE_LAST_SLOT, &[&schedule_id])?
        .map(|r| -> Result<_> {
            Ok((
                ts(&r, "due_runs", &k, "due_at")?,
                get(&r, "due_runs", &k, "status")?,
                get(&r, "due_runs", &k, "outcome_code")?,
                get(&r, "due_runs", &k, "outcome_message")?,
            ))
        })
        .transpose()?;
    let row = tx.query_one(UI_SCHEDULE_MISSED, &[&schedule_id, &(COUNT_CAP + 1)])?;
    Ok(ScheduleHistory {
        last,
        missed: Capped::of(get(&row, "due_runs", &k, "n")?),
    })
}
