//! The backend seam: what an [`Engine`](crate::Engine) opened on a database other than
//! SQLite serves.
//!
//! An engine opened on a file works on SQLite itself (`src/engine.rs`, `src/storage/`). An
//! engine opened on a `postgres://` URL holds a [`Backend`] instead (feature `postgres`:
//! `src/pg/backend.rs`), and each facade method it serves hands its call to the twin below
//! before touching SQLite; a method it does not serve answers
//! [`Error::Unsupported`](crate::Error::Unsupported) with the facade's name for it. The
//! facades depend on this trait, the backend implements it: neither names the other.
//!
//! Each method is the twin of the facade method its doc names, with the same arguments,
//! checks, results and error codes.

use std::time::Duration;

use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::Result;
use crate::events::{Event, FeedFilter, FeedPage};
use crate::job::state::JobState;
use crate::job::types::{
    Claim, Job, JobStats, NewJob, Recovery, RecoveryReport, SupervisorOptions,
};
use crate::run::state::{RunStatus, Scope, TriggerKind};
use crate::run::timeline::TimelineEntry;
use crate::schedule::state::{SlotClaim, SlotReport, TickOptions};
use crate::storage::ingest_runs::{Run, RunFilter};
use crate::storage::modules::{Module, PreflightConfig, ProbeError, ProbeSet, ReadinessSnapshot};
use crate::storage::raw::{PruneReport, RawFilter, RawInput, RawRecord, Rejection};
use crate::storage::schedules::{ClaimStep, Finish, Schedule, ScheduleChange, ScheduleRow, Slot};
use crate::storage::supervisor_state::SupervisorStatus;

/// A backend other than the engine's own SQLite file; see the module docs.
pub(crate) trait Backend: Send + Sync {
    /// Its name in [`Error::Unsupported`](crate::Error::Unsupported) (`postgres`).
    fn name(&self) -> &'static str;
    /// `Engine::schema_version`.
    fn schema_version(&self) -> Result<i64>;

