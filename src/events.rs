//! The per-job event log: append (inside the job change's own transaction), resync after a
//! reconnect, in-process subscriptions, and a cheap cross-process change check.
//!
//! Each event has a per-job `seq` (1, 2, 3... gapless, enforced by a trigger) and a global
//! `cursor` that only grows (AUTOINCREMENT: never reused, even after deletes). At most
//! [`BACKLOG`] events per job are kept; a client asking for a pruned `seq` gets
//! [`Error::EventsPruned`] and should reload the job row, which always holds the truth.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// How many events per job the database keeps (the `job_events_prune` trigger).
pub const BACKLOG: i64 = 200;

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Created.
    Created,
    /// Claimed by a worker (payload: worker, attempt).
    Claimed,
    /// Progress reported (payload: progress, step).
    Progress,
    /// Checkpoint saved (payload: bytes).
    Checkpoint,
    /// Paused (payload: by).
    Paused,
    /// Resumed (payload: by, to).
    Resumed,
    /// Recovered by the supervisor (payload: to, reason, recovery_count).
    Recovered,
    /// Completed.
    Completed,
    /// Failed (payload: code, message).
    Failed,
    /// Cancelled (payload: by, reason).
    Cancelled,
    /// Restarted (payload: by, new_input).
    Restarted,
}

impl EventKind {
    /// The text stored in `job_events.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Claimed => "claimed",
            EventKind::Progress => "progress",
            EventKind::Checkpoint => "checkpoint",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Recovered => "recovered",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Restarted => "restarted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

/// One committed event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Global position; only grows.
    pub cursor: i64,
    /// The job.
    pub job_id: i64,
    /// Per-job sequence number, gapless from 1.
    pub seq: i64,
    /// What happened.
    pub kind: EventKind,
    /// Details (a JSON object).
    pub payload: Value,
    /// When.
    pub at: Timestamp,
}

const APPEND: &str = "insert into job_events (job_id, seq, kind, payload, at)
     values (:job_id, coalesce((select max(seq) from job_events where job_id = :job_id), 0) + 1,
             :kind, :payload, :at)
     returning cursor, seq";
const SINCE: &str = "select cursor, job_id, seq, kind, payload, at from job_events
     where job_id = :job_id and seq > :seq order by seq limit :limit";
const OLDEST_SEQ: &str = "select min(seq), max(seq) from job_events where job_id = :job_id";
const AFTER: &str = "select cursor, job_id, seq, kind, payload, at from job_events
     where cursor > :cursor order by cursor limit :limit";
const FEED: &str = "select e.cursor, e.job_id, e.seq, e.kind, e.payload, e.at, j.user_id
     from job_events e left join jobs j on j.id = e.job_id
     where e.cursor > :cursor and (:job is null or e.job_id = :job)
       and (:user is null or j.user_id = :user)
     order by e.cursor limit :limit";
/// Jobs (of the filter) whose oldest kept event comes after `:cursor` but is not their first:
/// the events between were pruned, so a reader at `:cursor` would see a gap.
const FEED_GAPS: &str = "select e.job_id from job_events e
     where e.cursor > :cursor and e.seq > 1 and (:job is null or e.job_id = :job)
       and (:user is null or e.job_id in (select id from jobs where user_id = :user))
       and not exists (select 1 from job_events f where f.job_id = e.job_id and f.seq = e.seq - 1)
     order by e.cursor limit 100";
const HEAD: &str = "select coalesce(max(cursor), 0) from job_events";
const DELETE_FOR_JOB: &str = "delete from job_events where job_id = :job_id";
const JOB_EXISTS: &str = "select 1 from jobs where id = :job_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(3)?;
    let payload: String = r.get(4)?;
    Ok(Event {
        cursor: r.get(0)?,
        job_id: r.get(1)?,
        seq: r.get(2)?,
        kind: EventKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("unknown event kind {kind:?}").into(),
            )
        })?,
        payload: serde_json::from_str(&payload).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
        at: r.get(5)?,
    })
}

