//! What a host defines: a [`Pipeline`] of gate and runner stages, each a host closure.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::probe::{self, PreflightConfig, PreflightPolicy, ProbeSet};
use super::raw::{self, RawInput, RawRecord};
use super::state::{Scope, TriggerKind};
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// A stage: a host function from the run's context to success or a typed error.
pub type StageFn =
    Box<dyn Fn(&mut StageContext<'_>) -> Result<StageOutput, StageError> + Send + Sync>;

pub use crate::clock::Sleeper;

/// The gates, in the only order they run. Any may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Probe the scope's modules and check they are ready (see [`PipelineBuilder::preflight`]).
    Preflight,
    /// The host's own readiness check.
    Readiness,
    /// A credential is available (never store it: invariant 7).
    Token,
    /// The analysis side is initialised.
    AnalysisInit,
}

text_enum!(Gate, "gate", [
    Preflight => "preflight",
    Readiness => "readiness",
    Token => "token",
    AnalysisInit => "analysis_init",
]);

/// What a stage returns when it did not fail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageOutput {
    /// JSON recorded in the timeline entry and visible to later stages
    /// ([`StageContext::output`]). Never put secrets here.
    pub detail: Option<Value>,
    /// The stage had nothing to do: recorded as `skipped`.
    pub skipped: bool,
}

impl StageOutput {
    /// Success without detail.
    pub fn done() -> Self {
        Self::default()
    }

    /// Success with `detail`.
    pub fn with_detail(detail: Value) -> Self {
        Self {
            detail: Some(detail),
            skipped: false,
        }
    }

    /// Nothing to do, with `detail` saying why.
    pub fn skipped(detail: Value) -> Self {
        Self {
            detail: Some(detail),
            skipped: true,
        }
    }
}

/// A stage's failure: a stable code, a message, whether a retry may help.
#[derive(Debug, Clone, PartialEq)]
pub struct StageError {
    /// Stable upper-case code (`TOKEN_MISSING`, `FLEX_1019`...), stored as the run's `error_code`.
    pub code: String,
    /// Human-readable message (no secrets).
    pub message: String,
    /// Whether the pipeline's [`RetryPolicy`] may try again.
    pub retryable: bool,
    /// Optional JSON recorded in the failed timeline entry.
    pub detail: Option<Value>,
}

impl StageError {
    /// A failure that a retry will not fix.
    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
            detail: None,
        }
    }

    /// A failure that a later attempt may not meet (timeouts, "statement not ready").
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::fatal(code, message)
        }
    }

    /// This error with `detail`.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<Error> for StageError {
    fn from(e: Error) -> Self {
        Self {
            code: e.code().to_string(),
            message: e.to_string(),
            retryable: e.is_transient(),
            detail: None,
        }
    }
}

/// Bounded retries with exponential backoff for retryable stage errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per stage, first included (1 = no retry). At most [`RetryPolicy::MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// Pause before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Ceiling of a pause.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The most attempts a policy may ask for.
    pub const MAX_ATTEMPTS: u32 = 10;

    /// No retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The pause after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    /// Three attempts, 1 s then 2 s apart (at most 30 s).
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A named ingestion pipeline: the scopes it serves, its gates and its runner stages.
/// Build one with [`Pipeline::builder`].
pub struct Pipeline {
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) gates: BTreeMap<Gate, StageFn>,
    pub(crate) runners: Vec<(String, StageFn)>,
    pub(crate) retry: RetryPolicy,
    pub(crate) lease: Duration,
    pub(crate) sleeper: Sleeper,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("gates", &self.gates.keys().collect::<Vec<_>>())
            .field(
                "runners",
                &self.runners.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .field("retry", &self.retry)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Pipeline {
    /// Starts defining a pipeline called `name`.
    pub fn builder(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            name: name.into(),
            scopes: vec![Scope::Targets, Scope::Universe],
            gates: BTreeMap::new(),
            runners: Vec::new(),
            retry: RetryPolicy::none(),
            lease: Duration::from_secs(300),
            sleeper: Arc::new(std::thread::sleep),
            duplicate: None,
        }
    }

    /// Its name (the `pipeline` column).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scopes it serves.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The names of its stages in run order: gates, then runners.
    pub fn stage_names(&self) -> Vec<&str> {
        self.gates
            .keys()
            .map(|g| g.as_str())
            .chain(self.runners.iter().map(|r| r.0.as_str()))
            .collect()
    }
}

