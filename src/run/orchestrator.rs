//! [`Runs`]: trigger pipelines through their gates and stages, one run per scope, and keep
//! every run's record terminal on every path (invariant 4).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Value};

use super::pipeline::{Pipeline, StageContext, StageError, StageFn, StageOutput};
use super::probe::{self, Module, PreflightConfig, ProbeError, ProbeSet, ReadinessSnapshot};
use super::raw::{self, PruneReport, RawFilter, RawRecord};
use super::state::{RunStatus, Scope, ScopeSelector, TriggerKind};
use super::timeline::{StageKind, StageStatus, TimelineEntry};
use crate::backend::NewRunSpec;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::schedule::SlotClaim;
use crate::storage::ingest_runs::{self as store, Finish, NewRun, Run, RunFilter, Started};

/// Options of one trigger.
#[derive(Debug, Clone, Default)]
pub struct TriggerOptions {
    /// The account the run is for. Part of the lock key: runs of different accounts do not
    /// exclude each other.
    pub account_id: Option<String>,
}

/// The observer of [`Runs::trigger_observed`]: called once per scope with the started run
/// or the error that kept it from starting.
pub type OnStart<'a> = dyn FnMut(Scope, std::result::Result<&Run, &Error>) + 'a;

/// What became of one scope of a trigger.
#[derive(Debug)]
pub struct RunOutcome {
    /// The scope.
    pub scope: Scope,
    /// The finished run (success or failed: look at `status`), or why none ran:
    /// [`Error::RunAlreadyActive`] (the refusal is itself recorded as a failed run) or a
    /// database error (the run, if started, is finalized failed or later swept).
    pub result: Result<Run>,
}

impl Engine {
    /// Ingestion runs of this database: trigger, inspect, sweep, probes, raw records.
    pub fn runs(&self) -> Runs<'_> {
        Runs { engine: self }
    }
}

/// The ingestion-run facade of an [`Engine`] (see [`Engine::runs`]).
#[derive(Debug, Clone, Copy)]
pub struct Runs<'a> {
    engine: &'a Engine,
}

/// How a run whose stages all passed ends: success, or failed with the code of the first
/// rejected payload it kept (`last`: its last runner stage).
fn ending<'r>(rejection: &'r Option<raw::Rejection>, last: &str) -> Finish<'r> {
    match rejection {
        None => Finish {
            status: RunStatus::Success,
            error: None,
            meta: json!({}),
        },
        Some(r) => Finish {
            status: RunStatus::Failed,
            error: Some((&r.code, &r.reason)),
            meta: json!({"errorCode": r.code, "failedStage": last}),
        },
    }
}

enum StageEnd {
    Done,
    Failed(StageError),
    LeaseLost,
}

impl<'a> Runs<'a> {
    /// Triggers `pipeline` for `scope`; see [`Runs::trigger_with`].
    pub fn trigger(
        &self,
        pipeline: &Pipeline,
        scope: ScopeSelector,
        trigger: TriggerKind,
    ) -> Result<Vec<RunOutcome>> {
        self.trigger_with(pipeline, scope, trigger, &TriggerOptions::default())
    }

    /// Triggers `pipeline`: one run per scope (`both` = `targets` then `universe`, each with
    /// its own lock `pipeline:scope[:account]`; a failure in one never stops the other).
    /// Each run goes through the gates, then the runner stages, and always ends terminal.
    /// Returns one outcome per scope, in order. Errs only (with nothing written) when the
    /// pipeline does not serve an explicitly requested scope, or the account id is invalid.
    pub fn trigger_with(
        &self,
        pipeline: &Pipeline,
        scope: ScopeSelector,
        trigger: TriggerKind,
        opts: &TriggerOptions,
    ) -> Result<Vec<RunOutcome>> {
        self.trigger_inner(pipeline, scope, trigger, opts, None, None)
    }