    /// `Jobs::create`.
    fn create_job(&self, new: &NewJob) -> Result<Job>;
    /// `Jobs::get`.
    fn get_job(&self, id: i64) -> Result<Job>;
    /// `Jobs::list_before`.
    fn list_jobs(
        &self,
        user_id: Option<&str>,
        state: Option<JobState>,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Job>>;
    /// `Jobs::claim`.
    fn claim(&self, worker: &str, kinds: &[&str]) -> Result<Option<Claim>>;
    /// `Jobs::heartbeat`, fenced by `attempt`.
    fn heartbeat(&self, id: i64, attempt: i64) -> Result<()>;
    /// `Jobs::progress`, fenced by `attempt`.
    fn progress(&self, id: i64, attempt: i64, pct: u8, step: Option<&str>) -> Result<()>;
    /// `Jobs::checkpoint`, fenced by `attempt`; `limit` is the engine's checkpoint limit.
    fn checkpoint(&self, id: i64, attempt: i64, checkpoint: &Value, limit: usize) -> Result<()>;
    /// `Jobs::complete`, fenced by `attempt`.
    fn complete(&self, id: i64, attempt: i64, result: &Value) -> Result<Job>;
    /// `Jobs::fail`, fenced by `attempt`.
    fn fail(&self, id: i64, attempt: i64, code: &str, message: &str) -> Result<Job>;
    /// `Jobs::cancel`.
    fn cancel(&self, id: i64, actor: &str, reason: Option<&str>) -> Result<Job>;
    /// `Jobs::pause`.
    fn pause(&self, id: i64, actor: &str) -> Result<Job>;
    /// `Jobs::resume`.
    fn resume(&self, id: i64, actor: &str) -> Result<Job>;
    /// `Jobs::restart`.
    fn restart(&self, id: i64, actor: &str, input: Option<&Value>) -> Result<Job>;

    // jobs, more

    /// `Jobs::create_many`: all or none, in one transaction.
    fn create_jobs(&self, new: &[NewJob]) -> Result<Vec<Job>>;
    /// `Jobs::diagnostics`: the job and its kept events (oldest first), read in one
    /// snapshot.
    fn job_and_events(&self, id: i64) -> Result<(Job, Vec<Event>)>;
    /// `Jobs::list_by_user` (`states` empty), `Jobs::active`, `Jobs::completed` and
    /// `Jobs::failed`: a user's jobs in one of `states`, newest first.
    fn jobs_of_user(&self, user_id: &str, states: &[JobState], limit: u32) -> Result<Vec<Job>>;
    /// `Jobs::running`.
    fn running_jobs(&self) -> Result<Vec<Job>>;
    /// `Jobs::stale`.
    fn stale_jobs(&self, older_than: Duration) -> Result<Vec<Job>>;
    /// `Jobs::resumable`.
    fn resumable_jobs(&self) -> Result<Vec<Job>>;
    /// `Jobs::stats` (`None`) and `Jobs::stats_for_user`.
    fn job_stats(&self, user_id: Option<&str>) -> Result<JobStats>;
    /// `Jobs::resume_on`.
    fn resume_on(&self, id: i64, worker: &str, actor: &str) -> Result<Claim>;
    /// `Jobs::mark_failed`.
    fn mark_failed(&self, id: i64, actor: &str, code: &str, message: &str) -> Result<Job>;
    /// `Jobs::delete`.
    fn delete_job(&self, id: i64, actor: &str) -> Result<()>;
    /// `Supervisor::reset_recovery_count`.
    fn reset_recovery_count(
        &self,
        opts: &SupervisorOptions,
        job_id: i64,
        actor: &str,
    ) -> Result<()>;

    /// `Events::since`.
    fn events_since(&self, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>>;

    /// `Events::after`.
    fn events_after(&self, cursor: i64, limit: u32) -> Result<Vec<Event>>;

    /// `Events::feed`.
    fn events_feed(
        &self,
        filter: &FeedFilter,
        cursor: i64,
        limit: u32,
        check_gaps: bool,
    ) -> Result<FeedPage>;

    /// `Supervisor::tick`.
    fn supervisor_tick(&self, opts: &SupervisorOptions, now: Timestamp) -> Result<RecoveryReport>;
    /// `Supervisor::recover_now`.
    fn recover_now(&self, opts: &SupervisorOptions, job_id: i64, actor: &str) -> Result<Recovery>;

    /// `Supervisor::status`.
    fn supervisor_status(&self, opts: &SupervisorOptions) -> Result<Option<SupervisorStatus>>;
    /// `Supervisor::cleanup`.
    fn supervisor_cleanup(&self, opts: &SupervisorOptions) -> Result<bool>;

    // runs: `Runs` and the steps of `Runs::trigger` and `StageContext`

    /// `Runs::get`.
    fn get_run(&self, id: i64) -> Result<Run>;
    /// `Runs::sweep`.
    fn sweep_runs(&self) -> Result<Vec<i64>>;
    /// `Runs::list`.
    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>>;
    /// A trigger's start of one run under its lock (`slot`: the claim that must still hold):
    /// the run's id, or `RUN_ALREADY_ACTIVE` (the refusal recorded as a failed run).
    fn start_run(&self, new: &NewRunSpec<'_>) -> Result<i64>;
    /// Ends a started run; `false` if it had already ended.
    fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        error: Option<(&str, &str)>,
        meta: &Value,
    ) -> Result<bool>;
    /// Renews the lease to now + `lease` and appends `entry`, in one transaction; `false`
    /// when the run is no longer started (nothing written).
    fn open_stage(&self, id: i64, entry: &TimelineEntry, lease: Duration) -> Result<bool>;
    /// Renews the lease and replaces the open last entry with `entry` (closed), in one
    /// transaction; `false` when the run is no longer started.
    fn close_stage(&self, id: i64, entry: &TimelineEntry, lease: Duration) -> Result<bool>;
    /// `StageContext::keep_alive`: the lease to now + `lease`; `false` when ended.
    fn renew_run(&self, id: i64, lease: Duration) -> Result<bool>;
    /// The first rejection among the run's raw records.
    fn rejection_of_run(&self, id: i64) -> Result<Option<Rejection>>;
    /// `StageContext::merge_meta` (the reserved keys already refused).
    fn merge_run_meta(&self, id: i64, patch: &Value) -> Result<()>;
    /// `StageContext::annotate`.
    fn annotate_stage(&self, id: i64, message: Option<&str>, detail: &Value) -> Result<()>;
    /// `StageContext::store_raw` / `store_rejected_raw`.
    fn store_raw(
        &self,
        run_id: i64,
        input: &RawInput<'_>,
        rejection: Option<&Rejection>,
    ) -> Result<RawRecord>;
    /// `Runs::raw_record`.
    fn raw_record(&self, id: i64) -> Result<RawRecord>;
    /// `Runs::raw_records`.
    fn raw_records(&self, run_id: i64) -> Result<Vec<RawRecord>>;
    /// `Runs::raw_list`.
    fn raw_list(&self, filter: &RawFilter) -> Result<Vec<RawRecord>>;
    /// `Runs::raw_payload`.
    fn raw_payload(&self, sha256: &str) -> Result<Vec<u8>>;
    /// `Runs::modules`.
    fn modules(&self) -> Result<Vec<Module>>;
    /// `Runs::upsert_module`.
    fn upsert_module(&self, module: &Module) -> Result<()>;
    /// `Runs::set_module_enabled`.
    fn set_module_enabled(&self, module: &str, enabled: bool) -> Result<()>;
    /// `Runs::delete_module`.
    fn delete_module(&self, module: &str) -> Result<()>;
    /// `Runs::record_probe`.
    fn record_probe(
        &self,
        module: &str,
        outcome: &std::result::Result<(), ProbeError>,
        latency_ms: i64,
    ) -> Result<i64>;
    /// `Runs::readiness`.
    fn readiness(&self, scope: Scope, config: &PreflightConfig) -> Result<ReadinessSnapshot>;
    /// `Runs::preflight` (and the built-in preflight gate).
    fn preflight(
        &self,
        scope: Scope,
        probes: &ProbeSet,
        config: &PreflightConfig,
    ) -> Result<ReadinessSnapshot>;
    /// `Runs::prune`.
    fn prune(&self, cutoff: Timestamp) -> Result<PruneReport>;
    /// `Runs::abandon` / `Runs::interrupt` (arguments checked): ends started run `id` failed
    /// with `code` and `message` (`meta` merged), audited as `action` by `actor` with the
    /// `reason`; the run, or `ILLEGAL_TRANSITION` when it is not started.
    #[allow(clippy::too_many_arguments)]
    fn end_run(
        &self,
        id: i64,
        code: &str,
        action: &str,
        actor: &str,
        message: &str,
        meta: &Value,
        reason: &str,
    ) -> Result<Run>;

    /// Waits at most `timeout` for a job of `kinds` (any if empty) to become claimable:
    /// `true` when one may have (a hint: claim next), `false` at the timeout. The idle
    /// [`Worker`](crate::Worker) waits here instead of sleeping.
    fn wait_for_work(&self, kinds: &[&str], timeout: Duration) -> Result<bool>;

    // the Trust UI's reads (`http::ui::queries`, the twins of `storage::ui`)

    /// The overview page's reads, listing `failed` failed runs.
    #[cfg(feature = "http")]
    fn ui_overview(&self, failed: i64) -> Result<crate::storage::ui::Overview>;
    /// A job's newest audit rows, at most `limit`.
    #[cfg(feature = "http")]
    fn ui_job_audit(&self, job_id: i64, limit: i64) -> Result<Vec<crate::storage::ui::AuditRow>>;
    /// A schedule's last finished slot and its capped count of missed slots.
    #[cfg(feature = "http")]
    fn ui_schedule_history(&self, schedule_id: i64) -> Result<crate::storage::ui::ScheduleHistory>;

    /// A wait for job events committed from now on by anyone (this process, other
    /// processes, other nodes): what a follower of the feed (`Events::subscribe`, the HTTP
    /// stream's watcher) sleeps on between reads, instead of polling.
    fn event_wait(&self) -> Result<Box<dyn EventWait>>;

    // schedules

    /// `Schedules::create` of the validated `row`, audited as `actor`: the duplicate name
    /// is refused as on SQLite.
    fn create_schedule(&self, row: &ScheduleRow<'_>, actor: &str) -> Result<Schedule>;
    /// `Schedules::get` (`None`: no schedule of that name).
    fn get_schedule(&self, name: &str) -> Result<Option<Schedule>>;
    /// `Schedules::list`.
    fn list_schedules(&self) -> Result<Vec<Schedule>>;
    /// `Schedules::slots` of the schedule with this id.
    fn schedule_slots(&self, schedule_id: i64) -> Result<Vec<Slot>>;
    /// `Schedules::all_slots`.
    fn all_slots(&self) -> Result<Vec<Slot>>;
    /// `Schedules::last_claimed_at`.
    fn last_claimed_at(&self) -> Result<Option<Timestamp>>;
    /// `Schedules::next_due` (and a tick report's).
    fn next_due(&self) -> Result<Option<Timestamp>>;
    /// `Schedules::edit` with the validated `change`, audited as `actor`.
    fn edit_schedule(
        &self,
        name: &str,
        change: &ScheduleChange<'_>,
        actor: &str,
    ) -> Result<Schedule>;
    /// `Schedules::enable` (`true`) and `Schedules::disable`, audited as `actor`.
    fn set_schedule_enabled(&self, name: &str, enabled: bool, actor: &str) -> Result<Schedule>;
    /// `Schedules::delete`, audited as `actor`.
    fn delete_schedule(&self, name: &str, actor: &str) -> Result<()>;
    /// The claiming half of a tick at `now` (`schedule::tick::claim_due`): sweep abandoned
    /// claims, materialize due slots by the misfire policy, claim at most `limit` pending
    /// due slots of the schedules `handles` accepts.
    fn claim_due_slots(
        &self,
        opts: &TickOptions,
        now: Timestamp,
        handles: &dyn Fn(&Schedule) -> bool,
        limit: usize,
    ) -> Result<ClaimStep>;
    /// The keep-alive of `ticker`'s claim on slot `slot_id` while it fires: `false` when it
    /// is no longer that ticker's.
    fn renew_slot_claim(&self, slot_id: i64, ticker: &str) -> Result<bool>;
    /// Records the outcome of slot `slot_id` claimed by `ticker` at `claimed_at` (nothing
    /// when it is no longer that ticker's claim); the slot as it is then.
    fn finish_claimed_slot(
        &self,
        slot_id: i64,
        ticker: &str,
        finish: &Finish<'_>,
        claimed_at: Timestamp,
    ) -> Result<SlotReport>;
}

/// See [`Backend::event_wait`].
pub(crate) trait EventWait: Send {
    /// Waits at most `timeout`: `true` when job events may have been committed since the
    /// last wait (a hint: read the feed after the last cursor seen), `false` at the timeout.
    /// While the database is away it fails (`UNREACHABLE`) and the next wait tries again.
    fn wait(&mut self, timeout: Duration) -> Result<bool>;
}

/// One run a trigger starts (the arguments of [`Backend::start_run`]).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct NewRunSpec<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The scope.
    pub scope: Scope,
    /// What triggered it.
    pub trigger: TriggerKind,
    /// The account it is for.
    pub account_id: Option<&'a str>,
    /// The lease its start takes.
    pub lease: Duration,
    /// The claimed slot it fires, whose claim must still hold.
    pub slot: Option<&'a SlotClaim>,
}
