//! The Trust UI's bounded reads (`http::ui`): their row types, below the backend seam so
//! that both backends name them, and the SQLite side, over each owner's `UI_*` statement.
//! Each read is bounded by an index or a LIMIT, so a page costs the same on ten runs as on
//! a million (no full-table `count(*)`). The PostgreSQL twins are in `src/pg/storage/`
//! (the same names, served through `Backend::ui_overview` and its siblings).

use rusqlite::{named_params, Connection};
use serde::Serialize;

use crate::clock::Timestamp;
use crate::error::Result;
use crate::run::state::{RunStatus, Scope};
use crate::storage::{ingest_runs, jobs, schedules, supervisor_state};

/// Counts stop here and show as "1000+".
pub const COUNT_CAP: i64 = 1000;
/// The jobs-by-state breakdown covers this many newest jobs.
pub const JOB_WINDOW: i64 = 10_000;

/// A count that stopped at [`COUNT_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capped {
    /// The count, at most the cap.
    pub n: i64,
    /// The real count is at least `n` (there may be more).
    pub more: bool,
}

impl Capped {
    /// A count read with a limit of [`COUNT_CAP`] + 1.
    pub(crate) fn of(n: i64) -> Self {
        Self {
            n: n.min(COUNT_CAP),
            more: n > COUNT_CAP,
        }
    }
}

/// Runs of `scope` in `status`, capped.
pub(crate) fn runs_capped(c: &Connection, scope: &str, status: &str) -> Result<Capped> {
    let n: i64 = c.prepare_cached(ingest_runs::UI_RUNS_CAPPED)?.query_row(
        named_params! {":scope": scope, ":status": status, ":cap": COUNT_CAP + 1},
        |r| r.get(0),
    )?;
    Ok(Capped::of(n))
}

/// A failed run as the overview lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRun {
    /// Run id.
    pub id: i64,
    /// Pipeline.
    pub pipeline: String,
    /// Scope.
    pub scope: String,
    /// Trigger.
    pub trigger: String,
    /// When.
    pub started_at: Timestamp,
    /// Its code.
    pub error_code: Option<String>,
    /// Its message.
    pub error_message: Option<String>,
    /// The gate that turned it away, for a blocked run.
    pub blocked_stage: Option<String>,
}

