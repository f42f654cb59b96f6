//! runbook.pg.sql, the PostgreSQL twin of runbook.sql (every query): a ledger planted through `PgEngine`
//! (raw SQL only for what the PostgreSQL facades do not write yet: stage timelines and a
//! schedule's next slot), every query run through the real `psql` and through the
//! `postgres` crate, and each answer compared with what runbook.sql answers on a SQLite
//! copy of the same rows.

use std::process::Command;
use std::time::Duration;

use postgres::SimpleQueryMessage;
use runledger::pg::PgEngine;
use runledger::run::{Module, ProbeError};
use runledger::{runbook, Clock, Engine, ManualClock, NewJob, RunStatus, Scope, TriggerKind};
use serde_json::{json, Value};

use crate::common::TestDb;

const RUNBOOK_PG: &str = include_str!("../../runbook.pg.sql");

/// Columns whose value depends on the wall clock of the moment the query runs.
const AGE_COLUMNS: &[&str] = &["running_s", "lease_left_s", "silent_s"];
/// Tables the runbook reads, copied row for row into the SQLite ledger.
const TABLES: &[&str] = &[
    "jobs",
    "ingest_runs",
    "schedules",
    "due_runs",
    "ingest_modules",
    "ingest_probes",
];

/// One timeline entry in the shape src/run/timeline.rs writes.
fn entry(
    stage: &str,
    status: &str,
    start: &str,
    end: Option<(&str, i64)>,
    code: Option<&str>,
) -> Value {
    json!({
        "v": 1, "stage": stage, "kind": "runner", "attempt": 1, "status": status,
        "started_at": start, "finished_at": end.map(|e| e.0), "duration_ms": end.map(|e| e.1),
        "error_code": code, "message": code.map(|_| "stage failed"), "detail": null,
    })
}

fn set_timeline(db: &mut TestDb, run: i64, timeline: &Value) {
    db.raw
        .execute(
            "update ingest_runs set timeline = $2 where id = $1",
            &[&run, timeline],
        )
        .unwrap();
}

