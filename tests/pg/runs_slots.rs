//! Runs (lock, lease, sweep) and due slots on PostgreSQL through the API.

use std::time::Duration;

use runledger::{RunStatus, Scope, ScopeSelector, SlotStatus, TriggerKind};
use serde_json::json;

use crate::common::TestDb;

#[test]
fn pg_run_lock_lease_and_sweep() {
    let Some(db) = TestDb::new("run_lock") else {
        return;
    };
    let (engine, clock) = db.engine_at("2026-11-22T11:30:00.000Z");
    let runs = engine.runs();
    let lease = Duration::from_secs(60);
    let first = runs
        .start("feed", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    let err = runs
        .start("feed", Scope::Targets, TriggerKind::Schedule, None, lease)
        .unwrap_err();
    let runledger::Error::RunAlreadyActive {
        active_run_id,
        recorded_run_id,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*active_run_id, Some(first));
    let refusal = runs.get(recorded_run_id.unwrap()).unwrap();
    assert_eq!(refusal.status, RunStatus::Failed);
    assert_eq!(refusal.error_code.as_deref(), Some("RUN_ALREADY_ACTIVE"));
    assert_eq!(refusal.meta["blockedStage"], json!("lock"));
    // another scope or account is another lock
    runs.start("feed", Scope::Universe, TriggerKind::Manual, None, lease)
        .unwrap();
    runs.start(
        "feed",
        Scope::Targets,
        TriggerKind::Manual,
        Some("acct-1"),
        lease,
    )
    .unwrap();
    // renewing keeps it; past the lease, the sweep finalizes it, and the key is free again
    clock.advance(Duration::from_secs(50));
    runs.renew_lease(first, lease).unwrap();
    clock.advance(Duration::from_secs(50));
    // (the other two runs' leases ran out: only they are finalized)
    assert!(!runs.sweep().unwrap().contains(&first));
    clock.advance(Duration::from_secs(20));
    let swept = runs.sweep().unwrap();
    assert!(swept.contains(&first), "{swept:?}");
    let abandoned = runs.get(first).unwrap();
    assert_eq!(abandoned.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(abandoned.duration_ms, Some(120_000));
    assert_eq!(
        runs.renew_lease(first, lease).unwrap_err().code(),
        "RUN_ENDED"
    );
    let next = runs
        .start("feed", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    runs.finish(
        next,
        RunStatus::Failed,
        Some(("UPSTREAM", "503")),
        &json!({"rows": 0}),
    )
    .unwrap();
    let ended = runs.get(next).unwrap();
    assert_eq!(
        (ended.status, ended.meta["rows"].clone()),
        (RunStatus::Failed, json!(0))
    );
    assert_eq!(
        runs.finish(next, RunStatus::Success, None, &json!({}))
            .unwrap_err()
            .code(),
        "RUN_ENDED"
    );
    // an expired holder is finalized by the next start of its key
    let held = runs
        .start("other", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    clock.advance(Duration::from_secs(61));
    let took = runs
        .start("other", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    assert_ne!(took, held);
    assert_eq!(
        runs.get(held).unwrap().error_code.as_deref(),
        Some("ABANDONED")
    );
}

#[test]
fn pg_slots_materialize_and_fire_once() {
    let Some(db) = TestDb::new("slots") else {
        return;
    };
    let (engine, clock) = db.engine_at("2026-11-22T11:30:00.000Z");
    let schedules = engine.schedules();
    let rule = "every 15m".parse().unwrap();
    let zone = "Europe/Zurich".parse().unwrap();
    let s = schedules
        .create("feed-15m", "feed", ScopeSelector::Targets, &rule, &zone)
        .unwrap();
    let due = engine.now() - Duration::from_secs(1);
    let slot = schedules.materialize(s, due).unwrap().unwrap();
    // the same instant (another node, a clock behind) is not materialized twice
    assert_eq!(schedules.materialize(s, due).unwrap(), None);
    assert_eq!(
        schedules
            .materialize(s, due - Duration::from_secs(900))
            .unwrap(),
        None
    );
    // a slot not yet due is not claimed
    let later = schedules
        .materialize(s, engine.now() + Duration::from_secs(900))
        .unwrap()
        .unwrap();
    let claims = schedules.claim_due("a", 10).unwrap();
    assert_eq!(claims.iter().map(|c| c.slot_id).collect::<Vec<_>>(), [slot]);
    assert!(schedules.claim_due("b", 10).unwrap().is_empty());
    let run = engine
        .runs()
        .start_for_slot(
            "feed",
            runledger::Scope::Targets,
            runledger::TriggerKind::Schedule,
            None,
            Duration::from_secs(60),
            Some(slot),
        )
        .unwrap();
    schedules.fired(&claims[0], &[run]).unwrap();
    assert_eq!(
        schedules.fired(&claims[0], &[run]).unwrap_err().code(),
        "ILLEGAL_TRANSITION"
    );
    let fired = schedules.slot(slot).unwrap();
    assert_eq!(
        (fired.status, fired.run_ids.clone()),
        (SlotStatus::Fired, vec![run])
    );
    assert_eq!(engine.runs().get(run).unwrap().meta["slotId"], json!(slot));
    clock.advance(Duration::from_secs(1000));
    let claims = schedules.claim_due("b", 10).unwrap();
    assert_eq!(
        claims.iter().map(|c| c.slot_id).collect::<Vec<_>>(),
        [later]
    );
    schedules
        .failed(&claims[0], "FIRE_FAILED", Some("boom"))
        .unwrap();
    assert_eq!(schedules.slot(later).unwrap().status, SlotStatus::Failed);
}
