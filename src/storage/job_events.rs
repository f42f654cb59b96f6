//! SQL for `job_events`: append inside the job change's own transaction, reads after a
//! per-job `seq` or the global `cursor`, and removal of a deleted job's events.

use std::collections::BTreeMap;

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::check::{err, Check};
use super::col;
use super::jobs;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, EventPayload, FeedFilter, FeedPage};
use crate::integrity;

/// Every column of an [`Event`], the one list [`from_row`] reads by name.
macro_rules! columns {
    () => {
        "cursor, job_id, seq, kind, payload, at"
    };
}

/// [`columns!`] as a constant, for [`col!`].
pub(super) const COLUMNS: &str = columns!();

const APPEND: &str = "insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
     values (:job_id, :seq, :kind, :payload, :at, :prev_hash, :hash)
     returning cursor";
/// The job's newest event (its seq and chain hash), which the next event follows.
const LAST_OF_JOB: &str = "select seq, hash from job_events where job_id = :job_id
     order by seq desc limit 1";
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

/// Reads one row selected with [`columns!`], by column name; a value it cannot decode is
/// [`Error::CorruptRow`].
fn from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    crate::error::decode_row("job_events", r, from_row_unchecked)
}

fn from_row_unchecked(r: &Row<'_>) -> rusqlite::Result<Event> {
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

/// Where a job's hash chain stands before an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainHead {
    /// Unknown here: read the job's newest event.
    Read,
    /// The job was inserted in this transaction, so it has no event yet (the
    /// `jobs_insert_fresh_id` trigger refuses a job id that events still name): the event is
    /// its first, seq 1 chained on [`integrity::GENESIS`].
    NewJob,
    /// The job's newest event is known (appended, or read, in this transaction): its seq and
    /// chain hash (`None` for an event written before V5, which carries none).
    Known { seq: i64, hash: Option<String> },
}

/// Appends an event for `job_id` inside the caller's transaction, after `head`, which then
/// names the new event. Whatever `head` says, the `job_events_seq_follows` trigger checks
/// the seq against the table.
pub(crate) fn append(
    conn: &Connection,
    job_id: i64,
    head: &mut ChainHead,
    payload: &EventPayload,
    now: Timestamp,
) -> Result<Event> {
    let kind = payload.kind();
    let payload = payload.to_wire();
    let (prev_seq, prev_hash) = match std::mem::replace(head, ChainHead::Read) {
        ChainHead::NewJob => (0, None),
        ChainHead::Known { seq, hash } => (seq, hash),
        ChainHead::Read => conn
            .prepare_cached(LAST_OF_JOB)?
            .query_row(named_params! {":job_id": job_id}, |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?
            .unwrap_or((0, None)),
    };
    let seq = prev_seq + 1;
    let prev_hash: String = prev_hash.unwrap_or_else(|| integrity::GENESIS.to_string());
    let (text, at) = (payload.to_string(), now.to_string());
    let hash = integrity::event_hash(&prev_hash, job_id, seq, kind.as_str(), &at, &text);
    let cursor = conn.prepare_cached(APPEND)?.query_row(
        named_params! {
            ":job_id": job_id, ":seq": seq, ":kind": kind.as_str(), ":payload": text,
            ":at": at, ":prev_hash": prev_hash, ":hash": hash,
        },
        |r| r.get(0),
    )?;
    *head = ChainHead::Known {
        seq,
        hash: Some(hash),
    };
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
        if seq.saturating_add(1) < oldest {
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

/// The events of a feed after `:cursor`: one job's (`:job`), the jobs `:job_ids` (a JSON array
/// of ids: one user's), or all.
const FEED: &str = "select cursor, job_id, seq, kind, payload, at from job_events
     where cursor > :cursor and (:job is null or job_id = :job)
       and (:job_ids is null or job_id in (select value from json_each(:job_ids)))
     order by cursor limit :limit";
/// Jobs (of the filter) whose oldest kept event comes after `:cursor` but is not their first:
/// the events between were pruned, so a reader at `:cursor` would see a gap.
const FEED_GAPS: &str = "select e.job_id from job_events e
     where e.cursor > :cursor and e.seq > 1 and (:job is null or e.job_id = :job)
       and (:job_ids is null or e.job_id in (select value from json_each(:job_ids)))
       and not exists (select 1 from job_events f where f.job_id = e.job_id and f.seq = e.seq - 1)
     order by e.cursor limit 100";
const HEAD: &str = "select coalesce(max(cursor), 0) from job_events";

/// The newest cursor in the log (0 for none): the head of [`feed`].
pub(crate) fn head(conn: &Connection) -> Result<i64> {
    Ok(conn.prepare_cached(HEAD)?.query_row([], |r| r.get(0))?)
}

/// A page of the event feed for `filter` after `cursor` (call inside one read snapshot).
pub(crate) fn feed(
    conn: &Connection,
    filter: &FeedFilter,
    cursor: i64,
    limit: u32,
    check_gaps: bool,
) -> Result<FeedPage> {
    let (job, user) = filter.params();
    let jobs_of_user = match user {
        Some(u) => Some(serde_json::to_string(&jobs::ids_of_user(conn, u)?).expect("ids")),
        None => None,
    };
    let pruned_jobs = if check_gaps {
        conn.prepare_cached(FEED_GAPS)?
            .query_map(
                named_params! {":cursor": cursor, ":job": job, ":job_ids": jobs_of_user},
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<Vec<i64>>>()?
    } else {
        Vec::new()
    };
    let events: Vec<Event> = conn
        .prepare_cached(FEED)?
        .query_map(
            named_params! {":cursor": cursor, ":job": job, ":job_ids": jobs_of_user, ":limit": limit},
            from_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    let users = jobs::users_of(conn, &FeedPage::jobs_of(&events))?;
    let head = head(conn)?;
    Ok(FeedPage::of(events, &users, pruned_jobs, head))
}

/// Every event, per job in seq order, as its chain hash covers it (doctor's `event_chain`).
const EVENT_CHAIN: &str = "select cursor, job_id, seq, kind, at, payload, prev_hash, hash
     from job_events order by job_id, seq";

/// One event as [`crate::integrity::event_hash`] covers it.
#[derive(Debug)]
pub(crate) struct EventChainRow {
    pub cursor: i64,
    pub job_id: i64,
    pub seq: i64,
    /// `[kind, at, payload]` as the text that was hashed.
    pub fields: [String; 3],
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// Calls `f` on every event, per job in seq order.
pub(crate) fn for_each_chain_row(
    conn: &Connection,
    mut f: impl FnMut(EventChainRow) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(EVENT_CHAIN)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let t = |i: usize| super::hashed_text(r, i);
        f(EventChainRow {
            cursor: r.get(0)?,
            job_id: r.get(1)?,
            seq: r.get(2)?,
            fields: [t(3)?, t(4)?, t(5)?],
            prev_hash: r.get(6)?,
            hash: r.get(7)?,
        })?;
    }
    Ok(())
}

/// The largest cursor, for doctor's `sequence` check.
pub(super) const MAX_IDS: &[(&str, &str)] = &[("job_events", "select max(cursor) from job_events")];

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
