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
    jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let refused: Vec<(&str, runledger::Error)> = vec![(
        "events.data_version",
        engine.events().data_version().map(|_| ()).unwrap_err(),
    )];
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

/// `behaviour::operator_job_calls_are_audited` on PostgreSQL, reading `audit_log` on a
/// connection of its own; then doctor finds the audit and event chains whole (a deleted
/// job's events gone, its audit rows kept).
#[test]
fn operator_job_calls_are_audited() {
    let Some((engine, clock, db)) = engine("audited") else {
        return;
    };
    let url = db.url.clone();
    let raw = std::sync::Mutex::new(db.raw);
    let audit = |id: i64| {
        raw.lock()
            .unwrap()
            .query(
                "select action, actor, detail::text from audit_log
                 where entity = 'job' and entity_id = $1 order by id",
                &[&id.to_string()],
            )
            .unwrap()
            .iter()
            .map(|r| {
                let detail: String = r.get(2);
                (r.get(0), r.get(1), serde_json::from_str(&detail).unwrap())
            })
            .collect()
    };
    crate::behaviour::operator_job_calls_are_audited(&engine, &clock, &audit);
    let events: i64 = raw
        .lock()
        .unwrap()
        .query_one("select count(*) from job_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "the deleted job's events went with it");
    let report = runledger::pg::doctor::check(
        &runledger::pg::PgEngine::open(&url).unwrap(),
        &runledger::doctor::DoctorOptions::default(),
    )
    .unwrap();
    assert!(report.is_clean(), "{:#?}", report.anomalies);
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

/// A `Fire` that starts (and ends) one run for the claimed slot on the same ledger through
/// `PgEngine`, as a host's pipeline would once `Runs::trigger` is served here; `die_with`
/// stands for its ticker dying after the start: another tick runs before the outcome.
struct StartsRuns<'a> {
    pg: runledger::pg::PgEngine,
    calls: std::sync::Mutex<Vec<i64>>,
    die_with: Option<&'a dyn Fn()>,
}

impl runledger::Fire for StartsRuns<'_> {
    fn fire(&self, _: &runledger::Schedule, _: Timestamp) -> runledger::FireOutcome {
        unreachable!("the tick calls fire_claimed")
    }

    fn fire_claimed(
        &self,
        claim: &runledger::SlotClaim,
        _: &runledger::Schedule,
        _: Timestamp,
    ) -> runledger::FireOutcome {
        self.calls.lock().unwrap().push(claim.slot_id);
        let run = self
            .pg
            .runs()
            .start_for_slot(
                "ingest",
                runledger::Scope::Targets,
                runledger::TriggerKind::Schedule,
                None,
                Duration::from_secs(60),
                Some(claim.slot_id),
            )
            .unwrap();
        self.pg
            .runs()
            .finish(run, runledger::RunStatus::Success, None, &json!({}))
            .unwrap();
        if let Some(die) = self.die_with {
            die();
        }
        runledger::FireOutcome::Fired { run_ids: vec![run] }
    }
}

fn text(db: &mut TestDb, sql: &str) -> String {
    db.raw.query_one(sql, &[]).unwrap().get(0)
}

