//! [`PgSupervisor`]: the SQLite [`Supervisor`](crate::Supervisor)'s recovery of stalled jobs
//! on a [`PgEngine`], safe to run on every node at once.
//!
//! The rules are the SQLite supervisor's, from the same function: a running job whose
//! heartbeat is older than [`SupervisorOptions::stale_after`] is failed
//! `RECOVERY_EXHAUSTED` once recovered [`SupervisorOptions::max_recoveries`] times, failed
//! `STALLED` without a checkpoint, else paused (or, under
//! [`RecoveryPolicy::AutoResume`](crate::RecoveryPolicy::AutoResume), requeued as `created`
//! with its checkpoint). Each recovery writes the same events (`recovered`, then `failed`
//! when it failed the job, `by` the supervisor's name) and, for an operator's
//! [`PgSupervisor::recover_now`], the same audit row.
//!
//! Many nodes: a tick locks the stale rows it takes (`FOR UPDATE SKIP LOCKED`) and moves
//! each with an update fenced by the attempt it saw, in one transaction; a supervisor on
//! another node skips rows being recovered and, once that commits, no longer sees them as
//! running. So each stalled attempt is recovered exactly once, whichever node's tick sees it
//! first, with one set of events.
//!
//! Bookkeeping: each tick (and each operator recovery) adds to the supervisor's
//! `supervisor_state` row in the same transaction, as on SQLite ([`PgSupervisor::status`],
//! [`PgSupervisor::cleanup`]). Supervisors on several nodes under one name share that row:
//! their ticks and recoveries add up.

use std::time::Duration;

use serde_json::json;

use super::engine::PgEngine;
use super::storage::job_events as events;
use super::storage::jobs as store;
use super::storage::supervisor_state;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::events::EventPayload;
use crate::job::supervisor::{decide, Recovery, RecoveryReport, SupervisorOptions};
use crate::job::validate;
use crate::job::JobState;
use crate::looping::{spawn_loop, LoopHandle};
use crate::storage::supervisor_state::SupervisorStatus;

/// How many stale jobs one tick recovers at most (one transaction); the rest wait for the
/// next tick, or another node's.
pub const TICK_BATCH: i64 = 500;

/// Rescues stalled jobs of a [`PgEngine`]; see docs/postgres.md. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgSupervisor {
    engine: PgEngine,
    opts: SupervisorOptions,
}

impl PgEngine {
    /// A supervisor over this engine's ledger with `opts` (the SQLite supervisor's options;
    /// `name` is the `by` of its events).
    pub fn supervisor(&self, opts: SupervisorOptions) -> Result<PgSupervisor> {
        validate::name("name", &opts.name)?;
        if opts.stale_after.is_zero() {
            return Err(Error::invalid("stale_after", "must be positive"));
        }
        Ok(PgSupervisor {
            engine: self.clone(),
            opts,
        })
    }
}

impl PgSupervisor {
    /// Its options.
    pub fn options(&self) -> &SupervisorOptions {
        &self.opts
    }

