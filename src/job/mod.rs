//! Durable jobs: the state machine, the store, and the versioned JSON record.
//!
//! A host creates jobs; workers [`claim`](Jobs::claim) them, which moves the job to
//! `running` and increments its *attempt*. Every later write of that worker (heartbeat,
//! progress, checkpoint, complete, fail) carries the attempt, and the database only accepts it
//! while that attempt still owns the running job: a worker whose job was recovered and
//! re-claimed gets [`Error::StaleAttempt`]. Operators cancel,
//! pause, resume and restart jobs; each of those is recorded in the append-only `audit_log`.

pub mod diagnostics;
mod event_api;
pub mod record;
pub mod recovery;
pub mod state;
pub mod supervisor;
pub(crate) mod types;
pub(crate) mod validate;
pub mod worker;

use std::time::Duration;

use serde_json::{json, Value};

pub use diagnostics::{EventDiagnostics, JobDiagnostics, JobTimes};
pub use event_api::Events;
pub use state::{JobState, TRANSITIONS};
pub use types::{Claim, Job, JobStats, NewJob, StateCounts};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::{EventKind, EventPayload};
use crate::storage::job_events::{self as events, ChainHead};
use crate::storage::jobs as store;

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
        if let Some(b) = self.engine.backend() {
            return b.create_job(new);
        }
        validate::new_job(new)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let job = store::insert(tx, new, now)?;
            record_after(
                tx,
                ev,
                job.id,
                ChainHead::NewJob,
                None,
                &[created(&job)],
                now,
            )?;
            Ok(job)
        })
    }

    /// Creates every job of `new` in one operation (one shared commit): all or none. Each is
    /// validated first; the first bad one is refused with its index in the field name and
    /// nothing is stored. Returned in the order given.
    pub fn create_many(&self, new: &[NewJob]) -> Result<Vec<Job>> {
        if let Some(b) = self.engine.backend() {
            return b.create_jobs(new);
        }
        validate::new_jobs(new)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let mut jobs = Vec::with_capacity(new.len());
            for n in new {
                let job = store::insert(tx, n, now)?;
                record_after(
                    tx,
                    ev,
                    job.id,
                    ChainHead::NewJob,
                    None,
                    &[created(&job)],
                    now,
                )?;
                jobs.push(job);
            }
            Ok(jobs)
        })
    }

    /// The job with this id.
    pub fn get(&self, id: i64) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.get_job(id);
        }
        self.engine.read(|c| store::get(c, id))
    }

    /// The job with this id and its kept events, in their stable, versioned diagnostics
    /// shape (ids left out, times relative to its creation), read in one snapshot, for
    /// snapshot tests ([guide](crate::guide::snapshot_testing)).
    pub fn diagnostics(&self, id: i64) -> Result<JobDiagnostics> {
        if let Some(b) = self.engine.backend() {
            let (job, events) = b.job_and_events(id)?;
            return Ok(JobDiagnostics::of(&job, &events));
        }
        self.engine.read(|c| diagnostics::read(c, id))
    }

    /// A user's jobs, newest first.
    pub fn list_by_user(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.by_user(user_id, &[], limit)
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
        self.list_before(user_id, state, kind, None, limit)
    }

    /// [`Jobs::list`] of the jobs with an id below `before` (`None`: from the newest): the
    /// next page after a page whose last job was `before`.
    pub fn list_before(
        &self,
        user_id: Option<&str>,
        state: Option<JobState>,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        if let Some(b) = self.engine.backend() {
            return b.list_jobs(user_id, state, kind, before, limit);
        }
        validate::list_limit(limit)?;
        self.engine
            .read(|c| store::list(c, user_id, state, kind, before, limit))
    }

    /// A user's jobs that are not finished (created, running, paused), newest first.
    pub fn active(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        use JobState::*;
        self.by_user(user_id, &[Created, Running, Paused], limit)
    }

    /// A user's completed jobs, newest first.
    pub fn completed(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.by_user(user_id, &[JobState::Completed], limit)
    }

    /// A user's failed jobs, newest first.
    pub fn failed(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.by_user(user_id, &[JobState::Failed], limit)
    }

    /// A user's jobs in one of `states` (every state when empty), newest first.
    fn by_user(&self, user_id: &str, states: &[JobState], limit: u32) -> Result<Vec<Job>> {
        if let Some(b) = self.engine.backend() {
            return b.jobs_of_user(user_id, states, limit);
        }
        self.engine
            .read(|c| store::list_by_user(c, user_id, states, limit))
    }

    /// Every running job, stalest heartbeat first.
    pub fn running(&self) -> Result<Vec<Job>> {
        if let Some(b) = self.engine.backend() {
            return b.running_jobs();
        }
        self.engine.read(store::running)
    }

    /// Running jobs with no heartbeat for longer than `older_than`.
    pub fn stale(&self, older_than: Duration) -> Result<Vec<Job>> {
        if let Some(b) = self.engine.backend() {
            return b.stale_jobs(older_than);
        }
        let cutoff = self.engine.now() - older_than;
        self.engine.read(|c| store::stale(c, cutoff))
    }

    /// Paused jobs that hold a checkpoint and can be resumed.
    pub fn resumable(&self) -> Result<Vec<Job>> {
        if let Some(b) = self.engine.backend() {
            return b.resumable_jobs();
        }
        self.engine.read(store::resumable)
    }

    /// Takes the oldest created job of `kinds` (of any kind if `kinds` is empty) for
    /// `worker`. Two workers, in threads or processes, never take the same job.
    pub fn claim(&self, worker: &str, kinds: &[&str]) -> Result<Option<Claim>> {
        if let Some(b) = self.engine.backend() {
            return b.claim(worker, kinds);
        }
        validate::name("worker", worker)?;
        for kind in kinds {
            validate::identifier("kind", kind)?;
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let Some(job) = store::claim(tx, worker, kinds, now)? else {
                return Ok(None);
            };
            record(tx, ev, job.id, None, &[claimed(worker, &job)], now)?;
            Ok(Some(Claim {
                attempt: job.attempt,
                job,
            }))
        })
    }

    /// Takes up to `max` (1..=1000) of the oldest created jobs of `kinds` for `worker` in one
    /// statement and one shared commit, oldest first; each gets its `claimed` event like
    /// [`Jobs::claim`]. Empty when none is waiting. (On PostgreSQL: one claim per
    /// transaction until `max` or none is left.)
    pub fn claim_many(&self, worker: &str, kinds: &[&str], max: u32) -> Result<Vec<Claim>> {
        validate::name("worker", worker)?;
        for kind in kinds {
            validate::identifier("kind", kind)?;
        }
        if !(1..=1000).contains(&max) {
            return Err(Error::invalid("max", "must be 1..=1000"));
        }
        if let Some(b) = self.engine.backend() {
            // PostgreSQL: one claim per transaction (each `SKIP LOCKED`), until `max` or none
            // is left; an error after the first claim returns the claims made so far, which
            // are the caller's to run (the next call reports the error).
            let mut claims = Vec::new();
            while claims.len() < max as usize {
                match b.claim(worker, kinds) {
                    Ok(Some(c)) => claims.push(c),
                    Ok(None) => break,
                    Err(e) if claims.is_empty() => return Err(e),
                    Err(_) => break,
                }
            }
            return Ok(claims);
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let jobs = store::claim_many(tx, worker, kinds, max, now)?;
            let mut claims = Vec::with_capacity(jobs.len());
            for job in jobs {
                record(tx, ev, job.id, None, &[claimed(worker, &job)], now)?;
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
        if let Some(b) = self.engine.backend() {
            return b.resume_on(id, worker, actor);
        }
        validate::name("worker", worker)?;
        validate::name("actor", actor)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            store::claim_paused(tx, id, worker, now)?;
            let job = store::get(tx, id)?;
            let resumed = EventPayload::Resumed {
                by: actor.into(),
                from: JobState::Paused,
                to: JobState::Running,
            };
            let audit = Audit::new("resume", actor, json!({ "worker": worker }));
            record(
                tx,
                ev,
                id,
                Some(audit),
                &[resumed, claimed(worker, &job)],
                now,
            )?;
            Ok(Claim {
                attempt: job.attempt,
                job,
            })
        })
    }

    /// A sign of life from the worker holding `claim`.
    pub fn heartbeat(&self, claim: &Claim) -> Result<()> {
        self.heartbeat_fenced(claim.id(), claim.attempt)
    }

    /// [`Jobs::heartbeat`] for a caller holding only the fence (the worker's heartbeat
    /// thread, a remote worker's HTTP call).
    pub(crate) fn heartbeat_fenced(&self, id: i64, attempt: i64) -> Result<()> {
        if let Some(b) = self.engine.backend() {
            return b.heartbeat(id, attempt);
        }
        self.engine
            .write(|tx| store::heartbeat(tx, id, attempt, tx.now()))
    }

    /// Progress in percent (0..=100) and an optional step description.
    pub fn progress(&self, claim: &Claim, pct: u8, step: Option<&str>) -> Result<()> {
        self.progress_fenced(claim.id(), claim.attempt, pct, step)
    }

    /// [`Jobs::progress`] for a caller holding only the fence (a remote worker's HTTP call:
    /// the write itself checks the attempt, so no read of the job comes first).
    pub(crate) fn progress_fenced(
        &self,
        id: i64,
        attempt: i64,
        pct: u8,
        step: Option<&str>,
    ) -> Result<()> {
        if let Some(b) = self.engine.backend() {
            return b.progress(id, attempt, pct, step);
        }
        validate::progress(pct)?;
        validate::step(step)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            store::progress(tx, id, attempt, pct, step, now)?;
            let payload = EventPayload::Progress {
                progress: pct,
                step: step.map(str::to_owned),
            };
            record(tx, ev, id, None, &[payload], now)?;
            Ok(())
        })
    }

    /// Saves a checkpoint (any JSON value, at most the engine's checkpoint limit).
    pub fn checkpoint(&self, claim: &Claim, checkpoint: &Value) -> Result<()> {
        self.checkpoint_fenced(claim.id(), claim.attempt, checkpoint)
    }

    /// [`Jobs::checkpoint`] for a caller holding only the fence.
    pub(crate) fn checkpoint_fenced(
        &self,
        id: i64,
        attempt: i64,
        checkpoint: &Value,
    ) -> Result<()> {
        let limit = self.engine.options().max_checkpoint_bytes;
        if let Some(b) = self.engine.backend() {
            return b.checkpoint(id, attempt, checkpoint, limit);
        }
        let text = validate::document("checkpoint", checkpoint, limit)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            store::checkpoint(tx, id, attempt, &text, now)?;
            let payload = EventPayload::Checkpoint { bytes: text.len() };
            record(tx, ev, id, None, &[payload], now)?;
            Ok(())
        })
    }

    /// running -> completed with `result`.
    pub fn complete(&self, claim: &Claim, result: &Value) -> Result<Job> {
        self.complete_fenced(claim.id(), claim.attempt, result)
    }

    /// [`Jobs::complete`] for a caller holding only the fence.
    pub(crate) fn complete_fenced(&self, id: i64, attempt: i64, result: &Value) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.complete(id, attempt, result);
        }
        validate::document("result", result, validate::MAX_DOCUMENT_BYTES)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let job = store::complete(tx, id, attempt, result, now)?;
            let payload = EventPayload::Completed { attempt };
            record(tx, ev, id, None, &[payload], now)?;
            Ok(job)
        })
    }

    /// running -> failed with a stable error `code` and a message.
    pub fn fail(&self, claim: &Claim, code: &str, message: &str) -> Result<Job> {
        self.fail_fenced(claim.id(), claim.attempt, code, message)
    }

    /// [`Jobs::fail`] for a caller holding only the fence (the worker's heartbeat thread, a
    /// remote worker's HTTP call).
    pub(crate) fn fail_fenced(
        &self,
        id: i64,
        attempt: i64,
        code: &str,
        message: &str,
    ) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.fail(id, attempt, code, message);
        }
        validate::identifier("error_code", code)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let job = store::fail(tx, id, attempt, code, message, now)?;
            record(tx, ev, id, None, &[failed(code, message, None)], now)?;
            Ok(job)
        })
    }

    fn operator(&self, id: i64, op: &Op, actor: &str, detail: Value) -> Result<Job> {
        validate::name("actor", actor)?;
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let reason = detail["reason"].as_str();
            let from = store::transition(tx, id, op.from, op.to, None, reason, now)?;
            let mut detail = detail.clone();
            detail["from"] = json!(from);
            let (by, to) = (actor.to_owned(), op.to);
            let payload = match op.event {
                EventKind::Cancelled => EventPayload::Cancelled {
                    by,
                    from,
                    to,
                    reason: detail["reason"].as_str().map(str::to_owned),
                },
                EventKind::Paused => EventPayload::Paused { by, from, to },
                _ => EventPayload::Resumed { by, from, to },
            };
            record(
                tx,
                ev,
                id,
                Some(Audit::new(op.action, actor, detail)),
                &[payload],
                now,
            )?;
            store::get(tx, id)
        })
    }

    /// Cancels a created, running or paused job. A running worker sees it at its next
    /// heartbeat or write ([`Error::JobNotRunning`]).
    ///
    /// `reason` is stored on the job ([`Job::cancel_reason`], until a restart), in the audit
    /// row and in the `cancelled` event: 1..=1000 bytes without NUL once trimmed; a blank
    /// reason counts as none.
    pub fn cancel(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.cancel(id, actor, reason);
        }
        let reason = validate::cancel_reason(reason)?;
        self.operator(id, &CANCEL, actor, json!({ "reason": reason }))
    }

    /// Pauses a running job, keeping its checkpoint; its worker sees it at its next write.
    pub fn pause(&self, id: i64, actor: &str) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.pause(id, actor);
        }
        self.operator(id, &PAUSE, actor, json!({}))
    }

    /// Resumes a paused job: it goes back to `created` with its checkpoint, and the next
    /// claim hands the checkpoint to a worker.
    pub fn resume(&self, id: i64, actor: &str) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.resume(id, actor);
        }
        self.operator(id, &RESUME, actor, json!({}))
    }

    /// An operator fails a running or paused job with `code` (for a paused job that will never
    /// be resumed, or a running one known to be lost). Audited.
    pub fn mark_failed(&self, id: i64, actor: &str, code: &str, message: &str) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.mark_failed(id, actor, code, message);
        }
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
                None,
                now,
            )?;
            let detail = json!({ "from": from, "code": code, "message": message });
            let payload = failed(code, message, Some(actor));
            record(
                tx,
                ev,
                id,
                Some(Audit::new("fail", actor, detail)),
                &[payload],
                now,
            )?;
            store::get(tx, id)
        })
    }

    /// Restarts a failed or cancelled job from scratch: back to `created` with result,
    /// error, progress and checkpoint cleared, input replaced when `input` is given. (To
    /// continue from a checkpoint, a job must be paused and resumed instead.)
    pub fn restart(&self, id: i64, actor: &str, input: Option<&Value>) -> Result<Job> {
        if let Some(b) = self.engine.backend() {
            return b.restart(id, actor, input);
        }
        validate::name("actor", actor)?;
        if let Some(input) = input {
            validate::document("input", input, validate::MAX_DOCUMENT_BYTES)?;
        }
        self.engine.write_events(|tx, ev| {
            let now = tx.now();
            let from = store::restart(tx, id, input, now)?;
            let detail = json!({ "from": from, "new_input": input.is_some() });
            let payload = EventPayload::Restarted {
                by: actor.into(),
                from,
                new_input: input.is_some(),
            };
            let audit = Audit::new("restart", actor, detail);
            record(tx, ev, id, Some(audit), &[payload], now)?;
            store::get(tx, id)
        })
    }

    /// Deletes a terminal job and its events (its audit rows stay, and one more records the
    /// deletion).
    pub fn delete(&self, id: i64, actor: &str) -> Result<()> {
        if let Some(b) = self.engine.backend() {
            return b.delete_job(id, actor);
        }
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
        if let Some(b) = self.engine.backend() {
            return b.job_stats(None);
        }
        self.engine.read(|c| store::stats(c, None))
    }

    /// The same counts for one user's jobs.
    pub fn stats_for_user(&self, user_id: &str) -> Result<JobStats> {
        if let Some(b) = self.engine.backend() {
            return b.job_stats(Some(user_id));
        }
        self.engine.read(|c| store::stats(c, Some(user_id)))
    }
}

