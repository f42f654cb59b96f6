//! `runledger::pg::copy_from_sqlite`: a busy SQLite ledger (the CLI's demo, plus jobs in
//! every state) moved into an empty PostgreSQL ledger, every row compared through both
//! engines' read APIs and column by column; doctor clean on both sides; a non-empty
//! target, an unclean source and a role without the replication setting refused with
//! nothing written; a copy that fails or is killed leaves the target empty.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runledger::doctor::{self, DoctorOptions};
use runledger::pg::{self, copy_from_sqlite, CopyOptions};
use runledger::run::{RawFilter, RunFilter, Scope};
use runledger::schedule::{FireOutcome, Misfire, NewSchedule, Schedule};
use runledger::{
    Clock, Engine, EngineOptions, ManualClock, NewJob, Supervisor, SupervisorOptions, SystemClock,
    Timestamp,
};
use serde_json::{json, Value};

use crate::common::{is_child, spawn_child, TestDb};

/// The tables both schemas have (every SQLite table but reference data), in copy order.
const TABLES: &[&str] = &[
    "jobs",
    "audit_log",
    "job_events",
    "ingest_runs",
    "schedules",
    "due_runs",
    "supervisor_state",
    "ingest_modules",
    "ingest_probes",
    "raw_payloads",
    "raw_records",
];

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("runledger-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busy SQLite ledger at `path`: the CLI's demo (runs with timelines, blocked runs, a
/// Flex statement's raw records and payloads, modules and probes, a recovered job, the
/// supervisor's row, the default schedule and its slot), then jobs in every state, with
/// tags, a parent, a checkpoint, a restart and a deleted job (an id SQLite never reuses).
pub fn busy_sqlite(path: &Path) -> Engine {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
        .arg("--db")
        .arg(path)
        .arg("demo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clock = ManualClock::new(SystemClock.now());
    let engine =
        Engine::open_with(path, EngineOptions::default().with_clock(clock.clone())).unwrap();
    // a schedule whose three missed slots end fired, turned away and failed
    let run = engine.runs().list(&RunFilter::default()).unwrap()[0].id;
    engine
        .schedules()
        .create(
            &NewSchedule::new("copy-15m", "ingest", "targets", "every 15m", "UTC")
                .misfire(Misfire::All),
        )
        .unwrap();
    clock.advance(Duration::from_secs(50 * 60));
    let n = std::cell::Cell::new(0);
    let fire = |_: &Schedule, _: Timestamp| {
        n.set(n.get() + 1);
        match n.get() % 3 {
            1 => FireOutcome::Fired { run_ids: vec![run] },
            2 => FireOutcome::TurnedAway {
                run_ids: vec![],
                code: "RUN_ALREADY_ACTIVE".into(),
            },
            _ => FireOutcome::Failed {
                run_ids: vec![],
                code: "UPSTREAM".into(),
                message: "503".into(),
            },
        }
    };
    let report = engine.schedules().tick(clock.now(), &fire).unwrap();
    assert!(n.get() >= 3, "{report:?}");
    let jobs = engine.jobs();
    let new = |n: i64| {
        NewJob::new(
            "u2",
            "copy",
            json!({"n": n, "text": "tab\tline\nback\\slash \"q\" é"}),
        )
        .tags(["copied", "x"])
    };
    let family = |n: i64| NewJob::new("u2", "copy-family", json!({"n": n}));
    let parent = jobs.create(&family(1)).unwrap();
    jobs.create(&family(2).parent(parent.id)).unwrap();
    for (i, end) in [
        "complete", "fail", "pause", "cancel", "delete", "run", "restart",
    ]
    .iter()
    .enumerate()
    {
        let job = jobs.create(&new(10 + i as i64)).unwrap();
        let claim = jobs.claim("node-z/w1", &["copy"]).unwrap().unwrap();
        assert_eq!(claim.id(), job.id, "claims go oldest first");
        jobs.progress(&claim, 30, Some("step one")).unwrap();
        jobs.checkpoint(&claim, &json!({"cursor": i})).unwrap();
        match *end {
            "complete" => drop(jobs.complete(&claim, &json!({"rows": i})).unwrap()),
            "fail" => drop(jobs.fail(&claim, "UPSTREAM", "503\nretry later").unwrap()),
            "pause" => drop(jobs.pause(job.id, "ops").unwrap()),
            "cancel" => drop(
                jobs.cancel(job.id, "ops", Some("no longer needed"))
                    .unwrap(),
            ),
            "restart" => {
                jobs.fail(&claim, "UPSTREAM", "503").unwrap();
                jobs.restart(job.id, "ops", None).unwrap();
            }
            "delete" => {
                jobs.complete(&claim, &json!({})).unwrap();
                jobs.delete(job.id, "ops").unwrap();
            }
            _ => {} // stays running
        }
    }
    // the newest job deleted: its id is in sqlite_sequence only
    let last = jobs
        .create(&NewJob::new("u2", "copy-last", json!({})))
        .unwrap();
    let claim = jobs.claim("node-z/w1", &["copy-last"]).unwrap().unwrap();
    jobs.complete(&claim, &json!({})).unwrap();
    jobs.delete(last.id, "ops").unwrap();
    engine
}

/// Every row of `table` in id order, each a JSON object of its columns (JSON columns
/// parsed, booleans as 0/1), read through SQLite.
fn sqlite_rows(path: &Path, table: &str) -> Vec<Value> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("select * from {table} order by 1"))
        .unwrap();
    let names: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let mut obj = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(n) => json!(n),
                rusqlite::types::ValueRef::Text(t) => {
                    let t = std::str::from_utf8(t).unwrap();
                    if is_json_column(table, name) {
                        serde_json::from_str(t).unwrap()
                    } else {
                        json!(t)
                    }
                }
                // as row_to_json spells a bytea
                rusqlite::types::ValueRef::Blob(b) => {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    json!(format!("\\x{hex}"))
                }
                other => panic!("{table}.{name}: {other:?}"),
            };
            obj.insert(name.clone(), v);
        }
        out.push(Value::Object(obj));
    }
    out
}

