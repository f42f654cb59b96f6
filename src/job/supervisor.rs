//! The supervisor: rescues running jobs whose worker stopped heartbeating.
//!
//! A job is *stale* when its last heartbeat is older than
//! [`SupervisorOptions::stale_after`]. Recovery, per job, in one guarded update on the attempt
//! the supervisor saw (so several supervisors, in threads or processes, never recover the
//! same attempt twice):
//! - recovered [`SupervisorOptions::max_recoveries`] times already: `failed`,
//!   code `RECOVERY_EXHAUSTED`;
//! - with a checkpoint: `paused` (resumable by an operator), or under
//!   [`RecoveryPolicy::AutoResume`] back to `created` with the checkpoint kept, for the next
//!   claim;
//! - without a checkpoint: `failed`, code `STALLED`.
//!
//! Recoveries are counted in `jobs.recovery_count`, so the limit survives restarts.

use std::time::Duration;

use serde_json::json;

use super::state::JobState;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::EventPayload;
use crate::job::validate;
use crate::looping::{spawn_loop, LoopHandle};
use crate::storage::jobs as store;
use crate::storage::supervisor_state;

pub use super::types::{Recovery, RecoveryPolicy, RecoveryReport, SupervisorOptions};
pub use crate::storage::supervisor_state::SupervisorStatus;

/// Where a stale job goes under `opts` (the one rule set of the SQLite and PostgreSQL
/// supervisors): failed `RECOVERY_EXHAUSTED` past the limit, failed `STALLED` without a
/// checkpoint, else paused or (auto-resume) created; with the failure's code and message.
pub(crate) fn decide(
    opts: &SupervisorOptions,
    recovery_count: i64,
    has_checkpoint: bool,
) -> (JobState, Option<(&'static str, &'static str)>) {
    if recovery_count >= i64::from(opts.max_recoveries) {
        (
            JobState::Failed,
            Some((
                "RECOVERY_EXHAUSTED",
                "recovered too many times; failed for good",
            )),
        )
    } else if !has_checkpoint {
        (
            JobState::Failed,
            Some((
                "STALLED",
                "worker stopped heartbeating and left no checkpoint",
            )),
        )
    } else if opts.policy == RecoveryPolicy::AutoResume {
        (JobState::Created, None)
    } else {
        (JobState::Paused, None)
    }
}

/// Rescues stalled jobs; see the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    engine: Engine,
    opts: SupervisorOptions,
}

impl Supervisor {
    /// A supervisor over `engine`.
    pub fn new(engine: Engine, opts: SupervisorOptions) -> Result<Self> {
        validate::name("name", &opts.name)?;
        if opts.stale_after.is_zero() {
            return Err(Error::invalid("stale_after", "must be positive"));
        }
        Ok(Self { engine, opts })
    }

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
        self.engine.write_events(|tx, ev| {
            // A tick runs at the host's time; an operator's recovery at the write's own.
            let now = at.unwrap_or_else(|| tx.now());
            let cutoff = stale_after.map_or(Timestamp::MIN, |d| now - d);
            let mut report = RecoveryReport {
                at: Some(now),
                recovered: Vec::new(),
            };
            for c in store::recovery_candidates(tx, cutoff, only)? {
                let (to, error) = decide(&self.opts, c.recovery_count, c.has_checkpoint);
                if !store::recover(tx, &c, to, error, now)? {
                    continue;
                }
                let code = error.map(|(code, _)| code.to_owned());
                let count = c.recovery_count + 1;
                let by = actor.unwrap_or(&self.opts.name);
                let payload = EventPayload::Recovered {
                    to,
                    code: code.clone(),
                    attempt: c.attempt,
                    recovery_count: count,
                    by: by.to_owned(),
                };
                let mut payloads = vec![payload];
                if let Some((code, message)) = error {
                    payloads.push(super::failed(code, message, Some(by)));
                }
                let audit = actor.map(|actor| {
                    super::Audit::new("recover", actor, json!({ "to": to, "code": code }))
                });
                super::record(tx, ev, c.id, audit, &payloads, now)?;
                report.recovered.push(Recovery {
                    job_id: c.id,
                    attempt: c.attempt,
                    to,
                    code,
                    recovery_count: count,
                });
            }
            if let (Some(id), true) = (only, report.recovered.is_empty()) {
                // A manual recovery that recovers nothing is refused whole: no bookkeeping.
                let (state, _) = store::state_of(tx, id)?;
                return Err(Error::IllegalTransition {
                    entity: "job",
                    id: id.to_string(),
                    from: state.to_string(),
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

    /// Recovers every job stale at `now`.
    pub fn tick(&self, now: Timestamp) -> Result<RecoveryReport> {
        if let Some(b) = self.engine.backend() {
            return b.supervisor_tick(&self.opts, now);
        }
        self.recover(Some(now), Some(self.opts.stale_after), None, None)
    }

    /// Recovers one running job now, however fresh its heartbeat (an operator's action,
    /// recorded in the audit log).
    pub fn recover_now(&self, job_id: i64, actor: &str) -> Result<Recovery> {
        validate::name("actor", actor)?;
        if let Some(b) = self.engine.backend() {
            return b.recover_now(&self.opts, job_id, actor);
        }
        let report = self.recover(None, None, Some(job_id), Some(actor))?;
        report
            .recovered
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("job", job_id))
    }

    /// Sets a job's recovery counter back to zero (audited).
    pub fn reset_recovery_count(&self, job_id: i64, actor: &str) -> Result<()> {
        validate::name("actor", actor)?;
        if let Some(b) = self.engine.backend() {
            return b.reset_recovery_count(&self.opts, job_id, actor);
        }
        self.engine.write(|tx| {
            let now = tx.now();
            store::reset_recovery_count(tx, job_id, now)?;
            store::audit(tx, job_id, "reset_recovery_count", actor, &json!({}), now)
        })
    }

    /// This supervisor's bookkeeping (`None` before its first tick or after cleanup).
    pub fn status(&self) -> Result<Option<SupervisorStatus>> {
        if let Some(b) = self.engine.backend() {
            return b.supervisor_status(&self.opts);
        }
        self.engine
            .read(|c| supervisor_state::status(c, &self.opts.name))
    }

    /// Deletes this supervisor's bookkeeping row; returns whether there was one.
    pub fn cleanup(&self) -> Result<bool> {
        if let Some(b) = self.engine.backend() {
            return b.supervisor_cleanup(&self.opts);
        }
        self.engine
            .write(|tx| supervisor_state::cleanup(tx, &self.opts.name))
    }

    /// Runs [`Supervisor::tick`] every [`SupervisorOptions::poll_every`] on a background
    /// thread until the handle is stopped. A failed tick is retried at the next interval.
    pub fn spawn(&self) -> Result<LoopHandle> {
        let me = self.clone();
        spawn_loop("runledger-supervisor", move || {
            let _ = me.tick(me.engine.now());
            let _ = me.engine.checkpoint_when_idle();
            me.opts.poll_every
        })
        .map_err(|e| Error::thread_spawn("runledger-supervisor", e))
    }
}
