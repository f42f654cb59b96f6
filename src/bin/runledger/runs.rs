//! `runs list|show|sweep|trigger`, `preflight`, `probes list`.

use crate::provider::{self as demo, ProviderOptions};
use clap::{Args, Subcommand};
use runledger::run::{PreflightConfig, Run, RunFilter, ScopeSelector, TriggerKind};
use runledger::{Engine, RunStatus, Scope};
use serde_json::json;

use crate::output::{clip, duration, opt, ts, CliResult, Failure, Out, Table};

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
    /// Trigger the built-in simulated `ingest` pipeline now (trigger kind `manual`).
    Trigger {
        /// targets, universe or both.
        #[arg(long, default_value = "both")]
        scope: ScopeSelector,
        /// Simulate a failing probe for this module (repeatable).
        #[arg(long = "fail-probe", value_name = "MODULE")]
        fail_probe: Vec<String>,
    },
}

/// `preflight` arguments.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The scope to probe (targets, universe).
    #[arg(long)]
    scope: Scope,
    /// Simulate a failing probe for this module (repeatable).
    #[arg(long = "fail-probe", value_name = "MODULE")]
    fail_probe: Vec<String>,
}

/// Probes.
#[derive(Debug, Subcommand)]
pub enum ProbesCmd {
    /// The module catalog with each module's newest probe.
    List,
}

pub fn runs(engine: &Engine, out: Out, cmd: RunsCmd) -> CliResult {
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
        RunsCmd::Trigger { scope, fail_probe } => {
            demo::install(engine)?;
            let pipeline = demo::pipeline(&ProviderOptions {
                failing_probes: fail_probe,
                ..Default::default()
            })?;
            let outcomes = engine
                .runs()
                .trigger(&pipeline, scope, TriggerKind::Manual)?;
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

pub fn preflight(engine: &Engine, out: Out, args: PreflightArgs) -> CliResult {
    demo::install(engine)?;
    let snap = engine.runs().preflight(
        args.scope,
        &demo::probes(&args.fail_probe),
        &PreflightConfig::default(),
    )?;
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

pub fn probes(engine: &Engine, out: Out, cmd: ProbesCmd) -> CliResult {
    let ProbesCmd::List = cmd;
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