    /// [`Runs::trigger_with`], calling `on_start` for each scope as soon as its lock is
    /// decided, before any stage runs: with the started run (status `started`), or with the
    /// refusal ([`Error::RunAlreadyActive`], already recorded) or the error that kept it
    /// from starting. An HTTP host answers its caller from there and lets the run go on.
    pub fn trigger_observed(
        &self,
        pipeline: &Pipeline,
        scope: ScopeSelector,
        trigger: TriggerKind,
        opts: &TriggerOptions,
        on_start: &mut OnStart<'_>,
    ) -> Result<Vec<RunOutcome>> {
        self.trigger_inner(pipeline, scope, trigger, opts, Some(on_start), None)
    }

    /// Triggers `pipeline` (trigger kind `schedule`) for the slot a ticker claimed: each
    /// run names the slot (`meta_json.slotId`) in the transaction that creates it, and
    /// starts only while `claim` still holds (else `ILLEGAL_TRANSITION`: the claim was given
    /// back and another ticker fires the slot). This is what makes a slot fire exactly once
    /// across a crash ([`Fire`](crate::Fire)).
    pub fn trigger_for_slot(
        &self,
        pipeline: &Pipeline,
        scope: ScopeSelector,
        claim: &SlotClaim,
    ) -> Result<Vec<RunOutcome>> {
        self.trigger_for_slot_with(pipeline, scope, claim, &TriggerOptions::default())
    }

    /// [`Runs::trigger_for_slot`] with options (the account the runs are for).
    pub fn trigger_for_slot_with(
        &self,
        pipeline: &Pipeline,
        scope: ScopeSelector,
        claim: &SlotClaim,
        opts: &TriggerOptions,
    ) -> Result<Vec<RunOutcome>> {
        self.trigger_inner(
            pipeline,
            scope,
            TriggerKind::Schedule,
            opts,
            None,
            Some(claim),
        )
    }

