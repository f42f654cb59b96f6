//! SQL for `ingest_runs`: start under the lock, timeline entries, lease, finish, sweep.
//!
//! Every function takes the connection (a transaction for writes) and `now`; none reads a
//! clock. The database enforces the same rules again (migrations/V3__ingest_runs.sql).

use std::time::Duration;

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde_json::{json, Map, Value};

use super::check::{err, warn, Check};
use super::col;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::run::state::{RunStatus, Scope, TriggerKind};
use crate::run::timeline::{self, StageKind, StageStatus, TimelineEntry};
use crate::schedule::state::SlotClaim;

/// One ingestion run as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Run {
    /// Row id.
    pub id: i64,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pool it ran in.
    pub scope: Scope,
    /// What started it.
    pub trigger: TriggerKind,
    /// Where it is.
    pub status: RunStatus,
    /// The lock it held (or was refused).
    pub lock_key: String,
    /// The account it ran for, if any.
    pub account_id: Option<String>,
    /// When it was triggered.
    pub started_at: Timestamp,
    /// When its lease runs out (last lease for terminal runs; none for a turned-away run).
    pub lease_expires_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// `finished_at - started_at` in milliseconds.
    pub duration_ms: Option<i64>,
    /// Why it failed (stable code: a stage's code, `RUN_ALREADY_ACTIVE`, `ABANDONED`, `STAGE_PANIC`).
    pub error_code: Option<String>,
    /// Human-readable reason.
    pub error_message: Option<String>,
    /// One entry per stage attempt.
    pub timeline: Vec<TimelineEntry>,
    /// `source`, `scope`; for a run blocked before its runner `blockedStage` and `errorCode`.
    pub meta: Map<String, Value>,
}

/// Filters for [`Runs::list`](crate::Runs::list); `None` matches everything.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only this scope.
    pub scope: Option<Scope>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only runs started this way.
    pub trigger: Option<TriggerKind>,
    /// Only runs with a smaller id (paging, newest first).
    pub before_id: Option<i64>,
    /// At most this many (default 50).
    pub limit: u32,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            pipeline: None,
            scope: None,
            status: None,
            trigger: None,
            before_id: None,
            limit: 50,
        }
    }
}

/// Every column of a [`Run`], the one list [`RawRun::from_row`] reads by name.
macro_rules! columns {
    () => {
        "id, pipeline, scope, trigger, status, lock_key, account_id, started_at, \
         lease_expires_at, finished_at, duration_ms, error_code, error_message, timeline, meta_json"
    };
}

/// [`columns!`] as a constant, for [`col!`].
pub(super) const COLUMNS: &str = columns!();

const INSERT_STARTED: &str = "insert into ingest_runs
    (pipeline, scope, trigger, status, lock_key, account_id, started_at, lease_expires_at, meta_json)
    values (:pipeline, :scope, :trigger, 'started', :lock_key, :account_id, :now, :lease, :meta)";

const INSERT_REJECTED: &str = "insert into ingest_runs
    (pipeline, scope, trigger, status, lock_key, account_id, started_at, finished_at, duration_ms,
     error_code, error_message, timeline, meta_json)
    values (:pipeline, :scope, :trigger, 'failed', :lock_key, :account_id, :now, :now, 0,
            :code, :message, :timeline, :meta)";

const ACTIVE_HOLDER: &str = "select id, lease_expires_at from ingest_runs
    where lock_key = :lock_key and status = 'started'";

const APPEND_ENTRY: &str = "update ingest_runs
    set timeline = json_insert(timeline, '$[#]', json(:entry))
    where id = :id and status = 'started'";

const REPLACE_LAST_ENTRY: &str = "update ingest_runs
    set timeline = json_set(timeline, '$[#-1]', json(:entry))
    where id = :id and status = 'started' and json_array_length(timeline) > 0";

// The open (last) entry of a started run, annotated in place: still open, same stage,
// attempt and start (what V5's append-only rule allows), a new message and detail.
const ANNOTATE_OPEN_ENTRY: &str = "update ingest_runs
    set timeline = json_set(timeline, '$[#-1].message', :message, '$[#-1].detail', json(:detail))
    where id = :id and status = 'started' and json_array_length(timeline) > 0
      and json_extract(timeline, '$[#-1].status') = 'started'";

const RENEW_LEASE: &str = "update ingest_runs set lease_expires_at = :lease
    where id = :id and status = 'started'";

