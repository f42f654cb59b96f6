//! SQL for `job_events`: append inside the job change's own transaction, reads after a
//! per-job `seq` or the global `cursor`, and removal of a deleted job's events.

use std::collections::BTreeMap;

use rusqlite::{named_params, Connection, Row};

use super::check::{err, Check};
use super::col;
use super::jobs;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, EventPayload};

/// Every column of an [`Event`], the one list [`from_row`] reads by name.
macro_rules! columns {
    () => {
        "cursor, job_id, seq, kind, payload, at"
    };
}

/// [`columns!`] as a constant, for [`col!`].
pub(super) const COLUMNS: &str = columns!();

const APPEND: &str = "insert into job_events (job_id, seq, kind, payload, at)
     values (:job_id, coalesce((select max(seq) from job_events where job_id = :job_id), 0) + 1,
             :kind, :payload, :at)
     returning cursor, seq";
const SINCE: &str = concat!(
    "select ",
    columns!(),
    " from job_events
     where job_id = :job_id and seq > :seq order by seq limit :limit"
);
const OLDEST_SEQ: &str = "select min(seq), max(seq) from job_events where job_id = :job_id";
pub(super) const AFTER: &str = concat!(
    "select ",
    columns!(),
    " from job_events
     where cursor > :cursor order by cursor limit :limit"
);
const DELETE_FOR_JOB: &str = "delete from job_events where job_id = :job_id";

/// Reads one row selected with [`columns!`], by column name.
fn from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(col!(COLUMNS, "kind"))?;
    let payload: String = r.get(col!(COLUMNS, "payload"))?;
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    Ok(Event {
        cursor: r.get(col!(COLUMNS, "cursor"))?,
        job_id: r.get(col!(COLUMNS, "job_id"))?,
        seq: r.get(col!(COLUMNS, "seq"))?,
        kind: EventKind::parse(&kind).ok_or_else(|| {
            bad(
                col!(COLUMNS, "kind"),
                format!("unknown event kind {kind:?}"),
            )
        })?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| bad(col!(COLUMNS, "payload"), e.to_string()))?,
        at: r.get(col!(COLUMNS, "at"))?,
    })
}

/// Appends an event for `job_id` inside the caller's transaction.
pub(crate) fn append(
    conn: &Connection,
    job_id: i64,
    payload: &EventPayload,
    now: Timestamp,
) -> Result<Event> {
    let kind = payload.kind();
    let payload = payload.to_wire();
    let (cursor, seq) = conn.prepare_cached(APPEND)?.query_row(
        named_params! {":job_id": job_id, ":kind": kind.as_str(), ":payload": payload.to_string(), ":at": now},
        |r| Ok((r.get(0)?, r.get(1)?)), // returning cursor, seq
    )?;
    Ok(Event {
        cursor,
        job_id,
        seq,
        kind,
        payload,
        at: now,
    })
}

/// Removes a deleted job's events (allowed by the trigger once the job row is gone).
pub(crate) fn delete_for_job(conn: &Connection, job_id: i64) -> Result<()> {
    conn.prepare_cached(DELETE_FOR_JOB)?
        .execute(named_params! {":job_id": job_id})?;
    Ok(())
}

/// Events of `job_id` after `seq` (0 for all kept), at most `limit`.
pub(crate) fn since(conn: &Connection, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>> {
    if !jobs::exists(conn, job_id)? {
        return Err(Error::not_found("job", job_id));
    }
    let (oldest, newest): (Option<i64>, Option<i64>) = conn
        .prepare_cached(OLDEST_SEQ)?
        .query_row(named_params! {":job_id": job_id}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    if let (Some(oldest), Some(newest)) = (oldest, newest) {
        if seq + 1 < oldest {
            return Err(Error::EventsPruned {
                job_id,
                requested: seq,
                oldest_kept: oldest,
                newest,
            });
        }
    }
    let mut stmt = conn.prepare_cached(SINCE)?;
    let rows = stmt.query_map(
        named_params! {":job_id": job_id, ":seq": seq, ":limit": limit},
        from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Events of every job after the global `cursor`, at most `limit`.
pub(crate) fn after(conn: &Connection, cursor: i64, limit: u32) -> Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(AFTER)?;
    let rows = stmt.query_map(named_params! {":cursor": cursor, ":limit": limit}, from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---- doctor checks: the rows' rules (migrations) restated as queries that list offenders

const EVENTS_SEQ: &str = "select job_id, 'kept seqs ' || min(seq) || '..' || max(seq) || ' hold ' || count(*) || ' events'
     from job_events group by job_id
     having count(*) <> max(seq) - min(seq) + 1 or min(seq) > max(1, max(seq) - :backlog + 1)";

const EVENTS_BACKLOG: &str = "select job_id, count(*) || ' events kept, more than ' || :backlog
     from job_events group by job_id having count(*) > :backlog";

const EVENTS_ROWS: &str = "select cursor, case
       when not json_valid(payload) or json_type(payload) <> 'object' then 'payload is not a json object'
       when at is null or at not glob :ts then 'a timestamp is not fixed-width utc text'
     end as detail from job_events where detail is not null";

/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[("job_events", "select * from job_events")];

/// This module's doctor checks (collected by `doctor`).
pub(crate) const CHECKS: &[Check] = &[
    err("event_seq", "job_events", EVENTS_SEQ),
    err("event_backlog", "job_events", EVENTS_BACKLOG),
    err("json", "job_events", EVENTS_ROWS),
];

const COUNT_PER_JOB: &str = "select job_id, count(*) as events from job_events group by job_id";

/// How many events each job with events has; `None` when the table cannot be read as
/// expected (a dropped table or column, which doctor's schema check reports).
pub(crate) fn count_per_job(conn: &Connection) -> Result<Option<BTreeMap<i64, i64>>> {
    let Ok(mut stmt) = conn.prepare_cached(COUNT_PER_JOB) else {
        return Ok(None);
    };
    let rows = stmt.query_map([], |r| Ok((r.get("job_id")?, r.get("events")?)))?;
    Ok(Some(rows.collect::<rusqlite::Result<_>>()?))
}