/// runledger's own preflight gate (see [`PipelineBuilder::preflight`]).
fn preflight_gate(probes: ProbeSet, config: PreflightConfig) -> StageFn {
    Box::new(move |ctx| {
        if config.policy == PreflightPolicy::Off {
            return Ok(StageOutput::skipped(serde_json::json!({"policy": "off"})));
        }
        let snap = probe::preflight(ctx.engine, ctx.scope, &probes, &config)?;
        let detail = snap.summary();
        if snap.ready {
            Ok(StageOutput::with_detail(detail))
        } else {
            Err(StageError::fatal("PREFLIGHT_NOT_READY", snap.why_not()).with_detail(detail))
        }
    })
}

impl Pipeline {
    /// This pipeline with runledger's preflight gate ([`PipelineBuilder::preflight`])
    /// added: how a host puts its modules' probes in front of a ready-made pipeline (the
    /// Flex one, a configured one). Refused when it already has a preflight gate.
    pub fn with_preflight(mut self, probes: ProbeSet, config: PreflightConfig) -> Result<Pipeline> {
        if self.gates.contains_key(&Gate::Preflight) {
            return Err(Error::invalid(
                "stage",
                format!("pipeline {:?} already has a preflight gate", self.name),
            ));
        }
        self.gates
            .insert(Gate::Preflight, preflight_gate(probes, config));
        Ok(self)
    }
}

/// Defines a [`Pipeline`]; [`PipelineBuilder::build`] validates it.
pub struct PipelineBuilder {
    name: String,
    scopes: Vec<Scope>,
    gates: BTreeMap<Gate, StageFn>,
    runners: Vec<(String, StageFn)>,
    retry: RetryPolicy,
    lease: Duration,
    sleeper: Sleeper,
    duplicate: Option<String>,
}

impl PipelineBuilder {
    /// The scopes it serves (default both `targets` and `universe`).
    pub fn scopes(mut self, scopes: &[Scope]) -> Self {
        self.scopes = scopes.to_vec();
        self
    }

