//! SQL for `schedules` and `due_runs`: named-constant statements, `prepare_cached`, named
//! parameters, and `now` always passed in. No policy lives here: the facade in
//! `crate::schedule` and its tick decide, this module reads and writes rows.

use std::fmt;
use std::str::FromStr;

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::check::{err, warn, Check};
use super::col;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::schedule::rule::{Rule, Zone};
use crate::schedule::state::{SlotClaim, SlotReport, SlotStatus};

/// What to do with slots that fell due while no ticker ran (downtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Fire the latest missed slot once; the older ones are skipped with code
    /// `MISFIRE_SUPERSEDED`. The default.
    #[default]
    LatestOnly,
    /// Fire every missed slot, oldest first.
    All,
    /// Fire none of the slots that are later than [`TickOptions::misfire_grace`](crate::TickOptions::misfire_grace); they are
    /// skipped with code `MISFIRE_SKIPPED`.
    Skip,
}

impl Misfire {
    /// Every policy.
    pub const ALL: [Misfire; 3] = [Misfire::LatestOnly, Misfire::All, Misfire::Skip];

    /// The text stored in `schedules.misfire`.
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::LatestOnly => "latest_only",
            Misfire::All => "all",
            Misfire::Skip => "skip",
        }
    }
}

impl fmt::Display for Misfire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Misfire {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Misfire::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "misfire",
                    format!("{s:?} is not a misfire policy (latest_only, all, skip)"),
                )
            })
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Schedule {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The pipeline its slots trigger (`ingest`).
    pub pipeline: String,
    /// The pipeline's scope (`targets`, `universe`, `both`...).
    pub scope: String,
    /// When it fires.
    pub rule: Rule,
    /// The zone the rule's wall-clock times are read in.
    pub zone: Zone,
    /// Whether ticks materialize its slots.
    pub enabled: bool,
    /// What happens to slots missed during downtime.
    pub misfire: Misfire,
    /// The last materialized slot (high-water mark), if any.
    pub last_due_at: Option<Timestamp>,
    /// The next slot a tick will materialize.
    pub next_due_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its configuration last changed.
    pub updated_at: Timestamp,
}

/// One due instant of one schedule (a row of `due_runs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Slot {
    /// Row id.
    pub id: i64,
    /// The schedule's name.
    pub schedule: String,
    /// The schedule's id.
    pub schedule_id: i64,
    /// The instant it was due.
    pub due_at: Timestamp,
    /// Where it is in its life.
    pub status: SlotStatus,
    /// When a tick materialized it.
    pub created_at: Timestamp,
    /// When a ticker claimed it.
    pub claimed_at: Option<Timestamp>,
    /// Which ticker claimed it.
    pub claimed_by: Option<String>,
    /// When it reached its final status.
    pub finished_at: Option<Timestamp>,
    /// The runs its fire produced (several for a `both` scope).
    pub run_ids: Vec<i64>,
    /// Why it was skipped or failed.
    pub outcome_code: Option<String>,
    /// Details of a failure.
    pub outcome_message: Option<String>,
}

/// Every column of a [`Schedule`], the one list [`schedule_from_row`] reads by name.
macro_rules! schedule_columns {
    () => {
        "id, name, pipeline, scope, rule, zone, enabled, misfire, \
         last_due_at, next_due_at, created_at, updated_at"
    };
}

/// [`schedule_columns!`] as a constant, for [`col!`].
pub(super) const SCHEDULE_COLUMNS: &str = schedule_columns!();

/// Every column of a [`Slot`] (with its schedule's name), the one list [`slot_from_row`]
/// reads by name; `d` is `due_runs`, `s` its schedule.
macro_rules! slot_columns {
    () => {
        "d.id, s.name as schedule, d.schedule_id, d.due_at, d.status, d.created_at, \
         d.claimed_at, d.claimed_by, d.finished_at, d.run_ids, d.outcome_code, d.outcome_message"
    };
}

