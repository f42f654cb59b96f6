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
use crate::job::JobState;

/// How many events per job the database keeps (the `job_events_prune` trigger).
pub const BACKLOG: i64 = 200;

/// What happened to a job. The payload of each kind is the matching [`EventPayload`]
/// variant; its fields are listed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Created ([`EventPayload::Created`]).
    Created,
    /// Claimed by a worker ([`EventPayload::Claimed`]).
    Claimed,
    /// Progress reported ([`EventPayload::Progress`]).
    Progress,
    /// Checkpoint saved ([`EventPayload::Checkpoint`]).
    Checkpoint,
    /// Paused by an operator ([`EventPayload::Paused`]).
    Paused,
    /// Resumed by an operator ([`EventPayload::Resumed`]).
    Resumed,
    /// Recovered by a supervisor ([`EventPayload::Recovered`]).
    Recovered,
    /// Completed ([`EventPayload::Completed`]).
    Completed,
    /// Failed by its worker, an operator or a supervisor ([`EventPayload::Failed`]).
    Failed,
    /// Cancelled by an operator ([`EventPayload::Cancelled`]).
    Cancelled,
    /// Restarted by an operator ([`EventPayload::Restarted`]).
    Restarted,
}

/// The payload of a job event, one variant per [`EventKind`]: the only way runledger writes
/// one, and a typed way to read one ([`Event::decode`]).
///
/// **Wire shape, version 1.** `job_events.payload` (and [`Event::payload`]) is the JSON
/// object of the variant's fields; the kind is its own column. Version 1 has no `v` key; a
/// later change of shape adds `"v": 2`, and [`Event::decode`] refuses a version it does not
/// know ([`Error::UnsupportedVersion`]). Readers must ignore keys they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventPayload {
    /// The job was created.
    Created {
        /// The job's kind.
        kind: String,
        /// Its owner.
        user_id: String,
    },
    /// A worker claimed the job (also after a resume onto a worker).
    Claimed {
        /// The worker.
        worker: String,
        /// The attempt it holds.
        attempt: i64,
    },
    /// The worker reported progress.
    Progress {
        /// 0..=100.
        progress: u8,
        /// What it is doing, if it said.
        step: Option<String>,
    },
    /// The worker saved a checkpoint.
    Checkpoint {
        /// Its size in bytes of JSON text.
        bytes: usize,
    },
    /// An operator paused the running job.
    Paused {
        /// The operator.
        by: String,
        /// The state before.
        from: JobState,
        /// `paused`.
        to: JobState,
    },
    /// An operator resumed the paused job: back to `created`, or straight to `running` on a
    /// worker ([`Jobs::resume_on`](crate::Jobs::resume_on), followed by `claimed`).
    Resumed {
        /// The operator.
        by: String,
        /// `paused`.
        from: JobState,
        /// `created` or `running`.
        to: JobState,
    },
    /// A supervisor recovered the stalled job.
    Recovered {
        /// `paused`, `created` or `failed`.
        to: JobState,
        /// `STALLED` or `RECOVERY_EXHAUSTED` when it failed the job, else `null`.
        code: Option<String>,
        /// The attempt that stalled.
        attempt: i64,
        /// Recoveries so far, this one included.
        recovery_count: i64,
        /// The supervisor, or the operator of a manual recovery.
        by: String,
    },
    /// The worker completed the job.
    Completed {
        /// The attempt that completed it.
        attempt: i64,
    },
    /// The job failed: its worker reported a failure (`by` absent), or an operator or a
    /// supervisor failed it (`by` names them).
    Failed {
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
        /// Who failed it, when not its own worker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An operator cancelled the job.
    Cancelled {
        /// The operator.
        by: String,
        /// The state before.
        from: JobState,
        /// `cancelled`.
        to: JobState,
        /// Why, if given.
        reason: Option<String>,
    },
    /// An operator restarted the failed or cancelled job.
    Restarted {
        /// The operator.
        by: String,
        /// The state before.
        from: JobState,
        /// Whether the input was replaced.
        new_input: bool,
    },
}

impl EventPayload {
    /// The kind of event this payload belongs to.
    pub fn kind(&self) -> EventKind {
        match self {
            EventPayload::Created { .. } => EventKind::Created,
            EventPayload::Claimed { .. } => EventKind::Claimed,
            EventPayload::Progress { .. } => EventKind::Progress,
            EventPayload::Checkpoint { .. } => EventKind::Checkpoint,
            EventPayload::Paused { .. } => EventKind::Paused,
            EventPayload::Resumed { .. } => EventKind::Resumed,
            EventPayload::Recovered { .. } => EventKind::Recovered,
            EventPayload::Completed { .. } => EventKind::Completed,
            EventPayload::Failed { .. } => EventKind::Failed,
            EventPayload::Cancelled { .. } => EventKind::Cancelled,
            EventPayload::Restarted { .. } => EventKind::Restarted,
        }
    }

    /// The stored JSON object (version 1: the variant's fields, no kind, no `v`).
    fn to_wire(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(map) = v.as_object_mut() {
            map.remove("event");
        }
        v
    }

    /// Reads a stored payload of `kind`.
    fn from_wire(kind: EventKind, payload: &Value) -> Result<Self> {
        let Some(map) = payload.as_object() else {
            return Err(Error::InvalidRecord {
                what: "event payload",
                errors: vec![crate::error::FieldError {
                    field: "payload".into(),
                    reason: "not a JSON object".into(),
                }],
            });
        };
        if let Some(v) = map.get("v") {
            let found = v.as_i64().unwrap_or(-1);
            if found != PAYLOAD_VERSION {
                return Err(Error::UnsupportedVersion {
                    what: "event payload",
                    found,
                    known: PAYLOAD_VERSION,
                });
            }
        }
        let mut tagged = map.clone();
        tagged.insert("event".into(), Value::String(kind.as_str().into()));
        serde_json::from_value(Value::Object(tagged)).map_err(|e| Error::InvalidRecord {
            what: "event payload",
            errors: vec![crate::error::FieldError {
                field: "payload".into(),
                reason: e.to_string(),
            }],
        })
    }
}

/// The newest event payload version this build writes and reads.
pub const PAYLOAD_VERSION: i64 = 1;

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

impl Event {
    /// The payload, typed: the [`EventPayload`] variant of [`Event::kind`]. Refuses a
    /// payload of an unknown version ([`Error::UnsupportedVersion`]) or one that does not
    /// have its kind's fields ([`Error::InvalidRecord`]).
    pub fn decode(&self) -> Result<EventPayload> {
        EventPayload::from_wire(self.kind, &self.payload)
    }
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

/// Appends the event `payload` for `job_id` inside the caller's transaction.
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
        self.engine.writer_data_version()
    }
}