fn is_json_column(table: &str, column: &str) -> bool {
    matches!(
        (table, column),
        ("jobs", "input" | "result" | "checkpoint" | "tags")
            | ("audit_log", "detail")
            | ("job_events", "payload")
            | ("ingest_runs", "timeline" | "meta_json")
            | ("due_runs", "run_ids")
            | ("ingest_modules", "scopes")
    )
}

/// The same through PostgreSQL (`row_to_json`).
fn pg_rows(raw: &mut postgres::Client, table: &str) -> Vec<Value> {
    raw.query(
        &format!("select row_to_json(t)::text from (select * from {table} order by 1) t"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let mut v: Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
        for (_, col) in v.as_object_mut().unwrap().iter_mut() {
            if let Value::Bool(b) = col {
                *col = json!(i64::from(*b));
            }
        }
        v
    })
    .collect()
}

/// The exact stored text of the hashed JSON columns, through both engines.
fn hashed_texts(path: &Path, raw: &mut postgres::Client) -> (Vec<String>, Vec<String>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut sqlite = Vec::new();
    for sql in [
        "select detail from audit_log order by id",
        "select payload from job_events order by cursor",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        sqlite.extend(rows.map(|r| r.unwrap()));
    }
    let mut pg = Vec::new();
    for sql in [
        "select detail::text from audit_log order by id",
        "select payload::text from job_events order by cursor",
    ] {
        pg.extend(raw.query(sql, &[]).unwrap().iter().map(|r| r.get(0)));
    }
    (sqlite, pg)
}

fn counts(raw: &mut postgres::Client) -> Vec<i64> {
    TABLES
        .iter()
        .map(|t| {
            raw.query_one(&format!("select count(*) from {t}"), &[])
                .unwrap()
                .get(0)
        })
        .collect()
}

fn opts() -> CopyOptions {
    CopyOptions {
        skip_sqlite_only: true,
        ..CopyOptions::default()
    }
}