/// On PostgreSQL: schedule changes are audited as the facade's actor on the one audit chain
/// (doctor finds it whole), a slot fired by runs records them, and a claim whose ticker died
/// after starting its run is finished from that run by the next ticker, never fired twice.
#[test]
fn schedule_changes_are_audited_and_fired_slots_name_their_runs() {
    let Some((engine, clock, mut db)) = engine("sched_audit") else {
        return;
    };
    let schedules = engine.schedules();
    let quarter =
        |name: &str| runledger::NewSchedule::new(name, "ingest", "targets", "every 15m", "UTC");
    let q = schedules.by("alice").create(&quarter("q")).unwrap();
    schedules.by("dave").create(&quarter("gone")).unwrap();
    let edit = runledger::ScheduleEdit {
        misfire: Some(runledger::Misfire::All),
        ..runledger::ScheduleEdit::default()
    };
    schedules.by("bob").edit("q", &edit).unwrap();
    schedules.disable("q").unwrap();
    schedules.by("carol").enable("q").unwrap();
    schedules.by("dave").delete("gone").unwrap();
    assert_eq!(
        text(
            &mut db,
            "select string_agg(action || ' ' || actor || ' ' || (detail->>'name'), ', ' order by id)
             from audit_log where entity = 'schedule'"
        ),
        "create alice q, create dave gone, edit bob q, disable host q, enable carol q, delete dave gone"
    );
    assert_eq!(
        db.query_i64(&format!(
            "select count(*) from audit_log where entity = 'schedule' and entity_id = '{}'",
            q.id
        )),
        4
    );

    let pg = runledger::pg::PgEngine::open(&db.url).unwrap();
    let fire = StartsRuns {
        pg: pg.clone(),
        calls: Default::default(),
        die_with: None,
    };
    let slot = Timestamp::parse("2026-11-22T11:45:00.000Z").unwrap();
    clock.set(slot);
    let report = schedules.tick(slot, &fire).unwrap();
    assert_eq!(report.count(runledger::SlotStatus::Fired), 1);
    let fired = schedules.slots("q").unwrap().remove(0);
    assert_eq!(fired.status, runledger::SlotStatus::Fired);
    assert_eq!(fired.run_ids.len(), 1);
    assert_eq!(report.slots[0].run_ids, fired.run_ids);
    assert_eq!(
        db.query_i64(&format!(
            "select count(*) from ingest_runs where id = {} and meta_json->>'slotId' = '{}'",
            fired.run_ids[0], fired.id
        )),
        1
    );

    // ticker a starts the run of the next slot and dies before recording it; ticker b's
    // tick after the claim timeout finishes the slot from that run, without firing it
    let next = slot + Duration::from_secs(900);
    clock.set(next);
    let b_calls = std::sync::Mutex::new(Vec::new());
    let b_tick = || {
        let b_fire = |_: &runledger::Schedule, at: Timestamp| {
            b_calls.lock().unwrap().push(at);
            runledger::FireOutcome::Failed {
                run_ids: vec![],
                code: "B_FIRED".into(),
                message: "fired twice".into(),
            }
        };
        let opts = runledger::TickOptions {
            ticker: "b".into(),
            ..runledger::TickOptions::default()
        };
        let late = next + Duration::from_secs(601);
        let r = schedules.tick_with(&opts, late, &b_fire).unwrap();
        assert_eq!(r.slots.len(), 1, "{r:?}");
        assert_eq!(r.slots[0].status, runledger::SlotStatus::Fired);
    };
    let dying = StartsRuns {
        pg,
        calls: Default::default(),
        die_with: Some(&b_tick),
    };
    let a = runledger::TickOptions {
        ticker: "a".into(),
        ..runledger::TickOptions::default()
    };
    schedules.tick_with(&a, next, &dying).unwrap();
    assert!(b_calls.lock().unwrap().is_empty(), "b never fired it");
    let s = schedules.slots("q").unwrap().remove(1);
    assert_eq!((s.due_at, s.status), (next, runledger::SlotStatus::Fired));
    assert_eq!(s.claimed_by.as_deref(), Some("a"));
    assert_eq!(*dying.calls.lock().unwrap(), [s.id]);
    let run = db.query_i64(&format!(
        "select max(id) from ingest_runs where meta_json->>'slotId' = '{}'",
        s.id
    ));
    assert_eq!(s.run_ids, [run]);
    assert_eq!(s.outcome_code, None);

    let report = runledger::pg::doctor::check(
        &runledger::pg::PgEngine::open(&db.url).unwrap(),
        &runledger::doctor::DoctorOptions::default(),
    )
    .unwrap();
    assert!(report.is_clean(), "{:#?}", report.anomalies);
}
