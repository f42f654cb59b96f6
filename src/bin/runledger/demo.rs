//! `demo`: runledger's whole job, end to end, in a few seconds, on a fresh database.
//!
//! The demo is a sequence of [`STEPS`], each a function over one [`Demo`] (engine, the
//! manual clock it controls, output settings). It runs on a manual clock that starts at the
//! machine's time and is advanced by the simulated stage latencies and by the 45 s of
//! silence of a dead worker, so it takes no real waiting and the timelines read the same on
//! every run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::provider::{self as demo, ProviderOptions};
use clap::Args;
use runledger::flex::{self, FlexConfig, FlexToken, Pacer, RateLimits, TokenSource};
use runledger::run::{RunFilter, ScopeSelector, TriggerKind};
use runledger::{
    Clock, Engine, EngineOptions, Error, JobFailure, JobState, ManualClock, NewJob, RecoveryPolicy,
    Supervisor, SupervisorOptions, SystemClock, Worker, WorkerOptions,
};
use serde_json::json;

use crate::flex_mock::FlexMock;
use crate::output::{opt, CliResult, Failure, Out, Table};
use crate::runbook_cmd::result_table;
use crate::runs::{print_run, runs_table};

/// The file `demo` writes when no `--db` (or RUNLEDGER_DB) is given.
pub const DEFAULT_DEMO_DB: &str = "./runledger-demo.db";

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Replace the database file if it exists and is not empty.
    #[arg(long)]
    force: bool,
}

/// What every step works with.
pub struct Demo {
    engine: Engine,
    clock: ManualClock,
    out: Out,
    path: String,
}

/// The module whose probe fails, so that `universe` is blocked at readiness.
const FAILING_MODULE: &str = "fundamentals";

/// One step: its title and what it does.
type Step = (&'static str, fn(&Demo) -> CliResult);

/// The demo's steps, in order.
const STEPS: &[Step] = &[
    (
        "Pools: trigger `ingest` for both scopes; the universe-only module `fundamentals` fails its probe",
        pools,
    ),
    (
        "Flex: request, poll, download, check and persist a statement from a loopback mock of IB's service",
        flex_statement,
    ),
    (
        "Lock: a scheduled trigger arrives while a manual run of the same pool is active",
        lock,
    ),
    (
        "Jobs: a research worker dies mid-way; the supervisor recovers it; it resumes from its checkpoint",
        jobs,
    ),
    ("Schedule: the default daily schedule", schedule),
];

pub fn demo(db: &Path, out: Out, args: DemoArgs) -> CliResult {
    let non_empty = std::fs::metadata(db).map(|m| m.len() > 0).unwrap_or(false);
    if non_empty {
        if !args.force {
            return Err(Failure::new(
                "DEMO_DB_EXISTS",
                format!(
                    "{} exists and is not empty; pass --force to replace it, or --db NEW_PATH",
                    db.display()
                ),
            ));
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Failure::new(
                        "IO",
                        format!("cannot remove {}: {e}", Path::new(&p).display()),
                    ))
                }
                _ => {}
            }
        }
    }
    let clock = ManualClock::new(SystemClock.now());
    let engine = Engine::open_with(db, EngineOptions::default().with_clock(clock.clone()))?;
    demo::install(&engine)?;
    let d = Demo {
        engine,
        clock,
        out,
        path: db.display().to_string(),
    };
    println!(
        "{} {} (schema v{})",
        out.bold("runledger demo:"),
        d.path,
        d.engine.schema_version()?
    );
    for (i, (title, step)) in STEPS.iter().enumerate() {
        println!();
        println!("{}", out.bold(&format!("== {}. {title}", i + 1)));
        step(&d)?;
    }
    summary(&d)
}

impl Demo {
    /// The simulated provider, advancing the demo's clock by each stage's latency.
    fn provider(&self, failing: &[&str]) -> ProviderOptions {
        let clock = self.clock.clone();
        ProviderOptions {
            failing_probes: failing.iter().map(|s| s.to_string()).collect(),
            latency: Arc::new(move |_, d| clock.advance(d)),
            ..Default::default()
        }
    }
}

fn pools(d: &Demo) -> CliResult {
    let pipeline = demo::pipeline(&d.provider(&[FAILING_MODULE]))?;
    let outcomes = d
        .engine
        .runs()
        .trigger(&pipeline, ScopeSelector::Both, TriggerKind::Manual)?;
    for o in outcomes {
        let run = o.result?;
        print_run(d.out, &run);
        for r in d.engine.runs().raw_records(run.id)? {
            println!(
                "  raw record {}: {} {} bytes from {} ({})",
                r.id,
                r.content_type,
                r.size,
                r.source,
                opt(r.upstream_ref.as_deref())
            );
        }
        println!();
    }
    println!("targets succeeded while universe was blocked at readiness: each pool has its own lock and gates.");
    Ok(())
}

