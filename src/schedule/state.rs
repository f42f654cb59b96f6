//! The due-run (slot) state machine: [`SlotStatus`] and the single table of allowed
//! transitions; what a tick is asked to do ([`TickOptions`]) and reports per slot
//! ([`SlotReport`]).
//!
//! `migrations/V4__schedules.sql` (as amended by `V6__slot_give_back.sql`) mirrors [`TRANSITIONS`] in the `due_runs_state_machine`
//! trigger; the test `due_run_state_machine_agrees_with_sql` proves the two equal.

use std::time::Duration;

use crate::clock::Timestamp;

/// Where one slot (one schedule at one due instant) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// Materialized and due; no ticker has taken it yet.
    Pending,
    /// Taken by one ticker, which is firing it now.
    Claimed,
    /// Fired: the pipeline's runs were started (their ids are on the slot). Final.
    Fired,
    /// Not fired, with a reason code: superseded or too late after downtime (misfire
    /// policy), schedule disabled or edited, or turned away (a run was already active). Final.
    Skipped,
    /// Firing failed (error or panic in the fire call, or the ticker vanished). Final.
    Failed,
}

use SlotStatus::*;

/// Every allowed `(from, to)` transition, and why it exists.
pub const TRANSITIONS: &[(SlotStatus, SlotStatus, &str)] = &[
    (Pending, Claimed, "a ticker claims the due slot"),
    (
        Pending,
        Skipped,
        "misfire policy, or the schedule was disabled or edited before the claim",
    ),
    (Claimed, Fired, "the fire call started the runs"),
    (
        Claimed,
        Skipped,
        "the fire call was turned away (a run was already active)",
    ),
    (
        Claimed,
        Failed,
        "the fire call failed or panicked",
    ),
    (
        Claimed,
        Pending,
        "the claim timed out and no run names the slot: its ticker died before firing, so it is given back",
    ),
];

text_enum!(SlotStatus, "status", [
    Pending => "pending",
    Claimed => "claimed",
    Fired => "fired",
    Skipped => "skipped",
    Failed => "failed",
]);

impl SlotStatus {
    /// Whether the slot is finished (`finished_at` set, row immutable).
    pub fn is_terminal(self) -> bool {
        matches!(self, Fired | Skipped | Failed)
    }

    /// Whether `self -> to` is in [`TRANSITIONS`].
    pub fn can_transition_to(self, to: SlotStatus) -> bool {
        crate::machine::allows(TRANSITIONS, self, to)
    }
}

/// One ticker's claim on one slot: what a run started for the slot carries, so that the
/// run's start transaction names the slot and checks the claim is still this one (see
/// [`Runs::trigger_for_slot`](crate::Runs::trigger_for_slot)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    /// The slot's row id.
    pub slot_id: i64,
    /// The ticker holding the claim.
    pub ticker: String,
    /// When it claimed the slot (with the ticker, the claim's fencing token).
    pub claimed_at: Timestamp,
}

/// How a tick behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickOptions {
    /// Who claims slots (stored in `due_runs.claimed_by`). Default `pid-<process id>`.
    pub ticker: String,
    /// Under the `skip` misfire policy, a slot later than this is skipped instead of fired.
    /// Default 5 minutes.
    pub misfire_grace: Duration,
    /// A slot claimed longer ago than this and never recorded (its ticker died) is
    /// finished from the runs that name it, or given back and fired again when none does.
    /// Bounded by what a claim can take before its run is started and names the slot: the
    /// busy waits of two write transactions. Default 10 minutes.
    pub claim_timeout: Duration,
}

impl Default for TickOptions {
    fn default() -> Self {
        Self {
            ticker: format!("pid-{}", std::process::id()),
            misfire_grace: Duration::from_secs(5 * 60),
            claim_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// What happened to one slot during a tick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotReport {
    /// The slot's row id.
    pub slot_id: i64,
    /// The schedule's name.
    pub schedule: String,
    /// The slot's due instant.
    pub due_at: Timestamp,
    /// Its status after the tick.
    pub status: SlotStatus,
    /// Run ids recorded on it.
    pub run_ids: Vec<i64>,
    /// Skip or failure code.
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed_and_terminal_states_are_final() {
        let terminal = [Fired, Skipped, Failed];
        crate::machine::assert_well_formed(TRANSITIONS, &SlotStatus::ALL, Pending, &terminal, &[]);
    }

    #[test]
    fn text_round_trips() {
        for s in SlotStatus::ALL {
            assert_eq!(s.as_str().parse::<SlotStatus>().unwrap(), s);
        }
        assert_eq!(
            "done".parse::<SlotStatus>().unwrap_err().code(),
            "INVALID_INPUT"
        );
    }
}
