//! The daemon's library side (issue 14): the scheduler's firing pool and claim keep-alive
//! (V7), slots left for the ticker that has their pipeline, audited schedule changes, one
//! pipeline-name character set, and ending a run by hand (`abandon`, `interrupt`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runledger::run::{check_pipeline_name, Pipeline, StageOutput};
use runledger::schedule::LoopOptions;
use runledger::{
    Clock, Engine, Error, Fire, FireOutcome, NewSchedule, RunStatus, Schedule, ScheduleEdit,
    ScopeSelector, SlotStatus, TickOptions, Timestamp, TriggerKind,
};

use crate::common::*;

/// A fire whose `slow` schedule takes `slow_for`, recording when each schedule fired
/// (by the real clock) and naming run `1`.
struct SlowAndFast {
    slow_for: Duration,
    started: Instant,
    fired: Mutex<Vec<(String, Duration)>>,
    slow_running: AtomicBool,
}

impl Fire for SlowAndFast {
    fn fire(&self, schedule: &Schedule, _slot: Timestamp) -> FireOutcome {
        if schedule.name == "slow" {
            self.slow_running.store(true, Ordering::SeqCst);
            std::thread::sleep(self.slow_for);
            self.slow_running.store(false, Ordering::SeqCst);
        }
        self.fired
            .lock()
            .unwrap()
            .push((schedule.name.clone(), self.started.elapsed()));
        FireOutcome::Fired { run_ids: vec![1] }
    }
}

fn seed_run(engine: &Engine) {
    exec(
        engine,
        "INSERT INTO ingest_runs (pipeline, scope, trigger, status, lock_key, started_at,
                                  finished_at, duration_ms, error_code, meta_json)
         VALUES ('seed', 'targets', 'schedule', 'failed', 'seed:targets',
                 '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 0, 'SEED',
                 '{\"blockedStage\":\"seed\",\"errorCode\":\"SEED\",\"source\":\"schedule\",\"scope\":\"targets\"}')",
    )
    .unwrap();
}

fn every_minute(name: &str) -> NewSchedule {
    NewSchedule::new(name, "p", "targets", "every 1m", "UTC")
}

/// The scheduler loop firing [`SlowAndFast`] (its slow slot taking `slow_for`) as `ticker`
/// on `fire_threads` threads.
fn spawn_slow_and_fast(
    engine: &Engine,
    slow_for: Duration,
    ticker: &str,
    poll: Duration,
    fire_threads: usize,
) -> (Arc<SlowAndFast>, runledger::LoopHandle) {
    let fire = Arc::new(SlowAndFast {
        slow_for,
        started: Instant::now(),
        fired: Mutex::default(),
        slow_running: AtomicBool::new(false),
    });
    let handle = engine
        .schedules()
        .spawn(
            fire.clone(),
            LoopOptions {
                tick: TickOptions {
                    ticker: ticker.into(),
                    ..TickOptions::default()
                },
                poll,
                fire_threads,
            },
        )
        .unwrap();
    (fire, handle)
}