/// The demo's token: only the loopback mock accepts it.
const DEMO_TOKEN: &str = "DEMO1234567890TOKEN";

fn flex_statement(d: &Demo) -> CliResult {
    let mock = FlexMock::start(DEMO_TOKEN, 2)
        .map_err(|e| Failure::new("IO", format!("cannot start the loopback mock: {e}")))?;
    let mut config = FlexConfig::new("880001");
    config.token =
        TokenSource::Given(FlexToken::new(DEMO_TOKEN).map_err(runledger::flex::FlexError::from)?);
    config.client.base_url = mock.base_url();
    // Waits (first poll, not-ready backoff, IB's 1 request/s) advance the demo's clock
    // instead of sleeping: the timeline shows them, the demo does not wait for them.
    let clock = d.clock.clone();
    config.pacer = Pacer::new(
        d.clock.clone(),
        move |wait| clock.advance(wait),
        RateLimits::default(),
    );
    let run = flex::run_once(&d.engine, &config, Some("U0000042"))?;
    print_run(d.out, &run);
    for r in d.engine.runs().raw_records(run.id)? {
        println!(
            "  raw record {}: {} {} bytes from {} (reference {}), sha256 {}…",
            r.id,
            r.content_type,
            r.size,
            r.source,
            opt(r.upstream_ref.as_deref()),
            &r.sha256[..12]
        );
    }
    let requests = mock.requests.load(std::sync::atomic::Ordering::SeqCst);
    drop(mock);
    println!(
        "{requests} requests to the mock (SendRequest, two \"not ready\" polls, the statement); the token is in none of the database's bytes: {}",
        if token_in_files(&d.path) { "FOUND (bug)" } else { "checked" }
    );
    Ok(())
}

/// Whether the demo token appears in the database file or its WAL.
fn token_in_files(path: &str) -> bool {
    [path.to_owned(), format!("{path}-wal")].iter().any(|p| {
        std::fs::read(p).is_ok_and(|bytes| {
            bytes
                .windows(DEMO_TOKEN.len())
                .any(|w| w == DEMO_TOKEN.as_bytes())
        })
    })
}

fn lock(d: &Demo) -> CliResult {
    let engine = d.engine.clone();
    let clock = d.clock.clone();
    let refused = Arc::new(std::sync::Mutex::new(None));
    let seen = refused.clone();
    let opts = ProviderOptions {
        latency: Arc::new(move |stage, dur| {
            clock.advance(dur);
            if stage == "fetch" {
                // The scheduler fires the same pool while this manual run is fetching.
                let result = demo::pipeline(&ProviderOptions::default()).and_then(|p| {
                    engine
                        .runs()
                        .trigger(&p, ScopeSelector::Targets, TriggerKind::Schedule)
                });
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
            }
        }),
        ..Default::default()
    };
    let pipeline = demo::pipeline(&opts)?;
    let outcomes =
        d.engine
            .runs()
            .trigger(&pipeline, ScopeSelector::Targets, TriggerKind::Manual)?;
    let active = outcomes.into_iter().next().map(|o| o.result).transpose()?;
    let nested = refused
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .transpose()?
        .into_iter()
        .flatten()
        .next();
    match nested.map(|o| o.result) {
        Some(Err(Error::RunAlreadyActive {
            lock_key,
            active_run_id,
            recorded_run_id,
            ..
        })) => {
            println!(
                "the scheduled trigger was turned away: RUN_ALREADY_ACTIVE on lock {lock_key} (held by run {}), recorded as run {}",
                opt(active_run_id),
                opt(recorded_run_id)
            );
            if let Some(id) = recorded_run_id {
                print_run(d.out, &d.engine.runs().get(id)?);
            }
        }
        other => {
            return Err(Failure::new(
                "DEMO_UNEXPECTED",
                format!("the second trigger was not turned away: {other:?}"),
            ))
        }
    }
    if let Some(run) = active {
        println!();
        print_run(d.out, &run);
    }
    Ok(())
}