/// Parses JSON text a host received from elsewhere into a value for [`NewJob::input`] or a
/// checkpoint, with a typed [`Error::InvalidInput`] when it is not JSON.
pub fn parse_json(field: &str, text: &str) -> Result<Value> {
    validate::parse_document(field, text)
}

/// Who changed a job, and how, for its row in `audit_log`.
pub(crate) struct Audit<'a> {
    action: &'static str,
    actor: &'a str,
    detail: Value,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(action: &'static str, actor: &'a str, detail: Value) -> Self {
        Self {
            action,
            actor,
            detail,
        }
    }
}

/// The bookkeeping of one job change, inside the change's own transaction: its audit row
/// (for changes by an operator) and its events, in order. Every job event and every audit
/// row of a state change is written here, and every event from an [`EventPayload`].
pub(crate) fn record(
    tx: &rusqlite::Connection,
    ev: &mut Vec<crate::events::Event>,
    id: i64,
    audit: Option<Audit<'_>>,
    payloads: &[EventPayload],
    now: crate::clock::Timestamp,
) -> Result<()> {
    record_after(tx, ev, id, ChainHead::Read, audit, payloads, now)
}

/// [`record`] when the caller knows where the job's event chain stands (`head`): a job just
/// inserted has no event yet. Each event then follows the one before it without a read.
pub(crate) fn record_after(
    tx: &rusqlite::Connection,
    ev: &mut Vec<crate::events::Event>,
    id: i64,
    mut head: ChainHead,
    audit: Option<Audit<'_>>,
    payloads: &[EventPayload],
    now: crate::clock::Timestamp,
) -> Result<()> {
    if let Some(a) = audit {
        store::audit(tx, id, a.action, a.actor, &a.detail, now)?;
    }
    for payload in payloads {
        ev.push(events::append(tx, id, &mut head, payload, now)?);
    }
    Ok(())
}

/// The `created` event of `job`.
fn created(job: &Job) -> EventPayload {
    EventPayload::Created {
        kind: job.kind.clone(),
        user_id: job.user_id.clone(),
    }
}

/// The `claimed` event of `job`, just claimed by `worker`.
fn claimed(worker: &str, job: &Job) -> EventPayload {
    EventPayload::Claimed {
        worker: worker.into(),
        attempt: job.attempt,
    }
}

/// The `failed` event: one shape for the worker (`by` none), an operator and a supervisor.
pub(crate) fn failed(code: &str, message: &str, by: Option<&str>) -> EventPayload {
    EventPayload::Failed {
        code: code.into(),
        message: message.into(),
        by: by.map(str::to_owned),
    }
}