    /// Sets gate `gate` (gates always run in [`Gate`] order, whatever the call order).
    pub fn gate(
        mut self,
        gate: Gate,
        f: impl Fn(&mut StageContext<'_>) -> Result<StageOutput, StageError> + Send + Sync + 'static,
    ) -> Self {
        if self.gates.insert(gate, Box::new(f)).is_some() {
            self.duplicate = Some(gate.to_string());
        }
        self
    }

    /// Sets the preflight gate to runledger's own: probe the scope's stale or untested
    /// modules with `probes` (per `config.policy`), then fail with `PREFLIGHT_NOT_READY` unless
    /// every enabled module of the scope is ready. Policy `off` records the gate as skipped.
    pub fn preflight(mut self, probes: ProbeSet, config: PreflightConfig) -> Self {
        if self
            .gates
            .insert(Gate::Preflight, preflight_gate(probes, config))
            .is_some()
        {
            self.duplicate = Some(Gate::Preflight.to_string());
        }
        self
    }

    /// Appends runner stage `name` (runs after the gates, in call order).
    pub fn stage(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&mut StageContext<'_>) -> Result<StageOutput, StageError> + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        let taken = Gate::ALL.iter().any(|g| g.as_str() == name)
            || name == "lock"
            || self.runners.iter().any(|r| r.0 == name);
        if taken {
            self.duplicate = Some(name.clone());
        }
        self.runners.push((name, Box::new(f)));
        self
    }

    /// The retry policy for retryable stage errors (default: no retries).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long a run's lease lasts; renewed before and after every stage attempt
    /// (default 5 minutes). A stage must not run longer than this.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How to wait between retries (default `std::thread::sleep`).
    pub fn sleeper(mut self, sleeper: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        self.sleeper = Arc::new(sleeper);
        self
    }

    /// Validates and builds the pipeline.
    pub fn build(self) -> Result<Pipeline> {
        super::state::check_pipeline_name(&self.name)?;
        if let Some(stage) = self.duplicate {
            return Err(Error::invalid(
                "stage",
                format!("stage name {stage:?} is used twice (or is reserved)"),
            ));
        }
        if self.scopes.is_empty() {
            return Err(Error::invalid(
                "scopes",
                "a pipeline serves at least one scope",
            ));
        }
        if self.runners.is_empty() {
            return Err(Error::invalid(
                "stages",
                "a pipeline has at least one runner stage",
            ));
        }
        if let Some((name, _)) = self
            .runners
            .iter()
            .find(|r| r.0.is_empty() || r.0.len() > 64)
        {
            return Err(Error::invalid(
                "stage",
                format!("stage name {name:?} must be 1..=64 characters"),
            ));
        }
        if !(1..=RetryPolicy::MAX_ATTEMPTS).contains(&self.retry.max_attempts) {
            return Err(Error::invalid(
                "retry.max_attempts",
                format!("must be 1..={}", RetryPolicy::MAX_ATTEMPTS),
            ));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(Error::invalid("lease", "must be at least one second"));
        }
        let mut scopes = self.scopes;
        scopes.sort();
        scopes.dedup();
        Ok(Pipeline {
            name: self.name,
            scopes,
            gates: self.gates,
            runners: self.runners,
            retry: self.retry,
            lease: self.lease,
            sleeper: self.sleeper,
        })
    }
}

/// What a stage sees: the run, its scope, earlier stages' outputs, and the raw store.
pub struct StageContext<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) run_id: i64,
    pub(crate) pipeline: &'a str,
    pub(crate) scope: Scope,
    pub(crate) trigger: TriggerKind,
    pub(crate) account_id: Option<&'a str>,
    pub(crate) stage: &'a str,
    pub(crate) attempt: u32,
    pub(crate) lease: Duration,
    pub(crate) outputs: &'a BTreeMap<String, Value>,
    pub(crate) state: &'a RunState,
}

/// What one run's stages hand each other in memory ([`StageContext::set_state`]): owned by
/// the run's execution and dropped when it ends, on every path.
pub(crate) type RunState = std::cell::RefCell<Option<Box<dyn std::any::Any + Send>>>;

