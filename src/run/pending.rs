//! Run endings the process knows but could not write (issue 13, item 2).
//!
//! When a run's terminal write fails with `DATABASE_FULL` (or another transient error),
//! the run would stay `started` and hold its lock until its lease expires, although its own
//! process knows how it ended. The ending is kept here instead, and written by the engine
//! before its next write transaction (any write: a trigger, a job, a sweep), so the lock is
//! freed as soon as the disk takes a write again.

use std::sync::Mutex;

use serde_json::Value;

use super::state::RunStatus;
use crate::error::Result;
use crate::storage::ingest_runs::Finish;

/// One ending waiting to be written.
#[derive(Debug, Clone)]
struct Ending {
    run_id: i64,
    status: RunStatus,
    error: Option<(String, String)>,
    meta: Value,
}

/// The endings of one engine still to write.
#[derive(Debug, Default)]
pub(crate) struct PendingEndings {
    endings: Mutex<Vec<Ending>>,
}

impl PendingEndings {
    /// Keeps a failed run's ending for the next write (it is stamped with that write's
    /// time, like every write: stored times follow commit order).
    pub(crate) fn push_failed(&self, run_id: i64, code: &str, message: &str) {
        let ending = Ending {
            run_id,
            status: RunStatus::Failed,
            error: Some((code.to_owned(), message.to_owned())),
            meta: serde_json::json!({ "errorCode": code, "endedLate": true }),
        };
        self.lock().push(ending);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Ending>> {
        self.endings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every kept ending, oldest first, each in its own transaction; stops at the
    /// first that still fails (kept for the next call). A run that ended meanwhile (swept)
    /// is dropped. Cheap when nothing is pending. Called by the engine's write path before
    /// each write (not from inside a write closure), with `write` writing one ending in its
    /// own transaction.
    pub(crate) fn flush(&self, mut write: impl FnMut(i64, &Finish<'_>) -> Result<bool>) {
        let mut endings = self.lock();
        while let Some(e) = endings.first() {
            let end = Finish {
                status: e.status,
                error: e.error.as_ref().map(|(c, m)| (c.as_str(), m.as_str())),
                meta: e.meta.clone(),
            };
            match write(e.run_id, &end) {
                Err(err) if err.is_transient() => return,
                // Written, or refused for good (the run ended meanwhile): done with it.
                _ => {
                    endings.remove(0);
                }
            }
        }
    }
}
