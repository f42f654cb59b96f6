//! Opening, migrating and configuring the database.

use runledger::{known_schema_version, Engine, Error};

use crate::common::*;

#[test]
fn open_migrates_to_the_known_version_and_reopens_without_work() {
    let (engine, _clock, dir) = file_engine();
    let v = engine.schema_version().unwrap();
    assert_eq!(v, known_schema_version());
    assert!(v >= 1);
    drop(engine);
    let again = Engine::open(dir.path().join("runledger.db")).unwrap();
    assert_eq!(again.schema_version().unwrap(), v);
}

#[test]
fn file_is_in_wal_mode_with_foreign_keys() {
    // The library's default, whatever durability the suite runs at.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().join("runledger.db")).unwrap();
    engine
        .with_connection(|c| {
            let mode: String = c.query_row("pragma journal_mode", [], |r| r.get(0))?;
            let fk: i64 = c.query_row("pragma foreign_keys", [], |r| r.get(0))?;
            let sync: i64 = c.query_row("pragma synchronous", [], |r| r.get(0))?;
            assert_eq!(mode, "wal");
            assert_eq!(fk, 1);
            assert_eq!(sync, 2, "FULL is the default durability");
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_file_that_is_not_sqlite_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = Engine::open(&path).unwrap_err();
    assert_eq!(err.code(), "NOT_A_DATABASE", "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![b'x'; 4096],
        "file untouched"
    );
}

#[test]
fn a_newer_schema_than_this_build_knows_is_refused() {
    let (engine, _clock, dir) = file_engine();
    let future = known_schema_version() + 1;
    engine
        .with_connection(|c| {
            c.execute(
                "insert into refinery_schema_history (version, name, applied_on, checksum) values (?1, 'future', '2030-01-01', '0')",
                [future],
            )?;
            Ok(())
        })
        .unwrap();
    drop(engine);
    match Engine::open(dir.path().join("runledger.db")).unwrap_err() {
        Error::UnsupportedVersion { found, known, .. } => {
            assert_eq!((found, known), (future, known_schema_version()))
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Issue 11: times were read before the write lock, so under contention a job could store a
/// heartbeat older than its start, and events a time older than the event committed before.
#[test]
fn stored_times_follow_commit_order_when_8_threads_race() {
    let dir = tempfile::tempdir().unwrap();
    let opts = runledger::EngineOptions {
        db: runledger::DbOptions {
            durability: runledger::Durability::Normal,
            ..Default::default()
        },
        ..Default::default()
    };
    let engine = Engine::open_with(dir.path().join("race.db"), opts).unwrap();
    let jobs = 400;
    for i in 0..jobs {
        let new = runledger::NewJob::new("u", "race", serde_json::json!({ "i": i }));
        engine.jobs().create(&new).unwrap();
    }
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let worker = format!("w{t}");
                while let Some(c) = engine.jobs().claim(&worker, &[]).unwrap() {
                    engine.jobs().heartbeat(&c).unwrap();
                    let done = serde_json::json!({ "ok": true });
                    engine.jobs().complete(&c, &done).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (completed, behind, events_back): (i64, i64, i64) = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select (select count(*) from jobs where state = 'completed'),
                        (select count(*) from jobs where heartbeat_at < started_at
                                                      or finished_at < heartbeat_at),
                        (select count(*) from job_events a join job_events b
                           on b.cursor = (select min(cursor) from job_events where cursor > a.cursor)
                         where b.at < a.at)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?)
        })
        .unwrap();
    assert_eq!(completed, jobs);
    assert_eq!(behind, 0, "jobs whose stored times go back");
    assert_eq!(
        events_back, 0,
        "events stored with a time before the event committed before"
    );
}
