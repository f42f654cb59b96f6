//! The run state machine ([`RunStatus`] and its [`TRANSITIONS`]), scopes and trigger kinds.
//!
//! `migrations/V3__ingest_runs.sql` mirrors [`TRANSITIONS`] in the `ingest_runs_state_machine`
//! and `ingest_runs_terminal_is_final` triggers; the test `run_state_machine_agrees_with_sql`
//! proves the two equal.

/// The one character set of a pipeline name, everywhere it is written (a [`Pipeline`]'s
/// name, a schedule's pipeline, a configured pipeline) and in the SQL CHECKs of
/// `ingest_runs.pipeline` and `schedules.pipeline`: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
///
/// [`Pipeline`]: crate::run::Pipeline
pub fn check_pipeline_name(name: &str) -> crate::error::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if valid {
        return Ok(());
    }
    Err(crate::error::Error::invalid(
        "pipeline",
        format!("{name:?}: a pipeline name is 1..=64 characters of [A-Za-z0-9_.-]"),
    ))
}

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
        crate::machine::allows(TRANSITIONS, self, to)
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
    fn table_is_well_formed_and_terminal_states_are_final() {
        let terminal = [RunStatus::Success, RunStatus::Failed];
        crate::machine::assert_well_formed(
            TRANSITIONS,
            &RunStatus::ALL,
            RunStatus::Started,
            &terminal,
            &[],
        );
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
