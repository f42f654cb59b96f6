//! The scheduler wired to the run orchestrator: slots become runs, refusals are recorded.

use std::sync::{Arc, Mutex};

use runledger::run::{Pipeline, StageOutput};
use runledger::schedule::NewSchedule;
use runledger::{Clock, ScheduledRuns};
use serde_json::json;

use crate::common::*;

#[test]
fn a_due_slot_triggers_both_scopes_and_records_their_run_ids() {
    let (engine, clock) = mem_engine();
    // 2026-11-22T11:30Z is 19:30 in Shanghai: the default schedule's slot.
    clock.set(ts("2026-11-22T11:00:00.000Z"));
    let schedule = engine.schedules().ensure_default().unwrap();
    assert_eq!(
        (schedule.pipeline.as_str(), schedule.scope.as_str()),
        ("ingest", "both")
    );
    let pipeline = Pipeline::builder("ingest")
        .stage("fetch", |_| {
            Ok(StageOutput::with_detail(json!({"rows": 3})))
        })
        .build()
        .unwrap();
    let fire = ScheduledRuns::new(engine.clone()).register(pipeline);
    clock.set(ts("2026-11-22T11:30:00.000Z"));
    let report = engine.schedules().tick(clock.now(), &fire).unwrap();
    let slots = engine.schedules().slots("daily-ingest").unwrap();
    assert_eq!(slots.len(), 1, "{report:?}");
    let runs = engine.runs().list(&Default::default()).unwrap();
    let mut scopes: Vec<_> = runs
        .iter()
        .map(|r| (r.scope.as_str(), r.status.as_str(), r.trigger.as_str()))
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            ("targets", "success", "schedule"),
            ("universe", "success", "schedule")
        ]
    );
    let mut ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(slots[0].run_ids, ids);
}

#[test]
fn a_slot_turned_away_by_an_active_run_is_recorded_not_retried() {
    let (engine, clock) = mem_engine();
    clock.set(ts("2026-11-22T11:29:59.000Z"));
    engine
        .schedules()
        .create(&NewSchedule::new(
            "targets-only",
            "ingest",
            "targets",
            "daily 19:30",
            "Asia/Shanghai",
        ))
        .unwrap();
    // While a manual run holds the lock (its lease still fresh), its stage ticks the
    // scheduler at the slot's instant.
    let outcome = Arc::new(Mutex::new(None));
    let (e2, c2, seen) = (engine.clone(), clock.clone(), outcome.clone());
    let inner = noop_pipeline("ingest", "fetch");
    let fire = ScheduledRuns::new(engine.clone()).register(inner);
    let holder = Pipeline::builder("ingest")
        .stage("slow", move |_| {
            c2.set(ts("2026-11-22T11:30:00.000Z"));
            let slot = fire.pipeline("ingest").is_some();
            assert!(slot);
            let report = e2.schedules().tick(c2.now(), &fire).unwrap();
            *seen.lock().unwrap() = Some(report);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    engine
        .runs()
        .trigger(
            &holder,
            runledger::ScopeSelector::Targets,
            runledger::TriggerKind::Manual,
        )
        .unwrap();
    assert!(outcome.lock().unwrap().is_some());
    let slots = engine.schedules().slots("targets-only").unwrap();
    assert_eq!(slots.len(), 1);
    let slot = &slots[0];
    assert_eq!(slot.status.as_str(), "skipped");
    assert_eq!(slot.outcome_code.as_deref(), Some("RUN_ALREADY_ACTIVE"));
    let refused = engine.runs().get(slot.run_ids[0]).unwrap();
    assert_eq!(refused.error_code.as_deref(), Some("RUN_ALREADY_ACTIVE"));
    assert_eq!(refused.meta["blockedStage"], "lock");
    // A later tick does not retry the skipped slot.
    clock.set(ts("2026-11-22T12:00:00.000Z"));
    let fire = ScheduledRuns::new(engine.clone());
    engine.schedules().tick(clock.now(), &fire).unwrap();
    assert_eq!(engine.schedules().slots("targets-only").unwrap(), slots);
}

/// Before issue 14 a ticker without the schedule's pipeline (the operator's CLI on a host's
/// file) claimed the slot and failed it `UNKNOWN_PIPELINE`: the host never ran it.
#[test]
fn regression_a_ticker_without_the_pipeline_used_up_the_slot_as_unknown_pipeline() {
    let (engine, clock) = mem_engine();
    clock.set(ts("2026-11-22T11:00:00.000Z"));
    engine.schedules().ensure_default().unwrap();
    clock.set(ts("2026-11-22T11:30:00.000Z"));
    let other = ScheduledRuns::new(engine.clone());
    let report = engine.schedules().tick(clock.now(), &other).unwrap();
    let slot = &engine.schedules().slots("daily-ingest").unwrap()[0];
    assert_eq!(
        slot.status.as_str(),
        "pending",
        "left for a ticker that has it"
    );
    assert_eq!(slot.claimed_by, None);
    // The tick says so.
    assert_eq!(report.slots.len(), 1);
    assert_eq!(
        report.slots[0].code.as_deref(),
        Some(runledger::schedule::PIPELINE_NOT_HERE)
    );
    assert_eq!(report.slots[0].status.as_str(), "pending");
    // A second tick of the same process leaves it again; the host's ticker fires it.
    engine.schedules().tick(clock.now(), &other).unwrap();
    let pipeline = Pipeline::builder("ingest")
        .stage("fetch", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    let host = ScheduledRuns::new(engine.clone()).register(pipeline);
    engine.schedules().tick(clock.now(), &host).unwrap();
    let slot = &engine.schedules().slots("daily-ingest").unwrap()[0];
    assert_eq!(slot.status.as_str(), "fired");
    assert_eq!(slot.run_ids.len(), 2, "both scopes ran");
}
