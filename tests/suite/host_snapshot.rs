//! The example of snapshot-driven regression testing for hosts (docs/snapshot-testing.md):
//! a host's own pipeline and job, run on a `ManualClock`, pinned with insta through their
//! versioned diagnostics shapes. Nothing in the snapshots depends on ids or on the date the
//! test ran; a change of behaviour (a stage order, a retry, a code, a detail) shows up as a
//! snapshot diff.

use std::time::Duration;

use runledger::run::{Gate, RawInput, RetryPolicy, StageError, StageOutput};
use runledger::{
    Engine, JobFailure, ManualClock, NewJob, Pipeline, ScopeSelector, Timestamp, TriggerKind,
};
use serde_json::json;

use crate::snap_json;

/// The host's pipeline: a token gate, a flaky download retried once, a persist stage that
/// stores the raw bytes and enqueues a job. Each stage moves the manual clock, so durations
/// are part of the pinned shape.
fn prices(clock: &ManualClock) -> Pipeline {
    let (c1, c2, c3, sleep) = (clock.clone(), clock.clone(), clock.clone(), clock.clone());
    let calls = std::sync::atomic::AtomicU32::new(0);
    Pipeline::builder("prices")
        .gate(Gate::Token, move |_| {
            c1.advance(Duration::from_millis(5));
            Ok(StageOutput::done())
        })
        .stage("download", move |_| {
            c2.advance(Duration::from_millis(250));
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                return Err(StageError::retryable("HTTP_503", "upstream busy"));
            }
            Ok(StageOutput::with_detail(json!({"rows": 2, "bytes": 38})))
        })
        .stage("persist", move |ctx| {
            c3.advance(Duration::from_millis(40));
            let rec = ctx.store_raw(&RawInput {
                source: "example_prices",
                upstream_ref: Some("close/latest"),
                content_type: "text/csv",
                bytes: b"symbol,close\nAAPL,189.20\nMSFT,411.05\n",
            })?;
            let job = ctx.engine().jobs().create(&NewJob::new(
                "host",
                "analysis",
                json!({"rawRecordId": rec.id}),
            ))?;
            Ok(StageOutput::with_detail(
                json!({"rawRecordId": rec.id, "jobId": job.id}),
            ))
        })
        .retry(RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        })
        .sleeper(move |d| sleep.advance(d))
        .build()
        .unwrap()
}

/// The host's job handler: what its worker would run, here called directly.
fn analyse(engine: &Engine, clock: &ManualClock) -> Result<(), JobFailure> {
    let jobs = engine.jobs();
    let claim = jobs.claim("worker-1", &["analysis"])?.expect("a job");
    clock.advance(Duration::from_millis(100));
    jobs.progress(&claim, 50, Some("reading"))?;
    clock.advance(Duration::from_millis(100));
    jobs.checkpoint(&claim, &json!({"row": 1}))?;
    clock.advance(Duration::from_millis(100));
    jobs.complete(&claim, &json!({"mean_close": 300.125}))?;
    Ok(())
}

fn engine_at(start: &str) -> (Engine, ManualClock) {
    let clock = ManualClock::new(Timestamp::parse(start).unwrap());
    let engine =
        Engine::open_in_memory_with(crate::common::options().with_clock(clock.clone())).unwrap();
    (engine, clock)
}

/// Runs the host's flow on a fresh engine whose clock starts at `start`, after `noise`
/// unrelated jobs (so that ids differ), and returns both diagnostics.
fn flow(start: &str, noise: usize) -> (serde_json::Value, serde_json::Value) {
    let (engine, clock) = engine_at(start);
    for _ in 0..noise {
        let other = engine
            .jobs()
            .create(&NewJob::new("other", "noise", json!({})))
            .unwrap();
        engine.jobs().cancel(other.id, "test", None).unwrap();
    }
    let outcome = engine
        .runs()
        .trigger(&prices(&clock), ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run_id = outcome[0].result.as_ref().unwrap().id;
    analyse(&engine, &clock).unwrap();
    let job_id = engine.jobs().list_by_user("host", 1).unwrap()[0].id;
    let run = engine.runs().diagnostics(run_id).unwrap();
    let job = engine.jobs().diagnostics(job_id).unwrap();
    (
        serde_json::to_value(run).unwrap(),
        serde_json::to_value(job).unwrap(),
    )
}

#[test]
fn the_host_pipeline_and_its_job_are_pinned_by_their_diagnostics() {
    let (run, job) = flow("2026-11-22T11:30:00.000Z", 0);
    assert_eq!(run["version"], 1);
    assert_eq!(job["version"], 1);
    snap_json!("host_prices_run_diagnostics", run);
    snap_json!("host_analysis_job_diagnostics", job);
}

#[test]
fn the_diagnostics_do_not_depend_on_ids_or_on_the_date() {
    let first = flow("2026-11-22T11:30:00.000Z", 0);
    let later = flow("2031-02-03T04:05:06.789Z", 3);
    assert_eq!(first, later);
}

#[test]
fn a_failed_run_and_a_failed_job_keep_their_codes_and_relative_times() {
    let (engine, clock) = engine_at("2026-11-22T11:30:00.000Z");
    let c = clock.clone();
    let pipeline = Pipeline::builder("broken")
        .stage("download", move |_| {
            c.advance(Duration::from_millis(30));
            Err(StageError::fatal(
                "UPSTREAM_GONE",
                "no data since 2026-11-22T11:00:00.000Z",
            ))
        })
        .build()
        .unwrap();
    let outcome = engine
        .runs()
        .trigger(&pipeline, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run = engine
        .runs()
        .diagnostics(outcome[0].result.as_ref().unwrap().id)
        .unwrap();
    let error = run.error.as_ref().unwrap();
    assert_eq!(error.code, "UPSTREAM_GONE");
    assert_eq!(
        run.timeline[0].error.as_ref().unwrap().message.as_deref(),
        Some("no data since t0-1800000ms")
    );
    assert_eq!(run.duration_ms, Some(30));

    let job = engine
        .jobs()
        .create(&NewJob::new(
            "host",
            "analysis",
            json!({"parent_run_id": 5}),
        ))
        .unwrap();
    let claim = engine.jobs().claim("w", &[]).unwrap().unwrap();
    clock.advance(Duration::from_secs(2));
    engine.jobs().fail(&claim, "BAD_DATA", "row 3").unwrap();
    let d = engine.jobs().diagnostics(job.id).unwrap();
    assert_eq!(d.input, json!({"parent_run_id": "[id]"}));
    assert_eq!(d.times.finished_ms, Some(2000));
    assert_eq!(d.error.as_ref().unwrap().code, "BAD_DATA");
    let kinds: Vec<String> = d.events.iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds, ["created", "claimed", "failed"]);
    assert_eq!(d.events_pruned, 0);
}