// finished_at never precedes started_at (a clock may step back); duration_ms is computed
// with the very expression of the CHECK, so the two always agree.
const FINISH: &str = "update ingest_runs
    set status = :status,
        finished_at = max(:now, started_at),
        duration_ms = cast(round((julianday(max(:now, started_at)) - julianday(started_at)) * 86400000) as integer),
        error_code = :code,
        error_message = :message,
        meta_json = json_patch(meta_json, :meta)
    where id = :id and status = 'started'";

const MERGE_META: &str = "update ingest_runs set meta_json = json_patch(meta_json, :meta)
    where id = :id and status = 'started'";

const EXPIRED: &str = "select id from ingest_runs
    where status = 'started' and lease_expires_at <= :now order by lease_expires_at, id";

const TIMELINE_OF: &str =
    "select timeline, lease_expires_at from ingest_runs where id = :id and status = 'started'";

const IS_STARTED: &str = "select status = 'started' from ingest_runs where id = :id";

pub(super) const GET: &str = concat!("select ", columns!(), " from ingest_runs where id = :id");

/// The runs started for a slot (each names it in `meta_json.slotId`, written in the run's
/// own start transaction), and whether each was a lock refusal. Shaped like the partial
/// index `ingest_runs_slot` (V6), `json_valid` term included.
const SLOT_RUNS: &str = "
    select id, coalesce(json_extract(meta_json, '$.blockedStage') = 'lock', 0) from ingest_runs
    where json_valid(meta_json) and json_extract(meta_json, '$.slotId') = :id
    order by id";

const LIST: &str = concat!(
    "select ",
    columns!(),
    " from ingest_runs
     where (:pipeline is null or pipeline = :pipeline)
       and (:scope is null or scope = :scope)
       and (:status is null or status = :status)
       and (:trigger is null or trigger = :trigger)
       and (:before is null or id < :before)
     order by id desc limit :limit"
);

/// Retention: terminal runs that finished before the cutoff (never a started one).
const PRUNE: &str = "delete from ingest_runs
    where started_at < :cutoff and status <> 'started' and finished_at < :cutoff
    returning id";

/// What a run about to start is.
pub(crate) struct NewRun<'a> {
    pub pipeline: &'a str,
    pub scope: Scope,
    pub trigger: TriggerKind,
    pub lock_key: &'a str,
    pub account_id: Option<&'a str>,
    pub lease: Duration,
    /// The schedule slot claim this run is started for: the run names the slot
    /// (`meta_json.slotId`) and starts only while the claim holds.
    pub slot: Option<&'a SlotClaim>,
}

/// The result of [`start`].
#[derive(Debug, PartialEq)]
pub(crate) enum Started {
    /// The new run holds the lock.
    Run(i64),
    /// Another run holds it; `rejection_id` is the failed record of this attempt.
    Rejected {
        rejection_id: i64,
        active_run_id: Option<i64>,
        lease_expires_at: Option<Timestamp>,
    },
}

