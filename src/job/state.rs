//! The job state machine: [`JobState`] and the single table of allowed transitions.
//!
//! `migrations/V1__jobs.sql` mirrors [`TRANSITIONS`] in the `jobs_state_machine` trigger;
//! the test `job_state_machine_agrees_with_sql` proves the two equal.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker to claim it.
    Created,
    /// Claimed by a worker that heartbeats.
    Running,
    /// Stopped with its checkpoint kept; no worker owns it.
    Paused,
    /// Finished with a result. Final.
    Completed,
    /// Finished with an error; may be restarted.
    Failed,
    /// Stopped on request; may be restarted.
    Cancelled,
}

use JobState::*;

/// Every allowed `(from, to)` transition, and why it exists.
pub const TRANSITIONS: &[(JobState, JobState, &str)] = &[
    (Created, Running, "claim"),
    (Created, Cancelled, "cancel before it ran"),
    (
        Running,
        Paused,
        "pause, or supervisor recovery of a job with a checkpoint",
    ),
    (Running, Completed, "complete"),
    (
        Running,
        Failed,
        "fail, or supervisor recovery without a checkpoint",
    ),
    (Running, Cancelled, "cancel while running"),
    (
        Running,
        Created,
        "supervisor recovery under auto-resume: requeue with checkpoint",
    ),
    (
        Paused,
        Running,
        "resume on a given worker (claim of a paused job)",
    ),
    (
        Paused,
        Created,
        "resume: requeue so the next claim gets the checkpoint",
    ),
    (Paused, Cancelled, "cancel while paused"),
    (Paused, Failed, "fail while paused (recovery exhausted)"),
    (Failed, Created, "restart"),
    (Cancelled, Created, "restart"),
];

impl JobState {
    /// All states, in declaration order.
    pub const ALL: [JobState; 6] = [Created, Running, Paused, Completed, Failed, Cancelled];

    /// The text stored in `jobs.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Created => "created",
            Running => "running",
            Paused => "paused",
            Completed => "completed",
            Failed => "failed",
            Cancelled => "cancelled",
        }
    }

    /// Whether the job has finished (its `finished_at` is set).
    pub fn is_terminal(self) -> bool {
        matches!(self, Completed | Failed | Cancelled)
    }

    /// Whether `self -> to` is in [`TRANSITIONS`].
    pub fn can_transition_to(self, to: JobState) -> bool {
        TRANSITIONS.iter().any(|&(f, t, _)| f == self && t == to)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid("state", format!("unknown job state {s:?}")))
    }
}

impl rusqlite::types::FromSql for JobState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        s.parse()
            .map_err(|e: Error| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

impl rusqlite::ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_or_self_loops() {
        for (i, a) in TRANSITIONS.iter().enumerate() {
            assert_ne!(a.0, a.1, "self loop {a:?}");
            for b in &TRANSITIONS[i + 1..] {
                assert!(!(a.0 == b.0 && a.1 == b.1), "duplicate {a:?}");
            }
        }
    }

    #[test]
    fn completed_is_final_and_every_state_is_reachable() {
        assert!(JobState::ALL
            .iter()
            .all(|&t| !Completed.can_transition_to(t)));
        for s in JobState::ALL {
            assert!(
                s == Created || TRANSITIONS.iter().any(|t| t.1 == s),
                "{s} unreachable"
            );
        }
    }

    #[test]
    fn text_round_trips() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert_eq!(
            "done".parse::<JobState>().unwrap_err().code(),
            "INVALID_INPUT"
        );
    }
}