/// Appends an event for `job_id` inside the caller's transaction.
pub(crate) fn append(
    conn: &Connection,
    job_id: i64,
    kind: EventKind,
    payload: Value,
    now: Timestamp,
) -> Result<Event> {
    let (cursor, seq) = conn.prepare_cached(APPEND)?.query_row(
        named_params! {":job_id": job_id, ":kind": kind.as_str(), ":payload": payload.to_string(), ":at": now},
        |r| Ok((r.get(0)?, r.get(1)?)),
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
    let exists = conn
        .prepare_cached(JOB_EXISTS)?
        .query_row(named_params! {":job_id": job_id}, |_| Ok(()))
        .optional()?;
    if exists.is_none() {
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

/// Which events a feed ([`Events::feed`]) follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FeedFilter {
    /// Every job's events.
    #[default]
    All,
    /// One job's events.
    Job(i64),
    /// The events of one user's jobs.
    User(String),
}

impl FeedFilter {
    /// Whether an event of a job owned by `user_id` passes this filter.
    pub fn matches(&self, job_id: i64, user_id: Option<&str>) -> bool {
        match self {
            FeedFilter::All => true,
            FeedFilter::Job(j) => *j == job_id,
            FeedFilter::User(u) => user_id == Some(u.as_str()),
        }
    }

    fn params(&self) -> (Option<i64>, Option<&str>) {
        match self {
            FeedFilter::All => (None, None),
            FeedFilter::Job(j) => (Some(*j), None),
            FeedFilter::User(u) => (None, Some(u.as_str())),
        }
    }
}

/// An event with the user its job belongs to (`None` once the job was deleted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedEvent {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// The job's user.
    pub user_id: Option<String>,
}

/// One page of a feed, read in one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// Events after the cursor asked for, oldest first.
    pub events: Vec<FeedEvent>,
    /// Jobs (of the filter) whose events after the cursor were partly pruned: a reader
    /// cannot continue without a gap and must reload them (empty when not checked).
    pub pruned_jobs: Vec<i64>,
    /// The newest cursor in the log at the time of the read.
    pub head: i64,
}

fn feed(
    conn: &Connection,
    filter: &FeedFilter,
    cursor: i64,
    limit: u32,
    check_gaps: bool,
) -> Result<FeedPage> {
    let tx = conn.unchecked_transaction()?;
    let (job, user) = filter.params();
    let pruned_jobs = if check_gaps {
        let mut stmt = tx.prepare_cached(FEED_GAPS)?;
        let rows = stmt.query_map(
            named_params! {":cursor": cursor, ":job": job, ":user": user},
            |r| r.get(0),
        )?;
        rows.collect::<rusqlite::Result<Vec<i64>>>()?
    } else {
        Vec::new()
    };
    let events = {
        let mut stmt = tx.prepare_cached(FEED)?;
        let rows = stmt.query_map(
            named_params! {":cursor": cursor, ":job": job, ":user": user, ":limit": limit},
            |r| {
                Ok(FeedEvent {
                    event: from_row(r)?,
                    user_id: r.get(6)?,
                })
            },
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let head = tx.prepare_cached(HEAD)?.query_row([], |r| r.get(0))?;
    tx.commit()?;
    Ok(FeedPage {
        events,
        pruned_jobs,
        head,
    })
}

/// In-process fan-out of committed events to subscribers.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl Bus {
    fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = channel();
        self.lock().push(tx);
        rx
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender<Event>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends committed events; drops subscribers whose receiver is gone.
    pub(crate) fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut subs = self.lock();
        subs.retain(|s| events.iter().all(|e| s.send(e.clone()).is_ok()));
    }
}

/// The event API of an [`Engine`]; get it with [`Engine::events`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'e> {
    engine: &'e Engine,
}

impl Engine {
    /// The event API.
    pub fn events(&self) -> Events<'_> {
        Events { engine: self }
    }
}

impl Events<'_> {
    /// Events of one job after `seq` (pass 0 for everything still kept), oldest first, at
    /// most `limit`. If events after `seq` were pruned, returns [`Error::EventsPruned`]
    /// instead of a partial history: reload the job and continue from the newest seq.
    pub fn since(&self, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>> {
        self.engine.read(|c| since(c, job_id, seq, limit))
    }

    /// Events of all jobs after the global `cursor` (0 for the start), oldest first.
    pub fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Event>> {
        self.engine.read(|c| after(c, cursor, limit))
    }

    /// A page of the global feed after `cursor` for `filter`, with each job's user, in one
    /// snapshot. With `check_gaps`, also names the jobs whose events after `cursor` were
    /// partly pruned (a follower at `cursor` must reload those jobs): a live stream's resume.
    pub fn feed(
        &self,
        filter: &FeedFilter,
        cursor: i64,
        limit: u32,
        check_gaps: bool,
    ) -> Result<FeedPage> {
        self.engine
            .read(|c| feed(c, filter, cursor, limit, check_gaps))
    }

    /// A channel receiving every event this engine (and its clones) commits from now on.
    /// Events committed by other processes are not sent: poll [`Events::data_version`].
    pub fn subscribe(&self) -> Receiver<Event> {
        self.engine.bus().subscribe()
    }

    /// SQLite's `PRAGMA data_version` for this engine's connection: it changes when another
    /// connection (another process, or another engine on the same file) commits. Compare it
    /// between polls and call [`Events::after`] only when it changed.
    pub fn data_version(&self) -> Result<i64> {
        self.engine
            .read(|c| Ok(c.query_row("pragma data_version", [], |r| r.get(0))?))
    }
}
