//! The PostgreSQL [`Backend`]: what serves an [`Engine`] opened on a `postgres://` URL.
//!
//! Each method hands its call to the [`PgEngine`] facade of the same name, so the rules,
//! events, audit rows and error codes are those of `runledger::pg`. The engine's clones
//! share one [`PgEngine`] (a few pooled connections), so the SQLite engine's habit of
//! sharing one engine between threads (a [`Worker`](crate::Worker)'s slots, its heartbeat
//! thread, HTTP handlers) holds here too.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::engine::PgEngine;
use super::listener::PgListener;
use super::storage::ingest_runs as runs_store;
use super::storage::jobs as jobs_store;
use crate::backend::{Backend, NewRunSpec};
use crate::clock::{Deadline, Timestamp};
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::events::{Event, FeedFilter, FeedPage};
use crate::job::state::JobState;
use crate::job::types::{
    Claim, Job, JobStats, NewJob, Recovery, RecoveryReport, SupervisorOptions,
};
use crate::run::state::RunStatus;
use crate::run::state::Scope;
use crate::run::timeline::TimelineEntry;
use crate::schedule::state::{SlotReport, TickOptions};
use crate::storage::ingest_runs::{Run, RunFilter};
use crate::storage::modules::{Module, PreflightConfig, ProbeError, ProbeSet, ReadinessSnapshot};
use crate::storage::raw::{PruneReport, RawFilter, RawInput, RawRecord, Rejection};
use crate::storage::schedules::{ClaimStep, Finish, Schedule, ScheduleChange, ScheduleRow, Slot};
use crate::storage::supervisor_state::SupervisorStatus;

/// Opens the PostgreSQL ledger at `url` (migrating it) as an [`Engine`] with `opts`'s clock.
pub(crate) fn open(url: &str, opts: EngineOptions) -> Result<Engine> {
    let engine = PgEngine::open_with(url, opts.clock.clone(), opts.db.busy_timeout)?;
    let backend = PgBackend {
        engine,
        listener: Mutex::new(None),
    };
    Ok(Engine::with_backend(Box::new(backend), opts))
}

struct PgBackend {
    engine: PgEngine,
    /// One LISTEN connection for the idle waits of this engine and its clones; a thread that
    /// finds it taken by another waits by sleeping (see [`Backend::wait_for_work`]).
    listener: Mutex<Option<PgListener>>,
}

/// A follower's wait (`Events::subscribe`, the HTTP stream's watcher): a [`PgListener`]
/// of its own, registered for job events (so that events NOTIFY while it is open:
/// migrations/postgres/P4).
struct EventWaiter(PgListener);

impl crate::backend::EventWait for EventWaiter {
    fn wait(&mut self, timeout: Duration) -> Result<bool> {
        use super::listener::Wake;
        let hears = |w: &Wake| !matches!(w, Wake::Work { .. });
        if self.0.wait(timeout, hears)?.is_none() {
            return Ok(false);
        }
        // the notifications already queued (one per event) are folded into this wake: the
        // feed read next covers them all
        for _ in 0..FOLD_AT_MOST {
            if self.0.wait(Duration::ZERO, hears)?.is_none() {
                break;
            }
        }
        Ok(true)
    }
}

/// How many queued notifications one wake of an [`EventWaiter`] folds.
const FOLD_AT_MOST: usize = 10_000;

impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn schema_version(&self) -> Result<i64> {
        self.engine.schema_version()
    }

    fn create_job(&self, new: &NewJob) -> Result<Job> {
        self.engine.jobs().create(new)
    }

    fn get_job(&self, id: i64) -> Result<Job> {
        self.engine.jobs().get(id)
    }

    fn list_jobs(
        &self,
        user_id: Option<&str>,
        state: Option<JobState>,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        self.engine
            .jobs()
            .list_before(user_id, state, kind, before, limit)
    }

    fn claim(&self, worker: &str, kinds: &[&str]) -> Result<Option<Claim>> {
        self.engine.jobs().claim(worker, kinds)
    }

    fn heartbeat(&self, id: i64, attempt: i64) -> Result<()> {
        self.engine.jobs().heartbeat_fenced(id, attempt)
    }

    fn progress(&self, id: i64, attempt: i64, pct: u8, step: Option<&str>) -> Result<()> {
        self.engine.jobs().progress_fenced(id, attempt, pct, step)
    }

    fn checkpoint(&self, id: i64, attempt: i64, checkpoint: &Value, limit: usize) -> Result<()> {
        self.engine
            .jobs()
            .checkpoint_fenced(id, attempt, checkpoint, limit)
    }

    fn complete(&self, id: i64, attempt: i64, result: &Value) -> Result<Job> {
        self.engine.jobs().complete_fenced(id, attempt, result)
    }

    fn fail(&self, id: i64, attempt: i64, code: &str, message: &str) -> Result<Job> {
        self.engine.jobs().fail_fenced(id, attempt, code, message)
    }

    fn cancel(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<Job> {
        self.engine.jobs().cancel(id, actor, reason)
    }

    fn pause(&self, id: i64, actor: &str) -> Result<Job> {
        self.engine.jobs().pause(id, actor)
    }

    fn resume(&self, id: i64, actor: &str) -> Result<Job> {
        self.engine.jobs().resume(id, actor)
    }

    fn restart(&self, id: i64, actor: &str, input: Option<&Value>) -> Result<Job> {
        self.engine.jobs().restart(id, actor, input)
    }

    // jobs, more

    fn create_jobs(&self, new: &[NewJob]) -> Result<Vec<Job>> {
        self.engine.jobs().create_many(new)
    }

    fn job_and_events(&self, id: i64) -> Result<(Job, Vec<Event>)> {
        self.engine.jobs().job_and_events(id)
    }

    fn jobs_of_user(&self, user_id: &str, states: &[JobState], limit: u32) -> Result<Vec<Job>> {
        self.engine.jobs().by_user(user_id, states, limit)
    }

    fn running_jobs(&self) -> Result<Vec<Job>> {
        self.engine.jobs().running()
    }

    fn stale_jobs(&self, older_than: Duration) -> Result<Vec<Job>> {
        self.engine.jobs().stale(older_than)
    }

    fn resumable_jobs(&self) -> Result<Vec<Job>> {
        self.engine.jobs().resumable()
    }

    fn job_stats(&self, user_id: Option<&str>) -> Result<JobStats> {
        match user_id {
            None => self.engine.jobs().stats(),
            Some(user) => self.engine.jobs().stats_for_user(user),
        }
    }

    fn resume_on(&self, id: i64, worker: &str, actor: &str) -> Result<Claim> {
        self.engine.jobs().resume_on(id, worker, actor)
    }

    fn mark_failed(&self, id: i64, actor: &str, code: &str, message: &str) -> Result<Job> {
        self.engine.jobs().mark_failed(id, actor, code, message)
    }

    fn delete_job(&self, id: i64, actor: &str) -> Result<()> {
        self.engine.jobs().delete(id, actor)
    }

    fn reset_recovery_count(
        &self,
        opts: &SupervisorOptions,
        job_id: i64,
        actor: &str,
    ) -> Result<()> {
        self.engine
            .supervisor(opts.clone())?
            .reset_recovery_count(job_id, actor)
    }

    fn events_since(&self, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>> {
        self.engine.events().since(job_id, seq, limit)
    }

    fn events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Event>> {
        self.engine.events().after(cursor, limit)
    }

    fn events_feed(
        &self,
        filter: &FeedFilter,
        cursor: i64,
        limit: u32,
        check_gaps: bool,
    ) -> Result<FeedPage> {
        self.engine.events().feed(filter, cursor, limit, check_gaps)
    }

    fn supervisor_tick(&self, opts: &SupervisorOptions, now: Timestamp) -> Result<RecoveryReport> {
        self.engine.supervisor(opts.clone())?.tick(now)
    }

    fn recover_now(&self, opts: &SupervisorOptions, job_id: i64, actor: &str) -> Result<Recovery> {
        self.engine
            .supervisor(opts.clone())?
            .recover_now(job_id, actor)
    }

    fn supervisor_status(&self, opts: &SupervisorOptions) -> Result<Option<SupervisorStatus>> {
        self.engine.supervisor(opts.clone())?.status()
    }

    fn supervisor_cleanup(&self, opts: &SupervisorOptions) -> Result<bool> {
        self.engine.supervisor(opts.clone())?.cleanup()
    }

    // runs

    fn get_run(&self, id: i64) -> Result<Run> {
        self.engine.runs().get(id)
    }

    fn sweep_runs(&self) -> Result<Vec<i64>> {
        self.engine.runs().sweep()
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        self.engine.read(|tx| runs_store::list(tx, filter))
    }

    fn start_run(&self, spec: &NewRunSpec<'_>) -> Result<i64> {
        let new = runs_store::NewRun {
            pipeline: spec.pipeline,
            scope: spec.scope,
            trigger: spec.trigger,
            account_id: spec.account_id,
            lease: spec.lease,
            slot_id: spec.slot.map(|c| c.slot_id),
            claim: spec.slot,
        };
        self.engine.runs().start_new(&new)
    }

    fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        error: Option<(&str, &str)>,
        meta: &Value,
    ) -> Result<bool> {
        self.engine
            .write(|tx, now| runs_store::finish(tx, id, status, error, meta, now))
    }

    fn open_stage(&self, id: i64, entry: &TimelineEntry, lease: Duration) -> Result<bool> {
        self.engine.write(|tx, now| {
            Ok(runs_store::renew_lease(tx, id, now + lease)?
                && runs_store::append_entry(tx, id, entry)?)
        })
    }

    fn close_stage(&self, id: i64, entry: &TimelineEntry, lease: Duration) -> Result<bool> {
        self.engine.write(|tx, now| {
            Ok(runs_store::renew_lease(tx, id, now + lease)?
                && runs_store::close_last_entry(tx, id, entry)?)
        })
    }

    fn renew_run(&self, id: i64, lease: Duration) -> Result<bool> {
        self.engine
            .write(|tx, now| runs_store::renew_lease(tx, id, now + lease))
    }

    fn rejection_of_run(&self, id: i64) -> Result<Option<Rejection>> {
        let records = self.engine.runs().raw_records(id)?;
        Ok(records.into_iter().find_map(|r| r.rejected))
    }

    fn merge_run_meta(&self, id: i64, patch: &Value) -> Result<()> {
        self.engine
            .write(|tx, _| runs_store::merge_meta(tx, id, patch))
    }

    fn annotate_stage(&self, id: i64, message: Option<&str>, detail: &Value) -> Result<()> {
        self.engine
            .write(|tx, _| runs_store::annotate_open_entry(tx, id, message, detail).map(|_| ()))
    }

    fn store_raw(
        &self,
        run_id: i64,
        input: &RawInput<'_>,
        rejection: Option<&Rejection>,
    ) -> Result<RawRecord> {
        self.engine.runs().store(run_id, input, rejection)
    }

    fn raw_record(&self, id: i64) -> Result<RawRecord> {
        self.engine.runs().raw_record(id)
    }

    fn raw_records(&self, run_id: i64) -> Result<Vec<RawRecord>> {
        self.engine.runs().raw_records(run_id)
    }

    fn raw_list(&self, filter: &RawFilter) -> Result<Vec<RawRecord>> {
        self.engine.runs().raw_list(filter)
    }

    fn raw_payload(&self, sha256: &str) -> Result<Vec<u8>> {
        self.engine.runs().raw_payload(sha256)
    }

    fn modules(&self) -> Result<Vec<Module>> {
        self.engine.runs().modules()
    }

    fn upsert_module(&self, module: &Module) -> Result<()> {
        self.engine.runs().upsert_module(module)
    }

    fn set_module_enabled(&self, module: &str, enabled: bool) -> Result<()> {
        self.engine.runs().set_module_enabled(module, enabled)
    }

    fn delete_module(&self, module: &str) -> Result<()> {
        self.engine.runs().delete_module(module)
    }

    fn record_probe(
        &self,
        module: &str,
        outcome: &std::result::Result<(), ProbeError>,
        latency_ms: i64,
    ) -> Result<i64> {
        self.engine.runs().record_probe(module, outcome, latency_ms)
    }

    fn readiness(&self, scope: Scope, config: &PreflightConfig) -> Result<ReadinessSnapshot> {
        self.engine.runs().readiness(scope, config)
    }

    fn preflight(
        &self,
        scope: Scope,
        probes: &ProbeSet,
        config: &PreflightConfig,
    ) -> Result<ReadinessSnapshot> {
        self.engine.runs().preflight(scope, probes, config)
    }

    fn prune(&self, cutoff: Timestamp) -> Result<PruneReport> {
        self.engine.runs().prune(cutoff)
    }

    fn end_run(
        &self,
        id: i64,
        code: &str,
        action: &str,
        actor: &str,
        message: &str,
        meta: &Value,
        reason: &str,
    ) -> Result<Run> {
        self.engine.write(|tx, now| {
            let run = runs_store::get_run(tx, id)?;
            let ended = run.status == RunStatus::Started
                && runs_store::end_started(tx, id, code, message, meta.clone(), now)?;
            if !ended {
                let from = runs_store::get_run(tx, id)?.status;
                return Err(Error::IllegalTransition {
                    entity: "run",
                    id: id.to_string(),
                    from: from.to_string(),
                    to: "failed".into(),
                });
            }
            let detail = json!({"code": code, "reason": reason, "lockKey": run.lock_key});
            jobs_store::audit_entity(tx, "run", id, action, actor, &detail, now)?;
            runs_store::get_run(tx, id)
        })
    }

    /// The first idle thread waits on the engine's LISTEN connection (woken by the NOTIFY
    /// of a job becoming claimable, in any process); a thread that finds it taken sleeps
    /// out `timeout` and looks again, as on SQLite. A listener that cannot connect is
    /// retried at the next wait; the caller polls meanwhile.
    fn wait_for_work(&self, kinds: &[&str], timeout: Duration) -> Result<bool> {
        let deadline = Deadline::after(timeout);
        let Ok(mut slot) = self.listener.try_lock() else {
            std::thread::sleep(timeout);
            return Ok(true);
        };
        if slot.is_none() {
            // for work only: it does not register for events, so it costs writers nothing
            match PgListener::open_for_work(self.engine.url()) {
                Ok(l) => *slot = Some(l),
                Err(e) => {
                    drop(slot);
                    std::thread::sleep(deadline.remaining());
                    return Err(e);
                }
            }
        }
        let listener = slot.as_mut().expect("opened above");
        listener.wait_for_work(kinds, deadline.remaining())
    }

    // the Trust UI's reads, each in one read transaction

    #[cfg(feature = "http")]
    fn ui_overview(&self, failed: i64) -> Result<crate::storage::ui::Overview> {
        self.engine.read_snapshot(|tx| {
            Ok(crate::storage::ui::Overview {
                runs: runs_store::ui_run_counts(tx)?,
                failed: runs_store::ui_failed_runs(tx, failed)?,
                jobs: jobs_store::ui_job_counts(tx)?,
                supervisors: super::storage::supervisor_state::ui_supervisors(tx)?,
                last_slot: super::storage::schedules::ui_last_slot(tx)?,
            })
        })
    }

    #[cfg(feature = "http")]
    fn ui_job_audit(&self, job_id: i64, limit: i64) -> Result<Vec<crate::storage::ui::AuditRow>> {
        self.engine
            .read(|tx| jobs_store::ui_job_audit(tx, job_id, limit))
    }

    #[cfg(feature = "http")]
    fn ui_schedule_history(&self, schedule_id: i64) -> Result<crate::storage::ui::ScheduleHistory> {
        self.engine
            .read_snapshot(|tx| super::storage::schedules::ui_schedule_history(tx, schedule_id))
    }

    fn event_wait(&self) -> Result<Box<dyn crate::backend::EventWait>> {
        // registers the session as an event listener: from now on every job event notifies
        Ok(Box::new(EventWaiter(PgListener::open(self.engine.url())?)))
    }

    // schedules

    fn create_schedule(&self, row: &ScheduleRow<'_>, actor: &str) -> Result<Schedule> {
        self.engine.schedules().create_row(row, actor)
    }

    fn get_schedule(&self, name: &str) -> Result<Option<Schedule>> {
        self.engine.schedules().by_name(name)
    }

    fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.engine.schedules().list()
    }

    fn schedule_slots(&self, schedule_id: i64) -> Result<Vec<Slot>> {
        self.engine.schedules().slots_of(schedule_id)
    }

    fn all_slots(&self) -> Result<Vec<Slot>> {
        self.engine.schedules().all_slots()
    }

    fn last_claimed_at(&self) -> Result<Option<Timestamp>> {
        self.engine.schedules().last_claimed_at()
    }

    fn next_due(&self) -> Result<Option<Timestamp>> {
        self.engine.schedules().next_due()
    }

    fn edit_schedule(
        &self,
        name: &str,
        change: &ScheduleChange<'_>,
        actor: &str,
    ) -> Result<Schedule> {
        self.engine.schedules().edit(name, change, actor)
    }

    fn set_schedule_enabled(&self, name: &str, enabled: bool, actor: &str) -> Result<Schedule> {
        self.engine.schedules().set_enabled(name, enabled, actor)
    }

    fn delete_schedule(&self, name: &str, actor: &str) -> Result<()> {
        self.engine.schedules().delete(name, actor)
    }

    fn claim_due_slots(
        &self,
        opts: &TickOptions,
        now: Timestamp,
        handles: &dyn Fn(&Schedule) -> bool,
        limit: usize,
    ) -> Result<ClaimStep> {
        self.engine
            .schedules()
            .claim_step(opts, now, handles, limit)
    }

    fn renew_slot_claim(&self, slot_id: i64, ticker: &str) -> Result<bool> {
        self.engine.schedules().renew(slot_id, ticker)
    }

    fn finish_claimed_slot(
        &self,
        slot_id: i64,
        ticker: &str,
        finish: &Finish<'_>,
        claimed_at: Timestamp,
    ) -> Result<SlotReport> {
        self.engine
            .schedules()
            .finish(slot_id, ticker, finish, claimed_at)
    }
}