#[test]
fn pg_copy_moves_every_row_of_a_busy_sqlite_ledger() {
    let Some(mut db) = TestDb::new("copy_busy") else {
        return;
    };
    let dir = TempDir::new("copy_busy");
    let file = dir.path().join("busy.db");
    let source = busy_sqlite(&file);

    // every table has a twin: no --skip-sqlite-only needed, nothing left behind
    let mut seen = Vec::new();
    let report = copy_from_sqlite(&source, &db.url, &CopyOptions::default(), &mut |p| {
        if p.done {
            seen.push((p.table.to_string(), p.rows));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        TABLES
    );
    assert!(report.left_behind.is_empty(), "{:?}", report.left_behind);
    assert!(report.rows() > 50, "{report:?}");
    eprintln!(
        "copied {} rows in {:?} ({:?})",
        report.rows(),
        report.elapsed,
        report.copied
    );

    // every row, column by column; the hashed JSON byte for byte
    for (t, copied) in TABLES.iter().zip(&report.copied) {
        let theirs = sqlite_rows(&file, t);
        assert!(!theirs.is_empty(), "{t} has rows in the demo ledger");
        assert_eq!(copied.rows, theirs.len() as u64, "{t}");
        assert_eq!(pg_rows(&mut db.raw, t), theirs, "{t}");
    }
    let (a, b) = hashed_texts(&file, &mut db.raw);
    assert_eq!(a, b);

    // through the read APIs of both engines
    let (target, _clock) = db.engine_at("2026-11-22T11:30:00.000Z");
    let ids: Vec<i64> = sqlite_rows(&file, "jobs")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    for id in &ids {
        assert_eq!(
            target.jobs().get(*id).unwrap(),
            source.jobs().get(*id).unwrap()
        );
        assert_eq!(
            target.events().since(*id, 0, 200).unwrap(),
            source.events().since(*id, 0, 200).unwrap(),
            "events of job {id}"
        );
    }
    let runs = source
        .runs()
        .list(&RunFilter {
            limit: 1000,
            ..RunFilter::default()
        })
        .unwrap();
    assert!(runs.iter().any(|r| r.meta.get("blockedStage").is_some()));
    assert!(runs.iter().any(|r| !r.timeline.is_empty()));
    for run in &runs {
        assert_eq!(&target.runs().get(run.id).unwrap(), run);
    }
    for slot in source.schedules().all_slots().unwrap() {
        assert_eq!(target.schedules().slot(slot.id).unwrap(), slot);
    }
    // the catalog, probes, raw records and payloads, the supervisors' bookkeeping
    let modules = source.runs().modules().unwrap();
    assert!(!modules.is_empty());
    assert_eq!(target.runs().modules().unwrap(), modules);
    // (each newest probe; freshness depends on each engine's clock)
    let config = runledger::run::PreflightConfig::default();
    let probes = |snap: runledger::run::ReadinessSnapshot| {
        snap.modules
            .into_iter()
            .map(|m| (m.module, m.domain, m.last_probe))
            .collect::<Vec<_>>()
    };
    for scope in [Scope::Targets, Scope::Universe] {
        let at_source = probes(source.runs().readiness(scope, &config).unwrap());
        assert!(at_source.iter().any(|m| m.2.is_some()), "{scope:?}");
        let at_target = probes(target.runs().readiness(scope, &config).unwrap());
        assert_eq!(at_target, at_source, "{scope:?}");
    }
    let all = RawFilter {
        limit: 1000,
        ..RawFilter::default()
    };
    let records = source.runs().raw_list(&all).unwrap();
    assert!(!records.is_empty(), "the demo stores raw records");
    assert_eq!(target.runs().raw_list(&all).unwrap(), records);
    for r in &records {
        assert_eq!(target.runs().raw_record(r.id).unwrap(), *r);
        assert_eq!(
            target.runs().raw_records(r.run_id).unwrap(),
            source.runs().raw_records(r.run_id).unwrap()
        );
        assert_eq!(
            target.runs().raw_payload(&r.sha256).unwrap(),
            source.runs().raw_payload(&r.sha256).unwrap()
        );
    }
    let names: Vec<String> = sqlite_rows(&file, "supervisor_state")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.is_empty(), "the demo's supervisor ticked");
    for name in names {
        let opts = SupervisorOptions {
            name,
            ..SupervisorOptions::default()
        };
        let theirs = Supervisor::new(source.clone(), opts.clone())
            .unwrap()
            .status()
            .unwrap();
        assert!(theirs.is_some());
        assert_eq!(target.supervisor(opts).unwrap().status().unwrap(), theirs);
    }

    // doctor on both sides: no errors, and the same warnings (work for the sweepers)
    let now = Some(source.now());
    let opts = DoctorOptions {
        now,
        ..DoctorOptions::default()
    };
    let sqlite = doctor::check(&source, &opts).unwrap();
    let pg = pg::doctor::check(&target, &opts).unwrap();
    assert!(sqlite.errors().next().is_none(), "{sqlite:#?}");
    assert!(pg.errors().next().is_none(), "{pg:#?}");
    let warnings = |r: &doctor::DoctorReport| {
        r.warnings()
            .filter(|a| a.check != "file_mode")
            .map(|a| (a.check, a.table.clone(), a.row_id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(warnings(&pg), warnings(&sqlite));

    // identity sequences are past every id SQLite handed out (the deleted job's included)
    let max_job = *ids.iter().max().unwrap();
    let next = target
        .jobs()
        .create(&NewJob::new("u3", "after", json!({})))
        .unwrap();
    assert_eq!(
        next.id,
        max_job + 2,
        "the newest job ({}) was deleted",
        max_job + 1
    );

    // a second copy into the now non-empty ledger is refused, nothing written
    let before = counts(&mut db.raw);
    let err = copy_from_sqlite(&source, &db.url, &self::opts(), &mut |_| Ok(())).unwrap_err();
    assert_eq!(err.code(), "COPY_TARGET_NOT_EMPTY", "{err}");
    assert_eq!(counts(&mut db.raw), before);
}

#[test]
fn pg_copy_that_fails_midway_leaves_the_target_empty() {
    let Some(mut db) = TestDb::new("copy_fails") else {
        return;
    };
    let dir = TempDir::new("copy_fails");
    let source = busy_sqlite(&dir.path().join("busy.db"));
    let err = copy_from_sqlite(&source, &db.url, &opts(), &mut |p| {
        if p.table == "ingest_runs" && p.done {
            Err(runledger::Error::Busy)
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(err.code(), "BUSY");
    assert_eq!(counts(&mut db.raw), vec![0; TABLES.len()]);
    // and the target takes a whole copy afterwards
    let report = copy_from_sqlite(&source, &db.url, &opts(), &mut |_| Ok(())).unwrap();
    assert!(report.target.errors().next().is_none());
}

#[test]
fn pg_copy_refuses_a_source_doctor_finds_errors_in() {
    let Some(mut db) = TestDb::new("copy_unclean") else {
        return;
    };
    let dir = TempDir::new("copy_unclean");
    let file = dir.path().join("busy.db");
    drop(busy_sqlite(&file));
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.execute_batch(
        "drop trigger audit_log_no_update; update audit_log set actor = 'mallory' where id = 1",
    )
    .unwrap();
    drop(conn);
    let source = Engine::open(&file).unwrap();
    let err = copy_from_sqlite(&source, &db.url, &opts(), &mut |_| Ok(())).unwrap_err();
    let runledger::Error::CopySourceRefused { names, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(names.contains(&"audit_chain".to_string()), "{names:?}");
    assert!(names.contains(&"immutable_guard".to_string()), "{names:?}");
    // nothing was written (the target was not even migrated)
    let tables: i64 = db
        .raw
        .query_one(
            "select count(*) from pg_tables where schemaname = current_schema()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    let _ = db.exec("select 1");
}

#[test]
fn pg_copy_without_the_replication_setting_is_refused_with_a_typed_error() {
    let Some(mut db) = TestDb::new("copy_nopriv") else {
        return;
    };
    let dir = TempDir::new("copy_nopriv");
    let source = busy_sqlite(&dir.path().join("busy.db"));
    // an ordinary role that may create the ledger's tables in this schema, nothing more
    db.raw
        .batch_execute(
            "do $$ begin
               if not exists (select 1 from pg_roles where rolname = 'rl_copy_plain') then
                 create role rl_copy_plain login nosuperuser;
               end if;
             end $$;
             grant all on schema rl_copy_nopriv to rl_copy_plain",
        )
        .unwrap();
    let url = db
        .url
        .replacen("postgres://postgres@", "postgres://rl_copy_plain@", 1);
    assert_ne!(url, db.url, "the test URL names the user postgres");
    let err = copy_from_sqlite(&source, &url, &opts(), &mut |_| Ok(())).unwrap_err();
    assert_eq!(err.code(), "COPY_PRIVILEGE", "{err}");
    assert_eq!(counts(&mut db.raw), vec![0; TABLES.len()]);
}

/// The child of [`pg_copy_killed_midway_leaves_the_target_empty`]: copies, and stops
/// (printing `STALLED`) after the events, until it is killed.
#[test]
#[ignore = "child process of pg_copy_killed_midway_leaves_the_target_empty"]
fn pg_copy_child_that_stalls() {
    if !is_child() {
        return;
    }
    let file = PathBuf::from(std::env::var("COPY_SOURCE").unwrap());
    let url = std::env::var("COPY_TARGET").unwrap();
    let source = Engine::open(&file).unwrap();
    let _ = copy_from_sqlite(&source, &url, &opts(), &mut |p| {
        if p.table == "job_events" && p.done {
            println!("STALLED");
            std::thread::sleep(Duration::from_secs(120));
        }
        Ok(())
    });
}

#[test]
fn pg_copy_killed_midway_leaves_the_target_empty() {
    let Some(mut db) = TestDb::new("copy_killed") else {
        return;
    };
    let dir = TempDir::new("copy_killed");
    let file = dir.path().join("busy.db");
    drop(busy_sqlite(&file));
    let mut child = spawn_child(
        "copy::pg_copy_child_that_stalls",
        &[
            ("COPY_SOURCE", file.display().to_string()),
            ("COPY_TARGET", db.url.clone()),
        ],
    );
    let stdout = child.stdout.take().unwrap();
    let stalled = std::io::BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l.contains("STALLED"));
    assert!(stalled, "the child reached the stall");
    child.kill().unwrap();
    child.wait().unwrap();
    // the server rolls the dead session's transaction back and frees its table locks: a
    // whole copy goes through afterwards
    assert_eq!(counts(&mut db.raw), vec![0; TABLES.len()]);
    let source = Engine::open(&file).unwrap();
    let report = copy_from_sqlite(&source, &db.url, &opts(), &mut |_| Ok(())).unwrap();
    assert_eq!(
        report.rows() as i64,
        counts(&mut db.raw).iter().sum::<i64>()
    );
    // the doctors' share, measured again on their own
    let t = std::time::Instant::now();
    doctor::check(&source, &DoctorOptions::default()).unwrap();
    let sqlite_doctor = t.elapsed();
    let target = db.engine();
    let t = std::time::Instant::now();
    pg::doctor::check(&target, &DoctorOptions::default()).unwrap();
    eprintln!(
        "COPY SPEED: SQLite doctor {sqlite_doctor:?}, PostgreSQL doctor {:?}",
        t.elapsed()
    );
}

/// The copy's speed on a larger ledger (`COPY_SPEED_JOBS` jobs, default 20000, each with
/// its created event; every tenth claimed and completed): rows/s printed. Run by hand:
/// `cargo test --features postgres --test pg pg_copy_speed -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run by hand"]
fn pg_copy_speed() {
    let Some(mut db) = TestDb::new("copy_speed") else {
        return;
    };
    let n: usize = std::env::var("COPY_SPEED_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = TempDir::new("copy_speed");
    let source = Engine::open(dir.path().join("speed.db")).unwrap();
    let started = std::time::Instant::now();
    for chunk in 0..n.div_ceil(1000) {
        let batch: Vec<NewJob> = (0..1000.min(n - chunk * 1000))
            .map(|i| {
                NewJob::new(
                    "u",
                    "speed",
                    json!({"i": chunk * 1000 + i, "pad": "x".repeat(100)}),
                )
            })
            .collect();
        source.jobs().create_many(&batch).unwrap();
    }
    for _ in 0..n / 10 {
        let claim = source.jobs().claim("w", &["speed"]).unwrap().unwrap();
        source
            .jobs()
            .complete(&claim, &json!({"ok": true}))
            .unwrap();
    }
    eprintln!("source built in {:?}", started.elapsed());
    let report = copy_from_sqlite(&source, &db.url, &opts(), &mut |p| {
        if p.done {
            eprintln!("copy: {} {} rows", p.table, p.rows);
        }
        Ok(())
    })
    .unwrap();
    let secs = report.elapsed.as_secs_f64();
    eprintln!(
        "COPY SPEED: {} rows in {:.2} s = {:.0} rows/s (source doctor, copy and target doctor included)",
        report.rows(),
        secs,
        report.rows() as f64 / secs
    );
    assert_eq!(
        report.rows() as i64,
        counts(&mut db.raw).iter().sum::<i64>()
    );
    // the doctors' share, measured again on their own
    let t = std::time::Instant::now();
    doctor::check(&source, &DoctorOptions::default()).unwrap();
    let sqlite_doctor = t.elapsed();
    let target = db.engine();
    let t = std::time::Instant::now();
    pg::doctor::check(&target, &DoctorOptions::default()).unwrap();
    eprintln!(
        "COPY SPEED: SQLite doctor {sqlite_doctor:?}, PostgreSQL doctor {:?}",
        t.elapsed()
    );
}

/// The last gate: the copied ledger goes through the PostgreSQL doctor before COMMIT. A
/// target whose schema was tampered with (a trigger disabled while it was still empty)
/// takes the rows, fails the doctor, and is rolled back to empty.
#[test]
fn pg_copy_into_a_tampered_schema_fails_its_doctor_and_rolls_back() {
    let Some(mut db) = TestDb::new("copy_verify") else {
        return;
    };
    drop(db.engine()); // migrated, empty
    db.exec("alter table audit_log disable trigger audit_log_no_update")
        .unwrap();
    let dir = TempDir::new("copy_verify");
    let source = busy_sqlite(&dir.path().join("busy.db"));
    let err = copy_from_sqlite(&source, &db.url, &opts(), &mut |_| Ok(())).unwrap_err();
    let runledger::Error::CopyVerifyFailed { checks } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(checks, &["immutable_guard"]);
    assert_eq!(err.code(), "COPY_VERIFY_FAILED");
    assert_eq!(counts(&mut db.raw), vec![0; TABLES.len()]);
}
