//! The job state machine: [`JobState`] and the single table of allowed transitions.
//!
//! `migrations/V10__cheaper_rules.sql` (its latest form; first `V1__jobs.sql`) mirrors
//! [`TRANSITIONS`] in the `jobs_state_machine` trigger; the test
//! `job_state_machine_agrees_with_sql` proves the two equal.

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

text_enum!(JobState, "state", [
    Created => "created",
    Running => "running",
    Paused => "paused",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
]);

impl JobState {
    /// Whether the job has finished (its `finished_at` is set).
    pub fn is_terminal(self) -> bool {
        matches!(self, Completed | Failed | Cancelled)
    }

    /// Whether `self -> to` is in [`TRANSITIONS`].
    pub fn can_transition_to(self, to: JobState) -> bool {
        crate::machine::allows(TRANSITIONS, self, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed_and_completed_is_final() {
        let terminal = [Completed, Failed, Cancelled];
        let restartable = [Failed, Cancelled];
        crate::machine::assert_well_formed(
            TRANSITIONS,
            &JobState::ALL,
            Created,
            &terminal,
            &restartable,
        );
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
