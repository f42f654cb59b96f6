//! [`RunDiagnostics`]: a run's stable, versioned shape for snapshot tests (timeline, meta,
//! error), with ids left out and times relative to the run's start
//! ([`crate::diagnostics`]).

use serde::Serialize;
use serde_json::Value;

use super::state::{RunStatus, Scope, TriggerKind};
use super::timeline::{StageKind, StageStatus};
use crate::diagnostics::{ErrorDiagnostics, Redactor, DIAGNOSTICS_VERSION};
use crate::storage::ingest_runs::Run;

/// A run as a host's snapshot test pins it ([`Runs::diagnostics`](crate::Runs::diagnostics)).
/// Version [`DIAGNOSTICS_VERSION`]; times are milliseconds since the run started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDiagnostics {
    /// The shape's version ([`DIAGNOSTICS_VERSION`]).
    pub version: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pool it ran in.
    pub scope: Scope,
    /// What started it.
    pub trigger: TriggerKind,
    /// How it ended (or `started`).
    pub status: RunStatus,
    /// The lock it held or was refused.
    pub lock_key: String,
    /// The account it ran for.
    pub account_id: Option<String>,
    /// From start to finish.
    pub duration_ms: Option<i64>,
    /// When its (last) lease ends, since the start.
    pub lease_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<ErrorDiagnostics>,
    /// One entry per stage attempt, in order.
    pub timeline: Vec<StageDiagnostics>,
    /// The run's meta, redacted.
    pub meta: Value,
}

/// One stage attempt of [`RunDiagnostics::timeline`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageDiagnostics {
    /// Stage name.
    pub stage: String,
    /// Gate, runner or lock.
    pub kind: StageKind,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How it went.
    pub status: StageStatus,
    /// When it began, since the run started.
    pub started_ms: i64,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// The stage error's code and message.
    pub error: Option<ErrorDiagnostics>,
    /// A note the stage left without failing.
    pub message: Option<String>,
    /// The stage's detail, redacted.
    pub detail: Option<Value>,
}

impl RunDiagnostics {
    /// The diagnostics of `run`.
    pub fn of(run: &Run) -> Self {
        let r = Redactor::new(run.started_at);
        let timeline = run
            .timeline
            .iter()
            .map(|e| {
                let message = e.message.as_deref().map(|m| r.text(m));
                let (error, message) = match &e.error_code {
                    Some(code) => (
                        Some(ErrorDiagnostics {
                            code: code.clone(),
                            message,
                        }),
                        None,
                    ),
                    None => (None, message),
                };
                StageDiagnostics {
                    stage: e.stage.clone(),
                    kind: e.kind,
                    attempt: e.attempt,
                    status: e.status,
                    started_ms: r.ms(e.started_at),
                    duration_ms: e.duration_ms,
                    error,
                    message,
                    detail: e.detail.as_ref().map(|d| r.json(d)),
                }
            })
            .collect();
        RunDiagnostics {
            version: DIAGNOSTICS_VERSION,
            pipeline: run.pipeline.clone(),
            scope: run.scope,
            trigger: run.trigger,
            status: run.status,
            lock_key: run.lock_key.clone(),
            account_id: run.account_id.clone(),
            duration_ms: run.duration_ms,
            lease_ms: r.opt_ms(run.lease_expires_at),
            error: run.error_code.as_ref().map(|code| ErrorDiagnostics {
                code: code.clone(),
                message: run.error_message.as_deref().map(|m| r.text(m)),
            }),
            timeline,
            meta: r.json(&Value::Object(run.meta.clone())),
        }
    }
}
