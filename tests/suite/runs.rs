//! Ingestion runs: the state machine in Rust and SQL, the lock, leases, stages, snapshots.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use runledger::run::{
    Gate, Pipeline, RetryPolicy, Run, RunFilter, RunStatus, Scope, ScopeSelector, StageError,
    StageOutput, StageStatus, TriggerKind, TriggerOptions,
};
use runledger::{Engine, Error, ManualClock};
use serde_json::json;

use crate::common::*;
use crate::snap_json;

/// The reference pipeline of the snapshots: token + analysis_init gates, four runners.
fn flex(clock: &ManualClock) -> runledger::run::PipelineBuilder {
    Pipeline::builder("flex")
        .gate(
            Gate::Token,
            ok_stage(clock, 5, json!({"tokenConfigured": true})),
        )
        .gate(Gate::AnalysisInit, ok_stage(clock, 20, json!(null)))
        .stage(
            "request",
            ok_stage(clock, 800, json!({"referenceCode": "1234567890"})),
        )
        .stage("poll", ok_stage(clock, 3_000, json!({"polls": 2})))
        .stage("download", ok_stage(clock, 1_200, json!({"bytes": 48_213})))
        .stage(
            "persist",
            ok_stage(clock, 150, json!({"trades": 12, "positions": 4})),
        )
}

fn one(engine: &Engine, p: &Pipeline, scope: Scope) -> runledger::Result<Run> {
    let mut out = engine
        .runs()
        .trigger(p, scope.into(), TriggerKind::Manual)
        .unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0).result
}

const START_SQL: &str = "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
    values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T11:30:00.000Z', '2026-11-22T11:35:00.000Z')";

/// SQL moving run 1 to `to` with every other column consistent, so only the transition
/// rules can refuse it.
fn move_sql(to: RunStatus) -> &'static str {
    match to {
        RunStatus::Started => "update ingest_runs set status = 'started', finished_at = null, duration_ms = null, error_code = null, error_message = null where id = 1",
        RunStatus::Success => "update ingest_runs set status = 'success', finished_at = '2026-11-22T11:31:00.250Z', duration_ms = 60250, error_code = null, error_message = null where id = 1",
        RunStatus::Failed => "update ingest_runs set status = 'failed', finished_at = '2026-11-22T11:31:00.250Z', duration_ms = 60250, error_code = 'X', error_message = 'x' where id = 1",
    }
}

// ---------------------------------------------------------------- invariant 1

#[test]
fn run_state_machine_agrees_with_sql() {
    let table = machine_equals_sql(
        &RunStatus::ALL,
        RunStatus::can_transition_to,
        |from| {
            let (engine, _clock) = mem_engine();
            exec(&engine, START_SQL).unwrap();
            if from != RunStatus::Started {
                exec(&engine, move_sql(from)).unwrap();
            }
            (engine, 1)
        },
        |engine, _id, to| exec(engine, move_sql(to)),
        |engine, id| engine.runs().get(id).unwrap().status,
    );
    let allowed = table.iter().filter(|l| l.ends_with("allowed")).count();
    assert_eq!(
        allowed,
        runledger::run::state::TRANSITIONS.len(),
        "{table:#?}"
    );
}

#[test]
fn run_state_machine_agrees_with_the_api() {
    // started -> success and started -> failed happen through trigger (and sweep, below);
    // terminal runs never change through any API call.
    let (engine, clock) = mem_engine();
    let ok = flex(&clock).build().unwrap();
    let bad = Pipeline::builder("bad")
        .stage(
            "x",
            failing_stage(&clock, 1, StageError::fatal("BOOM", "boom")),
        )
        .build()
        .unwrap();
    let s = one(&engine, &ok, Scope::Targets).unwrap();
    let f = one(&engine, &bad, Scope::Targets).unwrap();
    let seen: Vec<(RunStatus, RunStatus)> = vec![
        (RunStatus::Started, s.status),
        (RunStatus::Started, f.status),
    ];
    for &(from, to) in &seen {
        assert!(from.can_transition_to(to));
    }
    let table: Vec<(RunStatus, RunStatus)> = runledger::run::state::TRANSITIONS
        .iter()
        .map(|t| (t.0, t.1))
        .collect();
    assert_eq!(
        seen, table,
        "the API reaches exactly the table's transitions"
    );
    let before = dump(&engine);
    clock.advance(secs(3600));
    assert!(engine.runs().sweep().unwrap().is_empty());
    assert_eq!(dump(&engine), before, "sweep leaves terminal runs alone");
    assert_eq!(engine.runs().get(s.id).unwrap(), s);
    assert_eq!(engine.runs().get(f.id).unwrap(), f);
}

