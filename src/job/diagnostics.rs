//! [`JobDiagnostics`]: a job's stable, versioned shape for snapshot tests (state, outcome,
//! times, events), with ids left out and times relative to the job's creation
//! ([`crate::diagnostics`]).

use serde::Serialize;
use serde_json::Value;

use super::state::JobState;
use super::types::Job;
use crate::diagnostics::{ErrorDiagnostics, Redactor, DIAGNOSTICS_VERSION, REDACTED_ID};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, BACKLOG};
use crate::storage::{job_events, jobs as store};

/// A job as a host's snapshot test pins it ([`Jobs::diagnostics`](crate::Jobs::diagnostics)).
/// Version [`DIAGNOSTICS_VERSION`]; times are milliseconds since the job was created.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDiagnostics {
    /// The shape's version ([`DIAGNOSTICS_VERSION`]).
    pub version: u32,
    /// Its kind.
    pub kind: String,
    /// Its owner.
    pub user_id: String,
    /// Where it is.
    pub state: JobState,
    /// Claims so far.
    pub attempt: i64,
    /// Supervisor recoveries.
    pub recovery_count: i64,
    /// 0..=100 and the current step.
    pub progress: u8,
    /// What the worker was doing.
    pub step: Option<String>,
    /// Its labels.
    pub tags: Vec<String>,
    /// `"[id]"` when it has a parent job.
    pub parent: Option<&'static str>,
    /// The worker of the current attempt.
    pub worker_id: Option<String>,
    /// Input, redacted.
    pub input: Value,
    /// Result, redacted.
    pub result: Option<Value>,
    /// Last checkpoint, redacted.
    pub checkpoint: Option<Value>,
    /// Why it failed.
    pub error: Option<ErrorDiagnostics>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Its times since creation.
    pub times: JobTimes,
    /// Events pruned from the start of its log (only the last [`BACKLOG`] are kept).
    pub events_pruned: i64,
    /// Its kept events, oldest first.
    pub events: Vec<EventDiagnostics>,
}

/// [`JobDiagnostics::times`]: milliseconds since the job was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobTimes {
    /// Current attempt's start.
    pub started_ms: Option<i64>,
    /// Last heartbeat.
    pub heartbeat_ms: Option<i64>,
    /// Last checkpoint.
    pub checkpoint_ms: Option<i64>,
    /// Terminal state reached.
    pub finished_ms: Option<i64>,
    /// Last change.
    pub updated_ms: i64,
}

/// One event of [`JobDiagnostics::events`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventDiagnostics {
    /// Per-job sequence number.
    pub seq: i64,
    /// What happened.
    pub kind: EventKind,
    /// When, since the job was created.
    pub at_ms: i64,
    /// Its payload, redacted.
    pub payload: Value,
}

impl JobDiagnostics {
    /// The diagnostics of `job` with its kept `events` (oldest first).
    pub fn of(job: &Job, events: &[Event]) -> Self {
        let r = Redactor::new(job.created_at);
        let pruned = events.first().map_or(0, |e| e.seq - 1);
        JobDiagnostics {
            version: DIAGNOSTICS_VERSION,
            kind: job.kind.clone(),
            user_id: job.user_id.clone(),
            state: job.state,
            attempt: job.attempt,
            recovery_count: job.recovery_count,
            progress: job.progress,
            step: job.step.clone(),
            tags: job.tags.clone(),
            parent: job.parent_id.map(|_| REDACTED_ID),
            worker_id: job.worker_id.clone(),
            input: r.json(&job.input),
            result: job.result.as_ref().map(|v| r.json(v)),
            checkpoint: job.checkpoint.as_ref().map(|v| r.json(v)),
            error: job.error_code.as_ref().map(|code| ErrorDiagnostics {
                code: code.clone(),
                message: job.error_message.as_deref().map(|m| r.text(m)),
            }),
            cancel_reason: job.cancel_reason.as_deref().map(|m| r.text(m)),
            times: JobTimes {
                started_ms: r.opt_ms(job.started_at),
                heartbeat_ms: r.opt_ms(job.heartbeat_at),
                checkpoint_ms: r.opt_ms(job.checkpoint_at),
                finished_ms: r.opt_ms(job.finished_at),
                updated_ms: r.ms(job.updated_at),
            },
            events_pruned: pruned,
            events: events
                .iter()
                .map(|e| EventDiagnostics {
                    seq: e.seq,
                    kind: e.kind,
                    at_ms: r.ms(e.at),
                    payload: r.json(&e.payload),
                })
                .collect(),
        }
    }
}

/// The job and its kept events, read in one snapshot.
pub(crate) fn read(conn: &rusqlite::Connection, id: i64) -> Result<JobDiagnostics> {
    let job = store::get(conn, id)?;
    let limit = u32::try_from(BACKLOG).unwrap_or(u32::MAX);
    let events = match job_events::since(conn, id, 0, limit) {
        Err(Error::EventsPruned { oldest_kept, .. }) => {
            job_events::since(conn, id, oldest_kept - 1, limit)?
        }
        other => other?,
    };
    Ok(JobDiagnostics::of(&job, &events))
}
