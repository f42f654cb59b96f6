//! The per-job event log's types: [`Event`], [`EventKind`], the kept [`BACKLOG`], and the
//! in-process bus that fans committed events out to subscribers. The SQL is in
//! `storage::job_events`; the API ([`Events`](crate::Events)) is `job::events`.
//!
//! Each event has a per-job `seq` (1, 2, 3... gapless, enforced by a trigger) and a global
//! `cursor` that only grows (AUTOINCREMENT: never reused, even after deletes). At most
//! [`BACKLOG`] events per job are kept; a client asking for a pruned `seq` gets
//! [`Error::EventsPruned`](crate::Error::EventsPruned) and should reload the job row, which always holds the truth.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::clock::Timestamp;

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

    pub(crate) fn parse(s: &str) -> Option<Self> {
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

/// In-process fan-out of committed events to subscribers.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl Bus {
    pub(crate) fn subscribe(&self) -> Receiver<Event> {
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
