//! Resource and clock faults: a full database, a read-only file, a file that is not SQLite,
//! a newer schema; a clock jumping hours back and forth between scheduler and supervisor
//! ticks. Each fault is a typed error with a stable code, nothing is corrupted, and the next
//! open works once the cause is removed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use runledger::doctor::{self, DoctorOptions};
use runledger::run::{Pipeline, RawInput, RunStatus, Scope, StageError, StageOutput, TriggerKind};
use runledger::schedule::NewSchedule;
use runledger::{
    Clock, Engine, FireOutcome, NewJob, Schedule, Supervisor, SupervisorOptions, Timestamp,
};
use serde_json::json;

use crate::common::*;
use crate::doctor::populate;
use crate::reliability::{count, seed, Rng};

fn assert_sound(engine: &Engine) {
    let ok: String = engine
        .with_connection(|c| Ok(c.query_row("pragma integrity_check", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(ok, "ok");
    let report = doctor::check(engine, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
}

fn big_payload_pipeline() -> Pipeline {
    Pipeline::builder("bulk")
        .stage("download", |ctx| {
            let bytes = vec![b'x'; 512 * 1024];
            ctx.store_raw(&RawInput {
                source: "sim",
                upstream_ref: None,
                content_type: "application/octet-stream",
                bytes: &bytes,
            })
            .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            Ok(StageOutput::done())
        })
        .build()
        .unwrap()
}

#[test]
fn a_full_database_mid_run_is_database_full_and_works_again_once_the_limit_is_raised() {
    let (engine, clock, _dir) = file_engine();
    populate(&engine, &clock);
    let pages = query_i64(&engine, "pragma page_count", []).unwrap();
    let limit = query_i64(&engine, &format!("pragma max_page_count = {pages}"), []).unwrap();
    assert_eq!(limit, pages);

    // A write outside a run: refused whole, nothing changed.
    let before = dump(&engine);
    let big = json!({ "blob": "y".repeat(256 * 1024) });
    let err = engine
        .jobs()
        .create(&NewJob::new("alice", "research", big.clone()))
        .unwrap_err();
    assert_eq!(err.code(), "DATABASE_FULL");
    assert!(err.is_transient());
    assert_eq!(dump(&engine), before);

    // In the middle of a run: the stage's store_raw fails typed; the run ends terminal (or,
    // if even that could not be written, is swept once its lease expires).
    let outcome = engine
        .runs()
        .trigger(
            &big_payload_pipeline(),
            Scope::Targets.into(),
            TriggerKind::Manual,
        )
        .unwrap()
        .remove(0);
    match outcome.result {
        Ok(run) => {
            assert_eq!(run.status, RunStatus::Failed);
            assert_eq!(run.error_code.as_deref(), Some("DATABASE_FULL"), "{run:?}");
        }
        Err(e) => assert_eq!(e.code(), "DATABASE_FULL"),
    }
    clock.advance(Duration::from_secs(3600));
    engine.runs().sweep().unwrap();
    assert_sound(&engine);
    assert_eq!(
        query_i64(
            &engine,
            "select count(*) from ingest_runs where status = 'started'",
            []
        )
        .unwrap(),
        0
    );

    // Raise the limit: the same calls succeed.
    query_i64(&engine, "pragma max_page_count = 1000000", []).unwrap();
    engine
        .jobs()
        .create(&NewJob::new("alice", "research", big))
        .unwrap();
    let run = engine
        .runs()
        .trigger(
            &big_payload_pipeline(),
            Scope::Targets.into(),
            TriggerKind::Manual,
        )
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    assert_eq!(run.status, RunStatus::Success);
    assert_sound(&engine);
}

#[test]
fn a_read_only_database_refuses_writes_typed_and_the_next_read_write_open_works() {
    // Tests run as root, which ignores file modes, so chmod proves nothing here. What is
    // tested is SQLite's own read-only open (`file:...?mode=ro`, as a host gets on a
    // read-only mount or with a read-only file as a non-root user).
    let (engine, clock, dir) = file_engine();
    populate(&engine, &clock);
    let path = dir.path().join("runledger.db");
    let before = dump(&engine);
    let uri = format!("file:{}?mode=ro", path.display());
    match Engine::open_with(&uri, crate::common::options().with_clock(clock.clone())) {
        Ok(ro) => {
            eprintln!("read-only: the open succeeds, writes are refused");
            assert_eq!(dump(&ro), before, "reads work");
            let err = ro
                .jobs()
                .create(&NewJob::new("alice", "research", json!({})))
                .unwrap_err();
            assert_eq!(err.code(), "READ_ONLY");
            let waiting =
                query_i64(&ro, "select id from jobs where state = 'created'", []).unwrap();
            let err = ro.jobs().cancel(waiting, "op", None).unwrap_err();
            assert_eq!(err.code(), "READ_ONLY");
        }
        Err(e) => {
            eprintln!("read-only: the open is refused");
            assert_eq!(e.code(), "READ_ONLY");
        }
    }
    assert_eq!(dump(&engine), before);
    drop(engine);
    let rw = Engine::open_with(&path, crate::common::options().with_clock(clock)).unwrap();
    rw.jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    assert_sound(&rw);
}

#[test]
fn a_file_that_is_not_sqlite_is_not_a_database_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runledger.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Engine::open(&path).unwrap_err();
    assert_eq!(err.code(), "NOT_A_DATABASE");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "file untouched");
    std::fs::write(&path, b"").unwrap();
    let engine = Engine::open(&path).unwrap();
    assert_sound(&engine);
}

#[test]
fn a_newer_schema_is_unsupported_version_and_opens_once_it_is_gone() {
    let (engine, _clock, dir) = file_engine();
    let path = dir.path().join("runledger.db");
    let known = runledger::known_schema_version();
    engine
        .with_connection(|c| {
            Ok(c.execute(
                "insert into refinery_schema_history (version, name, applied_on, checksum)
                 values (?1, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
                [known + 1],
            )?)
        })
        .unwrap();
    let before = dump(&engine);
    drop(engine);
    let err = Engine::open(&path).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_VERSION");
    // Nothing was changed by the refused open.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row(
            "select max(version) from refinery_schema_history",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, known + 1);
    // The history is append-only (a trigger since V5): removing the row takes DDL; the
    // trigger is put back word for word.
    let guard: String = raw
        .query_row(
            "select sql from sqlite_master where name = 'refinery_schema_history_no_delete'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    raw.execute_batch("drop trigger refinery_schema_history_no_delete")
        .unwrap();
    raw.execute(
        "delete from refinery_schema_history where version = ?1",
        [known + 1],
    )
    .unwrap();
    raw.execute_batch(&guard).unwrap();
    drop(raw);
    let engine = Engine::open(&path).unwrap();
    assert_ne!(dump(&engine), before);
    assert_sound(&engine);
}

#[test]
fn clock_jumps_fire_no_slot_twice_and_recover_no_healthy_job() {
    let steps = count(300, 3000);
    let seed = seed(0xC10C);
    let mut rng = Rng::new(seed);
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&NewSchedule::new(
            "quarter",
            "ingest",
            "targets",
            "every 15m",
            "UTC",
        ))
        .unwrap();
    let job = engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    let claim = engine.jobs().claim("w1", &[]).unwrap().unwrap();
    let supervisor = Supervisor::new(engine.clone(), SupervisorOptions::default()).unwrap();
    let fired: Mutex<HashMap<(String, Timestamp), usize>> = Mutex::default();
    let fire = |s: &Schedule, slot: Timestamp| {
        *fired
            .lock()
            .unwrap()
            .entry((s.name.clone(), slot))
            .or_default() += 1;
        FireOutcome::TurnedAway {
            run_ids: vec![],
            code: "CLOCK_TEST".into(),
        }
    };
    let (mut back, mut forward) = (0, 0);
    for _ in 0..steps {
        let jump = Duration::from_secs(3600 * (1 + rng.below(6)) + 60 * rng.below(60));
        // A random walk that never goes before the rows' creation time (a clock before the
        // database existed is out of scope: created_at <= updated_at is a row rule).
        if rng.below(2) == 0 && clock.now() - jump >= t0() {
            clock.set(clock.now() - jump);
            back += 1;
        } else {
            clock.set(clock.now() + jump);
            forward += 1;
        }
        // The healthy worker heartbeats (its heartbeat thread runs on its own schedule)...
        engine.jobs().heartbeat(&claim).unwrap();
        // ...and the scheduler and supervisor tick at the jumped time.
        engine.schedules().tick(clock.now(), &fire).unwrap();
        let report = supervisor.tick(clock.now()).unwrap();
        assert!(
            report.recovered.is_empty(),
            "healthy job recovered: {report:?}"
        );
    }
    let fired = fired.into_inner().unwrap();
    let twice: Vec<_> = fired.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "fired twice: {twice:?}");
    let job = engine.jobs().get(job.id).unwrap();
    assert_eq!((job.attempt, job.recovery_count), (1, 0));
    assert_eq!(job.state, runledger::JobState::Running);
    let slots = engine.schedules().slots("quarter").unwrap();
    assert!(slots.len() >= fired.len());
    let recorded = query_i64(
        &engine,
        "select count(*) from due_runs where outcome_code = 'CLOCK_TEST'",
        [],
    )
    .unwrap();
    assert_eq!(
        recorded as usize,
        fired.len(),
        "every fired slot recorded once"
    );
    let report = doctor::check(&engine, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
    eprintln!(
        "clock faults: seed {seed:#x}, {steps} jumps ({back} back, {forward} forward), {} slots materialized, {} fired once each, 0 healthy jobs recovered",
        slots.len(),
        fired.len()
    );
}
