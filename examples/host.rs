//! A host application's use of runledger, the way a desktop or backend app wires it:
//! a pipeline with gates and stages, a schedule fired by the scheduler loop, a worker pool
//! for the jobs the pipeline enqueues, and the supervisor — then a clean stop.
//!
//! `cargo run --example host` (about a second). It runs on a manual clock so that a
//! minute of schedule passes in a moment; a real host keeps the default system clock.

use std::sync::Arc;
use std::time::Duration;

use runledger::run::{Gate, RawInput, StageError, StageOutput};
use runledger::schedule::LoopOptions;
use runledger::{
    Clock, Engine, EngineOptions, JobState, ManualClock, NewJob, NewSchedule, Pipeline,
    ScheduledRuns, Supervisor, SupervisorOptions, SystemClock, Worker, WorkerOptions,
};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(SystemClock.now());
    let engine = Engine::open_with(
        dir.path().join("app.db"),
        EngineOptions::default().with_clock(clock.clone()),
    )?;

    // 1. The host's pipeline: two gates, two stages; the last one enqueues an analysis job.
    let pipeline = Pipeline::builder("prices")
        .gate(Gate::Token, |_| match std::env::var_os("PATH") {
            // A real host checks its API token here (and never stores it).
            Some(_) => Ok(StageOutput::done()),
            None => Err(StageError::fatal("TOKEN_MISSING", "no token configured")),
        })
        .gate(Gate::Readiness, |ctx| {
            let ready = ctx.engine().jobs().running()?.len() < 100;
            if ready {
                Ok(StageOutput::done())
            } else {
                Err(StageError::retryable(
                    "BUSY_HOST",
                    "too much work in flight",
                ))
            }
        })
        .stage("download", |ctx| {
            let csv = b"symbol,close\nAAPL,189.20\nMSFT,411.05\n";
            let rec = ctx.store_raw(&RawInput {
                source: "example_prices",
                upstream_ref: Some("close/latest"),
                content_type: "text/csv",
                bytes: csv,
            })?;
            Ok(StageOutput::with_detail(
                json!({"rawRecordId": rec.id, "bytes": rec.size}),
            ))
        })
        .stage("enqueue_analysis", |ctx| {
            let job = ctx.engine().jobs().create(&NewJob::new(
                "host",
                "analysis",
                json!({"run": ctx.run_id(), "scope": ctx.scope()}),
            ))?;
            Ok(StageOutput::with_detail(json!({"jobId": job.id})))
        })
        .build()?;

    // 2. A schedule for it, fired by the scheduler loop through ScheduledRuns.
    let schedule = engine.schedules().create(&NewSchedule::new(
        "prices-every-minute",
        "prices",
        "targets",
        "every 1m",
        "UTC",
    ))?;
    println!(
        "schedule {} next due {:?}",
        schedule.name, schedule.next_due_at
    );
    let fire = Arc::new(ScheduledRuns::new(engine.clone()).register(pipeline));
    let scheduler = engine.schedules().spawn(
        fire,
        LoopOptions {
            poll: Duration::from_millis(20),
            ..Default::default()
        },
    )?;

    // 3. A worker for analysis jobs, and the supervisor that rescues stalled ones.
    let worker = Worker::start(
        engine.clone(),
        WorkerOptions {
            idle_poll: Duration::from_millis(10),
            ..WorkerOptions::new("analysis-1", ["analysis"])
        },
        |ctx| {
            ctx.progress(50, Some("computing"))
                .map_err(|e| runledger::JobFailure::new(e.code(), e.to_string()))?;
            Ok(json!({"signal": "hold", "input": ctx.input()}))
        },
    )?;
    let supervisor = Supervisor::new(
        engine.clone(),
        SupervisorOptions {
            poll_every: Duration::from_millis(50),
            ..Default::default()
        },
    )?
    .spawn()?;

    // 4. A minute passes: the scheduler fires the slot, the run enqueues a job, the worker
    //    completes it.
    clock.advance(Duration::from_secs(61));
    let mut done = None;
    for _ in 0..500 {
        let completed = engine
            .jobs()
            .list(Some("host"), Some(JobState::Completed), None, 10)?;
        if let Some(job) = completed.into_iter().next() {
            done = Some(job);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // 5. Clean stop: no new slot, no new claim, then the supervisor.
    scheduler.stop();
    let report = worker.shutdown(Duration::from_secs(5));
    supervisor.stop();

    let slots = engine.schedules().slots("prices-every-minute")?;
    println!("slot {} fired runs {:?}", slots[0].due_at, slots[0].run_ids);
    let run = engine.runs().get(slots[0].run_ids[0])?;
    for e in &run.timeline {
        let ms = e.duration_ms.unwrap_or(0);
        println!("  {:<17} {:?} {ms}ms", e.stage, e.status);
    }
    let job = done.ok_or("the analysis job did not complete")?;
    println!(
        "job {} {} with {}; worker report {:?}",
        job.id,
        job.state,
        job.result.unwrap_or_default(),
        report
    );
    Ok(())
}
