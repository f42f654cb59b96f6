//! Ingestion runs: pipelines with gates and stages, one active run per lock, a JSON stage
//! timeline per run, probes and readiness, and immutable raw payloads.
//!
//! The entry point is [`Engine::runs`](crate::Engine::runs), which returns [`Runs`].

pub mod diagnostics;
pub mod orchestrator;
pub(crate) mod pending;
pub mod pipeline;
pub mod probe;
pub mod raw;
pub mod scheduled;
pub mod state;
pub mod timeline;

pub use crate::storage::ingest_runs::{Run, RunFilter};
pub use diagnostics::{RunDiagnostics, StageDiagnostics};
pub use orchestrator::{OnStart, RunOutcome, Runs, TriggerOptions};
pub use pipeline::{
    Gate, Pipeline, PipelineBuilder, RetryPolicy, Sleeper, StageContext, StageError, StageFn,
    StageOutput,
};
pub use probe::{
    Module, ModuleReadiness, PreflightConfig, PreflightPolicy, ProbeError, ProbeFn, ProbeRecord,
    ProbeSet, ProbeStatus, ReadinessSnapshot,
};
pub use raw::{PruneReport, RawFilter, RawInput, RawRecord, Rejection};
pub use scheduled::ScheduledRuns;
pub use state::{check_pipeline_name, RunStatus, Scope, ScopeSelector, TriggerKind};
pub use timeline::{StageKind, StageStatus, TimelineEntry, TIMELINE_VERSION};