/// Starts a run under its lock: first finalizes an expired holder of the same lock as
/// `ABANDONED`, then inserts the started row. When the lock is held, records the attempt as
/// a failed run (`RUN_ALREADY_ACTIVE`, `blockedStage: "lock"`) instead.
pub(crate) fn start(tx: &Connection, new: &NewRun<'_>, now: Timestamp) -> Result<Started> {
    if let Some(claim) = new.slot {
        // The fence: a claim given back (its ticker was presumed dead) starts nothing.
        if !super::schedules::holds_claim(tx, claim)? {
            return Err(Error::IllegalTransition {
                entity: "due_run",
                id: claim.slot_id.to_string(),
                from: "no longer claimed by this ticker".into(),
                to: "fired".into(),
            });
        }
    }
    let slot_id = new.slot.map(|c| c.slot_id);
    let holder: Option<(i64, Option<Timestamp>)> = tx
        .prepare_cached(ACTIVE_HOLDER)?
        .query_row(named_params! {":lock_key": new.lock_key}, |r| {
            Ok((r.get("id")?, r.get("lease_expires_at")?))
        })
        .optional()?;
    if let Some((id, Some(lease))) = holder {
        if lease <= now {
            abandon(tx, id, now)?;
        }
    }
    let source = new.trigger.as_str();
    let mut meta = json!({"source": source, "scope": new.scope.as_str()});
    if let Some(id) = slot_id {
        meta["slotId"] = json!(id);
    }
    let meta = meta.to_string();
    let inserted = tx.prepare_cached(INSERT_STARTED)?.execute(named_params! {
        ":pipeline": new.pipeline,
        ":scope": new.scope,
        ":trigger": new.trigger,
        ":lock_key": new.lock_key,
        ":account_id": new.account_id,
        ":now": now,
        ":lease": now + new.lease,
        ":meta": meta,
    });
    match inserted.map_err(Error::from) {
        Ok(_) => Ok(Started::Run(tx.last_insert_rowid())),
        Err(e) if e.code() == "RUN_ALREADY_ACTIVE" => {
            let holder: Option<(i64, Option<Timestamp>)> = tx
                .prepare_cached(ACTIVE_HOLDER)?
                .query_row(named_params! {":lock_key": new.lock_key}, |r| {
                    Ok((r.get("id")?, r.get("lease_expires_at")?))
                })
                .optional()?;
            let active_run_id = holder.map(|h| h.0);
            let lease_expires_at = holder.and_then(|h| h.1);
            let err = Error::RunAlreadyActive {
                lock_key: new.lock_key.to_string(),
                active_run_id,
                lease_expires_at,
                recorded_run_id: None,
            };
            let message = err.to_string();
            let entry = TimelineEntry::started("lock", StageKind::Lock, 1, now)
                .close(StageStatus::Failed, now)
                .with_error(err.code(), &message)
                .with_detail(Some(json!({"activeRunId": active_run_id})));
            let mut meta = json!({
                "blockedStage": "lock",
                "errorCode": err.code(),
                "source": source,
                "scope": new.scope.as_str(),
                "activeRunId": active_run_id,
            });
            if let Some(id) = slot_id {
                meta["slotId"] = json!(id);
            }
            tx.prepare_cached(INSERT_REJECTED)?.execute(named_params! {
                ":pipeline": new.pipeline,
                ":scope": new.scope,
                ":trigger": new.trigger,
                ":lock_key": new.lock_key,
                ":account_id": new.account_id,
                ":now": now,
                ":code": err.code(),
                ":message": message,
                ":timeline": serde_json::to_string(&[entry]).expect("entries serialize"),
                ":meta": meta.to_string(),
            })?;
            Ok(Started::Rejected {
                rejection_id: tx.last_insert_rowid(),
                active_run_id,
                lease_expires_at,
            })
        }
        Err(e) => Err(e),
    }
}

/// Appends `entry` to a started run's timeline; `false` if the run is no longer started.
pub(crate) fn append_entry(tx: &Connection, id: i64, entry: &TimelineEntry) -> Result<bool> {
    let n = tx
        .prepare_cached(APPEND_ENTRY)?
        .execute(named_params! {":id": id, ":entry": entry.to_json()})?;
    Ok(n == 1)
}

/// Replaces the last (open) entry of a started run's timeline with its closed form.
pub(crate) fn close_last_entry(tx: &Connection, id: i64, entry: &TimelineEntry) -> Result<bool> {
    let n = tx
        .prepare_cached(REPLACE_LAST_ENTRY)?
        .execute(named_params! {":id": id, ":entry": entry.to_json()})?;
    Ok(n == 1)
}

/// Sets the message and detail of a started run's open (last) entry, which stays open:
/// what a stage is waiting for, live. `false` if there is no open entry.
pub(crate) fn annotate_open_entry(
    tx: &Connection,
    id: i64,
    message: Option<&str>,
    detail: &serde_json::Value,
) -> Result<bool> {
    let n = tx
        .prepare_cached(ANNOTATE_OPEN_ENTRY)?
        .execute(named_params! {
            ":id": id,
            ":message": message,
            ":detail": detail.to_string(),
        })?;
    Ok(n == 1)
}

/// Moves a started run's lease to `until`; `false` if the run is no longer started.
pub(crate) fn renew_lease(tx: &Connection, id: i64, until: Timestamp) -> Result<bool> {
    let n = tx
        .prepare_cached(RENEW_LEASE)?
        .execute(named_params! {":id": id, ":lease": until})?;
    Ok(n == 1)
}

/// `meta_json` keys written by the orchestrator only.
pub(crate) const RESERVED_META: &[&str] = &[
    "source",
    "scope",
    "blockedStage",
    "failedStage",
    "errorCode",
    "slotId",
];

/// Merges a JSON object into a started run's `meta_json`; `NotFound`-like refusal when the
/// run is not started.
pub(crate) fn merge_meta(tx: &Connection, id: i64, patch: &Value) -> Result<()> {
    let n = tx
        .prepare_cached(MERGE_META)?
        .execute(named_params! {":id": id, ":meta": patch.to_string()})?;
    if n == 1 {
        Ok(())
    } else {
        Err(Error::RunEnded { run_id: id })
    }
}

