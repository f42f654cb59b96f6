//! The per-job event log's types: [`Event`], [`EventKind`], the kept [`BACKLOG`], and the
//! in-process bus that fans committed events out to subscribers. The SQL is in
//! `storage::job_events`; the API ([`Events`](crate::Events)) is `job::events`.
//!
//! Each event has a per-job `seq` (1, 2, 3... gapless, enforced by a trigger) and a global
//! `cursor` that only grows (AUTOINCREMENT: never reused, even after deletes). At most
//! [`BACKLOG`] events per job are kept; a client asking for a pruned `seq` gets
//! [`Error::EventsPruned`] and should reload the job row, which always holds the truth.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::job::state::JobState;

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

serde_display!(EventKind);

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
    pub(crate) fn to_wire(&self) -> Value {
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

impl Event {
    /// The payload, typed: the [`EventPayload`] variant of [`Event::kind`]. Refuses a
    /// payload of an unknown version ([`Error::UnsupportedVersion`]) or one that does not
    /// have its kind's fields ([`Error::InvalidRecord`]).
    pub fn decode(&self) -> Result<EventPayload> {
        EventPayload::from_wire(self.kind, &self.payload)
    }
}

/// Which events a feed ([`Events::feed`](crate::Events::feed)) follows.
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

    pub(crate) fn params(&self) -> (Option<i64>, Option<&str>) {
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

impl FeedPage {
    /// A page of `events` (read after the cursor), each with its job's user from `users`
    /// (`None` for a deleted job): both backends' feeds end here.
    pub(crate) fn of(
        events: Vec<Event>,
        users: &std::collections::HashMap<i64, String>,
        pruned_jobs: Vec<i64>,
        head: i64,
    ) -> Self {
        FeedPage {
            events: events
                .into_iter()
                .map(|event| FeedEvent {
                    user_id: users.get(&event.job_id).cloned(),
                    event,
                })
                .collect(),
            pruned_jobs,
            head,
        }
    }

    /// The distinct jobs of `events`, in id order: whose users a page names.
    pub(crate) fn jobs_of(events: &[Event]) -> Vec<i64> {
        let mut ids: Vec<i64> = events.iter().map(|e| e.job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
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

    /// Whether nobody subscribes (receivers dropped since the last publish still count).
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
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