/// [`slot_columns!`] as a constant, for [`col!`].
pub(super) const SLOT_COLUMNS: &str = slot_columns!();

const INSERT_SCHEDULE: &str = "
    insert into schedules (name, pipeline, scope, rule, zone, enabled, misfire,
                           last_due_at, next_due_at, created_at, updated_at)
    values (:name, :pipeline, :scope, :rule, :zone, :enabled, :misfire,
            null, :next_due_at, :now, :now)";

const SELECT_SCHEDULE_BY_NAME: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules where name = :name"
);

const SELECT_SCHEDULE_BY_ID: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules where id = :id"
);

pub(super) const SELECT_SCHEDULES: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules order by name"
);

/// The tick's first query; served by the partial index `schedules_due`.
const SELECT_DUE_SCHEDULES: &str = concat!(
    "select ",
    schedule_columns!(),
    " from schedules
    where enabled = 1 and next_due_at is not null and next_due_at <= :now
    order by next_due_at, id"
);

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

pub(super) const SELECT_ALL_SLOTS: &str = concat!(
    "select ",
    slot_columns!(),
    " from due_runs d join schedules s on s.id = d.schedule_id
    order by d.due_at, d.id"
);

const SELECT_SLOT: &str = concat!(
    "select ",
    slot_columns!(),
    " from due_runs d join schedules s on s.id = d.schedule_id
    where d.id = :id"
);

const SELECT_SLOTS_OF_SCHEDULE: &str = concat!(
    "select ",
    slot_columns!(),
    " from due_runs d join schedules s on s.id = d.schedule_id
    where d.schedule_id = :schedule_id
    order by d.due_at"
);

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

/// The recovery's finish of a timed-out claim that runs name, whoever holds it.
const FINISH_TIMED_OUT_SLOT: &str = "
    update due_runs
    set status = :status, finished_at = max(:now, claimed_at), run_ids = :run_ids,
        outcome_code = :code, outcome_message = :message
    where id = :id and status = 'claimed' and claimed_at < :cutoff";

/// Gives a timed-out claim back (no run names its slot): another ticker fires it.
const GIVE_BACK_SLOT: &str = "
    update due_runs set status = 'pending', claimed_at = null, claimed_by = null
    where id = :id and status = 'claimed' and claimed_at < :cutoff";

/// The fence of a run started for a slot: the slot is still this claim's (its ticker's
/// keep-alive may have moved `claimed_at` forward since, never back: V7).
const HOLDS_CLAIM: &str = "
    select exists(select 1 from due_runs
                  where id = :id and status = 'claimed' and claimed_by = :ticker
                    and claimed_at >= :claimed_at)";

/// The claim's keep-alive: its own ticker moves `claimed_at` forward (V7's fence allows
/// that and nothing else).
const RENEW_CLAIM: &str = "
    update due_runs set claimed_at = :now
    where id = :id and status = 'claimed' and claimed_by = :ticker and claimed_at < :now";

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

/// Reads one row selected with [`schedule_columns!`], by column name.
fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    crate::error::decode_row("schedules", row, schedule_from_row_unchecked)
}

fn schedule_from_row_unchecked(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let parsed = |i: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let rule: String = row.get(col!(SCHEDULE_COLUMNS, "rule"))?;
    let zone: String = row.get(col!(SCHEDULE_COLUMNS, "zone"))?;
    let misfire: String = row.get(col!(SCHEDULE_COLUMNS, "misfire"))?;
    Ok(Schedule {
        id: row.get(col!(SCHEDULE_COLUMNS, "id"))?,
        name: row.get(col!(SCHEDULE_COLUMNS, "name"))?,
        pipeline: row.get(col!(SCHEDULE_COLUMNS, "pipeline"))?,
        scope: row.get(col!(SCHEDULE_COLUMNS, "scope"))?,
        rule: rule
            .parse()
            .map_err(|e| parsed(col!(SCHEDULE_COLUMNS, "rule"), e))?,
        zone: Zone::new(&zone).map_err(|e| parsed(col!(SCHEDULE_COLUMNS, "zone"), e))?,
        enabled: row.get(col!(SCHEDULE_COLUMNS, "enabled"))?,
        misfire: misfire
            .parse()
            .map_err(|e| parsed(col!(SCHEDULE_COLUMNS, "misfire"), e))?,
        last_due_at: row.get(col!(SCHEDULE_COLUMNS, "last_due_at"))?,
        next_due_at: row.get(col!(SCHEDULE_COLUMNS, "next_due_at"))?,
        created_at: row.get(col!(SCHEDULE_COLUMNS, "created_at"))?,
        updated_at: row.get(col!(SCHEDULE_COLUMNS, "updated_at"))?,
    })
}