#[test]
fn sql_refuses_every_broken_run_row() {
    let (engine, _clock) = mem_engine();
    exec(&engine, START_SQL).unwrap();
    exec(&engine, "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at, status, finished_at, duration_ms, error_code, meta_json)
        values ('p', 'universe', 'manual', 'p:universe', '2026-11-22T11:30:00.000Z', null, 'failed', '2026-11-22T11:30:00.000Z', 0, 'RUN_ALREADY_ACTIVE', '{\"blockedStage\":\"lock\",\"errorCode\":\"RUN_ALREADY_ACTIVE\",\"source\":\"manual\",\"scope\":\"universe\"}')").unwrap();
    let before = dump(&engine);
    let cases: &[(&str, &str)] = &[
        (START_SQL, "RUN_ALREADY_ACTIVE"),
        ("update ingest_runs set error_message = 'rewritten' where id = 2", "ILLEGAL_TRANSITION"),
        ("update ingest_runs set status = 'started', finished_at = null, duration_ms = null, error_code = null where id = 2", "ILLEGAL_TRANSITION"),
        ("delete from ingest_runs where id = 1", "ILLEGAL_TRANSITION"),
        ("update ingest_runs set timeline = '[' where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set timeline = '{}' where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set meta_json = '[]' where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set meta_json = 'nope' where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set status = 'success', finished_at = '2026-11-22T11:31:00.250Z', duration_ms = 60251 where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set status = 'success', finished_at = '2026-11-22T11:31:00.250Z', duration_ms = 60249 where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set status = 'success', finished_at = null, duration_ms = null where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set status = 'failed', finished_at = '2026-11-22T11:31:00.250Z', duration_ms = 60250 where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set status = 'success', finished_at = '2026-11-22T11:29:00.000Z', duration_ms = -60000 where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set finished_at = '2026-11-22T11:31:00.250Z', duration_ms = 60250 where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set lease_expires_at = null where id = 1", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set lock_key = 'other' where id = 1", "IMMUTABLE"),
        ("update ingest_runs set started_at = '2026-11-22T11:00:00.000Z' where id = 1", "IMMUTABLE"),
        ("update ingest_runs set scope = 'universe' where id = 1", "IMMUTABLE"),
        ("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('p', 'both', 'manual', 'k2', '2026-11-22T11:30:00.000Z', '2026-11-22T11:35:00.000Z')", "CONSTRAINT_VIOLATION"),
        ("update ingest_runs set started_at = '2026-11-22 11:30:00' where id = 1", "IMMUTABLE"),
        ("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, status, finished_at, duration_ms) values ('p', 'targets', 'manual', 'k2', '2026-11-22T11:30:00.000Z', 'success', '2026-11-22T11:30:00.000Z', 0)", "ILLEGAL_TRANSITION"),
        ("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, status, finished_at, duration_ms, error_code) values ('p', 'targets', 'manual', 'k2', '2026-11-22T11:30:00.000Z', 'failed', '2026-11-22T11:30:00.000Z', 0, 'X')", "ILLEGAL_TRANSITION"),
        ("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('p', 'targets', 'cron', 'k2', '2026-11-22T11:30:00.000Z', '2026-11-22T11:35:00.000Z')", "CONSTRAINT_VIOLATION"),
    ];
    for &(sql, code) in cases {
        let e = exec(&engine, sql).expect_err(sql);
        assert_eq!(e.code(), code, "{sql}: {e}");
        assert_eq!(dump(&engine), before, "{sql} changed the database");
    }
    // Entries have the one shape the reader knows (since V5), and the timeline only grows.
    let e = exec(
        &engine,
        "update ingest_runs set timeline = '[1,2]' where id = 1",
    )
    .unwrap_err();
    assert_eq!(e.code(), "INVALID_SHAPE", "{e}");
    let entry = |stage: &str| {
        format!(
            "json_object('v', 1, 'stage', '{stage}', 'kind', 'gate', 'attempt', 1, 'status', 'success', \
             'started_at', '2026-11-22T11:30:00.000Z', 'finished_at', '2026-11-22T11:30:00.000Z', \
             'duration_ms', 0, 'error_code', null, 'message', null, 'detail', null)"
        )
    };
    exec(
        &engine,
        &format!(
            "update ingest_runs set timeline = json_array({}, {}) where id = 1",
            entry("a"),
            entry("b")
        ),
    )
    .unwrap();
    let e = exec(
        &engine,
        &format!(
            "update ingest_runs set timeline = json_array({}) where id = 1",
            entry("a")
        ),
    )
    .unwrap_err();
    assert_eq!(e.code(), "IMMUTABLE", "{e}");
    // an earlier (closed) entry is never rewritten in place
    let e = exec(
        &engine,
        &format!(
            "update ingest_runs set timeline = json_array({}, {}) where id = 1",
            entry("x"),
            entry("b")
        ),
    )
    .unwrap_err();
    assert_eq!(e.code(), "IMMUTABLE", "{e}");
}

#[test]
fn duration_check_is_exact_to_the_millisecond_over_long_spans() {
    let (engine, _clock) = mem_engine();
    exec(&engine, START_SQL).unwrap();
    // 400 days, 7 h, 3 min, 59.999 s after 11:30:00.000
    let exact: i64 = 400 * 86_400_000 + 7 * 3_600_000 + 3 * 60_000 + 59_999;
    for wrong in [exact - 1, exact + 1] {
        let sql = format!("update ingest_runs set status = 'success', finished_at = '2027-12-27T18:33:59.999Z', duration_ms = {wrong} where id = 1");
        assert_eq!(
            exec(&engine, &sql).unwrap_err().code(),
            "CONSTRAINT_VIOLATION"
        );
    }
    let sql = format!("update ingest_runs set status = 'success', finished_at = '2027-12-27T18:33:59.999Z', duration_ms = {exact} where id = 1");
    exec(&engine, &sql).unwrap();
}

// ---------------------------------------------------------------- snapshots of timelines

#[test]
fn success_run_timeline() {
    let (engine, clock) = mem_engine();
    let p = flex(&clock).build().unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(run.duration_ms, Some(5 + 20 + 800 + 3_000 + 1_200 + 150));
    assert!(run
        .timeline
        .iter()
        .all(|e| e.status == StageStatus::Success));
    snap_json!("success_run", &run);
}

#[test]
fn gate_blocked_run_never_starts_its_runners() {
    let (engine, clock) = mem_engine();
    let runner_calls = Arc::new(AtomicUsize::new(0));
    let calls = runner_calls.clone();
    let p = Pipeline::builder("flex")
        .gate(
            Gate::Readiness,
            ok_stage(&clock, 10, json!({"calendar": "open"})),
        )
        .gate(
            Gate::Token,
            failing_stage(
                &clock,
                2,
                StageError::fatal(
                    "TOKEN_MISSING",
                    "no Flex token is configured for this account",
                ),
            ),
        )
        .gate(Gate::AnalysisInit, ok_stage(&clock, 1, json!(null)))
        .stage("request", move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Universe).unwrap();
    assert_eq!(runner_calls.load(Ordering::SeqCst), 0);
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("TOKEN_MISSING"));
    assert_eq!(run.meta["blockedStage"], "token");
    assert_eq!(run.meta["errorCode"], "TOKEN_MISSING");
    assert_eq!(run.meta["source"], "manual");
    assert_eq!(run.meta["scope"], "universe");
    assert_eq!(run.timeline.len(), 2, "analysis_init and runners never ran");
    snap_json!("gate_blocked_run", &run);
}

#[test]
fn runner_failure_is_recorded_with_its_stage() {
    let (engine, clock) = mem_engine();
    let p = flex(&clock)
        .stage(
            "verify",
            failing_stage(
                &clock,
                40,
                StageError::fatal(
                    "SECTION_MISSING",
                    "required section OpenPositions is absent",
                )
                .with_detail(json!({"missing": ["OpenPositions"]})),
            ),
        )
        .stage("never", ok_stage(&clock, 1, json!(null)))
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.meta["failedStage"], "verify");
    assert!(run.meta.get("blockedStage").is_none());
    assert!(run.timeline.iter().all(|e| e.stage != "never"));
    snap_json!("runner_failure_run", &run);
}

