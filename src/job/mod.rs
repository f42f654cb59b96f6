//! Durable jobs: the state machine, the store, and the versioned JSON record.
//!
//! A host creates jobs; workers [`claim`](Jobs::claim) them, which moves the job to
//! `running` and increments its *attempt*. Every later write of that worker (heartbeat,
//! progress, checkpoint, complete, fail) carries the attempt, and the database only accepts it
//! while that attempt still owns the running job: a worker whose job was recovered and
//! re-claimed gets [`Error::StaleAttempt`]. Operators cancel,
//! pause, resume and restart jobs; each of those is recorded in the append-only `audit_log`.

pub mod record;
pub mod recovery;
pub mod state;
mod store;
pub mod supervisor;
mod types;
pub(crate) mod validate;
pub mod worker;

use std::time::Duration;

use serde_json::{json, Value};

pub use state::{JobState, TRANSITIONS};
pub use types::{Claim, Job, JobStats, NewJob, StateCounts};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::{self, EventKind};

/// An operator's state change: where it may start, where it goes, how it is recorded.
struct Op {
    from: &'static [JobState],
    to: JobState,
    action: &'static str,
    event: EventKind,
}

const CANCEL: Op = Op {
    from: &[JobState::Created, JobState::Running, JobState::Paused],
    to: JobState::Cancelled,
    action: "cancel",
    event: EventKind::Cancelled,
};
const PAUSE: Op = Op {
    from: &[JobState::Running],
    to: JobState::Paused,
    action: "pause",
    event: EventKind::Paused,
};
const RESUME: Op = Op {
    from: &[JobState::Paused],
    to: JobState::Created,
    action: "resume",
    event: EventKind::Resumed,
};

/// The job API of an [`Engine`]; get it with [`Engine::jobs`].
#[derive(Debug, Clone, Copy)]
pub struct Jobs<'e> {
    engine: &'e Engine,
}

impl Engine {
    /// The job API.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs { engine: self }
    }
}

impl<'e> Jobs<'e> {
    /// Creates a job in state `created`.
    pub fn create(&self, new: &NewJob) -> Result<Job> {
        validate::new_job(new)?;
        self.engine
            .write_events(|tx, ev| insert_created(tx, new, tx.now(), ev))
    }