/// The newest failed runs.
pub(crate) fn failed_runs(c: &Connection, limit: i64) -> Result<Vec<FailedRun>> {
    let rows = c
        .prepare_cached(ingest_runs::UI_RUNS_FAILED_NEWEST)?
        .query_map(named_params! {":limit": limit}, |r| {
            Ok(FailedRun {
                id: r.get(0)?,
                pipeline: r.get(1)?,
                scope: r.get(2)?,
                trigger: r.get(3)?,
                started_at: r.get(4)?,
                error_code: r.get(5)?,
                error_message: r.get(6)?,
                blocked_stage: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Jobs per state among the newest [`JOB_WINDOW`] jobs, and capped live counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobCounts {
    /// `(state, count)` among the newest jobs.
    pub window: Vec<(String, i64)>,
    /// Jobs waiting for a worker.
    pub created: Option<Capped>,
    /// Jobs running now.
    pub running: Option<Capped>,
}

/// See [`JobCounts`].
pub(crate) fn job_counts(c: &Connection) -> Result<JobCounts> {
    let window = c
        .prepare_cached(jobs::UI_JOBS_WINDOW_STATES)?
        .query_map(named_params! {":window": JOB_WINDOW}, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let capped = |sql: &str| -> Result<Capped> {
        let n: i64 = c
            .prepare_cached(sql)?
            .query_row(named_params! {":cap": COUNT_CAP + 1}, |r| r.get(0))?;
        Ok(Capped::of(n))
    };
    Ok(JobCounts {
        window,
        created: Some(capped(jobs::UI_JOBS_CREATED_CAPPED)?),
        running: Some(capped(jobs::UI_JOBS_RUNNING_CAPPED)?),
    })
}

/// A supervisor's last tick.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorTick {
    /// Its name.
    pub name: String,
    /// Its last tick.
    pub last_tick_at: Option<Timestamp>,
    /// Ticks so far.
    pub ticks: i64,
    /// Jobs it recovered.
    pub jobs_recovered: i64,
    /// Jobs it failed.
    pub jobs_failed: i64,
}

/// Every supervisor's bookkeeping, newest tick first.
pub(crate) fn supervisors(c: &Connection) -> Result<Vec<SupervisorTick>> {
    let rows = c
        .prepare_cached(supervisor_state::UI_SUPERVISORS)?
        .query_map([], |r| {
            Ok(SupervisorTick {
                name: r.get(0)?,
                last_tick_at: r.get(1)?,
                ticks: r.get(2)?,
                jobs_recovered: r.get(3)?,
                jobs_failed: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The newest slot the scheduler materialized: `(schedule, due_at, status, created_at)`.
pub type LastSlot = (String, Timestamp, String, Timestamp);

/// See [`LastSlot`].
pub(crate) fn last_slot(c: &Connection) -> Result<Option<LastSlot>> {
    use rusqlite::OptionalExtension;
    Ok(c.prepare_cached(schedules::UI_LAST_SLOT)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?)
}

/// An audit row of a job.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// What was done.
    pub action: String,
    /// By whom.
    pub actor: String,
    /// When.
    pub at: Timestamp,
    /// Details (JSON text).
    pub detail: String,
}

/// A job's newest audit rows.
pub(crate) fn job_audit(c: &Connection, job_id: i64, limit: i64) -> Result<Vec<AuditRow>> {
    let rows = c
        .prepare_cached(jobs::UI_JOB_AUDIT)?
        .query_map(
            named_params! {":id": job_id.to_string(), ":limit": limit},
            |r| {
                Ok(AuditRow {
                    action: r.get(0)?,
                    actor: r.get(1)?,
                    at: r.get(2)?,
                    detail: r.get(3)?,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// A schedule's last finished slot and its capped count of missed (skipped or failed) slots.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleHistory {
    /// `(due_at, status, outcome_code, outcome_message)` of the newest finished slot.
    pub last: Option<(Timestamp, String, Option<String>, Option<String>)>,
    /// Skipped or failed slots.
    pub missed: Capped,
}

/// See [`ScheduleHistory`].
pub(crate) fn schedule_history(c: &Connection, schedule_id: i64) -> Result<ScheduleHistory> {
    use rusqlite::OptionalExtension;
    let last = c
        .prepare_cached(schedules::UI_SCHEDULE_LAST_SLOT)?
        .query_row(named_params! {":id": schedule_id}, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let n: i64 = c.prepare_cached(schedules::UI_SCHEDULE_MISSED)?.query_row(
        named_params! {":id": schedule_id, ":cap": COUNT_CAP + 1},
        |r| r.get(0),
    )?;
    Ok(ScheduleHistory {
        last,
        missed: Capped::of(n),
    })
}

/// The overview page's reads: runs per scope and status, the newest failed runs, jobs per
/// state, the supervisors and the newest slot.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Per scope (in [`Scope::ALL`] order), its runs per status (in [`RunStatus::ALL`]
    /// order), capped.
    pub runs: Vec<(Scope, Vec<Capped>)>,
    /// The newest failed runs.
    pub failed: Vec<FailedRun>,
    /// Jobs per state.
    pub jobs: JobCounts,
    /// Every supervisor's bookkeeping, newest tick first.
    pub supervisors: Vec<SupervisorTick>,
    /// The newest slot the scheduler materialized.
    pub last_slot: Option<LastSlot>,
}

/// See [`Overview`]; `failed` is how many failed runs it lists.
pub(crate) fn overview(c: &Connection, failed: i64) -> Result<Overview> {
    let mut runs = Vec::new();
    for scope in Scope::ALL {
        let mut counts = Vec::new();
        for status in RunStatus::ALL {
            counts.push(runs_capped(c, scope.as_str(), status.as_str())?);
        }
        runs.push((scope, counts));
    }
    Ok(Overview {
        runs,
        failed: failed_runs(c, failed)?,
        jobs: job_counts(c)?,
        supervisors: supervisors(c)?,
        last_slot: last_slot(c)?,
    })
}
