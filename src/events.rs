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
use crate::integrity;

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

const APPEND: &str = "insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
     values (:job_id, :seq, :kind, :payload, :at, :prev_hash, :hash)
     returning cursor";
/// The job's newest event (its seq and chain hash), which the next event follows.
const LAST_OF_JOB: &str = "select seq, hash from job_events where job_id = :job_id
     order by seq desc limit 1";
const SINCE: &str = "select cursor, job_id, seq, kind, payload, at from job_events
     where job_id = :job_id and seq > :seq order by seq limit :limit";
const OLDEST_SEQ: &str = "select min(seq), max(seq) from job_events where job_id = :job_id";
const AFTER: &str = "select cursor, job_id, seq, kind, payload, at from job_events
     where cursor > :cursor order by cursor limit :limit";
const DELETE_FOR_JOB: &str = "delete from job_events where job_id = :job_id";
const JOB_EXISTS: &str = "select 1 from jobs where id = :job_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    crate::error::decode_row("job_events", r, from_row_unchecked)
}

fn from_row_unchecked(r: &Row<'_>) -> rusqlite::Result<Event> {
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
    let last: Option<(i64, Option<String>)> = conn
        .prepare_cached(LAST_OF_JOB)?
        .query_row(named_params! {":job_id": job_id}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, None));
    let seq = prev_seq + 1;
    let prev_hash = prev_hash.unwrap_or_else(|| integrity::GENESIS.to_string());
    let text = payload.to_string();
    let at = now.to_string();
    let hash = integrity::event_hash(&prev_hash, job_id, seq, kind.as_str(), &at, &text);
    let cursor = conn.prepare_cached(APPEND)?.query_row(
        named_params! {
            ":job_id": job_id, ":seq": seq, ":kind": kind.as_str(), ":payload": text,
            ":at": at, ":prev_hash": prev_hash, ":hash": hash,
        },
        |r| r.get(0),
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