/// How a run ends.
pub(crate) struct Finish<'a> {
    pub status: RunStatus,
    pub error: Option<(&'a str, &'a str)>,
    pub meta: Value,
}

/// The runs started for slot `id`: `(run id, was a lock refusal)`, oldest first.
pub(crate) fn slot_runs(conn: &Connection, id: i64) -> Result<Vec<(i64, bool)>> {
    let mut stmt = conn.prepare_cached(SLOT_RUNS)?;
    let rows = stmt.query_map(named_params! { ":id": id }, |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ends a started run; `false` if it had already ended. Refuses non-terminal targets and
/// a failure without a code before touching the database.
pub(crate) fn finish(tx: &Connection, id: i64, end: &Finish<'_>, now: Timestamp) -> Result<bool> {
    if !RunStatus::Started.can_transition_to(end.status) {
        return Err(Error::IllegalTransition {
            entity: "run",
            id: id.to_string(),
            from: RunStatus::Started.to_string(),
            to: end.status.to_string(),
        });
    }
    if (end.status == RunStatus::Failed) != end.error.is_some() {
        return Err(Error::invalid(
            "error",
            "a failed run has an error code, a successful one none",
        ));
    }
    let n = tx.prepare_cached(FINISH)?.execute(named_params! {
        ":id": id,
        ":status": end.status,
        ":now": now,
        ":code": end.error.map(|e| e.0),
        ":message": end.error.map(|e| e.1),
        ":meta": end.meta.to_string(),
    })?;
    Ok(n == 1)
}

/// Finalizes a started run whose holder stopped renewing: its open timeline entry is
/// closed as failed, the run ends failed `ABANDONED`. `false` if it was no longer started.
pub(crate) fn abandon(tx: &Connection, id: i64, now: Timestamp) -> Result<bool> {
    let lease: Option<Option<Timestamp>> = tx
        .prepare_cached(TIMELINE_OF)?
        .query_row(named_params! {":id": id}, |r| r.get("lease_expires_at"))
        .optional()?;
    let Some(lease) = lease else {
        return Ok(false);
    };
    let lease = lease.map(|l| l.to_string()).unwrap_or_default();
    let message = format!("lease expired at {lease}: the holder stopped renewing it");
    let meta = json!({"abandonedAt": now.to_string(), "errorCode": "ABANDONED"});
    end_started(tx, id, "ABANDONED", &message, meta, now)
}

/// Ends a started run failed with `code` and `message` (its open timeline entry closed as
/// failed with them, `meta` merged, `openStage` added); `false` if it was not started.
pub(crate) fn end_started(
    tx: &Connection,
    id: i64,
    code: &str,
    message: &str,
    mut meta: Value,
    now: Timestamp,
) -> Result<bool> {
    let text: Option<String> = tx
        .prepare_cached(TIMELINE_OF)?
        .query_row(named_params! {":id": id}, |r| r.get("timeline"))
        .optional()?;
    let Some(text) = text else {
        return Ok(false);
    };
    if let Some(last) = timeline::parse(&text)?.pop() {
        if last.status == StageStatus::Started {
            meta["openStage"] = json!(last.stage);
            let closed = last
                .close(StageStatus::Failed, now)
                .with_error(code, message);
            close_last_entry(tx, id, &closed)?;
        }
    }
    finish(
        tx,
        id,
        &Finish {
            status: RunStatus::Failed,
            error: Some((code, message)),
            meta,
        },
        now,
    )
}

/// Finalizes every started run whose lease expired by `now`; returns their ids.
pub(crate) fn sweep(tx: &Connection, now: Timestamp) -> Result<Vec<i64>> {
    let ids: Vec<i64> = tx
        .prepare_cached(EXPIRED)?
        .query_map(named_params! {":now": now}, |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut done = Vec::with_capacity(ids.len());
    for id in ids {
        if abandon(tx, id, now)? {
            done.push(id);
        }
    }
    Ok(done)
}

/// Whether run `id` is started (`None`: no such run).
pub(crate) fn is_started(conn: &Connection, id: i64) -> Result<Option<bool>> {
    Ok(conn
        .prepare_cached(IS_STARTED)?
        .query_row(named_params! {":id": id}, |r| r.get(0))
        .optional()?)
}

/// Deletes terminal runs that finished before `cutoff`; returns their ids.
pub(crate) fn prune(tx: &Connection, cutoff: Timestamp) -> Result<Vec<i64>> {
    Ok(tx
        .prepare_cached(PRUNE)?
        .query_map(named_params! {":cutoff": cutoff}, |r| r.get("id"))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The run with `id`.
pub(crate) fn get(conn: &Connection, id: i64) -> Result<Run> {
    let raw = conn
        .prepare_cached(GET)?
        .query_row(named_params! {":id": id}, RawRun::from_row)
        .optional()?
        .ok_or_else(|| Error::not_found("run", id))?;
    raw.into_run()
}

/// Runs matching `filter`, newest first.
pub(crate) fn list(conn: &Connection, filter: &RunFilter) -> Result<Vec<Run>> {
    let raws: Vec<RawRun> = conn
        .prepare_cached(LIST)?
        .query_map(
            named_params! {
                ":pipeline": filter.pipeline,
                ":scope": filter.scope,
                ":status": filter.status,
                ":trigger": filter.trigger,
                ":before": filter.before_id,
                ":limit": filter.limit,
            },
            RawRun::from_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    raws.into_iter().map(RawRun::into_run).collect()
}

struct RawRun {
    run: Run,
    timeline: String,
    meta: String,
}

impl RawRun {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        crate::error::decode_row("ingest_runs", r, Self::from_row_unchecked)
    }

    fn from_row_unchecked(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            run: Run {
                id: r.get(col!(COLUMNS, "id"))?,
                pipeline: r.get(col!(COLUMNS, "pipeline"))?,
                scope: r.get(col!(COLUMNS, "scope"))?,
                trigger: r.get(col!(COLUMNS, "trigger"))?,
                status: r.get(col!(COLUMNS, "status"))?,
                lock_key: r.get(col!(COLUMNS, "lock_key"))?,
                account_id: r.get(col!(COLUMNS, "account_id"))?,
                started_at: r.get(col!(COLUMNS, "started_at"))?,
                lease_expires_at: r.get(col!(COLUMNS, "lease_expires_at"))?,
                finished_at: r.get(col!(COLUMNS, "finished_at"))?,
                duration_ms: r.get(col!(COLUMNS, "duration_ms"))?,
                error_code: r.get(col!(COLUMNS, "error_code"))?,
                error_message: r.get(col!(COLUMNS, "error_message"))?,
                timeline: Vec::new(),
                meta: Map::new(),
            },
            timeline: r.get(col!(COLUMNS, "timeline"))?,
            meta: r.get(col!(COLUMNS, "meta_json"))?,
        })
    }

    fn into_run(mut self) -> Result<Run> {
        self.run.timeline = timeline::parse(&self.timeline)?;
        self.run.meta = serde_json::from_str(&self.meta).map_err(|e| Error::CorruptRow {
            table: "ingest_runs",
            id: self.run.id.to_string(),
            column: "meta_json".into(),
            reason: e.to_string(),
        })?;
        Ok(self.run)
    }
}

/// The largest id of each AUTOINCREMENT table here, for doctor's `sequence` check.
pub(super) const MAX_IDS: &[(&str, &str)] = &[("ingest_runs", "select max(id) from ingest_runs")];

// ---- doctor checks: the rows' rules (migrations) restated as queries that list offenders

const RUNS_STATE: &str = "select id, case
       when status is null or status not in (select value from json_each(:run_statuses))
         then 'status ' || quote(status) || ' is not a run status'
       when scope is null or scope not in (select value from json_each(:scopes))
         then 'scope ' || quote(scope) || ' is not a scope'
       when trigger is null or trigger not in (select value from json_each(:triggers))
         then 'trigger ' || quote(trigger) || ' is not a trigger kind'
     end as detail from ingest_runs where detail is not null";

const RUNS_TIMESTAMPS: &str = "select id, case
       when started_at is null or started_at not glob :ts or coalesce(finished_at, started_at) not glob :ts
         or coalesce(lease_expires_at, started_at) not glob :ts
         then 'a timestamp is not fixed-width utc text'
       when (status = 'started') <> (finished_at is null)
         then 'status ' || status || (case when finished_at is null then ' without' else ' with' end) || ' finished_at'
       when (finished_at is null) <> (duration_ms is null) then 'duration_ms disagrees with finished_at'
       when finished_at < started_at then 'finished before it started'
       when duration_ms is not
            cast(round((julianday(finished_at) - julianday(started_at)) * 86400000) as integer)
         then 'duration_ms ' || duration_ms || ' is not finished_at - started_at'
       when status = 'started' and lease_expires_at is null then 'started without a lease'
     end as detail from ingest_runs
     where detail is not null and status in (select value from json_each(:run_statuses))";

const RUNS_OUTCOME: &str = "select id, case
       when (status = 'failed') <> (error_code is not null) then 'error_code disagrees with status ' || status
       when status <> 'failed' and error_message is not null then 'error_message on a ' || status || ' run'
     end as detail from ingest_runs
     where detail is not null and status in (select value from json_each(:run_statuses))";

const RUNS_JSON: &str = "select id, case
       when not json_valid(timeline) or json_type(timeline) <> 'array' then 'timeline is not a json array'
       when exists (select 1 from json_each(timeline) where type <> 'object')
         then 'a timeline entry is not an object'
       when not json_valid(meta_json) or json_type(meta_json) <> 'object' then 'meta_json is not a json object'
     end as detail from ingest_runs where detail is not null";

const RUNS_LOCK: &str =
    "select lock_key, count(*) || ' started runs hold this lock: ' || group_concat(id, ', ')
     from ingest_runs where status = 'started' group by lock_key having count(*) > 1";

const RUNS_ABANDONED: &str =
    "select id, 'started, lease expired at ' || lease_expires_at || ' (needs a sweep)'
     from ingest_runs where status = 'started' and lease_expires_at < :now";

/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[("ingest_runs", "select * from ingest_runs")];

/// This module's doctor checks (collected by `doctor`).
pub(crate) const CHECKS: &[Check] = &[
    err("state", "ingest_runs", RUNS_STATE),
    err("timestamps", "ingest_runs", RUNS_TIMESTAMPS),
    err("outcome", "ingest_runs", RUNS_OUTCOME),
    err("json", "ingest_runs", RUNS_JSON),
    err("run_lock", "ingest_runs", RUNS_LOCK),
    warn("abandoned_run", "ingest_runs", RUNS_ABANDONED),
];

// ---- the Trust UI's bounded reads (index-ordered LIMITs, capped counts)

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_RUNS_CAPPED: &str = "select count(*) from (select 1 from ingest_runs
     where scope = :scope and status = :status limit :cap)";

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_RUNS_FAILED_NEWEST: &str =
    "select id, pipeline, scope, trigger, started_at, error_code, error_message,
       json_extract(meta_json, '$.blockedStage')
     from ingest_runs
     where status = 'failed' order by started_at desc, id desc limit :limit";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, DbOptions};

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(1_795_000_000_000 + ms).unwrap()
    }

    #[test]
    fn finish_refuses_what_the_table_refuses_before_touching_the_database() {
        let conn = db::open_in_memory(&DbOptions::default()).unwrap();
        let new = NewRun {
            pipeline: "p",
            scope: Scope::Targets,
            trigger: TriggerKind::Manual,
            lock_key: "p:targets",
            account_id: None,
            lease: Duration::from_secs(60),
            slot: None,
        };
        let Started::Run(id) = start(&conn, &new, t(0)).unwrap() else {
            panic!("lock is free")
        };
        let again = Finish {
            status: RunStatus::Started,
            error: None,
            meta: json!({}),
        };
        assert_eq!(
            finish(&conn, id, &again, t(1)).unwrap_err().code(),
            "ILLEGAL_TRANSITION"
        );
        let no_code = Finish {
            status: RunStatus::Failed,
            error: None,
            meta: json!({}),
        };
        assert_eq!(
            finish(&conn, id, &no_code, t(1)).unwrap_err().code(),
            "INVALID_INPUT"
        );
        let ok = Finish {
            status: RunStatus::Success,
            error: None,
            meta: json!({}),
        };
        // A clock that stepped back: finished_at is clamped to started_at.
        assert!(finish(&conn, id, &ok, t(-5)).unwrap());
        let run = get(&conn, id).unwrap();
        assert_eq!((run.finished_at, run.duration_ms), (Some(t(0)), Some(0)));
        assert!(
            !finish(&conn, id, &ok, t(2)).unwrap(),
            "a terminal run is not finished twice"
        );
        assert!(!renew_lease(&conn, id, t(100)).unwrap());
        assert!(!append_entry(
            &conn,
            id,
            &TimelineEntry::started("x", StageKind::Runner, 1, t(3))
        )
        .unwrap());
    }
}
