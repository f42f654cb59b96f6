//! The behavioural suite of `tests/suite/behaviour.rs` on PostgreSQL, through
//! `Engine::open("postgres://...")`: the same scenarios, the same assertions as on SQLite.
//! Then what only an engine on PostgreSQL does: calls its backend does not serve are refused
//! `UNSUPPORTED_BACKEND` and touch nothing; clones shared by threads work in parallel.

use std::time::Duration;

use runledger::{Engine, EngineOptions, ManualClock, NewJob, Timestamp};
use serde_json::json;

use crate::common::TestDb;

/// A fresh schema and an `Engine` opened on its URL, on a manual clock; `None` skips.
fn engine(test: &str) -> Option<(Engine, ManualClock, TestDb)> {
    let db = TestDb::new(&format!("b_{test}"))?;
    let clock = ManualClock::new(Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap());
    let opts = EngineOptions::default().with_clock(clock.clone());
    let engine = Engine::open_with(&db.url, opts).unwrap();
    Some((engine, clock, db))
}

crate::behaviour_tests!(engine);

#[test]
fn calls_the_postgresql_backend_does_not_serve_are_refused_and_write_nothing() {
    let Some((engine, _clock, mut db)) = engine("unsupported") else {
        return;
    };
    assert_eq!(engine.path(), None);
    assert_eq!(
        engine.schema_version().unwrap(),
        runledger::pg::known_schema_version()
    );
    let jobs = engine.jobs();
    let j = jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let refused: Vec<(&str, runledger::Error)> = vec![
        (
            "jobs.create_many",
            jobs.create_many(&[NewJob::new("u", "k", json!({}))])
                .unwrap_err(),
        ),
        ("jobs.stats", jobs.stats().unwrap_err()),
        ("jobs.delete", jobs.delete(j.id, "op").unwrap_err()),
        (
            "jobs.mark_failed",
            jobs.mark_failed(j.id, "op", "X", "m").unwrap_err(),
        ),
        (
            "events.after",
            engine.events().after(0, 10).map(|_| ()).unwrap_err(),
        ),
        (
            "runs.trigger",
            engine
                .runs()
                .trigger(
                    &runledger::Pipeline::builder("p")
                        .stage("s", |_| Ok(runledger::run::StageOutput::done()))
                        .build()
                        .unwrap(),
                    runledger::ScopeSelector::Targets,
                    runledger::TriggerKind::Manual,
                )
                .map(|_| ())
                .unwrap_err(),
        ),
    ];
    for (operation, e) in refused {
        assert_eq!(e.code(), "UNSUPPORTED_BACKEND", "{operation}");
        assert_eq!(
            e.to_string(),
            format!("{operation} is not available on the postgres backend")
        );
    }
    // a SQLite-only engine call refuses as well, whatever it is
    assert_eq!(
        engine.with_connection(|_| Ok(())).unwrap_err().code(),
        "UNSUPPORTED_BACKEND"
    );
    assert_eq!(db.query_i64("select count(*) from jobs"), 1);
    assert_eq!(db.query_i64("select count(*) from job_events"), 1);
    assert_eq!(db.query_i64("select count(*) from ingest_runs"), 0);
    assert!(
        !format!("{engine:?}").contains("postgres://"),
        "the URL (maybe a password) is never printed"
    );
}

#[test]
fn clones_of_one_engine_work_in_parallel_threads() {
    let Some((engine, _clock, _db)) = engine("parallel") else {
        return;
    };
    for n in 0..40 {
        engine
            .jobs()
            .create(&NewJob::new("u", "p", json!({ "n": n })))
            .unwrap();
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while let Some(c) = engine.jobs().claim(&format!("t{t}"), &["p"]).unwrap() {
                    engine.jobs().complete(&c, &json!({ "t": t })).unwrap();
                    mine.push(c.id());
                    std::thread::sleep(Duration::from_millis(1));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!((before, all.len()), (40, 40), "each job claimed once");
}