/// Reads one row selected with [`slot_columns!`], by column name.
fn slot_from_row(row: &Row<'_>) -> rusqlite::Result<Slot> {
    crate::error::decode_row("due_runs", row, slot_from_row_unchecked)
}

fn slot_from_row_unchecked(row: &Row<'_>) -> rusqlite::Result<Slot> {
    let run_ids: String = row.get(col!(SLOT_COLUMNS, "run_ids"))?;
    let run_ids: Vec<i64> = serde_json::from_str(&run_ids).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            col!(SLOT_COLUMNS, "run_ids"),
            rusqlite::types::Type::Text,
            Box::new(e),
        )
    })?;
    Ok(Slot {
        id: row.get(col!(SLOT_COLUMNS, "id"))?,
        schedule: row.get(col!(SLOT_COLUMNS, "schedule"))?,
        schedule_id: row.get(col!(SLOT_COLUMNS, "schedule_id"))?,
        due_at: row.get(col!(SLOT_COLUMNS, "due_at"))?,
        status: row.get(col!(SLOT_COLUMNS, "status"))?,
        created_at: row.get(col!(SLOT_COLUMNS, "created_at"))?,
        claimed_at: row.get(col!(SLOT_COLUMNS, "claimed_at"))?,
        claimed_by: row.get(col!(SLOT_COLUMNS, "claimed_by"))?,
        finished_at: row.get(col!(SLOT_COLUMNS, "finished_at"))?,
        run_ids,
        outcome_code: row.get(col!(SLOT_COLUMNS, "outcome_code"))?,
        outcome_message: row.get(col!(SLOT_COLUMNS, "outcome_message"))?,
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
        Ok((r.get("id")?, r.get("schedule_id")?, r.get("due_at")?))
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

/// Renews `ticker`'s claim on slot `id` at `now`; `false` if it is no longer that
/// ticker's claim (or `now` is not later than its claim time).
pub(crate) fn renew_claim(
    conn: &Connection,
    id: i64,
    ticker: &str,
    now: Timestamp,
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(RENEW_CLAIM)?;
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

/// A claimed slot waiting to be fired: what the claiming half of a tick hands to the
/// firing half (on any backend).
pub(crate) struct Claimed {
    /// The slot's row id.
    pub slot_id: i64,
    /// Its schedule, as read when claimed.
    pub schedule: Schedule,
    /// The slot's due instant.
    pub due_at: Timestamp,
    /// When it was claimed (the claim's fencing time).
    pub claimed_at: Timestamp,
}

/// What the claiming half of a tick did (on any backend).
pub(crate) struct ClaimStep {
    /// Slots finished (swept, skipped) or left pending (no pipeline here) by the step.
    pub slots: Vec<SlotReport>,
    /// How many slots were materialized.
    pub materialized: usize,
    /// The slots claimed, to be fired.
    pub claimed: Vec<Claimed>,
}

/// A validated edit of a schedule's configuration; `None` keeps the current value.
pub(crate) struct ScheduleChange<'a> {
    pub pipeline: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub rule: Option<Rule>,
    pub zone: Option<Zone>,
    pub misfire: Option<Misfire>,
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

/// The largest id of each AUTOINCREMENT table here, for doctor's `sequence` check.
pub(super) const MAX_IDS: &[(&str, &str)] = &[
    ("schedules", "select max(id) from schedules"),
    ("due_runs", "select max(id) from due_runs"),
];
/// Gives a claim older than `cutoff` back to `pending`; `false` if it was finished meanwhile.
pub(crate) fn give_back_slot(conn: &Connection, id: i64, cutoff: Timestamp) -> Result<bool> {
    let mut stmt = conn.prepare_cached(GIVE_BACK_SLOT)?;
    Ok(stmt.execute(named_params! { ":id": id, ":cutoff": cutoff })? == 1)
}

/// Whether slot `claim.slot_id` is still claimed by `claim` (the fence of a run start).
pub(crate) fn holds_claim(conn: &Connection, claim: &SlotClaim) -> Result<bool> {
    let mut stmt = conn.prepare_cached(HOLDS_CLAIM)?;
    Ok(stmt.query_row(
        named_params! {
            ":id": claim.slot_id, ":ticker": claim.ticker, ":claimed_at": claim.claimed_at,
        },
        |r| r.get(0),
    )?)
}

// ---- doctor checks: the rows' rules (migrations) restated as queries that list offenders

const SLOTS_STATE: &str =
    "select id, 'status ' || quote(status) || ' is not a slot status' from due_runs
     where status is null or status not in (select value from json_each(:slot_statuses))";

const SLOTS_TIMESTAMPS: &str = "select id, case
       when due_at is null or due_at not glob :ts or created_at is null or created_at not glob :ts
         or coalesce(claimed_at, created_at) not glob :ts or coalesce(finished_at, created_at) not glob :ts
         then 'a timestamp is not fixed-width utc text'
       when (status in ('fired', 'skipped', 'failed')) <> (finished_at is not null)
         then 'status ' || status || (case when finished_at is null then ' without' else ' with' end) || ' finished_at'
       when (claimed_at is null) <> (claimed_by is null) then 'claimed_at disagrees with claimed_by'
       when status = 'pending' and claimed_at is not null then 'pending with a claim'
       when status in ('claimed', 'fired', 'failed') and claimed_at is null then 'status ' || status || ' without a claim'
       when created_at < due_at then 'materialized before it was due'
       when claimed_at < created_at or finished_at < created_at or finished_at < claimed_at
         then 'times out of order'
     end as detail from due_runs
     where detail is not null and status in (select value from json_each(:slot_statuses))";

const SLOTS_OUTCOME: &str = "select id, case
       when not json_valid(run_ids) or json_type(run_ids) <> 'array' then 'run_ids is not a json array'
       when exists (select 1 from json_each(run_ids) where type <> 'integer') then 'run_ids holds a non-integer'
       when status not in ('fired', 'skipped', 'failed') and (run_ids <> '[]' or outcome_code is not null)
         then 'outcome on a ' || status || ' slot'
       when status = 'fired' and (json_array_length(run_ids) = 0 or outcome_code is not null)
         then 'fired without runs or with an outcome code'
       when (status in ('skipped', 'failed')) <> (outcome_code is not null)
         then 'outcome_code disagrees with status ' || status
     end as detail from due_runs
     where detail is not null and status in (select value from json_each(:slot_statuses))";

const SLOTS_STUCK: &str = "select id, 'claimed at ' || claimed_at || ' by ' || claimed_by || ' and never recorded (needs a tick)'
     from due_runs where status = 'claimed' and claimed_at < :claim_before";

const SCHEDULES_ROWS: &str = "select id, case
       when misfire is null or misfire not in (select value from json_each(:misfires))
         then 'misfire ' || quote(misfire) || ' is not a misfire policy'
       when enabled not in (0, 1) then 'enabled is not 0 or 1'
       when created_at not glob :ts or updated_at not glob :ts or coalesce(last_due_at, created_at) not glob :ts
         or coalesce(next_due_at, created_at) not glob :ts
         then 'a timestamp is not fixed-width utc text'
       when updated_at < created_at then 'updated before it was created'
       when next_due_at <= last_due_at then 'next_due_at is not after last_due_at'
     end as detail from schedules where detail is not null";

/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[
    ("schedules", "select * from schedules"),
    ("due_runs", "select * from due_runs"),
    ("zones", "select * from zones"),
];

/// This module's doctor checks (collected by `doctor`).
pub(crate) const CHECKS: &[Check] = &[
    err("state", "due_runs", SLOTS_STATE),
    err("timestamps", "due_runs", SLOTS_TIMESTAMPS),
    err("outcome", "due_runs", SLOTS_OUTCOME),
    warn("stuck_slot", "due_runs", SLOTS_STUCK),
    err("state", "schedules", SCHEDULES_ROWS),
];

// ---- the Trust UI's bounded reads (index-ordered LIMITs, capped counts)

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_LAST_SLOT: &str = "select s.name, d.due_at, d.status, d.created_at
     from due_runs d join schedules s on s.id = d.schedule_id order by d.id desc limit 1";

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_SCHEDULE_LAST_SLOT: &str =
    "select due_at, status, outcome_code, outcome_message from due_runs
     where schedule_id = :id and status not in ('pending', 'claimed') order by due_at desc limit 1";

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_SCHEDULE_MISSED: &str = "select count(*) from (select 1 from due_runs
     where schedule_id = :id and status in ('skipped', 'failed') limit :cap)";

const LAST_CLAIMED_AT: &str = "select max(claimed_at) from due_runs";

/// When a ticker last claimed a due slot (`None` before the first).
pub(crate) fn last_claimed_at(conn: &Connection) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached(LAST_CLAIMED_AT)?
        .query_row([], |r| r.get(0))?)
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

    #[test]
    fn a_claim_is_renewed_only_by_its_ticker_and_only_forward() {
        let conn = db::open_in_memory(&DbOptions::default()).unwrap();
        conn.execute_batch(
            "INSERT INTO schedules (name, pipeline, scope, rule, zone, created_at, updated_at)
             VALUES ('s', 'p', 'targets', 'every 1m', 'UTC', '2026-01-01T00:00:00.000Z',
                     '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let id = insert_slot(
            &conn,
            1,
            t("2026-01-01T00:01:00.000Z"),
            t("2026-01-01T00:01:00.000Z"),
        )
        .unwrap();
        assert!(claim_slot(&conn, id, "a", t("2026-01-01T00:02:00.000Z")).unwrap());
        // Another ticker: nothing renewed.
        assert!(!renew_claim(&conn, id, "b", t("2026-01-01T00:05:00.000Z")).unwrap());
        // Backward or in place: nothing.
        assert!(!renew_claim(&conn, id, "a", t("2026-01-01T00:01:30.000Z")).unwrap());
        assert!(!renew_claim(&conn, id, "a", t("2026-01-01T00:02:00.000Z")).unwrap());
        // Forward by its own ticker.
        assert!(renew_claim(&conn, id, "a", t("2026-01-01T00:09:00.000Z")).unwrap());
        let slot = slot(&conn, id).unwrap().unwrap();
        assert_eq!(slot.claimed_at, Some(t("2026-01-01T00:09:00.000Z")));
        assert_eq!(slot.claimed_by.as_deref(), Some("a"));
        // The fence: the original claim time still holds it, a later one does not.
        let claim = |ticker: &str, at: &str| SlotClaim {
            slot_id: id,
            ticker: ticker.into(),
            claimed_at: t(at),
        };
        assert!(holds_claim(&conn, &claim("a", "2026-01-01T00:02:00.000Z")).unwrap());
        assert!(!holds_claim(&conn, &claim("a", "2026-01-01T00:10:00.000Z")).unwrap());
        assert!(!holds_claim(&conn, &claim("b", "2026-01-01T00:02:00.000Z")).unwrap());
    }
}
