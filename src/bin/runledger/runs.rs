//! `runs list|show|sweep|trigger|abandon`, `preflight`, `probes list`, on the configured
//! pipelines and modules.

use std::sync::{Arc, Mutex, PoisonError};

use clap::{Args, Subcommand};
use runledger::run::{PreflightConfig, Run, RunFilter, ScopeSelector, TriggerKind, TriggerOptions};
use runledger::{Engine, RunStatus, Scope};
use serde_json::json;

use crate::config::Config;
use crate::output::{clip, duration, opt, ts, CliResult, Failure, Out, Table};

/// The actor of the audit rows of `runs abandon` and of an interrupted trigger.
pub const ACTOR: &str = "cli";

/// Ingestion runs.
#[derive(Debug, Subcommand)]
pub enum RunsCmd {
    /// The newest runs, filtered.
    List {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this scope (targets, universe).
        #[arg(long)]
        scope: Option<Scope>,
        /// Only this status (started, success, failed).
        #[arg(long)]
        status: Option<RunStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run with its stage timeline and raw records.
    Show {
        /// The run's id.
        id: i64,
    },
    /// Finalize started runs whose lease expired as failed ABANDONED.
    Sweep,
    /// Trigger a configured pipeline now (trigger kind `manual`). Ctrl-C or SIGTERM ends
    /// the run failed `INTERRUPTED` and frees its lock at once (exit 130).
    Trigger {
        /// The configured pipeline [default: the only configured one].
        #[arg(long)]
        pipeline: Option<String>,
        /// targets, universe or both [default: the pipeline's scope].
        #[arg(long)]
        scope: Option<ScopeSelector>,
    },
    /// End a started run whose process died, failed `ABANDONED`, freeing its lock now
    /// (audited with the reason).
    Abandon {
        /// The run's id.
        id: i64,
        /// Why (kept in the run's error message and the audit row).
        #[arg(long)]
        reason: String,
        /// Who ends it (the audit row's actor).
        #[arg(long, default_value = ACTOR)]
        actor: String,
    },
}

/// `preflight` arguments.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The scope to probe (targets, universe).
    #[arg(long)]
    scope: Scope,
}

/// Probes.
#[derive(Debug, Subcommand)]
pub enum ProbesCmd {
    /// The module catalog with each module's newest probe.
    List,
}