#[test]
fn a_panicking_stage_ends_the_run_failed_with_stage_panic() {
    let (engine, clock) = mem_engine();
    let c = clock.clone();
    let p = flex(&clock)
        .stage("parse", move |_| -> Result<StageOutput, StageError> {
            c.advance(ms(7));
            panic!("index out of bounds: the len is 0 but the index is 3")
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("STAGE_PANIC"));
    assert!(run
        .error_message
        .as_deref()
        .unwrap()
        .contains("index out of bounds"));
    // The lock is free again.
    let again = one(&engine, &flex(&clock).build().unwrap(), Scope::Targets).unwrap();
    assert_eq!(again.status, RunStatus::Success);
    snap_json!("panic_run", &run);
}

#[test]
fn lock_rejection_is_itself_a_failed_run() {
    let (engine, clock) = mem_engine();
    let inner = Arc::new(Mutex::new(None));
    let seen = inner.clone();
    let e2 = engine.clone();
    let c2 = clock.clone();
    // While the first run is inside "poll", a second trigger of the same lock arrives.
    let p = Pipeline::builder("flex")
        .stage("request", ok_stage(&clock, 800, json!(null)))
        .stage("poll", move |_| {
            c2.advance(ms(1_000));
            let nested = Pipeline::builder("flex")
                .stage("request", |_| Ok(StageOutput::done()))
                .build()
                .unwrap();
            let out = e2
                .runs()
                .trigger(&nested, ScopeSelector::Targets, TriggerKind::Schedule)
                .unwrap();
            *seen.lock().unwrap() = Some(out.into_iter().next().unwrap().result);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let first = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(first.status, RunStatus::Success);
    let rejected = inner.lock().unwrap().take().unwrap();
    match rejected {
        Err(Error::RunAlreadyActive {
            lock_key,
            active_run_id,
            lease_expires_at,
            recorded_run_id,
        }) => {
            assert_eq!(lock_key, "flex:targets");
            assert_eq!(active_run_id, Some(first.id));
            // The refusal says when the holder's lease runs out.
            assert!(lease_expires_at.is_some());
            assert!(lease_expires_at <= first.lease_expires_at, "renewed since");
            assert_eq!(recorded_run_id, Some(first.id + 1));
        }
        other => panic!("unexpected {other:?}"),
    }
    let record = engine
        .runs()
        .list(&RunFilter {
            status: Some(RunStatus::Failed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(record.len(), 1);
    let record = &record[0];
    assert_eq!(record.error_code.as_deref(), Some("RUN_ALREADY_ACTIVE"));
    assert_eq!(record.meta["blockedStage"], "lock");
    assert_eq!(record.meta["errorCode"], "RUN_ALREADY_ACTIVE");
    assert_eq!(record.meta["source"], "schedule");
    snap_json!("lock_rejection_run", record);
}

// ---------------------------------------------------------------- invariant 4: leases

#[test]
fn an_expired_run_is_swept_as_abandoned_and_its_lock_freed() {
    let (engine, clock, dir) = file_engine();
    let child = spawn_child(
        "runs::child_crashes_mid_stage",
        &[(
            "RUNLEDGER_DB",
            dir.path().join("runledger.db").display().to_string(),
        )],
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(42),
        "child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let active = engine
        .runs()
        .list(&RunFilter {
            status: Some(RunStatus::Started),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(active.len(), 1, "the crashed run still holds its lock");
    assert!(
        engine.runs().sweep().unwrap().is_empty(),
        "its lease has not expired yet"
    );
    clock.set(active[0].lease_expires_at.unwrap());
    assert_eq!(engine.runs().sweep().unwrap(), vec![active[0].id]);
    let run = engine.runs().get(active[0].id).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(run.meta["openStage"], "download");
    let last = run.timeline.last().unwrap();
    assert_eq!(
        (last.stage.as_str(), last.status),
        ("download", StageStatus::Failed)
    );
    snap_json!("abandoned_run", &run);
    let again = one(&engine, &flex(&clock).build().unwrap(), Scope::Targets).unwrap();
    assert_eq!(again.status, RunStatus::Success, "the lock is free");
}

/// Child of `an_expired_run_is_swept_as_abandoned_and_its_lock_freed`: dies inside a stage.
#[test]
#[ignore]
fn child_crashes_mid_stage() {
    if !is_child() {
        return;
    }
    let clock = ManualClock::new(t0());
    let engine = Engine::open_with(
        std::env::var("RUNLEDGER_DB").unwrap(),
        crate::common::options().with_clock(clock.clone()),
    )
    .unwrap();
    let p = Pipeline::builder("flex")
        .lease(secs(60))
        .gate(Gate::Token, ok_stage(&clock, 5, json!(null)))
        .stage(
            "request",
            ok_stage(&clock, 800, json!({"referenceCode": "1234567890"})),
        )
        .stage("download", |_| -> Result<StageOutput, StageError> {
            std::process::exit(42)
        })
        .build()
        .unwrap();
    let _ = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Schedule);
    unreachable!("the stage exits the process");
}

#[test]
fn the_next_trigger_finalizes_an_expired_holder_first() {
    let (engine, clock) = mem_engine();
    exec(&engine, "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
        values ('flex', 'targets', 'schedule', 'flex:targets', '2026-11-22T11:00:00.000Z', '2026-11-22T11:05:00.000Z')").unwrap();
    let p = flex(&clock).build().unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Success);
    let old = engine.runs().get(1).unwrap();
    assert_eq!(old.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(old.finished_at, Some(t0()));
    assert_eq!(old.duration_ms, Some(30 * 60_000));
}

#[test]
fn a_holder_that_outlived_its_lease_stops_once_swept() {
    let (engine, clock) = mem_engine();
    let e2 = engine.clone();
    let c2 = clock.clone();
    let after = Arc::new(AtomicUsize::new(0));
    let after2 = after.clone();
    let p = Pipeline::builder("flex")
        .lease(secs(10))
        .stage("hang", move |_| {
            c2.advance(secs(11));
            // Meanwhile another process sweeps.
            assert_eq!(e2.runs().sweep().unwrap().len(), 1);
            Ok(StageOutput::done())
        })
        .stage("after", move |_| {
            after2.fetch_add(1, Ordering::SeqCst);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "a swept run runs no further stage"
    );
    assert_eq!(run.timeline.len(), 1);
}

// ---------------------------------------------------------------- invariant 3: the lock

fn contended_pipeline(engine_for_wait: Engine, expected_rejections: i64) -> Pipeline {
    Pipeline::builder("flex")
        .stage("hold", move |_| {
            // Hold the lock until every other trigger has been turned away (bounded wait).
            for _ in 0..30_000 {
                let n: i64 = engine_for_wait
                    .with_connection(|c| {
                        Ok(c.query_row(
                            "select count(*) from ingest_runs where error_code = 'RUN_ALREADY_ACTIVE'",
                            [],
                            |r| r.get(0),
                        )?)
                    })
                    .unwrap();
                if n >= expected_rejections {
                    return Ok(StageOutput::done());
                }
                std::thread::sleep(ms(1));
            }
            Err(StageError::fatal("TEST_TIMEOUT", "the other triggers never arrived"))
        })
        .build()
        .unwrap()
}

fn assert_one_winner(engine: &Engine, total: usize) {
    let all = engine.runs().list(&RunFilter::default()).unwrap();
    assert_eq!(all.len(), total);
    let winners: Vec<&Run> = all
        .iter()
        .filter(|r| r.status == RunStatus::Success)
        .collect();
    assert_eq!(winners.len(), 1, "{all:#?}");
    for r in all.iter().filter(|r| r.status != RunStatus::Success) {
        assert_eq!(r.error_code.as_deref(), Some("RUN_ALREADY_ACTIVE"));
        assert_eq!(r.meta["blockedStage"], "lock");
        assert_eq!(r.meta["activeRunId"], winners[0].id);
    }
}

#[test]
fn eight_threads_trigger_at_once_and_exactly_one_wins() {
    let (engine, _clock, dir) = file_engine();
    let path = dir.path().join("runledger.db");
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                // Each thread has its own connection, as separate hosts would.
                let engine = Engine::open_with(
                    &path,
                    crate::common::options().with_clock(ManualClock::new(t0())),
                )
                .unwrap();
                let p = contended_pipeline(engine.clone(), 7);
                barrier.wait();
                let mut out = engine
                    .runs()
                    .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
                    .unwrap();
                out.remove(0).result.map(|r| r.status).map_err(|e| e.code())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == Ok(RunStatus::Success))
            .count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == Err("RUN_ALREADY_ACTIVE"))
            .count(),
        7,
        "{results:?}"
    );
    assert_one_winner(&engine, 8);
}

#[test]
fn several_processes_trigger_at_once_and_exactly_one_wins() {
    let (engine, _clock, dir) = file_engine();
    let db = dir.path().join("runledger.db").display().to_string();
    let children: Vec<_> = (0..4)
        .map(|_| {
            spawn_child(
                "runs::child_triggers_contended",
                &[("RUNLEDGER_DB", db.clone())],
            )
        })
        .collect();
    let outcomes: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find_map(|l| {
                    l.split_once("OUTCOME ")
                        .map(|(_, rest)| rest.trim().to_string())
                })
                .unwrap_or_else(|| format!("no outcome in {text:?}"))
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "success").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| *o == "RUN_ALREADY_ACTIVE")
            .count(),
        3,
        "{outcomes:?}"
    );
    assert_one_winner(&engine, 4);
}

/// Child of `several_processes_trigger_at_once_and_exactly_one_wins`.
#[test]
#[ignore]
fn child_triggers_contended() {
    if !is_child() {
        return;
    }
    let engine = Engine::open_with(
        std::env::var("RUNLEDGER_DB").unwrap(),
        crate::common::options().with_clock(ManualClock::new(t0())),
    )
    .unwrap();
    let p = contended_pipeline(engine.clone(), 3);
    let mut out = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Schedule)
        .unwrap();
    match out.remove(0).result {
        Ok(run) => println!("OUTCOME {}", run.status),
        Err(e) => println!("OUTCOME {}", e.code()),
    }
}

#[test]
fn accounts_have_their_own_locks() {
    let (engine, clock) = mem_engine();
    let p = flex(&clock).build().unwrap();
    let opts = TriggerOptions {
        account_id: Some("U1234567".into()),
    };
    let out = engine
        .runs()
        .trigger_with(&p, ScopeSelector::Targets, TriggerKind::Manual, &opts)
        .unwrap();
    let run = out.into_iter().next().unwrap().result.unwrap();
    assert_eq!(run.lock_key, "flex:targets:U1234567");
    assert_eq!(run.account_id.as_deref(), Some("U1234567"));
    let bad = TriggerOptions {
        account_id: Some(String::new()),
    };
    let before = dump(&engine);
    let e = engine
        .runs()
        .trigger_with(&p, ScopeSelector::Targets, TriggerKind::Manual, &bad)
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
    assert_eq!(dump(&engine), before);
}

// ---------------------------------------------------------------- pools

#[test]
fn both_runs_targets_then_universe_and_one_failure_never_stops_the_other() {
    let (engine, clock) = mem_engine();
    let p = Pipeline::builder("flex")
        .gate(Gate::Token, |ctx| match ctx.scope() {
            Scope::Targets => Err(StageError::fatal("TOKEN_MISSING", "no token")),
            Scope::Universe => Ok(StageOutput::done()),
        })
        .stage("request", ok_stage(&clock, 10, json!(null)))
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&p, ScopeSelector::Both, TriggerKind::Schedule)
        .unwrap();
    let got: Vec<(Scope, RunStatus)> = out
        .iter()
        .map(|o| (o.scope, o.result.as_ref().unwrap().status))
        .collect();
    assert_eq!(
        got,
        [
            (Scope::Targets, RunStatus::Failed),
            (Scope::Universe, RunStatus::Success)
        ]
    );

    // A panic in targets does not stop universe either.
    let q = Pipeline::builder("flex")
        .stage("request", |ctx| -> Result<StageOutput, StageError> {
            if ctx.scope() == Scope::Targets {
                panic!("targets broke");
            }
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&q, ScopeSelector::Both, TriggerKind::Schedule)
        .unwrap();
    let got: Vec<_> = out
        .iter()
        .map(|o| o.result.as_ref().unwrap().error_code.clone())
        .collect();
    assert_eq!(got, [Some("STAGE_PANIC".to_string()), None]);
}

#[test]
fn a_held_targets_lock_does_not_block_universe() {
    let (engine, _clock) = mem_engine();
    exec(&engine, "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
        values ('flex', 'targets', 'schedule', 'flex:targets', '2026-11-22T11:29:00.000Z', '2026-11-22T12:00:00.000Z')").unwrap();
    let p = noop_pipeline("flex", "request");
    let out = engine
        .runs()
        .trigger(&p, ScopeSelector::Both, TriggerKind::Schedule)
        .unwrap();
    assert_eq!(
        out[0].result.as_ref().unwrap_err().code(),
        "RUN_ALREADY_ACTIVE"
    );
    assert_eq!(out[1].result.as_ref().unwrap().status, RunStatus::Success);
}

#[test]
fn scopes_a_pipeline_does_not_serve_are_refused_before_any_write() {
    let (engine, _clock) = mem_engine();
    let p = Pipeline::builder("flex")
        .scopes(&[Scope::Targets])
        .stage("request", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    let before = dump(&engine);
    let e = engine
        .runs()
        .trigger(&p, ScopeSelector::Universe, TriggerKind::Manual)
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
    assert_eq!(dump(&engine), before);
    let out = engine
        .runs()
        .trigger(&p, ScopeSelector::Both, TriggerKind::Manual)
        .unwrap();
    assert_eq!(out.len(), 1, "both = the served scopes");
    assert_eq!(out[0].scope, Scope::Targets);
}

#[test]
fn invalid_pipelines_are_refused_at_build() {
    let noop = |_: &mut runledger::run::StageContext<'_>| Ok(StageOutput::done());
    let cases = [
        Pipeline::builder("").stage("a", noop).build(),
        Pipeline::builder("has space").stage("a", noop).build(),
        Pipeline::builder("p").build(),
        Pipeline::builder("p")
            .stage("a", noop)
            .stage("a", noop)
            .build(),
        Pipeline::builder("p").stage("token", noop).build(),
        Pipeline::builder("p").stage("lock", noop).build(),
        Pipeline::builder("p")
            .gate(Gate::Token, noop)
            .gate(Gate::Token, noop)
            .stage("a", noop)
            .build(),
        Pipeline::builder("p").scopes(&[]).stage("a", noop).build(),
        Pipeline::builder("p")
            .retry(RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::none()
            })
            .stage("a", noop)
            .build(),
        Pipeline::builder("p")
            .retry(RetryPolicy {
                max_attempts: 11,
                ..RetryPolicy::none()
            })
            .stage("a", noop)
            .build(),
        Pipeline::builder("p")
            .lease(ms(10))
            .stage("a", noop)
            .build(),
    ];
    for (i, c) in cases.into_iter().enumerate() {
        assert_eq!(c.unwrap_err().code(), "INVALID_INPUT", "case {i}");
    }
}

#[test]
fn gates_run_in_their_fixed_order_whatever_the_definition_order() {
    let (engine, _clock) = mem_engine();
    let noop = |_: &mut runledger::run::StageContext<'_>| Ok(StageOutput::done());
    let p = Pipeline::builder("p")
        .stage("request", noop)
        .gate(Gate::AnalysisInit, noop)
        .gate(Gate::Token, noop)
        .gate(Gate::Preflight, noop)
        .gate(Gate::Readiness, noop)
        .build()
        .unwrap();
    assert_eq!(
        p.stage_names(),
        [
            "preflight",
            "readiness",
            "token",
            "analysis_init",
            "request"
        ]
    );
    let run = one(&engine, &p, Scope::Targets).unwrap();
    let order: Vec<&str> = run.timeline.iter().map(|e| e.stage.as_str()).collect();
    assert_eq!(order, p.stage_names());
}

#[test]
fn later_stages_see_earlier_outputs() {
    let (engine, clock) = mem_engine();
    let p = Pipeline::builder("p")
        .stage(
            "request",
            ok_stage(&clock, 1, json!({"referenceCode": "777"})),
        )
        .stage("poll", |ctx| {
            let code = ctx
                .output("request")
                .and_then(|d| d["referenceCode"].as_str())
                .unwrap_or("none")
                .to_string();
            Ok(StageOutput::with_detail(
                json!({"polled": code, "attempt": ctx.attempt(), "run": ctx.run_id()}),
            ))
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(
        run.timeline[1].detail,
        Some(json!({"polled": "777", "attempt": 1, "run": run.id}))
    );
}

// ---------------------------------------------------------------- retries

#[test]
fn retryable_errors_are_retried_with_bounded_backoff_each_attempt_its_own_entry() {
    let (engine, clock) = mem_engine();
    let slept = Arc::new(Mutex::new(Vec::new()));
    let s2 = slept.clone();
    let tries = Arc::new(AtomicUsize::new(0));
    let t2 = tries.clone();
    let c2 = clock.clone();
    let p = Pipeline::builder("flex")
        .retry(RetryPolicy {
            max_attempts: 4,
            initial_backoff: secs(1),
            max_backoff: ms(1_500),
        })
        .sleeper(move |d| s2.lock().unwrap().push(d))
        .stage("poll", move |ctx| {
            c2.advance(ms(100));
            let n = t2.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(ctx.attempt() as usize, n);
            if n < 3 {
                Err(StageError::retryable(
                    "STATEMENT_NOT_READY",
                    "statement generation in progress",
                ))
            } else {
                Ok(StageOutput::done())
            }
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Success);
    let statuses: Vec<(u32, StageStatus)> =
        run.timeline.iter().map(|e| (e.attempt, e.status)).collect();
    assert_eq!(
        statuses,
        [
            (1, StageStatus::Failed),
            (2, StageStatus::Failed),
            (3, StageStatus::Success)
        ]
    );
    assert_eq!(
        *slept.lock().unwrap(),
        [secs(1), ms(1_500)],
        "doubling, capped at max_backoff"
    );

    // Exhausted: the last attempt's error ends the run; a fatal error is never retried.
    let p = Pipeline::builder("flex")
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: ms(1),
            max_backoff: ms(1),
        })
        .sleeper(|_| {})
        .stage("poll", |_| {
            Err(StageError::retryable("TIMEOUT", "timed out"))
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Universe).unwrap();
    assert_eq!((run.status, run.timeline.len()), (RunStatus::Failed, 3));
    let p = Pipeline::builder("other")
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: ms(1),
            max_backoff: ms(1),
        })
        .sleeper(|_| panic!("must not sleep"))
        .stage("poll", |_| {
            Err(StageError::fatal("BAD_QUERY", "bad query id"))
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Universe).unwrap();
    assert_eq!((run.status, run.timeline.len()), (RunStatus::Failed, 1));
}

#[test]
fn list_filters_and_pages() {
    let (engine, clock) = mem_engine();
    let p = flex(&clock).build().unwrap();
    for _ in 0..3 {
        engine
            .runs()
            .trigger(&p, ScopeSelector::Both, TriggerKind::Schedule)
            .unwrap();
    }
    let all = engine.runs().list(&RunFilter::default()).unwrap();
    assert_eq!(all.len(), 6);
    let t = engine
        .runs()
        .list(&RunFilter {
            scope: Some(Scope::Targets),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(t.iter().map(|r| r.id).collect::<Vec<_>>(), [5, 3]);
    let page = engine
        .runs()
        .list(&RunFilter {
            scope: Some(Scope::Targets),
            before_id: Some(3),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    assert!(engine
        .runs()
        .list(&RunFilter {
            pipeline: Some("nope".into()),
            ..Default::default()
        })
        .unwrap()
        .is_empty());
    assert_eq!(
        engine
            .runs()
            .list(&RunFilter {
                limit: 0,
                ..Default::default()
            })
            .unwrap_err()
            .code(),
        "INVALID_INPUT"
    );
    assert_eq!(engine.runs().get(999).unwrap_err().code(), "NOT_FOUND");
}

#[test]
fn a_long_stage_keeps_its_lease_alive_and_learns_when_it_was_swept() {
    let (engine, clock) = mem_engine();
    let (e2, c2) = (engine.clone(), clock.clone());
    let p = Pipeline::builder("slow")
        .lease(Duration::from_secs(60))
        .stage("poll", move |ctx| {
            // Ten minutes of work, renewing the 60 s lease every 30 s: never swept.
            for _ in 0..20 {
                c2.advance(Duration::from_secs(30));
                assert!(e2.runs().sweep().unwrap().is_empty());
                ctx.keep_alive().unwrap();
            }
            // Then silent past the lease: swept, and told so.
            c2.advance(Duration::from_secs(61));
            assert_eq!(e2.runs().sweep().unwrap(), vec![ctx.run_id()]);
            let err = ctx.keep_alive().unwrap_err();
            assert_eq!(err.code(), "ILLEGAL_TRANSITION");
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let run = one(&engine, &p, Scope::Targets).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("ABANDONED"));
}

#[test]
fn meta_merged_into_a_swept_run_is_refused_as_run_ended() {
    let (engine, clock) = mem_engine();
    let seen = Arc::new(Mutex::new(None));
    let (seen_in, c) = (seen.clone(), clock.clone());
    let p = Pipeline::builder("p")
        .lease(Duration::from_secs(60))
        .stage("s", move |ctx| {
            c.advance(Duration::from_secs(120));
            assert_eq!(ctx.engine().runs().sweep().unwrap().len(), 1);
            *seen_in.lock().unwrap() = Some(ctx.merge_meta(&json!({"k": 1})).unwrap_err());
            Ok(StageOutput::default())
        })
        .build()
        .unwrap();
    let _ = one(&engine, &p, Scope::Targets);
    let err = seen.lock().unwrap().take().unwrap();
    assert_eq!(err.code(), "RUN_ENDED", "{err}");
    assert!(
        matches!(err, Error::RunEnded { run_id } if run_id > 0),
        "{err:?}"
    );
}

#[test]
fn a_damaged_meta_json_reads_as_corrupt_row_not_invalid_input() {
    let (engine, _clock) = mem_engine();
    // A started run whose meta_json was cut short by hand (the CHECK switched off).
    let id = engine
        .with_connection(|c| {
            c.execute_batch(
                "pragma ignore_check_constraints = on;
                 insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at,
                                          lease_expires_at, meta_json)
                 values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T11:30:00.000Z',
                         '2099-01-01T00:00:00.000Z', '{\"cut');
                 pragma ignore_check_constraints = off;",
            )?;
            Ok(c.last_insert_rowid())
        })
        .unwrap();
    let err = engine.runs().get(id).unwrap_err();
    assert_eq!(err.code(), "CORRUPT_ROW", "{err}");
    match err {
        Error::CorruptRow {
            table,
            id: key,
            column,
            ..
        } => assert_eq!(
            (table, key, column.as_str()),
            ("ingest_runs", id.to_string(), "meta_json")
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// A value that counts its drops: a stand-in for a secret a run keeps between stages.
struct Secret(Arc<AtomicUsize>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn regression_a_runs_in_memory_state_outlived_the_run_when_it_ended_early() {
    // Before: Flex kept each run's state (its token) in a map keyed by run id, shared by
    // the pipeline; a run that ended before its last stage took it out left it there.
    // Now the state belongs to the run's execution: dropped when the run ends, on every
    // path, and never seen by another run.
    let (engine, _clock) = mem_engine();
    let dropped = Arc::new(AtomicUsize::new(0));
    let keep = {
        let dropped = Arc::clone(&dropped);
        move |ctx: &mut runledger::run::StageContext<'_>| {
            assert!(
                ctx.take_state::<Secret>().is_none(),
                "a run starts with no state, whatever the runs before it kept"
            );
            ctx.set_state(Secret(Arc::clone(&dropped)));
            Ok(StageOutput::done())
        }
    };
    let handed_on = Pipeline::builder("handed-on")
        .stage("keep", keep.clone())
        .stage("use", |ctx| {
            let s = ctx
                .take_state::<Secret>()
                .expect("the earlier stage's state");
            assert!(ctx.take_state::<String>().is_none(), "typed: not a String");
            ctx.set_state(s);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let fails = Pipeline::builder("fails")
        .stage("keep", keep.clone())
        .stage("boom", |_| Err(StageError::fatal("BOOM", "boom")))
        .stage("never", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    let panics = Pipeline::builder("panics")
        .stage("keep", keep)
        .stage("panic", |_| panic!("stage bug"))
        .build()
        .unwrap();
    for (p, status, drops) in [
        (&handed_on, RunStatus::Success, 1),
        (&fails, RunStatus::Failed, 2),
        (&panics, RunStatus::Failed, 3),
    ] {
        let run = one(&engine, p, Scope::Targets).unwrap();
        assert_eq!(run.status, status, "{}", p.name());
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            drops,
            "{}: the state is gone when the run ends",
            p.name()
        );
    }
}
