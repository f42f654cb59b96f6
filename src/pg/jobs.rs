//! [`PgJobs`] and [`PgEvents`]: the job API of a [`PgEngine`], with the method names,
//! argument checks, events and audit rows of the SQLite [`Jobs`](crate::Jobs) facade.

use std::time::Duration;

use serde_json::{json, Value};

use super::engine::{PgEngine, Tx};
use super::storage::job_events as events;
use super::storage::jobs as store;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::events::{Event, EventPayload, FeedFilter, FeedPage, BACKLOG};
use crate::job::diagnostics::JobDiagnostics;
use crate::job::state::JobState;
use crate::job::types::{Claim, Job, JobStats, NewJob};
use crate::job::validate;

/// The job API of a [`PgEngine`]; get it with [`PgEngine::jobs`].
#[derive(Debug, Clone, Copy)]
pub struct PgJobs<'e> {
    engine: &'e PgEngine,
}

/// The job event API of a [`PgEngine`]; get it with [`PgEngine::events`].
#[derive(Debug, Clone, Copy)]
pub struct PgEvents<'e> {
    engine: &'e PgEngine,
}

impl PgEngine {
    /// The job API.
    pub fn jobs(&self) -> PgJobs<'_> {
        PgJobs { engine: self }
    }

    /// The job event API.
    pub fn events(&self) -> PgEvents<'_> {
        PgEvents { engine: self }
    }
}

/// Appends the events of one job change, in order, inside its transaction.
fn record(tx: &mut Tx<'_>, id: i64, payloads: &[EventPayload], now: Timestamp) -> Result<()> {
    for payload in payloads {
        events::append(tx, id, payload, now)?;
    }
    Ok(())
}