#[test]
fn a_slow_pipeline_delays_no_other_due_slot() {
    let (engine, clock, _dir) = file_engine();
    seed_run(&engine);
    engine.schedules().create(&every_minute("slow")).unwrap();
    engine.schedules().create(&every_minute("fast")).unwrap();
    // Both are due at the same instant.
    clock.advance(Duration::from_secs(60));
    let (fire, handle) = spawn_slow_and_fast(
        &engine,
        Duration::from_secs(3),
        "daemon",
        Duration::from_millis(20),
        2,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let fast_recorded = || {
        engine
            .schedules()
            .slots("fast")
            .unwrap()
            .first()
            .map(|s| s.status)
            == Some(SlotStatus::Fired)
    };
    while !fast_recorded() {
        assert!(Instant::now() < deadline, "the fast slot never fired");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The fast slot fired (and was recorded) while the slow one was still running.
    assert!(fire.slow_running.load(Ordering::SeqCst));
    let fast_at = fire.fired.lock().unwrap()[0].1;
    assert!(
        fast_at < Duration::from_secs(2),
        "fast fired after {fast_at:?}"
    );
    let slow = engine.schedules().slots("slow").unwrap();
    assert_eq!(slow[0].status, SlotStatus::Claimed);
    // Stop lets the slow slot finish and records it.
    handle.stop();
    let slow = engine.schedules().slots("slow").unwrap();
    assert_eq!(slow[0].status, SlotStatus::Fired);
}

#[test]
fn a_full_pool_leaves_due_slots_pending_instead_of_claiming_them() {
    let (engine, clock, _dir) = file_engine();
    seed_run(&engine);
    engine.schedules().create(&every_minute("a")).unwrap();
    engine.schedules().create(&every_minute("slow")).unwrap();
    clock.advance(Duration::from_secs(60));
    let (fire, handle) = spawn_slow_and_fast(
        &engine,
        Duration::from_millis(800),
        "one-thread",
        Duration::from_secs(3600),
        1,
    );
    // One thread: one slot claimed at a time; the other waits pending (not claimed), and
    // is fired as soon as the thread is free (the loop is woken, not the hour-long poll).
    let deadline = Instant::now() + Duration::from_secs(30);
    while fire.fired.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the second slot never fired");
        let claimed = engine
            .schedules()
            .all_slots()
            .unwrap()
            .iter()
            .filter(|s| s.status == SlotStatus::Claimed)
            .count();
        assert!(claimed <= 1, "{claimed} slots claimed by a one-thread pool");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.stop();
}

/// Slow fire that holds its slot while the test moves the clock.
struct Hold(Arc<AtomicBool>);

impl Fire for Hold {
    fn fire(&self, _: &Schedule, _: Timestamp) -> FireOutcome {
        while !self.0.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        FireOutcome::Fired { run_ids: vec![1] }
    }
}

#[test]
fn the_claim_of_a_slot_being_fired_stays_alive_past_the_claim_timeout() {
    let (engine, clock, _dir) = file_engine();
    seed_run(&engine);
    engine.schedules().create(&every_minute("long")).unwrap();
    clock.advance(Duration::from_secs(60));
    let claimed_at = clock.now();
    let release = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (engine, release) = (engine.clone(), release.clone());
        std::thread::spawn(move || {
            let opts = TickOptions {
                ticker: "long-runner".into(),
                // Renewed every quarter of it (10 ms).
                claim_timeout: Duration::from_millis(40),
                ..TickOptions::default()
            };
            engine
                .schedules()
                .tick_with(&opts, engine.now(), &Hold(release))
                .unwrap()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine
        .schedules()
        .slots("long")
        .unwrap()
        .first()
        .map(|s| s.status)
        != Some(SlotStatus::Claimed)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Eleven minutes pass while the run runs; the keep-alive moves the claim forward.
    clock.advance(Duration::from_secs(11 * 60));
    let renewed = loop {
        let slot = engine.schedules().slots("long").unwrap().remove(0);
        if slot.claimed_at > Some(claimed_at) {
            break slot;
        }
        assert!(Instant::now() < deadline, "the claim was never renewed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(renewed.claimed_by.as_deref(), Some("long-runner"));
    // Another ticker (10-minute claim timeout) does not take it for abandoned.
    let other = TickOptions {
        ticker: "other".into(),
        ..TickOptions::default()
    };
    let report = engine
        .schedules()
        .tick_with(&other, clock.now(), &Hold(Arc::new(AtomicBool::new(true))))
        .unwrap();
    assert!(
        report.slots.iter().all(|s| s.slot_id != renewed.id),
        "{report:?}"
    );
    let slot = engine.schedules().slots("long").unwrap().remove(0);
    assert_eq!(
        (slot.status, slot.claimed_by.as_deref()),
        (SlotStatus::Claimed, Some("long-runner"))
    );
    release.store(true, Ordering::SeqCst);
    let report = ticker.join().unwrap();
    assert_eq!(report.slots[0].status, SlotStatus::Fired);
}

#[test]
fn only_the_claims_own_ticker_moves_claimed_at_and_only_forward_from_sql() {
    let (engine, _clock) = mem_engine();
    seed_run(&engine);
    exec(
        &engine,
        "INSERT INTO schedules (name, pipeline, scope, rule, zone, created_at, updated_at, next_due_at)
         VALUES ('s', 'p', 'targets', 'every 1m', 'UTC', '2026-01-01T00:00:00.000Z',
                 '2026-01-01T00:00:00.000Z', '2026-01-01T00:01:00.000Z');
         INSERT INTO due_runs (schedule_id, due_at, status, created_at, claimed_at, claimed_by)
         VALUES (1, '2026-01-01T00:01:00.000Z', 'pending', '2026-01-01T00:01:00.000Z', NULL, NULL);
         UPDATE due_runs SET status = 'claimed', claimed_at = '2026-01-01T00:02:00.000Z',
                             claimed_by = 'a' WHERE id = 1;",
    )
    .unwrap();
    let refused = |sql: &str| {
        let e = exec(&engine, sql).unwrap_err();
        assert_eq!(e.code(), "CLAIM_FENCE", "{sql}: {e}");
    };
    // Another ticker can neither take nor renew the claim.
    refused("UPDATE due_runs SET claimed_by = 'b', claimed_at = '2026-01-01T00:03:00.000Z' WHERE id = 1");
    refused("UPDATE due_runs SET claimed_by = 'b' WHERE id = 1");
    // Its own ticker cannot move it back (nor keep the time and change nothing else matters).
    refused("UPDATE due_runs SET claimed_at = '2026-01-01T00:01:30.000Z' WHERE id = 1");
    // Nor move it while finishing it.
    refused(
        "UPDATE due_runs SET status = 'fired', claimed_at = '2026-01-01T00:04:00.000Z',
             finished_at = '2026-01-01T00:05:00.000Z', run_ids = '[1]' WHERE id = 1",
    );
    // Forward by its own ticker, still claimed: the keep-alive.
    exec(
        &engine,
        "UPDATE due_runs SET claimed_at = '2026-01-01T00:09:00.000Z' WHERE id = 1",
    )
    .unwrap();
    assert_eq!(
        query_i64(
            &engine,
            "SELECT count(*) FROM due_runs WHERE claimed_at = '2026-01-01T00:09:00.000Z' AND claimed_by = 'a'",
            []
        ),
        Some(1)
    );
    // A run started under the renewed claim's older fencing token still holds it (the
    // ticker's keep-alive moved the time, not the owner), a stranger's claim does not.
    let pipeline = Pipeline::builder("p")
        .stage("s", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    let stranger = runledger::SlotClaim {
        slot_id: 1,
        ticker: "b".into(),
        claimed_at: ts("2026-01-01T00:09:00.000Z"),
    };
    let e = engine
        .runs()
        .trigger_for_slot(&pipeline, ScopeSelector::Targets, &stranger)
        .unwrap()
        .remove(0)
        .result
        .unwrap_err();
    assert_eq!(e.code(), "ILLEGAL_TRANSITION");
    let own = runledger::SlotClaim {
        slot_id: 1,
        ticker: "a".into(),
        claimed_at: ts("2026-01-01T00:02:00.000Z"),
    };
    let out = engine
        .runs()
        .trigger_for_slot(&pipeline, ScopeSelector::Targets, &own)
        .unwrap();
    assert_eq!(out[0].result.as_ref().unwrap().status, RunStatus::Success);
}

#[test]
fn schedule_changes_are_audited_with_their_actor() {
    let (engine, clock) = mem_engine();
    let ops = engine.schedules().by("alice");
    ops.create(&NewSchedule::new(
        "s",
        "flex-main",
        "targets",
        "daily 06:00",
        "UTC",
    ))
    .unwrap();
    clock.advance(Duration::from_secs(1));
    ops.edit(
        "s",
        &ScheduleEdit {
            rule: Some("daily 07:00".into()),
            ..ScheduleEdit::default()
        },
    )
    .unwrap();
    ops.disable("s").unwrap();
    ops.enable("s").unwrap();
    engine.schedules().delete("s").unwrap();
    let rows: Vec<(String, String, String, String)> = engine
        .with_connection(|c| {
            let mut st = c.prepare(
                "SELECT entity, entity_id, action, actor FROM audit_log
                 WHERE entity = 'schedule' ORDER BY id",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .unwrap();
    let expected: Vec<(String, String, String, String)> = [
        ("create", "alice"),
        ("edit", "alice"),
        ("disable", "alice"),
        ("enable", "alice"),
        ("delete", "host"),
    ]
    .iter()
    .map(|(a, who)| {
        (
            "schedule".into(),
            "1".into(),
            a.to_string(),
            who.to_string(),
        )
    })
    .collect();
    assert_eq!(rows, expected);
    let detail = query_i64(
        &engine,
        "SELECT count(*) FROM audit_log WHERE action = 'edit'
           AND json_extract(detail, '$.rule') = 'daily 07:00'",
        [],
    );
    assert_eq!(detail, Some(1));
    // The audit chain stays whole (doctor checks it).
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(
        report.anomalies.iter().all(|a| a.check != "audit_chain"),
        "{report:?}"
    );
    // A bad actor is refused before anything is written.
    let e = engine
        .schedules()
        .by("")
        .create(&NewSchedule::new("t", "p", "targets", "daily 06:00", "UTC"))
        .unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
}

#[test]
fn one_pipeline_name_character_set_in_rust_and_in_sql() {
    let (engine, _clock) = mem_engine();
    let names = [
        "ingest",
        "flex-main",
        "Flex.Main_2",
        "a",
        &"x".repeat(64),
        "",
        &"x".repeat(65),
        "has space",
        "semi;colon",
        "slash/y",
        "colon:y",
        "é",
        "tab\tx",
    ];
    for (i, name) in names.iter().enumerate() {
        let rust = check_pipeline_name(name).is_ok();
        // The builder and the schedules facade use the same check.
        let built = Pipeline::builder(*name)
            .stage("s", |_| Ok(StageOutput::done()))
            .build()
            .is_ok();
        let schedule = engine
            .schedules()
            .create(&NewSchedule::new(
                &format!("n{i}"),
                name,
                "targets",
                "daily 06:00",
                "UTC",
            ))
            .is_ok();
        let sql = engine
            .with_connection(|c| {
                Ok(c.execute(
                    "INSERT INTO schedules (name, pipeline, scope, rule, zone, created_at, updated_at)
                     VALUES (?1, ?2, 'targets', 'daily 06:00', 'UTC',
                             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                    rusqlite::params![format!("sql{i}"), name],
                )?)
            })
            .is_ok();
        let run_sql = engine
            .with_connection(|c| {
                Ok(c.execute(
                    "INSERT INTO ingest_runs (pipeline, scope, trigger, status, lock_key, started_at,
                                              finished_at, duration_ms, error_code, meta_json)
                     VALUES (?1, 'targets', 'manual', 'failed', ?1 || ':targets',
                             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 0, 'X',
                             '{\"blockedStage\":\"x\",\"errorCode\":\"X\",\"source\":\"manual\",\"scope\":\"targets\"}')",
                    rusqlite::params![name],
                )?)
            })
            .is_ok();
        assert_eq!(
            (rust, built, schedule, sql, run_sql),
            (rust, rust, rust, rust, rust),
            "{name:?}"
        );
    }
    // And scopes: typed, the three of the SQL CHECK.
    for scope in ["targets", "universe", "both", "all", "Targets", ""] {
        let rust = scope.parse::<ScopeSelector>().is_ok();
        let created = engine
            .schedules()
            .create(&NewSchedule::new(
                &format!("scope-{}", scope.len()),
                "p",
                scope,
                "daily 06:00",
                "UTC",
            ))
            .map(|s| engine.schedules().delete(&s.name).unwrap())
            .is_ok();
        let sql = engine
            .with_connection(|c| {
                Ok(c.execute(
                    "INSERT INTO schedules (name, pipeline, scope, rule, zone, created_at, updated_at)
                     VALUES ('scope-sql', 'p', ?1, 'daily 06:00', 'UTC',
                             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                    [scope],
                )?)
            })
            .is_ok();
        if sql {
            exec(&engine, "DELETE FROM schedules WHERE name = 'scope-sql'").unwrap();
        }
        assert_eq!((rust, created, sql), (rust, rust, rust), "{scope:?}");
    }
}

#[test]
fn abandon_and_interrupt_end_a_started_run_at_once_audited_and_free_its_lock() {
    let (engine, _clock) = mem_engine();
    exec(
        &engine,
        "INSERT INTO ingest_runs (pipeline, scope, trigger, status, lock_key, started_at, lease_expires_at, meta_json)
         VALUES ('p', 'targets', 'manual', 'started', 'p:targets', '2026-11-22T11:00:00.000Z',
                 '2999-01-01T00:00:00.000Z', '{}')",
    )
    .unwrap();
    let pipeline = Pipeline::builder("p")
        .stage("s", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    // The refusal names the holder and its lease.
    let refused = engine
        .runs()
        .trigger(&pipeline, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap()
        .remove(0)
        .result
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "a run is already active for lock p:targets (held by run 1, lease expires 2999-01-01T00:00:00.000Z)"
    );
    match &refused {
        Error::RunAlreadyActive {
            active_run_id,
            lease_expires_at,
            ..
        } => {
            assert_eq!(*active_run_id, Some(1));
            assert_eq!(*lease_expires_at, Some(ts("2999-01-01T00:00:00.000Z")));
        }
        other => panic!("{other:?}"),
    }
    let e = engine.runs().abandon(1, " ", "ops").unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
    let run = engine.runs().abandon(1, "host died", "ops").unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(
        run.error_message.as_deref(),
        Some("abandon by ops: host died")
    );
    // Twice: the run is no longer started.
    let again = engine.runs().abandon(1, "host died", "ops").unwrap_err();
    assert_eq!(again.code(), "ILLEGAL_TRANSITION");
    assert_eq!(
        engine.runs().abandon(99, "x", "ops").unwrap_err().code(),
        "NOT_FOUND"
    );
    // The lock is free at once.
    let ok = engine
        .runs()
        .trigger(&pipeline, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    assert_eq!(ok.status, RunStatus::Success);
    // interrupt: the same, with its own code.
    exec(
        &engine,
        "INSERT INTO ingest_runs (pipeline, scope, trigger, status, lock_key, started_at, lease_expires_at, meta_json)
         VALUES ('p', 'targets', 'manual', 'started', 'p:targets', '2026-11-22T11:00:00.000Z',
                 '2999-01-01T00:00:00.000Z', '{}')",
    )
    .unwrap();
    let id = query_i64(&engine, "SELECT max(id) FROM ingest_runs", []).unwrap();
    let run = engine.runs().interrupt(id, "Ctrl-C", "cli").unwrap();
    assert_eq!(run.error_code.as_deref(), Some("INTERRUPTED"));
    let audit = query_i64(
        &engine,
        "SELECT count(*) FROM audit_log WHERE entity = 'run'
           AND ((entity_id = '1' AND action = 'abandon' AND actor = 'ops'
                 AND json_extract(detail, '$.reason') = 'host died')
             OR (entity_id = ?1 AND action = 'interrupt' AND actor = 'cli'))",
        [id.to_string()],
    );
    assert_eq!(audit, Some(2));
}