/// Plants runs, slots and jobs covering every runbook query (at fixed past times).
fn plant(db: &mut TestDb, engine: &PgEngine, clock: &ManualClock) {
    let runs = engine.runs();
    let lease = Duration::from_secs(300);
    // flex targets: a successful run with four stages
    let ok = runs
        .start("flex", Scope::Targets, TriggerKind::Schedule, None, lease)
        .unwrap();
    let t = |s: &str| format!("2026-11-20T10:00:{s}.000Z");
    set_timeline(
        db,
        ok,
        &json!([
            entry("request", "success", &t("00"), Some((&t("01"), 1000)), None),
            entry("poll", "success", &t("01"), Some((&t("04"), 3000)), None),
            entry(
                "download",
                "success",
                &t("04"),
                Some((&t("05"), 1000)),
                None
            ),
        ]),
    );
    clock.advance(Duration::from_secs(6));
    runs.finish(ok, RunStatus::Success, None, &json!({}))
        .unwrap();
    // flex universe: blocked by a gate
    let blocked = runs
        .start("flex", Scope::Universe, TriggerKind::Schedule, None, lease)
        .unwrap();
    runs.finish(
        blocked,
        RunStatus::Failed,
        Some(("TOKEN_MISSING", "no Flex token configured")),
        &json!({"blockedStage": "token", "errorCode": "TOKEN_MISSING", "source": "schedule", "scope": "universe"}),
    )
    .unwrap();
    // a day later: prices targets fails in a stage
    clock.advance(Duration::from_secs(86_400));
    let bad = runs
        .start("prices", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    let t2 = "2026-11-21T10:00:06.000Z";
    set_timeline(
        db,
        bad,
        &json!([entry(
            "fetch",
            "failed",
            t2,
            Some((t2, 0)),
            Some("HTTP_502")
        )]),
    );
    runs.finish(
        bad,
        RunStatus::Failed,
        Some(("HTTP_502", "bad gateway")),
        &json!({}),
    )
    .unwrap();
    // a flex targets run that stays started, and a second start turned away by its lock
    clock.advance(Duration::from_secs(60));
    let live = runs
        .start(
            "flex",
            Scope::Targets,
            TriggerKind::Manual,
            None,
            Duration::from_secs(3600),
        )
        .unwrap();
    set_timeline(
        db,
        live,
        &json!([entry(
            "request",
            "started",
            &clock.now().to_string(),
            None,
            None
        )]),
    );
    clock.advance(Duration::from_secs(1));
    let refused = runs
        .start("flex", Scope::Targets, TriggerKind::Schedule, None, lease)
        .unwrap_err();
    assert_eq!(refused.code(), "RUN_ALREADY_ACTIVE");
    // prices universe: the holder dies in its stage, the sweep abandons it
    clock.advance(Duration::from_secs(1));
    let dead = runs
        .start(
            "prices",
            Scope::Universe,
            TriggerKind::Schedule,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    set_timeline(
        db,
        dead,
        &json!([entry(
            "fetch",
            "started",
            &clock.now().to_string(),
            None,
            None
        )]),
    );
    clock.advance(Duration::from_secs(120));
    assert_eq!(runs.sweep().unwrap(), vec![dead]);

    // schedules: hourly-prices fired, skipped, failed, one slot claimed by a crashed
    // ticker and one pending; daily-flex never fired
    let schedules = engine.schedules();
    let hourly = schedules
        .create(
            "hourly-prices",
            "prices",
            runledger::ScopeSelector::Targets,
            &"every 60m".parse().unwrap(),
            &"UTC".parse().unwrap(),
        )
        .unwrap();
    schedules
        .create(
            "daily-flex",
            "flex",
            runledger::ScopeSelector::Both,
            &"daily 06:00".parse().unwrap(),
            &"UTC".parse().unwrap(),
        )
        .unwrap();
    let base = runledger::Timestamp::parse("2026-11-21T11:00:00.000Z").unwrap();
    let hour = Duration::from_secs(3600);
    clock.set(base + hour * 6);
    let claim_next = |due: runledger::Timestamp| {
        schedules.materialize(hourly, due).unwrap().unwrap();
        let mut claims = schedules.claim_due("ticker-a", 1).unwrap();
        assert_eq!(claims.len(), 1);
        claims.remove(0)
    };
    let c = claim_next(base);
    let run = runs
        .start_for_slot(
            "prices",
            Scope::Targets,
            TriggerKind::Schedule,
            None,
            lease,
            Some(c.slot_id),
        )
        .unwrap();
    runs.finish(run, RunStatus::Success, None, &json!({}))
        .unwrap();
    schedules.fired(&c, &[run]).unwrap();
    clock.advance(Duration::from_secs(1));
    let c = claim_next(base + hour);
    let run2 = runs
        .start_for_slot(
            "prices",
            Scope::Targets,
            TriggerKind::Schedule,
            None,
            lease,
            Some(c.slot_id),
        )
        .unwrap();
    runs.finish(run2, RunStatus::Success, None, &json!({}))
        .unwrap();
    schedules.fired(&c, &[run2]).unwrap();
    let c = claim_next(base + hour * 2);
    schedules
        .skipped(&c, "MISFIRE_LATEST_ONLY", Some("a newer slot was due"))
        .unwrap();
    let c = claim_next(base + hour * 3);
    schedules
        .failed(&c, "RUN_ALREADY_ACTIVE", Some("prices:targets is held"))
        .unwrap();
    let _crashed = claim_next(base + hour * 4);
    schedules
        .materialize(hourly, base + hour * 5)
        .unwrap()
        .unwrap();
    db.exec("update schedules set next_due_at = '2026-11-21T17:00:00.000Z' where name = 'hourly-prices'")
        .unwrap();
    db.exec(
        "update schedules set next_due_at = '2026-11-22T06:00:00.000Z' where name = 'daily-flex'",
    )
    .unwrap();

    // modules: untested (both scopes), last probe failed, last probe ok but old, disabled
    let m = |name: &str, scopes: &[Scope], enabled: bool| Module {
        module: name.into(),
        domain: "market_data".into(),
        scopes: scopes.to_vec(),
        enabled,
    };
    for module in [
        m("quotes", &[Scope::Targets, Scope::Universe], true),
        m("ib_flex", &[Scope::Targets], true),
        m("fx", &[Scope::Universe], true),
        m("retired", &[Scope::Targets], false),
    ] {
        runs.upsert_module(&module).unwrap();
    }
    runs.record_probe("ib_flex", &Ok(()), 40).unwrap();
    clock.advance(Duration::from_secs(1));
    runs.record_probe("ib_flex", &Err(ProbeError::new("HTTP_503", "down")), 90)
        .unwrap();
    runs.record_probe("fx", &Ok(()), 12).unwrap();
    runs.record_probe("retired", &Err(ProbeError::new("GONE", "gone")), 1)
        .unwrap();

    // jobs: one stuck running, one completed, one failed, one waiting
    let jobs = engine.jobs();
    for kind in ["research", "report", "report", "export"] {
        jobs.create(&NewJob::new("u1", kind, json!({}))).unwrap();
    }
    let stuck = jobs.claim("w1", &["research"]).unwrap().unwrap();
    jobs.progress(&stuck, 40, Some("fetching")).unwrap();
    let done = jobs.claim("w2", &["report"]).unwrap().unwrap();
    jobs.complete(&done, &json!({"ok": true})).unwrap();
    let failed = jobs.claim("w2", &["report"]).unwrap().unwrap();
    jobs.fail(&failed, "HTTP_500", "upstream").unwrap();
}

/// A SQLite ledger holding the PostgreSQL ledger's rows (same ids, same text). Its triggers
/// are dropped first: they refuse rows born finished, which a copy of a ledger is made of.
fn sqlite_copy(db: &mut TestDb, dir: &std::path::Path) -> rusqlite::Connection {
    let path = dir.join("copy.db");
    drop(Engine::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let triggers: Vec<String> = conn
        .prepare("select name from sqlite_master where type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in triggers {
        conn.execute_batch(&format!("drop trigger \"{t}\""))
            .unwrap();
    }
    for table in TABLES {
        let sqlite_cols: Vec<String> = conn
            .prepare(&format!("select name from pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let rows = db
            .raw
            .query(
                &format!("select row_to_json(t)::text from {table} t order by 1"),
                &[],
            )
            .unwrap();
        for row in rows {
            let text: String = row.get(0);
            let Value::Object(map) = serde_json::from_str::<Value>(&text).unwrap() else {
                unreachable!()
            };
            let (mut cols, mut vals) = (Vec::new(), Vec::<rusqlite::types::Value>::new());
            for (col, v) in map {
                assert!(
                    sqlite_cols.contains(&col),
                    "{table}.{col} is not in the SQLite schema"
                );
                cols.push(col);
                vals.push(match v {
                    Value::Null => rusqlite::types::Value::Null,
                    Value::Bool(b) => rusqlite::types::Value::Integer(i64::from(b)),
                    Value::Number(n) => n.as_i64().map_or_else(
                        || rusqlite::types::Value::Real(n.as_f64().unwrap()),
                        rusqlite::types::Value::Integer,
                    ),
                    Value::String(s) => rusqlite::types::Value::Text(s),
                    other => rusqlite::types::Value::Text(other.to_string()),
                });
            }
            let marks = vec!["?"; cols.len()].join(", ");
            conn.execute(
                &format!("insert into {table} ({}) values ({marks})", cols.join(", ")),
                rusqlite::params_from_iter(vals),
            )
            .unwrap();
        }
    }
    conn
}

/// The rows of `sql` as text, as the server prints them (`None`: null), with the columns.
fn pg_text(db: &mut TestDb, sql: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in db.raw.simple_query(sql).unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            if columns.is_empty() {
                columns = r.columns().iter().map(|c| c.name().to_string()).collect();
            }
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    (columns, rows)
}

/// The same rows through the `psql` binary: unaligned, unit/record separators, a null marker.
fn psql_text(url_schema: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-F", "\u{1f}", "-R", "\u{1e}", "-P", "null=\u{1}NULL"])
        .arg(url_schema)
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.strip_suffix('\n').unwrap_or(&text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\u{1e}')
        .map(|row| {
            row.split('\u{1f}')
                .map(|v| (v != "\u{1}NULL").then(|| v.to_string()))
                .collect()
        })
        .collect()
}

/// A value as both sides are compared: numbers by value, JSON text parsed, booleans as 0/1.
fn norm(v: Option<&str>) -> Value {
    let Some(s) = v else { return Value::Null };
    match s {
        "t" => return json!(1.0),
        "f" => return json!(0.0),
        _ => {}
    }
    if let Ok(n) = s.parse::<f64>() {
        if s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return json!(n);
        }
    }
    if s.starts_with('[') || s.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(s) {
            return v;
        }
    }
    json!(s)
}

fn sqlite_norm(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::String(s) => norm(Some(s)),
        other => other.clone(),
    }
}

fn redact(columns: &[String], mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    for (i, col) in columns.iter().enumerate() {
        if AGE_COLUMNS.contains(&col.as_str()) {
            for row in &mut rows {
                assert!(row[i].is_number(), "{col} is a number: {:?}", row[i]);
                row[i] = json!("[age]");
            }
        }
    }
    rows
}

/// Whether `psql` can be run; with `RUNLEDGER_TEST_PG` set (CI) it must.
fn have_psql() -> bool {
    match Command::new("psql").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ if std::env::var_os("RUNLEDGER_TEST_PG").is_some() => {
            panic!("RUNLEDGER_TEST_PG is set but psql cannot be run: install postgresql-client")
        }
        _ => {
            eprintln!("psql is not installed: skipping the shell half of this test");
            false
        }
    }
}

#[test]
fn pg_runbook_answers_what_the_sqlite_runbook_answers() {
    let Some(mut db) = TestDb::new("runbook") else {
        return;
    };
    let (engine, clock) = db.engine_at("2026-11-20T10:00:00.000Z");
    plant(&mut db, &engine, &clock);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_copy(&mut db, dir.path());

    let twin = runbook::parse(RUNBOOK_PG).unwrap();
    let names: Vec<&str> = twin.iter().map(|q| q.name.as_str()).collect();
    let expected: Vec<&str> = runbook::queries().iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names, expected,
        "the twin has every query, in the same order"
    );
    let psql = have_psql();
    for q in &twin {
        let sqlite_q = runbook::query(&q.name).unwrap();
        assert!(!q.comment.is_empty());
        let ours = runbook::run_sql(&sqlite, &sqlite_q.sql).unwrap();
        let (columns, pg_rows) = pg_text(&mut db, &q.sql);
        assert!(
            !pg_rows.is_empty(),
            "{} returned no rows on PostgreSQL",
            q.name
        );
        assert_eq!(columns, ours.columns, "{} columns", q.name);
        if psql {
            let blank = |rows: Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
                rows.into_iter()
                    .map(|r| {
                        r.into_iter()
                            .zip(&columns)
                            .map(|(v, c)| {
                                if AGE_COLUMNS.contains(&c.as_str()) {
                                    None
                                } else {
                                    v
                                }
                            })
                            .collect()
                    })
                    .collect()
            };
            assert_eq!(
                blank(psql_text(&db.url, &q.sql)),
                blank(pg_rows.clone()),
                "{}: psql and the postgres crate",
                q.name
            );
        }
        let pg: Vec<Vec<Value>> = pg_rows
            .iter()
            .map(|r| r.iter().map(|v| norm(v.as_deref())).collect())
            .collect();
        let lite: Vec<Vec<Value>> = ours
            .rows
            .iter()
            .map(|r| r.iter().map(sqlite_norm).collect())
            .collect();
        assert_eq!(
            redact(&columns, pg.clone()),
            redact(&columns, lite),
            "{}: PostgreSQL and SQLite answers differ",
            q.name
        );
        // the crate's runner (the CLI's `runbook` on a URL) types the same values
        let typed = runledger::pg::runbook::run(&engine, &q.name).unwrap();
        assert_eq!(typed.columns, columns, "{}", q.name);
        let typed: Vec<Vec<Value>> = typed
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|v| match v {
                        Value::Bool(b) => json!(if *b { 1.0 } else { 0.0 }),
                        other => sqlite_norm(other),
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            redact(&columns, typed),
            redact(&columns, pg),
            "{}: runledger::pg::runbook::run",
            q.name
        );
    }
    // stale_probes: quotes untested in both scopes, ib_flex's newest probe failed, fx's ok
    // probe old; the disabled module is not listed
    let stale = twin.iter().find(|q| q.name == "stale_probes").unwrap();
    let (_, rows) = pg_text(&mut db, &stale.sql);
    let listed: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[6].clone().unwrap(),
            )
        })
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        listed,
        [
            row("targets", "ib_flex", "failed"),
            row("targets", "quotes", "untested"),
            row("universe", "fx", "stale"),
            row("universe", "quotes", "untested"),
        ]
    );
    // the whole file, as an operator runs it
    if psql {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &db.url, "-f"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/runbook.pg.sql"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql -f runbook.pg.sql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("hourly-prices") && text.contains("ABANDONED"),
            "{text}"
        );
    }
}