impl PgJobs<'_> {
    /// Creates a job in state `created` (see [`Jobs::create`](crate::Jobs::create)).
    pub fn create(&self, new: &NewJob) -> Result<Job> {
        validate::new_job(new)?;
        let payload = EventPayload::Created {
            kind: new.kind.clone(),
            user_id: new.user_id.clone(),
        }
        .to_wire()
        .to_string();
        // one statement (the job and its event): autocommit, one round trip (and the
        // parent's look-up before it, when there is one)
        self.engine
            .write_one(|tx, now| store::insert(tx, new, &payload, now))
    }

    /// The job with this id.
    pub fn get(&self, id: i64) -> Result<Job> {
        self.engine.read(|tx| store::get_job(tx, id))
    }

    /// Jobs of any user matching every given filter (`None` matches all), newest first: the
    /// twin of [`Jobs::list`](crate::Jobs::list).
    pub fn list(
        &self,
        user_id: Option<&str>,
        state: Option<JobState>,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        self.list_before(user_id, state, kind, None, limit)
    }

    /// [`PgJobs::list`] of the jobs with an id below `before` (`None`: from the newest): the
    /// next page; the twin of [`Jobs::list_before`](crate::Jobs::list_before).
    pub fn list_before(
        &self,
        user_id: Option<&str>,
        state: Option<JobState>,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        validate::list_limit(limit)?;
        self.engine
            .read(|tx| store::list(tx, user_id, state, kind, before, limit))
    }

    /// Takes the oldest created job of `kinds` (of any kind if `kinds` is empty) for
    /// `worker`. Claimers on any number of connections and machines never take the same
    /// job, and never wait for each other (`FOR UPDATE SKIP LOCKED`).
    pub fn claim(&self, worker: &str, kinds: &[&str]) -> Result<Option<Claim>> {
        validate::name("worker", worker)?;
        for kind in kinds {
            validate::identifier("kind", kind)?;
        }
        // one statement (the claim and its event): autocommit, one round trip
        self.engine.write_one(|tx, now| {
            Ok(store::claim(tx, worker, kinds, now)?.map(|job| Claim {
                attempt: job.attempt,
                job,
            }))
        })
    }

    /// A sign of life from the worker holding `claim` (fenced by its attempt).
    pub fn heartbeat(&self, claim: &Claim) -> Result<()> {
        self.heartbeat_fenced(claim.id(), claim.attempt)
    }

    /// [`PgJobs::heartbeat`] for a caller holding only the fence.
    pub(crate) fn heartbeat_fenced(&self, id: i64, attempt: i64) -> Result<()> {
        // one statement: autocommit, one round trip (the worker's most frequent write)
        self.engine
            .write_one(|tx, now| store::heartbeat(tx, id, attempt, now))
    }

    /// Progress in percent (0..=100) and an optional step description.
    pub fn progress(&self, claim: &Claim, pct: u8, step: Option<&str>) -> Result<()> {
        self.progress_fenced(claim.id(), claim.attempt, pct, step)
    }

    /// [`PgJobs::progress`] for a caller holding only the fence.
    pub(crate) fn progress_fenced(
        &self,
        id: i64,
        attempt: i64,
        pct: u8,
        step: Option<&str>,
    ) -> Result<()> {
        validate::progress(pct)?;
        validate::step(step)?;
        let payload = EventPayload::Progress {
            progress: pct,
            step: step.map(str::to_owned),
        }
        .to_wire()
        .to_string();
        // one statement (the write and its event): autocommit, one round trip
        self.engine
            .write_one(|tx, now| store::progress(tx, id, attempt, pct, step, &payload, now))
    }

    /// Saves a checkpoint (any JSON value, at most `limit` bytes as JSON text; the SQLite
    /// engine's limit is [`EngineOptions::max_checkpoint_bytes`](crate::EngineOptions)),
    /// fenced by the claim's attempt, with its `checkpoint` event.
    pub fn checkpoint(&self, claim: &Claim, checkpoint: &Value, limit: usize) -> Result<()> {
        self.checkpoint_fenced(claim.id(), claim.attempt, checkpoint, limit)
    }

    /// [`PgJobs::checkpoint`] for a caller holding only the fence.
    pub(crate) fn checkpoint_fenced(
        &self,
        id: i64,
        attempt: i64,
        checkpoint: &Value,
        limit: usize,
    ) -> Result<()> {
        let text = validate::document("checkpoint", checkpoint, limit)?;
        let payload = EventPayload::Checkpoint { bytes: text.len() }
            .to_wire()
            .to_string();
        // one statement (the write and its event): autocommit, one round trip
        self.engine
            .write_one(|tx, now| store::checkpoint(tx, id, attempt, checkpoint, &payload, now))
    }

    /// running -> completed with `result`.
    pub fn complete(&self, claim: &Claim, result: &Value) -> Result<Job> {
        self.complete_fenced(claim.id(), claim.attempt, result)
    }

    /// [`PgJobs::complete`] for a caller holding only the fence.
    pub(crate) fn complete_fenced(&self, id: i64, attempt: i64, result: &Value) -> Result<Job> {
        validate::document("result", result, validate::MAX_DOCUMENT_BYTES)?;
        let payload = EventPayload::Completed { attempt }.to_wire().to_string();
        // one statement (the complete and its event): autocommit, one round trip
        self.engine
            .write_one(|tx, now| store::complete(tx, id, attempt, result, &payload, now))
    }

    /// running -> failed with a stable error `code` and a message.
    pub fn fail(&self, claim: &Claim, code: &str, message: &str) -> Result<Job> {
        self.fail_fenced(claim.id(), claim.attempt, code, message)
    }

    /// [`PgJobs::fail`] for a caller holding only the fence.
    pub(crate) fn fail_fenced(
        &self,
        id: i64,
        attempt: i64,
        code: &str,
        message: &str,
    ) -> Result<Job> {
        validate::identifier("error_code", code)?;
        self.engine.write(|tx, now| {
            let job = store::fail(tx, id, attempt, code, message, now)?;
            let payload = EventPayload::Failed {
                code: code.into(),
                message: message.into(),
                by: None,
            };
            record(tx, id, &[payload], now)?;
            Ok(job)
        })
    }

    /// Cancels a created, running or paused job; audited. A running worker sees it at its
    /// next write (`JOB_NOT_RUNNING`).
    pub fn cancel(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<Job> {
        let reason = validate::cancel_reason(reason)?;
        let allowed = [JobState::Created, JobState::Running, JobState::Paused];
        self.operator(id, &allowed, JobState::Cancelled, "cancel", actor, reason)
    }

    /// Pauses a running job, keeping its checkpoint; its worker sees it at its next write.
    /// Audited; the twin of [`Jobs::pause`](crate::Jobs::pause).
    pub fn pause(&self, id: i64, actor: &str) -> Result<Job> {
        let allowed = [JobState::Running];
        self.operator(id, &allowed, JobState::Paused, "pause", actor, None)
    }

    /// Resumes a paused job: back to `created` with its checkpoint, for the next claim.
    /// Audited; the twin of [`Jobs::resume`](crate::Jobs::resume).
    pub fn resume(&self, id: i64, actor: &str) -> Result<Job> {
        let allowed = [JobState::Paused];
        self.operator(id, &allowed, JobState::Created, "resume", actor, None)
    }

    /// Restarts a failed or cancelled job from scratch: back to `created` with result,
    /// error, progress and checkpoint cleared, input replaced when `input` is given.
    /// Audited; the twin of [`Jobs::restart`](crate::Jobs::restart).
    pub fn restart(&self, id: i64, actor: &str, input: Option<&Value>) -> Result<Job> {
        validate::name("actor", actor)?;
        if let Some(input) = input {
            validate::document("input", input, validate::MAX_DOCUMENT_BYTES)?;
        }
        self.engine.write(|tx, now| {
            let (from, job) = store::restart(tx, id, input, now)?;
            let detail = json!({ "from": from, "new_input": input.is_some() });
            store::audit(tx, id, "restart", actor, &detail, now)?;
            let payload = EventPayload::Restarted {
                by: actor.into(),
                from,
                new_input: input.is_some(),
            };
            record(tx, id, &[payload], now)?;
            Ok(job)
        })
    }

    /// Creates every job of `new` in one transaction: all or none (the twin of
    /// [`Jobs::create_many`](crate::Jobs::create_many)). Each is validated first; the first
    /// bad one is refused with its index in the field name and nothing is stored. Returned
    /// in the order given.
    pub fn create_many(&self, new: &[NewJob]) -> Result<Vec<Job>> {
        validate::new_jobs(new)?;
        let payloads: Vec<String> = new
            .iter()
            .map(|n| {
                EventPayload::Created {
                    kind: n.kind.clone(),
                    user_id: n.user_id.clone(),
                }
                .to_wire()
                .to_string()
            })
            .collect();
        self.engine.write(|tx, now| {
            new.iter()
                .zip(&payloads)
                .map(|(n, payload)| store::insert(tx, n, payload, now))
                .collect()
        })
    }

    /// The job with this id and its kept events in the stable diagnostics shape, read in
    /// one snapshot (the twin of [`Jobs::diagnostics`](crate::Jobs::diagnostics)).
    pub fn diagnostics(&self, id: i64) -> Result<JobDiagnostics> {
        let (job, events) = self.job_and_events(id)?;
        Ok(JobDiagnostics::of(&job, &events))
    }

    /// The job with this id and its kept events, oldest first, read in one snapshot.
    pub(crate) fn job_and_events(&self, id: i64) -> Result<(Job, Vec<Event>)> {
        self.engine.read_snapshot(|tx| {
            let job = store::get_job(tx, id)?;
            let limit = u32::try_from(BACKLOG).unwrap_or(u32::MAX);
            let events = match events::since(tx, id, 0, limit) {
                Err(Error::EventsPruned { oldest_kept, .. }) => {
                    events::since(tx, id, oldest_kept - 1, limit)?
                }
                other => other?,
            };
            Ok((job, events))
        })
    }

    /// A user's jobs, newest first.
    pub fn list_by_user(&self, user_id: &str, limit: u32) -> Result<Vec<Job>> {
        self.by_user(user_id, &[], limit)
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
    pub(crate) fn by_user(
        &self,
        user_id: &str,
        states: &[JobState],
        limit: u32,
    ) -> Result<Vec<Job>> {
        self.engine
            .read(|tx| store::list_by_user(tx, user_id, states, limit))
    }

    /// Every running job, stalest heartbeat first.
    pub fn running(&self) -> Result<Vec<Job>> {
        self.engine.read(store::running)
    }

    /// Running jobs with no heartbeat for longer than `older_than` (by the engine's clock).
    pub fn stale(&self, older_than: Duration) -> Result<Vec<Job>> {
        let cutoff = self.engine.now() - older_than;
        self.engine.read(|tx| store::stale(tx, cutoff))
    }

    /// Paused jobs that hold a checkpoint and can be resumed.
    pub fn resumable(&self) -> Result<Vec<Job>> {
        self.engine.read(store::resumable)
    }

    /// Counts per state and per kind over all jobs, and the oldest running heartbeat.
    pub fn stats(&self) -> Result<JobStats> {
        self.engine.read(|tx| store::stats(tx, None))
    }

    /// The same counts for one user's jobs.
    pub fn stats_for_user(&self, user_id: &str) -> Result<JobStats> {
        self.engine.read(|tx| store::stats(tx, Some(user_id)))
    }

    /// Resumes a paused job directly on `worker` (paused -> running, next attempt), handing
    /// it the checkpoint; audited as `actor`, with the `resumed` and `claimed` events (the
    /// twin of [`Jobs::resume_on`](crate::Jobs::resume_on)).
    pub fn resume_on(&self, id: i64, worker: &str, actor: &str) -> Result<Claim> {
        validate::name("worker", worker)?;
        validate::name("actor", actor)?;
        self.engine.write(|tx, now| {
            let job = store::claim_paused(tx, id, worker, now)?;
            store::audit(tx, id, "resume", actor, &json!({ "worker": worker }), now)?;
            let resumed = EventPayload::Resumed {
                by: actor.into(),
                from: JobState::Paused,
                to: JobState::Running,
            };
            let claimed = EventPayload::Claimed {
                worker: worker.into(),
                attempt: job.attempt,
            };
            record(tx, id, &[resumed, claimed], now)?;
            Ok(Claim {
                attempt: job.attempt,
                job,
            })
        })
    }

    /// An operator fails a running or paused job with `code`; audited (the twin of
    /// [`Jobs::mark_failed`](crate::Jobs::mark_failed)).
    pub fn mark_failed(&self, id: i64, actor: &str, code: &str, message: &str) -> Result<Job> {
        validate::name("actor", actor)?;
        validate::identifier("error_code", code)?;
        self.engine.write(|tx, now| {
            let allowed = [JobState::Running, JobState::Paused];
            let error = Some((code, message));
            let (from, job) =
                store::transition(tx, id, &allowed, JobState::Failed, None, error, now)?;
            let detail = json!({ "from": from, "code": code, "message": message });
            store::audit(tx, id, "fail", actor, &detail, now)?;
            let payload = EventPayload::Failed {
                code: code.into(),
                message: message.into(),
                by: Some(actor.into()),
            };
            record(tx, id, &[payload], now)?;
            Ok(job)
        })
    }

    /// Deletes a terminal job with its events; its audit rows stay, and one more records
    /// the deletion (the twin of [`Jobs::delete`](crate::Jobs::delete)).
    pub fn delete(&self, id: i64, actor: &str) -> Result<()> {
        validate::name("actor", actor)?;
        self.engine.write(|tx, now| {
            let job = store::delete(tx, id)?;
            let detail = json!({ "state": job.state, "kind": job.kind });
            store::audit(tx, id, "delete", actor, &detail, now)
        })
    }

    /// An operator's audited transition with its event (the SQLite facade's `operator`).
    fn operator(
        &self,
        id: i64,
        allowed: &[JobState],
        to: JobState,
        action: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Job> {
        validate::name("actor", actor)?;
        self.engine.write(|tx, now| {
            let (from, job) = store::transition(tx, id, allowed, to, reason, None, now)?;
            let by = actor.to_owned();
            let (detail, payload) = match to {
                JobState::Cancelled => (
                    json!({ "reason": reason, "from": from }),
                    EventPayload::Cancelled {
                        by,
                        from,
                        to,
                        reason: reason.map(str::to_owned),
                    },
                ),
                JobState::Paused => (
                    json!({ "from": from }),
                    EventPayload::Paused { by, from, to },
                ),
                _ => (
                    json!({ "from": from }),
                    EventPayload::Resumed { by, from, to },
                ),
            };
            store::audit(tx, id, action, actor, &detail, now)?;
            record(tx, id, &[payload], now)?;
            Ok(job)
        })
    }
}

impl PgEvents<'_> {
    /// The events of job `job_id` after `seq` (0: from the oldest kept), oldest first, at
    /// most `limit`; `EVENTS_PRUNED` when the ones right after `seq` were pruned (see
    /// [`Events::since`](crate::Events::since)).
    pub fn since(&self, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>> {
        self.engine.read(|tx| events::since(tx, job_id, seq, limit))
    }

    /// Events of all jobs after the global `cursor` (0 for the start), oldest first, at most
    /// `limit` (see [`Events::after`](crate::Events::after)). Only events below the feed's
    /// horizon are handed out: none that a transaction still in flight may commit under a
    /// cursor already handed out (migrations/postgres/P6__feed_fence.sql).
    pub fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Event>> {
        let page = self.feed(&FeedFilter::All, cursor, limit, false)?;
        Ok(page.events.into_iter().map(|e| e.event).collect())
    }

    /// A page of the global feed after `cursor` for `filter`, with each job's user (see
    /// [`Events::feed`](crate::Events::feed)); `head` is the newest cursor below the
    /// horizon, so a follower never moves past an event committed later.
    pub fn feed(
        &self,
        filter: &FeedFilter,
        cursor: i64,
        limit: u32,
        check_gaps: bool,
    ) -> Result<FeedPage> {
        // the horizon first, in its own transaction: the page's snapshot must come after it
        let horizon = self.engine.read(events::horizon)?;
        self.engine
            .read(|tx| events::feed(tx, horizon, filter, cursor, limit, check_gaps))
    }
}