    fn trigger_inner(
        &self,
        pipeline: &Pipeline,
        scope: ScopeSelector,
        trigger: TriggerKind,
        opts: &TriggerOptions,
        mut on_start: Option<&mut OnStart<'_>>,
        slot: Option<&SlotClaim>,
    ) -> Result<Vec<RunOutcome>> {
        if let Some(a) = &opts.account_id {
            if a.is_empty() || a.len() > 128 {
                return Err(Error::invalid("account_id", "must be 1..=128 characters"));
            }
        }
        let scopes: Vec<Scope> = scope
            .scopes()
            .iter()
            .copied()
            .filter(|s| pipeline.scopes.contains(s))
            .collect();
        if scopes.is_empty() {
            return Err(Error::invalid(
                "scope",
                format!("pipeline {} does not serve scope {scope}", pipeline.name),
            ));
        }
        let mut outcomes = Vec::with_capacity(scopes.len());
        for s in scopes {
            let observer = on_start.as_mut().map(|f| &mut **f as &mut OnStart<'_>);
            outcomes.push(RunOutcome {
                scope: s,
                result: self.run_scope(
                    pipeline,
                    s,
                    trigger,
                    opts.account_id.as_deref(),
                    observer,
                    slot,
                ),
            });
        }
        Ok(outcomes)
    }

    fn run_scope(
        &self,
        p: &Pipeline,
        scope: Scope,
        trigger: TriggerKind,
        account_id: Option<&str>,
        on_start: Option<&mut OnStart<'_>>,
        slot: Option<&SlotClaim>,
    ) -> Result<Run> {
        let lock_key = match account_id {
            Some(a) => format!("{}:{}:{}", p.name, scope, a),
            None => format!("{}:{}", p.name, scope),
        };
        let new = NewRun {
            pipeline: &p.name,
            scope,
            trigger,
            lock_key: &lock_key,
            account_id,
            lease: p.lease,
            slot,
        };
        // The run starts (and its lease runs) from the time its write holds the lock.
        let started = match self.engine.backend() {
            // a refusal comes back as RUN_ALREADY_ACTIVE, already recorded
            Some(b) => b
                .start_run(&NewRunSpec {
                    pipeline: &p.name,
                    scope,
                    trigger,
                    account_id,
                    lease: p.lease,
                    slot,
                })
                .map(Started::Run),
            None => self.engine.write(|tx| store::start(tx, &new, tx.now())),
        };
        let run_id = match started {
            Ok(Started::Run(id)) => id,
            Ok(Started::Rejected {
                active_run_id,
                rejection_id,
                lease_expires_at,
            }) => {
                let e = Error::RunAlreadyActive {
                    lock_key,
                    active_run_id,
                    lease_expires_at,
                    recorded_run_id: Some(rejection_id),
                };
                if let Some(f) = on_start {
                    f(scope, Err(&e));
                }
                return Err(e);
            }
            Err(e) => {
                if let Some(f) = on_start {
                    f(scope, Err(&e));
                }
                return Err(e);
            }
        };
        if let Some(f) = on_start {
            match self.get(run_id) {
                Ok(run) => f(scope, Ok(&run)),
                Err(e) => f(scope, Err(&e)),
            }
        }
        match self.drive(p, run_id, scope, trigger, account_id) {
            Ok(()) => self.get(run_id),
            Err(e) => {
                // End it now; if the disk is full, on the next write; failing both, the
                // lease sweep will.
                let message = e.to_string();
                let end = Finish {
                    status: RunStatus::Failed,
                    error: Some((e.code(), &message)),
                    meta: json!({"errorCode": e.code()}),
                };
                let ended = self.finish(run_id, &end);
                if self.engine.backend().is_none() && ended.is_err_and(|w| w.is_transient()) {
                    // A full disk: the ending is written before this engine's next write,
                    // which frees the lock as soon as the disk takes one again.
                    self.engine
                        .pending_endings()
                        .push_failed(run_id, e.code(), &message);
                }
                Err(e)
            }
        }
    }

    /// Runs the stages of started run `run_id` and finishes it. A lost lease (the run was
    /// swept meanwhile) stops it quietly: it is already terminal.
    fn drive(
        &self,
        p: &Pipeline,
        run_id: i64,
        scope: Scope,
        trigger: TriggerKind,
        account_id: Option<&str>,
    ) -> Result<()> {
        let mut outputs = BTreeMap::new();
        let none = BTreeMap::new();
        // The run's in-memory state: lives exactly as long as this call.
        let state = crate::run::pipeline::RunState::default();
        let stages = p
            .gates
            .iter()
            .map(|(g, f)| (g.as_str(), StageKind::Gate, f))
            .chain(
                p.runners
                    .iter()
                    .map(|(n, f)| (n.as_str(), StageKind::Runner, f)),
            );
        for (name, kind, f) in stages {
            let base = StageContext {
                engine: self.engine,
                run_id,
                pipeline: &p.name,
                scope,
                trigger,
                account_id,
                stage: name,
                attempt: 1,
                lease: p.lease,
                outputs: &none,
                state: &state,
            };
            match self.run_stage(p, &base, kind, f, &mut outputs)? {
                StageEnd::Done => {}
                StageEnd::LeaseLost => return Ok(()),
                StageEnd::Failed(err) => {
                    let mut meta = json!({"errorCode": err.code});
                    let key = if kind == StageKind::Gate {
                        "blockedStage"
                    } else {
                        "failedStage"
                    };
                    meta[key] = json!(name);
                    let end = Finish {
                        status: RunStatus::Failed,
                        error: Some((&err.code, &err.message)),
                        meta,
                    };
                    self.finish(run_id, &end)?;
                    return Ok(());
                }
            }
        }
        // A run that kept a payload rejected failed its check, whatever its stages said.
        let last = p.runners.last().map_or("", |(n, _)| n.as_str());
        if let Some(b) = self.engine.backend() {
            // The stages are done, so no record comes after this read; and PostgreSQL
            // refuses success to a run holding a rejected record whatever this says.
            let rejection = b.rejection_of_run(run_id)?;
            let end = ending(&rejection, last);
            b.finish_run(run_id, end.status, end.error, &end.meta)?;
            return Ok(());
        }
        self.engine.write(|tx| {
            let rejection = raw::rejection_of_run(tx, run_id)?;
            store::finish(tx, run_id, &ending(&rejection, last), tx.now())
        })?;
        Ok(())
    }

    /// Ends started run `run_id` as `end` says; `false` if it had already ended.
    fn finish(&self, run_id: i64, end: &Finish<'_>) -> Result<bool> {
        match self.engine.backend() {
            Some(b) => b.finish_run(run_id, end.status, end.error, &end.meta),
            None => self
                .engine
                .write(|tx| store::finish(tx, run_id, end, tx.now())),
        }
    }

    /// One stage with its retries; each attempt is its own timeline entry, opened and
    /// closed in its own transaction together with a lease renewal.
    fn run_stage(
        &self,
        p: &Pipeline,
        base: &StageContext<'_>,
        kind: StageKind,
        f: &StageFn,
        outputs: &mut BTreeMap<String, Value>,
    ) -> Result<StageEnd> {
        let run_id = base.run_id;
        for attempt in 1..=p.retry.max_attempts {
            let (held, open) = match self.engine.backend() {
                Some(b) => {
                    let open = TimelineEntry::started(base.stage, kind, attempt, self.engine.now());
                    (b.open_stage(run_id, &open, p.lease)?, open)
                }
                None => self.engine.write(|tx| {
                    let now = tx.now();
                    let open = TimelineEntry::started(base.stage, kind, attempt, now);
                    let held = store::renew_lease(tx, run_id, now + p.lease)?
                        && store::append_entry(tx, run_id, &open)?;
                    Ok((held, open))
                })?,
            };
            if !held {
                return Ok(StageEnd::LeaseLost);
            }
            let result = {
                let mut ctx = StageContext {
                    engine: base.engine,
                    run_id,
                    pipeline: base.pipeline,
                    scope: base.scope,
                    trigger: base.trigger,
                    account_id: base.account_id,
                    stage: base.stage,
                    attempt,
                    lease: base.lease,
                    outputs,
                    state: base.state,
                };
                catch_unwind(AssertUnwindSafe(|| f(&mut ctx)))
            };
            let result: Result<StageOutput, StageError> = result.unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic payload".into());
                Err(StageError::fatal(
                    "STAGE_PANIC",
                    format!("stage panicked: {msg}"),
                ))
            });
            let close = |now: Timestamp| match &result {
                Ok(out) => {
                    let status = if out.skipped {
                        StageStatus::Skipped
                    } else {
                        StageStatus::Success
                    };
                    open.clone()
                        .close(status, now)
                        .with_detail(out.detail.clone())
                }
                Err(e) => open
                    .clone()
                    .close(StageStatus::Failed, now)
                    .with_error(&e.code, &e.message)
                    .with_detail(e.detail.clone()),
            };
            let held = match self.engine.backend() {
                Some(b) => b.close_stage(run_id, &close(self.engine.now()), p.lease)?,
                None => self.engine.write(|tx| {
                    let now = tx.now();
                    Ok(store::renew_lease(tx, run_id, now + p.lease)?
                        && store::close_last_entry(tx, run_id, &close(now))?)
                })?,
            };
            if !held {
                return Ok(StageEnd::LeaseLost);
            }
            match result {
                Ok(out) => {
                    if let Some(d) = out.detail {
                        outputs.insert(base.stage.to_string(), d);
                    }
                    return Ok(StageEnd::Done);
                }
                Err(e) if e.retryable && attempt < p.retry.max_attempts => {
                    (p.sleeper)(p.retry.backoff(attempt));
                }
                Err(e) => return Ok(StageEnd::Failed(e)),
            }
        }
        unreachable!("the last attempt always returns")
    }

    /// The run with `id`.
    pub fn get(&self, id: i64) -> Result<Run> {
        if let Some(b) = self.engine.backend() {
            return b.get_run(id);
        }
        self.engine.read(|c| store::get(c, id))
    }

    /// The run with `id` in its stable, versioned diagnostics shape (timeline, meta,
    /// error; ids left out, times relative to its start), for snapshot tests
    /// ([guide](crate::guide::snapshot_testing)).
    pub fn diagnostics(&self, id: i64) -> Result<super::diagnostics::RunDiagnostics> {
        Ok(super::diagnostics::RunDiagnostics::of(&self.get(id)?))
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        if filter.limit == 0 || filter.limit > 10_000 {
            return Err(Error::invalid("limit", "must be 1..=10000"));
        }
        if let Some(b) = self.engine.backend() {
            return b.list_runs(filter);
        }
        self.engine.read(|c| store::list(c, filter))
    }

    /// Finalizes every started run whose lease has expired (by the engine's clock) as failed
    /// `ABANDONED`, freeing its lock. Returns their ids. Hosts call it periodically and at
    /// start-up; the next trigger of a lock also finalizes its expired holder.
    pub fn sweep(&self) -> Result<Vec<i64>> {
        if let Some(b) = self.engine.backend() {
            return b.sweep_runs();
        }
        self.engine.write(|tx| store::sweep(tx, tx.now()))
    }

    /// Ends a started run whose process died (or hangs) at once, failed `ABANDONED`,
    /// freeing its lock without waiting for its lease to expire; audited (`audit_log`,
    /// entity `run`, action `abandon`) with `actor` and `reason`. A run that is not started
    /// is [`Error::IllegalTransition`]; an unknown id [`Error::NotFound`]. Only for a run
    /// whose holder is gone: a live holder's next write finds its run ended.
    pub fn abandon(&self, id: i64, reason: &str, actor: &str) -> Result<Run> {
        self.end(id, "ABANDONED", "abandon", reason, actor)
    }

    /// Ends a started run failed `INTERRUPTED` (its process was told to stop: Ctrl-C,
    /// SIGTERM), freeing its lock at once; audited like [`Runs::abandon`] (action
    /// `interrupt`).
    pub fn interrupt(&self, id: i64, reason: &str, actor: &str) -> Result<Run> {
        self.end(id, "INTERRUPTED", "interrupt", reason, actor)
    }

    fn end(&self, id: i64, code: &str, action: &str, reason: &str, actor: &str) -> Result<Run> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 1024 || reason.contains('\0') {
            return Err(Error::invalid("reason", "must be 1 to 1024 bytes"));
        }
        if actor.is_empty() || actor.len() > 256 || actor.chars().any(char::is_control) {
            return Err(Error::invalid(
                "actor",
                "must be 1 to 256 bytes without control characters",
            ));
        }
        let message = format!("{action} by {actor}: {reason}");
        let meta = serde_json::json!({"errorCode": code, "endedBy": actor});
        if let Some(b) = self.engine.backend() {
            return b.end_run(id, code, action, actor, &message, &meta, reason);
        }
        self.engine.write(|tx| {
            let now = tx.now();
            let run = store::get(tx, id)?;
            if run.status != RunStatus::Started {
                return Err(Error::IllegalTransition {
                    entity: "run",
                    id: id.to_string(),
                    from: run.status.to_string(),
                    to: "failed".into(),
                });
            }
            store::end_started(tx, id, code, &message, meta.clone(), now)?;
            let detail =
                serde_json::json!({"code": code, "reason": reason, "lockKey": run.lock_key});
            crate::storage::jobs::audit_entity(tx, "run", id, action, actor, &detail, now)?;
            store::get(tx, id)
        })
    }

    /// Adds or replaces a module in the catalog.
    pub fn upsert_module(&self, module: &Module) -> Result<()> {
        if let Some(b) = self.engine.backend() {
            return b.upsert_module(module);
        }
        self.engine
            .write(|tx| probe::upsert_module(tx, module, tx.now()))
    }

    /// Enables or disables a module.
    pub fn set_module_enabled(&self, module: &str, enabled: bool) -> Result<()> {
        if let Some(b) = self.engine.backend() {
            return b.set_module_enabled(module, enabled);
        }
        self.engine
            .write(|tx| probe::set_enabled(tx, module, enabled, tx.now()))
    }

    /// Removes a module and its probe history.
    pub fn delete_module(&self, module: &str) -> Result<()> {
        if let Some(b) = self.engine.backend() {
            return b.delete_module(module);
        }
        self.engine.write(|tx| probe::delete_module(tx, module))
    }

    /// The module catalog, by name.
    pub fn modules(&self) -> Result<Vec<Module>> {
        if let Some(b) = self.engine.backend() {
            return b.modules();
        }
        self.engine.read(probe::modules)
    }

    /// Persists a probe result the host obtained itself, ending now; returns its id.
    pub fn record_probe(
        &self,
        module: &str,
        outcome: &Result<(), ProbeError>,
        latency_ms: i64,
    ) -> Result<i64> {
        if let Some(b) = self.engine.backend() {
            return b.record_probe(module, outcome, latency_ms);
        }
        self.engine
            .write(|tx| probe::record_probe(tx, module, outcome, latency_ms, tx.now()))
    }

    /// The readiness of `scope` now, from stored probes only (nothing is probed).
    pub fn readiness(&self, scope: Scope, config: &PreflightConfig) -> Result<ReadinessSnapshot> {
        if let Some(b) = self.engine.backend() {
            return b.readiness(scope, config);
        }
        let now = self.engine.now();
        self.engine
            .read(|c| probe::readiness(c, scope, config.fresh_for, now))
    }

    /// A manual preflight (a UI button): probes stale or untested modules of `scope` per
    /// `config.policy`, persists the results, returns the snapshot. Starts no run.
    pub fn preflight(
        &self,
        scope: Scope,
        probes: &ProbeSet,
        config: &PreflightConfig,
    ) -> Result<ReadinessSnapshot> {
        probe::preflight(self.engine, scope, probes, config)
    }

    /// The raw record `id` (`NOT_FOUND` when there is none).
    pub fn raw_record(&self, id: i64) -> Result<RawRecord> {
        if let Some(b) = self.engine.backend() {
            return b.raw_record(id);
        }
        self.engine.read(|c| raw::record(c, id))
    }

    /// The raw records `filter` selects (a run's, rejected ones), newest first.
    pub fn raw_list(&self, filter: &RawFilter) -> Result<Vec<RawRecord>> {
        if let Some(b) = self.engine.backend() {
            return b.raw_list(filter);
        }
        self.engine.read(|c| raw::list(c, filter))
    }

    /// The raw records of run `run_id`, oldest first.
    pub fn raw_records(&self, run_id: i64) -> Result<Vec<RawRecord>> {
        if let Some(b) = self.engine.backend() {
            return b.raw_records(run_id);
        }
        self.engine.read(|c| raw::records_of_run(c, run_id))
    }

    /// The bytes of the payload with this SHA-256.
    pub fn raw_payload(&self, sha256: &str) -> Result<Vec<u8>> {
        if let Some(b) = self.engine.backend() {
            return b.raw_payload(sha256);
        }
        self.engine.read(|c| raw::payload(c, sha256))
    }

    /// Retention: deletes terminal runs that finished before `cutoff`, their raw records,
    /// and payloads no record references any more, in one transaction. Started runs stay.
    pub fn prune(&self, cutoff: Timestamp) -> Result<PruneReport> {
        if let Some(b) = self.engine.backend() {
            return b.prune(cutoff);
        }
        self.engine.write(|tx| raw::prune(tx, cutoff))
    }
}