impl StageContext<'_> {
    /// The run's id.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }
    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        self.pipeline
    }
    /// The scope this run works on.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// What triggered the run.
    pub fn trigger(&self) -> TriggerKind {
        self.trigger
    }
    /// The account the run is for, if the trigger named one.
    pub fn account_id(&self) -> Option<&str> {
        self.account_id
    }
    /// This stage's name.
    pub fn stage(&self) -> &str {
        self.stage
    }
    /// This attempt's number (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The engine's current time.
    pub fn now(&self) -> Timestamp {
        self.engine.now()
    }
    /// The engine, for a stage that keeps its own data in the same file.
    pub fn engine(&self) -> &Engine {
        self.engine
    }
    /// The detail an earlier stage of this run returned.
    pub fn output(&self, stage: &str) -> Option<&Value> {
        self.outputs.get(stage)
    }
    /// Keeps `value` in memory for this run's later stages (replacing what was kept). It
    /// belongs to the run, not to the pipeline: it is dropped when the run ends, whatever
    /// the path (success, a failed stage, a lost lease, a panic), so a secret kept here
    /// (a token) never outlives its run. For what must survive a crash, use the run's
    /// meta or raw records instead.
    pub fn set_state<T: std::any::Any + Send>(&self, value: T) {
        *self.state.borrow_mut() = Some(Box::new(value));
    }
    /// Takes the value an earlier stage kept with [`StageContext::set_state`], when it is
    /// a `T`; `None` when nothing (or something else) was kept. A stage that takes it and
    /// fails drops it.
    pub fn take_state<T: std::any::Any + Send>(&self) -> Option<T> {
        let kept = self.state.borrow_mut().take()?;
        match kept.downcast::<T>() {
            Ok(v) => Some(*v),
            Err(other) => {
                *self.state.borrow_mut() = Some(other);
                None
            }
        }
    }
    /// Renews the run's lease for another pipeline lease period: a stage that works longer
    /// than the lease (a long poll, a big download) calls this now and then. Returns
    /// [`Error::IllegalTransition`] when the run is no longer started (it was swept as
    /// abandoned meanwhile): the stage should stop.
    pub fn keep_alive(&self) -> Result<()> {
        let (run_id, lease) = (self.run_id, self.lease);
        let renewed = match self.engine.backend() {
            Some(b) => b.renew_run(run_id, lease)?,
            None => self.engine.write(|tx| {
                crate::storage::ingest_runs::renew_lease(tx, run_id, tx.now() + lease)
            })?,
        };
        if renewed {
            Ok(())
        } else {
            Err(Error::IllegalTransition {
                entity: "run",
                id: run_id.to_string(),
                from: "failed".into(),
                to: "started".into(),
            })
        }
    }

    /// Merges `patch` (a JSON object) into this run's `meta_json` now (JSON merge patch:
    /// keys are added or replaced, `null` removes). The keys the orchestrator owns
    /// (`source`, `scope`, `blockedStage`, `failedStage`, `errorCode`) are refused. Use it
    /// for facts operators query with `json_extract` (warnings, a reference code); never
    /// put secrets here.
    pub fn merge_meta(&mut self, patch: &Value) -> Result<()> {
        let Some(obj) = patch.as_object() else {
            return Err(Error::invalid("meta", "must be a JSON object"));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| crate::storage::ingest_runs::RESERVED_META.contains(&k.as_str()))
        {
            return Err(Error::invalid("meta", format!("key {k:?} is reserved")));
        }
        let run_id = self.run_id;
        if let Some(b) = self.engine.backend() {
            return b.merge_run_meta(run_id, patch);
        }
        self.engine
            .write(|tx| crate::storage::ingest_runs::merge_meta(tx, run_id, patch))
    }

    /// Stores a downloaded payload (once per SHA-256) and records it for this run.
    pub fn store_raw(&mut self, input: &RawInput<'_>) -> Result<RawRecord> {
        let run_id = self.run_id;
        if let Some(b) = self.engine.backend() {
            return b.store_raw(run_id, input, None);
        }
        let checked = raw::check(input)?;
        self.engine
            .write(|tx| raw::store(tx, run_id, input, &checked, None, tx.now()))
    }

    /// Sets the message and detail of this stage's own timeline entry while it is still
    /// open (what it is waiting for, live: a progress display or the UI reads it). The
    /// entry's final detail is still what the stage returns.
    pub fn annotate(&mut self, message: Option<&str>, detail: &Value) -> Result<()> {
        let run_id = self.run_id;
        if let Some(b) = self.engine.backend() {
            return b.annotate_stage(run_id, message, detail);
        }
        self.engine.write(|tx| {
            crate::storage::ingest_runs::annotate_open_entry(tx, run_id, message, detail)
                .map(|_| ())
        })
    }

    /// Stores a downloaded payload that failed validation or its check, marked rejected
    /// with the failure's `code` and `reason`, so it is never lost: the stage then fails
    /// the run with that code (a run holding a rejected record cannot succeed).
    pub fn store_rejected_raw(
        &mut self,
        input: &RawInput<'_>,
        code: &str,
        reason: &str,
    ) -> Result<RawRecord> {
        let run_id = self.run_id;
        let rejection = raw::rejection(code, reason)?;
        if let Some(b) = self.engine.backend() {
            return b.store_raw(run_id, input, Some(&rejection));
        }
        let checked = raw::check(input)?;
        self.engine
            .write(|tx| raw::store(tx, run_id, input, &checked, Some(&rejection), tx.now()))
    }
}