fn jobs(d: &Demo) -> CliResult {
    let jobs = d.engine.jobs();
    let job = jobs.create(
        &NewJob::new("demo", "research", json!({"study": "momentum", "pages": 4})).tags(["demo"]),
    )?;
    let clock = d.clock.clone();
    let handler = move |ctx: &runledger::JobContext| {
        let from = ctx
            .resume_from()
            .and_then(|c| c["page"].as_u64())
            .unwrap_or(0);
        let lost = |e: Error| JobFailure::new(e.code(), e.to_string());
        for page in from + 1..=4 {
            clock.advance(Duration::from_secs(2));
            ctx.progress((page * 25) as u8, Some(&format!("page {page}/4")))
                .map_err(lost)?;
            ctx.checkpoint(&json!({"page": page})).map_err(lost)?;
            if page == 2 && ctx.attempt() == 1 {
                // The worker hangs here: it never heartbeats or writes again.
                while !ctx.should_stop() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                return Err(JobFailure::new("HUNG", "never returns normally"));
            }
        }
        Ok(json!({"pages": 4, "resumedFromPage": from}))
    };
    let handler = Arc::new(handler);
    let options = |id: &str| WorkerOptions {
        // Longer than the demo: the only heartbeats are the progress writes.
        heartbeat_every: Duration::from_secs(600),
        idle_poll: Duration::from_millis(5),
        ..WorkerOptions::new(id, ["research"])
    };
    let h = handler.clone();
    let first = Worker::start(d.engine.clone(), options("worker-1"), move |c| h(c))?;
    wait_until(|| {
        let j = jobs.get(job.id)?;
        Ok(j.checkpoint.as_ref().and_then(|c| c["page"].as_u64()) == Some(2))
    })?;
    let report = first.shutdown(Duration::from_millis(10));
    println!(
        "worker-1 stopped heartbeating with job {} at page 2 (abandoned: {:?})",
        job.id, report.abandoned
    );
    d.clock.advance(Duration::from_secs(45));
    let supervisor = Supervisor::new(
        d.engine.clone(),
        SupervisorOptions {
            stale_after: Duration::from_secs(30),
            policy: RecoveryPolicy::AutoResume,
            ..Default::default()
        },
    )?;
    let tick = supervisor.tick(d.engine.now())?;
    for r in &tick.recovered {
        println!(
            "45 s later the supervisor found job {} stale (attempt {}) and requeued it with its checkpoint: {}",
            r.job_id, r.attempt, r.to
        );
    }
    let h = handler.clone();
    let second = Worker::start(d.engine.clone(), options("worker-2"), move |c| h(c))?;
    wait_until(|| Ok(jobs.get(job.id)?.state.is_terminal()))?;
    second.shutdown(Duration::from_secs(5));
    let done = jobs.get(job.id)?;
    println!(
        "worker-2 resumed it from page 2: {} with result {}",
        done.state,
        opt(done.result.as_ref())
    );
    if done.state != JobState::Completed {
        return Err(Failure::new(
            "DEMO_UNEXPECTED",
            format!("job {} ended {}", done.id, done.state),
        ));
    }
    let events = d.engine.events().since(job.id, 0, 200)?;
    let mut t = Table::new(&["seq", "kind", "payload"]);
    for e in &events {
        t.row(vec![
            e.seq.to_string(),
            e.kind.as_str().into(),
            e.payload.to_string(),
        ]);
    }
    println!("its event log (what a UI resyncs from):");
    print!("{}", t.render(d.out.color));
    Ok(())
}

/// Polls `done` every few milliseconds for up to 30 s.
fn wait_until(mut done: impl FnMut() -> runledger::Result<bool>) -> CliResult {
    for _ in 0..15_000 {
        if done()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(Failure::new(
        "DEMO_TIMEOUT",
        "a demo worker did not reach the expected state within 30 s",
    ))
}

fn schedule(d: &Demo) -> CliResult {
    let s = d.engine.schedules().ensure_default()?;
    print!(
        "{}",
        crate::schedule::schedules_table(std::slice::from_ref(&s)).render(d.out.color)
    );
    println!("`runledger serve` fires it (and runs the supervisor) until Ctrl-C.");
    Ok(())
}

fn summary(d: &Demo) -> CliResult {
    println!();
    println!("{}", d.out.bold("== Every run"));
    let runs = d.engine.runs().list(&RunFilter::default())?;
    print!("{}", runs_table(&runs).render(d.out.color));
    println!();
    println!(
        "{}",
        d.out.bold("== Health summary (runbook: health_summary)")
    );
    let health = d
        .engine
        .with_connection(|c| runledger::runbook::run(c, "health_summary"))?;
    print!("{}", result_table(&health).render(d.out.color));
    println!();
    println!("Everything above is in one SQLite file. Open it with the stock shell:");
    println!("  sqlite3 {}", d.path);
    println!("  sqlite> select scope, status, json_extract(meta_json, '$.blockedStage') as blocked_stage, error_code from ingest_runs order by id;");
    println!(
        "or ask the runbook: runledger --db {} runbook blocked_failures",
        d.path
    );
    Ok(())
}
