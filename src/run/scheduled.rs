//! Scheduled runs: the [`Fire`] that turns a due slot of a schedule
//! into runs of the host's registered pipelines.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::orchestrator::{RunOutcome, TriggerOptions};
use super::pipeline::Pipeline;
use super::state::{ScopeSelector, TriggerKind};
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::Error;
use crate::schedule::{Fire, FireOutcome, Schedule, SlotClaim};

/// Fires schedule slots by triggering the pipeline the schedule names, with trigger kind
/// `schedule`. A slot whose every scope was turned away by an active run is recorded as
/// turned away (`RUN_ALREADY_ACTIVE`) with the ids of the refusal records; a slot where at
/// least one run started is fired, with every run id (started and refused).
#[derive(Clone)]
pub struct ScheduledRuns {
    engine: Engine,
    pipelines: BTreeMap<String, (Arc<Pipeline>, TriggerOptions)>,
}

impl std::fmt::Debug for ScheduledRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledRuns")
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ScheduledRuns {
    /// No pipelines yet.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            pipelines: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a pipeline under its own name.
    pub fn register(self, pipeline: Pipeline) -> Self {
        self.register_with(pipeline, TriggerOptions::default())
    }

    /// Adds (or replaces) a pipeline under its own name, triggered with `opts` (for
    /// instance the account a Flex query's runs are for).
    pub fn register_with(mut self, pipeline: Pipeline, opts: TriggerOptions) -> Self {
        self.pipelines
            .insert(pipeline.name().to_owned(), (Arc::new(pipeline), opts));
        self
    }

    /// The registered pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.get(name).map(|p| &*p.0)
    }

    /// The names of the registered pipelines, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.pipelines.keys().map(String::as_str).collect()
    }
}

fn classify(outcomes: Vec<RunOutcome>) -> FireOutcome {
    let mut started = Vec::new();
    let mut refused = Vec::new();
    let mut errors = Vec::new();
    for o in outcomes {
        match o.result {
            Ok(run) => started.push(run.id),
            Err(Error::RunAlreadyActive {
                recorded_run_id, ..
            }) => refused.extend(recorded_run_id),
            Err(e) => errors.push(format!("{}: {} [{}]", o.scope, e, e.code())),
        }
    }
    if !started.is_empty() {
        started.extend(refused);
        return FireOutcome::Fired { run_ids: started };
    }
    if errors.is_empty() {
        return FireOutcome::TurnedAway {
            run_ids: refused,
            code: "RUN_ALREADY_ACTIVE".into(),
        };
    }
    FireOutcome::Failed {
        run_ids: refused,
        code: "RUN_START_FAILED".into(),
        message: errors.join("; "),
    }
}

impl Fire for ScheduledRuns {
    /// Only the schedules whose pipeline is registered here: another process may have it.
    fn handles(&self, schedule: &Schedule) -> bool {
        self.pipelines.contains_key(&schedule.pipeline)
    }

    fn fire(&self, schedule: &Schedule, _slot: Timestamp) -> FireOutcome {
        self.fire_inner(schedule, None)
    }

    /// Starts the runs through [`Runs::trigger_for_slot`](crate::Runs::trigger_for_slot):
    /// each names the slot, so the slot fires exactly once across a crash.
    fn fire_claimed(
        &self,
        claim: &SlotClaim,
        schedule: &Schedule,
        _slot: Timestamp,
    ) -> FireOutcome {
        self.fire_inner(schedule, Some(claim))
    }
}

impl ScheduledRuns {
    fn fire_inner(&self, schedule: &Schedule, claim: Option<&SlotClaim>) -> FireOutcome {
        let Some((pipeline, opts)) = self.pipelines.get(&schedule.pipeline) else {
            return FireOutcome::Failed {
                run_ids: vec![],
                code: "UNKNOWN_PIPELINE".into(),
                message: format!("no pipeline named {:?} is registered", schedule.pipeline),
            };
        };
        let scope: ScopeSelector = match schedule.scope.parse() {
            Ok(s) => s,
            Err(e) => {
                return FireOutcome::Failed {
                    run_ids: vec![],
                    code: "INVALID_SCOPE".into(),
                    message: Error::to_string(&e),
                }
            }
        };
        let runs = self.engine.runs();
        let started = match claim {
            Some(claim) => runs.trigger_for_slot_with(pipeline, scope, claim, opts),
            None => runs.trigger_with(pipeline, scope, TriggerKind::Schedule, opts),
        };
        match started {
            Ok(outcomes) => classify(outcomes),
            Err(e) => FireOutcome::Failed {
                run_ids: vec![],
                code: e.code().into(),
                message: e.to_string(),
            },
        }
    }
}
