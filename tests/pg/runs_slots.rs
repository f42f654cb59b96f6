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

/// `run::TRANSITIONS` and `schedule::state::TRANSITIONS` against their PL/pgSQL triggers,
/// pair by pair through raw SQL (rows planted with triggers off): an update is accepted
/// exactly when the Rust table has the pair, and a refused one is refused by the machine.
#[test]
fn pg_run_and_slot_state_machines_agree_with_sql() {
    let Some(mut db) = TestDb::new("run_slot_machines") else {
        return;
    };
    let (engine, _clock) = db.engine_at("2026-11-22T12:00:00.000Z");
    let (t0, t1) = ("2026-11-22T10:00:00.000Z", "2026-11-22T11:00:00.000Z");
    let real_run = engine
        .runs()
        .start(
            "real",
            Scope::Targets,
            TriggerKind::Manual,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    let check = |db: &mut TestDb,
                 plant: String,
                 update: String,
                 allowed: bool,
                 what: String,
                 prefix: &str| {
        db.exec("set session_replication_role = replica").unwrap();
        let id: i64 = db.raw.query_one(plant.as_str(), &[]).unwrap().get(0);
        db.exec("set session_replication_role = origin").unwrap();
        match db.exec(&update.replace("$id", &id.to_string())) {
            Ok(n) => {
                assert!(allowed, "{what} accepted by SQL, not in TRANSITIONS");
                assert_eq!(n, 1);
            }
            Err(message) => {
                assert!(!allowed, "{what} in TRANSITIONS, refused by SQL: {message}");
                assert!(message.starts_with(prefix), "{what}: {message}");
            }
        }
    };
    let mut n = 0;
    for from in RunStatus::ALL {
        for to in RunStatus::ALL {
            if from == to {
                continue;
            }
            n += 1;
            let (finished, duration, code) = match from {
                RunStatus::Started => ("null", "null", "null"),
                RunStatus::Success => ("'$t0'", "0", "null"),
                RunStatus::Failed => ("'$t0'", "0", "'X'"),
            };
            let plant = format!(
                "insert into ingest_runs (pipeline, scope, trigger, status, lock_key, account_id, started_at, lease_expires_at,
                                          finished_at, duration_ms, error_code)
                 values ('m', 'targets', 'manual', '{from}', 'm:targets:a{n}', 'a{n}', '$t0', '$t0', {finished}, {duration}, {code})
                 returning id"
            )
            .replace("$t0", t0);
            let set = match to {
                RunStatus::Started => "finished_at = null, duration_ms = null, error_code = null".to_string(),
                RunStatus::Success => format!("finished_at = '{t1}', duration_ms = runledger_ts_ms('{t1}') - runledger_ts_ms(started_at), error_code = null"),
                RunStatus::Failed => format!("finished_at = '{t1}', duration_ms = runledger_ts_ms('{t1}') - runledger_ts_ms(started_at), error_code = 'X'"),
            };
            let update = format!("update ingest_runs set status = '{to}', {set} where id = $id");
            let allowed = runledger::run::state::TRANSITIONS
                .iter()
                .any(|(f, t, _)| *f == from && *t == to);
            check(
                &mut db,
                plant,
                update,
                allowed,
                format!("run {from} -> {to}"),
                "ILLEGAL_TRANSITION: ingest_runs",
            );
        }
    }
    let rule = "every 15m".parse().unwrap();
    let zone = "UTC".parse().unwrap();
    let s = engine
        .schedules()
        .create("m", "real", ScopeSelector::Targets, &rule, &zone)
        .unwrap();
    for from in SlotStatus::ALL {
        for to in SlotStatus::ALL {
            if from == to {
                continue;
            }
            n += 1;
            let (claimed_at, claimed_by, finished, run_ids, code) = match from {
                SlotStatus::Pending => ("null", "null", "null", "'[]'", "null"),
                SlotStatus::Claimed => ("'$t0'", "'a'", "null", "'[]'", "null"),
                SlotStatus::Fired => ("'$t0'", "'a'", "'$t0'", "'[$run]'", "null"),
                SlotStatus::Skipped => ("null", "null", "'$t0'", "'[]'", "'X'"),
                SlotStatus::Failed => ("'$t0'", "'a'", "'$t0'", "'[]'", "'X'"),
            };
            let due = format!("2026-11-22T09:{:02}:00.000Z", n % 60);
            let plant = format!(
                "insert into due_runs (schedule_id, due_at, status, created_at, claimed_at, claimed_by, finished_at, run_ids, outcome_code)
                 values ({s}, '{due}', '{from}', '$t0', {claimed_at}, {claimed_by}, {finished}, {run_ids}, {code})
                 returning id"
            )
            .replace("$t0", t0)
            .replace("$run", &real_run.to_string());
            let set = match to {
                SlotStatus::Pending => "claimed_at = null, claimed_by = null, finished_at = null, run_ids = '[]', outcome_code = null".to_string(),
                SlotStatus::Claimed => format!("claimed_at = coalesce(claimed_at, '{t1}'), claimed_by = coalesce(claimed_by, 'a'), finished_at = null, run_ids = '[]', outcome_code = null"),
                SlotStatus::Fired => format!("claimed_at = coalesce(claimed_at, '{t1}'), claimed_by = coalesce(claimed_by, 'a'), finished_at = coalesce(finished_at, '{t1}'), run_ids = '[{real_run}]', outcome_code = null"),
                SlotStatus::Skipped => format!("finished_at = coalesce(finished_at, '{t1}'), run_ids = '[]', outcome_code = 'X'"),
                SlotStatus::Failed => format!("claimed_at = coalesce(claimed_at, '{t1}'), claimed_by = coalesce(claimed_by, 'a'), finished_at = coalesce(finished_at, '{t1}'), run_ids = '[]', outcome_code = 'X'"),
            };
            let update = format!("update due_runs set status = '{to}', {set} where id = $id");
            let allowed = runledger::schedule::state::TRANSITIONS
                .iter()
                .any(|(f, t, _)| *f == from && *t == to);
            check(
                &mut db,
                plant,
                update,
                allowed,
                format!("slot {from} -> {to}"),
                "ILLEGAL_TRANSITION: due_runs",
            );
        }
    }
    assert_eq!(n, 6 + 20);
}