    fn recover(
        &self,
        at: Option<Timestamp>,
        stale_after: Option<Duration>,
        only: Option<i64>,
        actor: Option<&str>,
    ) -> Result<RecoveryReport> {
        self.engine.write(|tx, engine_now| {
            // a tick runs at the host's time; an operator's recovery at the write's own
            let now = at.unwrap_or(engine_now);
            let cutoff = stale_after.map_or(Timestamp::MIN, |d| now - d);
            let mut report = RecoveryReport {
                at: Some(now),
                recovered: Vec::new(),
            };
            for c in store::recovery_candidates(tx, cutoff, TICK_BATCH, only)? {
                let (to, error) = decide(&self.opts, c.recovery_count, c.has_checkpoint);
                let Some(last) = store::recover(tx, &c, to, error, now)? else {
                    continue;
                };
                let code = error.map(|(code, _)| code.to_owned());
                let count = c.recovery_count + 1;
                let by = actor.unwrap_or(&self.opts.name);
                if let Some(actor) = actor {
                    let detail = json!({ "to": to, "code": code });
                    store::audit(tx, c.id, "recover", actor, &detail, now)?;
                }
                let recovered = EventPayload::Recovered {
                    to,
                    code: code.clone(),
                    attempt: c.attempt,
                    recovery_count: count,
                    by: by.to_owned(),
                };
                events::append_after(tx, c.id, last, &recovered, now)?;
                if let Some((code, message)) = error {
                    let failed = EventPayload::Failed {
                        code: code.into(),
                        message: message.into(),
                        by: Some(by.to_owned()),
                    };
                    events::append(tx, c.id, &failed, now)?;
                }
                report.recovered.push(Recovery {
                    job_id: c.id,
                    attempt: c.attempt,
                    to,
                    code,
                    recovery_count: count,
                });
            }
            if let (Some(id), true) = (only, report.recovered.is_empty()) {
                // a manual recovery that recovers nothing is refused whole
                let job = store::get_job(tx, id)?;
                return Err(Error::IllegalTransition {
                    entity: "job",
                    id: id.to_string(),
                    from: job.state.to_string(),
                    to: "recovered".into(),
                });
            }
            let failed = report
                .recovered
                .iter()
                .filter(|r| r.to == JobState::Failed)
                .count();
            let recovered = report.recovered.len() - failed;
            supervisor_state::record_tick(tx, &self.opts.name, recovered, failed, now)?;
            Ok(report)
        })
    }

    /// Recovers every job stale at `now` (at most [`TICK_BATCH`] per call).
    pub fn tick(&self, now: Timestamp) -> Result<RecoveryReport> {
        self.recover(Some(now), Some(self.opts.stale_after), None, None)
    }

    /// Recovers one running job now, however fresh its heartbeat (an operator's action,
    /// recorded in the audit log). Waits for the job's row if a worker is writing it.
    pub fn recover_now(&self, job_id: i64, actor: &str) -> Result<Recovery> {
        validate::name("actor", actor)?;
        let report = self.recover(None, None, Some(job_id), Some(actor))?;
        report
            .recovered
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("job", job_id))
    }

    /// Sets a job's recovery counter back to zero, audited as `actor` (the twin of
    /// [`Supervisor::reset_recovery_count`](crate::Supervisor::reset_recovery_count));
    /// `ILLEGAL_TRANSITION` for a completed job.
    pub fn reset_recovery_count(&self, job_id: i64, actor: &str) -> Result<()> {
        validate::name("actor", actor)?;
        self.engine.write(|tx, now| {
            store::reset_recovery_count(tx, job_id, now)?;
            store::audit(tx, job_id, "reset_recovery_count", actor, &json!({}), now)
        })
    }

    /// This supervisor's bookkeeping (`None` before its first tick or after cleanup).
    pub fn status(&self) -> Result<Option<SupervisorStatus>> {
        self.engine
            .read(|tx| supervisor_state::status(tx, &self.opts.name))
    }

    /// Deletes this supervisor's bookkeeping row; returns whether there was one.
    pub fn cleanup(&self) -> Result<bool> {
        self.engine
            .write(|tx, _| supervisor_state::cleanup(tx, &self.opts.name))
    }

    /// Runs [`PgSupervisor::tick`] every [`SupervisorOptions::poll_every`] on a background
    /// thread until the handle is stopped; a failed tick (the server away) is retried at
    /// the next interval. Give the supervisor an engine of its own: the tick holds the
    /// engine's one connection while it runs.
    pub fn spawn(&self) -> Result<LoopHandle> {
        let me = self.clone();
        spawn_loop("runledger-pg-supervisor", move || {
            let _ = me.tick(me.engine.now());
            me.opts.poll_every
        })
        .map_err(|e| Error::thread_spawn("runledger-pg-supervisor", e))
    }
}
