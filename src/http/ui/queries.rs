//! The UI's own read-only queries: each one bounded by an index or a LIMIT, so a page costs
//! the same on ten runs as on a million (no full-table `count(*)`).
//!
//! Each read is served by the engine's backend: on a SQLite file by `storage::ui` (the
//! owners' `UI_*` statements), on PostgreSQL by their twins in `src/pg/storage/`, through
//! the backend seam. The pages render the same on both.

pub use crate::storage::ui::{
    AuditRow, Capped, FailedRun, JobCounts, LastSlot, Overview, ScheduleHistory, SupervisorTick,
    COUNT_CAP, JOB_WINDOW,
};

use crate::engine::Engine;
use crate::error::Result;
use crate::storage::ui;

/// The overview page's reads, listing `failed` failed runs.
pub fn overview(e: &Engine, failed: i64) -> Result<Overview> {
    match e.backend() {
        Some(b) => b.ui_overview(failed),
        None => e.with_connection(|c| ui::overview(c, failed)),
    }
}

/// The newest event cursor (0 for none): a page's live script follows the stream after it
/// (the feed's head: on PostgreSQL below its horizon, so never past an event a transaction
/// still in flight commits later).
pub fn last_cursor(e: &Engine) -> Result<i64> {
    e.events().head()
}

/// A job's newest audit rows, at most `limit`.
pub fn job_audit(e: &Engine, job_id: i64, limit: i64) -> Result<Vec<AuditRow>> {
    match e.backend() {
        Some(b) => b.ui_job_audit(job_id, limit),
        None => e.with_connection(|c| ui::job_audit(c, job_id, limit)),
    }
}

/// A schedule's last finished slot and its capped count of missed slots.
pub fn schedule_history(e: &Engine, schedule_id: i64) -> Result<ScheduleHistory> {
    match e.backend() {
        Some(b) => b.ui_schedule_history(schedule_id),
        None => e.with_connection(|c| ui::schedule_history(c, schedule_id)),
    }
}