pub fn runs(
    engine: &Engine,
    out: Out,
    cmd: RunsCmd,
    load: &dyn Fn() -> CliResult<Config>,
) -> CliResult {
    match cmd {
        RunsCmd::List {
            pipeline,
            scope,
            status,
            limit,
        } => {
            let runs = engine.runs().list(&RunFilter {
                pipeline,
                scope,
                status,
                before_id: None,
                limit,
                ..RunFilter::default()
            })?;
            out.listing(&runs_table(&runs), &runs);
        }
        RunsCmd::Show { id } => {
            let run = engine.runs().get(id)?;
            let raw = engine.runs().raw_records(id)?;
            if out.json {
                out.json(&json!({"run": run, "rawRecords": raw}));
            } else {
                print_run(out, &run);
                if !raw.is_empty() {
                    let mut t = Table::new(&["raw", "source", "ref", "type", "bytes", "sha256"]);
                    for r in &raw {
                        t.row(vec![
                            r.id.to_string(),
                            r.source.clone(),
                            opt(r.upstream_ref.as_deref()),
                            r.content_type.clone(),
                            r.size.to_string(),
                            clip(&r.sha256, 13),
                        ]);
                    }
                    print!("{}", t.render(out.color));
                    for r in &raw {
                        if let Some(x) = &r.rejected {
                            println!("raw {} rejected [{}]: {}", r.id, x.code, x.reason);
                        }
                    }
                }
            }
        }
        RunsCmd::Sweep => {
            let ids = engine.runs().sweep()?;
            if out.json {
                out.json(&json!({"abandoned": ids}));
            } else if ids.is_empty() {
                println!("no expired run");
            } else {
                let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                println!("finalized as ABANDONED: {}", ids.join(", "));
            }
        }
        RunsCmd::Abandon { id, reason, actor } => {
            let run = engine.runs().abandon(id, &reason, &actor)?;
            if out.json {
                out.json(&run);
            } else {
                print_run(out, &run);
            }
        }
        RunsCmd::Trigger { pipeline, scope } => {
            let config = load()?;
            let conf = config.pick(pipeline.as_deref())?;
            config.install_modules(engine)?;
            let pipeline = config.build(conf)?;
            let scope = scope.unwrap_or_else(|| conf.scope().into());
            let opts = TriggerOptions {
                account_id: conf.account.clone(),
            };
            let started = interrupt_on_signal(engine)?;
            let outcomes = engine.runs().trigger_observed(
                &pipeline,
                scope,
                TriggerKind::Manual,
                &opts,
                &mut |_, run| {
                    if let Ok(run) = run {
                        started
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(run.id);
                    }
                },
            )?;
            let mut worst: Option<Failure> = None;
            let mut shown = Vec::new();
            for o in outcomes {
                match o.result {
                    Ok(run) => {
                        if run.status == RunStatus::Failed && worst.is_none() {
                            worst = Some(Failure::new(
                                run.error_code.as_deref().unwrap_or("RUN_FAILED"),
                                format!(
                                    "run {} ({}) failed: {}",
                                    run.id,
                                    run.scope,
                                    run.error_message.as_deref().unwrap_or("")
                                ),
                            ));
                        }
                        if !out.json {
                            print_run(out, &run);
                        }
                        shown.push(json!({"scope": o.scope, "run": run}));
                    }
                    Err(e) => {
                        if !out.json {
                            println!("{}: {} [{}]", o.scope, e, e.code());
                        }
                        shown.push(json!({"scope": o.scope, "error": {"code": e.code(), "message": e.to_string()}}));
                        let f = Failure::from(e);
                        if worst.as_ref().is_none_or(|w| w.exit < f.exit) {
                            worst = Some(f);
                        }
                    }
                }
            }
            if out.json {
                out.json(&shown);
            }
            if let Some(f) = worst {
                return Err(f);
            }
        }
    }
    Ok(())
}

/// On Ctrl-C or SIGTERM, ends the runs recorded in the returned list failed `INTERRUPTED`
/// (freeing their locks at once) and exits with 130.
fn interrupt_on_signal(engine: &Engine) -> CliResult<Arc<Mutex<Vec<i64>>>> {
    let stop = crate::serve::stop_signal()?;
    let started: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (engine, ids) = (engine.clone(), started.clone());
    std::thread::spawn(move || {
        if stop.recv().is_err() {
            return;
        }
        let ids = ids.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for id in ids {
            match engine
                .runs()
                .interrupt(id, "Ctrl-C or SIGTERM during runs trigger", ACTOR)
            {
                Ok(run) => eprintln!(
                    "interrupted: run {id} ended failed INTERRUPTED, lock {} freed",
                    run.lock_key
                ),
                // Already finished: nothing to end.
                Err(e) if e.code() == "ILLEGAL_TRANSITION" => {}
                Err(e) => eprintln!("run {id} could not be ended: {e} [{}]", e.code()),
            }
        }
        std::process::exit(130);
    });
    Ok(started)
}

/// One row per run.
pub fn runs_table(runs: &[Run]) -> Table {
    let mut t = Table::new(&[
        "id",
        "pipeline",
        "scope",
        "trigger",
        "status",
        "started_at",
        "duration",
        "stage",
        "error",
    ]);
    for r in runs {
        let stage = r
            .meta
            .get("blockedStage")
            .or_else(|| r.meta.get("failedStage"))
            .and_then(|v| v.as_str())
            .unwrap_or("-");
        t.row(vec![
            r.id.to_string(),
            r.pipeline.clone(),
            r.scope.to_string(),
            r.trigger.to_string(),
            r.status.to_string(),
            r.started_at.to_string(),
            duration(r.duration_ms),
            stage.to_string(),
            opt(r.error_code.as_deref()),
        ]);
    }
    t
}