    /// Creates every job of `new` in one operation (one shared commit): all or none. Each is
    /// validated first; the first bad one is refused with its index in the field name and
    /// nothing is stored. Returned in the order given.
    pub fn create_many(&self, new: &[NewJob]) -> Result<Vec<Job>> {
        for (i, job) in new.iter().enumerate() {
            validate::new_job(job).map_err(|e| match e {
                Error::InvalidInput { field, reason } => Error::InvalidInput {
                    field: format!("jobs[{i}].{field}"),
                    reason,
                },
                other => other,
            })?;
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            new.iter().map(|n| insert_created(tx, n, now, ev)).collect()
        })
    }

    /// The job with this id.
    pub fn get(&self, id: i64) -> Result<Job> {
        self.engine.read(|c| store::get(c, id))
    }

    /// A user's jobs, newest first.
    pub fn list_by_user(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.engine
            .read(|c| store::list_by_user(c, user_id, &[], limit))
    }

    /// Jobs of any user matching every given filter (`None` matches all), newest first:
    /// an operator's listing.
    pub fn list(
        &self,
        user_id: Option<&str>,
        state: Option<JobState>,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        if limit == 0 || limit > 10_000 {
            return Err(Error::invalid("limit", "must be 1..=10000"));
        }
        self.engine
            .read(|c| store::list(c, user_id, state, kind, limit))
    }

    /// A user's jobs that are not finished (created, running, paused), newest first.
    pub fn active(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        use JobState::*;
        self.engine
            .read(|c| store::list_by_user(c, user_id, &[Created, Running, Paused], limit))
    }

    /// A user's completed jobs, newest first.
    pub fn completed(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.engine
            .read(|c| store::list_by_user(c, user_id, &[JobState::Completed], limit))
    }

    /// A user's failed jobs, newest first.
    pub fn failed(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.engine
            .read(|c| store::list_by_user(c, user_id, &[JobState::Failed], limit))
    }

    /// Every running job, stalest heartbeat first.
    pub fn running(&self) -> Result<Vec<Job>> {
        self.engine.read(store::running)
    }

    /// Running jobs with no heartbeat for longer than `older_than`.
    pub fn stale(&self, older_than: Duration) -> Result<Vec<Job>> {
        let cutoff = self.engine.now() - older_than;
        self.engine.read(|c| store::stale(c, cutoff))
    }

    /// Paused jobs that hold a checkpoint and can be resumed.
    pub fn resumable(&self) -> Result<Vec<Job>> {
        self.engine.read(store::resumable)
    }

    /// Takes the oldest created job of `kinds` (of any kind if `kinds` is empty) for
    /// `worker`. Two workers, in threads or processes, never take the same job.
    pub fn claim(&self, worker: &str, kinds: &[&str]) -> Result<Option<Claim>> {
        validate::name("worker", worker)?;
        for kind in kinds {
            validate::identifier("kind", kind)?;
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let Some(job) = store::claim(tx, worker, kinds, now)? else {
                return Ok(None);
            };
            ev.push(events::append(
                tx,
                job.id,
                EventKind::Claimed,
                json!({ "worker": worker, "attempt": job.attempt }),
                now,
            )?);
            Ok(Some(Claim {
                attempt: job.attempt,
                job,
            }))
        })
    }

    /// Takes up to `max` (1..=1000) of the oldest created jobs of `kinds` for `worker` in one
    /// statement and one shared commit, oldest first; each gets its `claimed` event like
    /// [`Jobs::claim`]. Empty when none is waiting.
    pub fn claim_many(&self, worker: &str, kinds: &[&str], max: u32) -> Result<Vec<Claim>> {
        validate::name("worker", worker)?;
        for kind in kinds {
            validate::identifier("kind", kind)?;
        }
        if !(1..=1000).contains(&max) {
            return Err(Error::invalid("max", "must be 1..=1000"));
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let jobs = store::claim_many(tx, worker, kinds, max, now)?;
            let mut claims = Vec::with_capacity(jobs.len());
            for job in jobs {
                ev.push(events::append(
                    tx,
                    job.id,
                    EventKind::Claimed,
                    json!({ "worker": worker, "attempt": job.attempt }),
                    now,
                )?);
                claims.push(Claim {
                    attempt: job.attempt,
                    job,
                });
            }
            Ok(claims)
        })
    }

    /// Resumes a paused job directly on `worker` (paused -> running, next attempt), handing
    /// it the checkpoint. `actor` is recorded in the audit log.
    pub fn resume_on(&self, id: i64, worker: &str, actor: &str) -> Result<Claim> {
        validate::name("worker", worker)?;
        validate::name("actor", actor)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            store::claim_paused(tx, id, worker, now)?;
            store::audit(tx, id, "resume", actor, &json!({ "worker": worker }), now)?;
            let job = store::get(tx, id)?;
            ev.push(events::append(
                tx,
                id,
                EventKind::Resumed,
                json!({ "by": actor, "to": "running" }),
                now,
            )?);
            ev.push(events::append(
                tx,
                id,
                EventKind::Claimed,
                json!({ "worker": worker, "attempt": job.attempt }),
                now,
            )?);
            Ok(Claim {
                attempt: job.attempt,
                job,
            })
        })
    }

    /// A sign of life from the worker holding `attempt`.
    pub fn heartbeat(&self, id: i64, attempt: i64) -> Result<()> {
        self.engine
            .write(|tx| store::heartbeat(tx, id, attempt, tx.now()))
    }

    /// Progress in percent (0..=100) and an optional step description.
    pub fn progress(&self, id: i64, attempt: i64, pct: u8, step: Option<&str>) -> Result<()> {
        validate::progress(pct)?;
        validate::step(step)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            store::progress(tx, id, attempt, pct, step, now)?;
            ev.push(events::append(
                tx,
                id,
                EventKind::Progress,
                json!({ "progress": pct, "step": step }),
                now,
            )?);
            Ok(())
        })
    }

    /// Saves a checkpoint (any JSON value, at most the engine's checkpoint limit).
    pub fn checkpoint(&self, id: i64, attempt: i64, checkpoint: &Value) -> Result<()> {
        let limit = self.engine.options().max_checkpoint_bytes;
        let text = validate::document("checkpoint", checkpoint, limit)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            store::checkpoint(tx, id, attempt, &text, now)?;
            ev.push(events::append(
                tx,
                id,
                EventKind::Checkpoint,
                json!({ "bytes": text.len() }),
                now,
            )?);
            Ok(())
        })
    }

    /// running -> completed with `result`.
    pub fn complete(&self, id: i64, attempt: i64, result: &Value) -> Result<Job> {
        validate::document("result", result, validate::MAX_DOCUMENT_BYTES)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let job = store::complete(tx, id, attempt, result, now)?;
            ev.push(events::append(
                tx,
                id,
                EventKind::Completed,
                json!({ "attempt": attempt }),
                now,
            )?);
            Ok(job)
        })
    }

    /// running -> failed with a stable error `code` and a message.
    pub fn fail(&self, id: i64, attempt: i64, code: &str, message: &str) -> Result<Job> {
        validate::identifier("error_code", code)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let job = store::fail(tx, id, attempt, code, message, now)?;
            ev.push(events::append(
                tx,
                id,
                EventKind::Failed,
                json!({ "code": code, "message": message }),
                now,
            )?);
            Ok(job)
        })
    }

    fn operator(&self, id: i64, op: &Op, actor: &str, detail: Value) -> Result<Job> {
        validate::name("actor", actor)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let from = store::transition(tx, id, op.from, op.to, None, now)?;
            let mut detail = detail.clone();
            detail["from"] = json!(from);
            store::audit(tx, id, op.action, actor, &detail, now)?;
            detail["by"] = json!(actor);
            detail["to"] = json!(op.to);
            ev.push(events::append(tx, id, op.event, detail, now)?);
            store::get(tx, id)
        })
    }

    /// Cancels a created, running or paused job. A running worker sees it at its next
    /// heartbeat or write ([`Error::NotRunning`]).
    pub fn cancel(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<Job> {
        self.operator(id, &CANCEL, actor, json!({ "reason": reason }))
    }

    /// Pauses a running job, keeping its checkpoint; its worker sees it at its next write.
    pub fn pause(&self, id: i64, actor: &str) -> Result<Job> {
        self.operator(id, &PAUSE, actor, json!({}))
    }

    /// Resumes a paused job: it goes back to `created` with its checkpoint, and the next
    /// claim hands the checkpoint to a worker.
    pub fn resume(&self, id: i64, actor: &str) -> Result<Job> {
        self.operator(id, &RESUME, actor, json!({}))
    }

    /// An operator fails a running or paused job with `code` (for a paused job that will never
    /// be resumed, or a running one known to be lost). Audited.
    pub fn mark_failed(&self, id: i64, actor: &str, code: &str, message: &str) -> Result<Job> {
        validate::name("actor", actor)?;
        validate::identifier("error_code", code)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let allowed = [JobState::Running, JobState::Paused];
            let from = store::transition(
                tx,
                id,
                &allowed,
                JobState::Failed,
                Some((code, message)),
                now,
            )?;
            let detail = json!({ "from": from, "code": code, "message": message });
            store::audit(tx, id, "fail", actor, &detail, now)?;
            let payload = json!({ "code": code, "message": message, "by": actor });
            ev.push(events::append(tx, id, EventKind::Failed, payload, now)?);
            store::get(tx, id)
        })
    }

    /// Restarts a failed or cancelled job from scratch: back to `created` with result,
    /// error, progress and checkpoint cleared, input replaced when `input` is given. (To
    /// continue from a checkpoint, a job must be paused and resumed instead.)
    pub fn restart(&self, id: i64, actor: &str, input: Option<&Value>) -> Result<Job> {
        validate::name("actor", actor)?;
        if let Some(input) = input {
            validate::document("input", input, validate::MAX_DOCUMENT_BYTES)?;
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let from = store::restart(tx, id, input, now)?;
            let detail = json!({ "from": from, "new_input": input.is_some() });
            store::audit(tx, id, "restart", actor, &detail, now)?;
            ev.push(events::append(
                tx,
                id,
                EventKind::Restarted,
                json!({ "by": actor, "from": from, "new_input": input.is_some() }),
                now,
            )?);
            store::get(tx, id)
        })
    }

    /// Deletes a terminal job (its audit rows stay).
    pub fn delete(&self, id: i64, actor: &str) -> Result<()> {
        validate::name("actor", actor)?;
        self.engine.write(|tx| {
            let now = tx.now();
            let job = store::get(tx, id)?;
            store::delete(tx, &job)?;
            events::delete_for_job(tx, id)?;
            store::audit(
                tx,
                id,
                "delete",
                actor,
                &json!({ "state": job.state, "kind": job.kind }),
                now,
            )
        })
    }

    pub(crate) fn engine_options(&self) -> &crate::engine::EngineOptions {
        self.engine.options()
    }

    /// Counts per state and per kind over all jobs, and the oldest running heartbeat.
    pub fn stats(&self) -> Result<JobStats> {
        self.engine.read(|c| store::stats(c, None))
    }

    /// The same counts for one user's jobs.
    pub fn stats_for_user(&self, user_id: &str) -> Result<JobStats> {
        self.engine.read(|c| store::stats(c, Some(user_id)))
    }
}

/// Inserts one validated job with its `created` event.
fn insert_created(
    tx: &rusqlite::Connection,
    new: &NewJob,
    now: crate::clock::Timestamp,
    ev: &mut Vec<events::Event>,
) -> Result<Job> {
    let job = store::insert(tx, new, now)?;
    ev.push(events::append(
        tx,
        job.id,
        EventKind::Created,
        json!({ "kind": job.kind, "user_id": job.user_id }),
        now,
    )?);
    Ok(job)
}

/// Parses JSON text a host received from elsewhere into a value for [`NewJob::input`] or a
/// checkpoint, with a typed [`Error::InvalidInput`] when it is not JSON.
pub fn parse_json(field: &str, text: &str) -> Result<Value> {
    validate::parse_document(field, text)
}
