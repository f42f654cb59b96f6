//! The run state machine ([`RunStatus`] and its [`TRANSITIONS`]), scopes and trigger kinds.
//!
//! `migrations/V3__ingest_runs.sql` mirrors [`TRANSITIONS`] in the `ingest_runs_state_machine`
//! and `ingest_runs_terminal_is_final` triggers; the test `run_state_machine_agrees_with_sql`
//! proves the two equal.

/// Where an ingestion run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Holds its lock and works through its stages.
    Started,
    /// Every stage succeeded. Final.
    Success,
    /// A gate or stage failed, it panicked, it was turned away by the lock, or its lease
    /// expired (`ABANDONED`). Final.
    Failed,
}

text_enum!(RunStatus, "status", [Started => "started", Success => "success", Failed => "failed"]);

/// Every allowed `(from, to)` transition, and why it exists.
pub const TRANSITIONS: &[(RunStatus, RunStatus, &str)] = &[
    (
        RunStatus::Started,
        RunStatus::Success,
        "every stage succeeded",
    ),
    (
        RunStatus::Started,
        RunStatus::Failed,
        "a gate or stage failed, a stage panicked, or the lease expired",
    ),
];

impl RunStatus {
    /// Whether the run has finished (its `finished_at` and `duration_ms` are set).
    pub fn is_terminal(self) -> bool {
        self != RunStatus::Started
    }

    /// Whether `self -> to` is in [`TRANSITIONS`].
    pub fn can_transition_to(self, to: RunStatus) -> bool {
        TRANSITIONS.iter().any(|&(f, t, _)| f == self && t == to)
    }
}

/// An isolated pool of ingestion work; each has its own runs and its own lock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The instruments the host trades or watches.
    Targets,
    /// The wider research universe.
    Universe,
}

text_enum!(Scope, "scope", [Targets => "targets", Universe => "universe"]);

/// Which scopes a trigger asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeSelector {
    /// Only `targets`.
    Targets,
    /// Only `universe`.
    Universe,
    /// `targets`, then `universe`: two runs with two locks; one never stops the other.
    Both,
}

text_enum!(ScopeSelector, "scope", [Targets => "targets", Universe => "universe", Both => "both"]);

impl ScopeSelector {
    /// The scopes in the order they run.
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            ScopeSelector::Targets => &[Scope::Targets],
            ScopeSelector::Universe => &[Scope::Universe],
            ScopeSelector::Both => &[Scope::Targets, Scope::Universe],
        }
    }
}

impl From<Scope> for ScopeSelector {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Targets => ScopeSelector::Targets,
            Scope::Universe => ScopeSelector::Universe,
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// The daily schedule.
    Schedule,
    /// A person (UI button, CLI).
    Manual,
}

text_enum!(TriggerKind, "trigger", [Schedule => "schedule", Manual => "manual"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicates_or_self_loops_and_terminal_states_are_final() {
        for (i, a) in TRANSITIONS.iter().enumerate() {
            assert_ne!(a.0, a.1, "self loop {a:?}");
            for b in &TRANSITIONS[i + 1..] {
                assert!(!(a.0 == b.0 && a.1 == b.1), "duplicate {a:?}");
            }
        }
        for s in RunStatus::ALL {
            if s.is_terminal() {
                assert!(
                    RunStatus::ALL.iter().all(|&t| !s.can_transition_to(t)),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn text_round_trips() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
        assert_eq!(
            "both".parse::<ScopeSelector>().unwrap().scopes(),
            &[Scope::Targets, Scope::Universe]
        );
        assert_eq!("both".parse::<Scope>().unwrap_err().code(), "INVALID_INPUT");
    }
}