/// A run's header and its timeline as a table.
pub fn print_run(out: Out, run: &Run) {
    let blocked = run
        .meta
        .get("blockedStage")
        .and_then(|v| v.as_str())
        .map(|s| format!(", blocked at {s}"))
        .unwrap_or_default();
    println!(
        "{} {}  {} {} ({})  {}{}",
        out.bold(&format!("run {}", run.id)),
        run.pipeline,
        run.scope,
        run.status,
        run.trigger,
        duration(run.duration_ms),
        blocked
    );
    println!(
        "  lock {}  started {}  finished {}",
        run.lock_key,
        run.started_at,
        ts(run.finished_at)
    );
    if let (Some(code), Some(msg)) = (&run.error_code, &run.error_message) {
        println!("  error [{code}]: {msg}");
    }
    let mut t = Table::new(&[
        "  #",
        "stage",
        "kind",
        "try",
        "status",
        "started_at",
        "duration",
        "code",
        "detail",
    ]);
    for (i, e) in run.timeline.iter().enumerate() {
        let detail = match (&e.message, &e.detail) {
            (Some(m), _) => m.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => String::new(),
        };
        t.row(vec![
            format!("  {}", i + 1),
            e.stage.clone(),
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            e.attempt.to_string(),
            serde_json::to_value(e.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            e.started_at.to_string(),
            duration(e.duration_ms),
            opt(e.error_code.as_deref()),
            clip(&detail, 72),
        ]);
    }
    print!("{}", t.render(out.color));
}

pub fn preflight(engine: &Engine, out: Out, args: PreflightArgs, config: &Config) -> CliResult {
    config.install_modules(engine)?;
    let snap =
        engine
            .runs()
            .preflight(args.scope, &config.probes(), &PreflightConfig::default())?;
    if out.json {
        out.json(&snap);
        return Ok(());
    }
    let mut t = Table::new(&["module", "domain", "ready", "probe", "tested_at", "reason"]);
    for m in &snap.modules {
        t.row(vec![
            m.module.clone(),
            m.domain.clone(),
            if m.ready { "yes" } else { "no" }.into(),
            opt(m.last_probe.as_ref().map(|p| p.status)),
            ts(m.last_probe.as_ref().map(|p| p.tested_at)),
            opt(m.reason.as_deref()),
        ]);
    }
    println!(
        "{} {}: {} (probed now: {})",
        out.bold("preflight"),
        snap.scope,
        if snap.ready { "ready" } else { "not ready" },
        if snap.probed.is_empty() {
            "none".to_string()
        } else {
            snap.probed.join(", ")
        }
    );
    print!("{}", t.render(out.color));
    Ok(())
}

pub fn probes(engine: &Engine, out: Out, cmd: ProbesCmd, config: &Config) -> CliResult {
    let ProbesCmd::List = cmd;
    config.install_modules(engine)?;
    let modules = engine.runs().modules()?;
    let config = PreflightConfig::default();
    let mut readiness = Vec::new();
    for scope in Scope::ALL {
        readiness.extend(engine.runs().readiness(scope, &config)?.modules);
    }
    let mut rows = Vec::new();
    let mut t = Table::new(&[
        "module",
        "domain",
        "scopes",
        "enabled",
        "probe",
        "code",
        "tested_at",
        "latency",
    ]);
    for m in &modules {
        let last = readiness
            .iter()
            .find(|r| r.module == m.module)
            .and_then(|r| r.last_probe.clone());
        let scopes: Vec<&str> = m.scopes.iter().map(|s| s.as_str()).collect();
        t.row(vec![
            m.module.clone(),
            m.domain.clone(),
            scopes.join(","),
            if m.enabled { "yes" } else { "no" }.into(),
            opt(last.as_ref().map(|p| p.status)),
            opt(last.as_ref().and_then(|p| p.code.clone())),
            ts(last.as_ref().map(|p| p.tested_at)),
            duration(last.as_ref().map(|p| p.latency_ms)),
        ]);
        rows.push(json!({"module": m, "lastProbe": last}));
    }
    out.listing(&t, &rows);
    Ok(())
}
