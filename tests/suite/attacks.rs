//! Issue 12: a stock sqlite3 shell cannot break an invariant. Every attack below is an
//! illegal DML statement typed against a fresh demo database with foreign keys OFF and
//! recursive triggers OFF (a stock shell's defaults); each must be refused by the database
//! with its code, and leave every row as it was. The same list is then typed into the real
//! `sqlite3` shell when it is installed. DDL cannot be forbidden, only detected: the
//! `doctor_*` tests plant each DDL trace and assert `doctor` reports it as an error.
//! Upgrading a file made by the V4 release is proved on the committed fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

use runledger::doctor::{self, DoctorOptions, Severity};
use runledger::job::NewJob;
use runledger::{Engine, Error};
use rusqlite::Connection;
use serde_json::json;

const TS: &str = "2026-11-29T12:00:00.000Z";
const H: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The ids of the rows the attacks aim at.
struct Target {
    dir: tempfile::TempDir,
    running: i64,
    created: i64,
    completed: i64,
    started_run: i64,
    terminal_run: i64,
    claimed_slot: i64,
    pending_slot: i64,
    skipped_slot: i64,
}

impl Target {
    fn path(&self) -> PathBuf {
        self.dir.path().join("demo.db")
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_runledger")
}

/// `runledger demo`, then a running and a created job (through the API), a started run and
/// schedule slots pending, claimed and skipped (through legal raw SQL).
fn demo() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.db");
    let out = Command::new(bin())
        .args(["demo", "--db"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let engine = Engine::open(&path).unwrap();
    let jobs = engine.jobs();
    let running = jobs
        .create(&NewJob::new("alice", "research", json!({"a": 1})).tags(["x"]))
        .unwrap();
    jobs.claim("w1", &[]).unwrap().unwrap();
    let created = jobs
        .create(&NewJob::new("bob", "export", json!({})))
        .unwrap();
    let cancelled = jobs
        .create(&NewJob::new("carol", "export", json!({})))
        .unwrap();
    jobs.cancel(cancelled.id, "op", Some("test")).unwrap();
    engine
        .with_connection(|c| {
            Ok(c.execute_batch(&format!(
                "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at, meta_json, timeline)
                 values ('attack', 'targets', 'manual', 'attack:targets', '{TS}', '2099-01-01T00:00:00.000Z',
                         '{{\"source\":\"manual\",\"scope\":\"targets\"}}',
                         json_array(json_object('v', 1, 'stage', 'preflight', 'kind', 'gate', 'attempt', 1,
                           'status', 'success', 'started_at', '{TS}', 'finished_at', '{TS}', 'duration_ms', 0,
                           'error_code', null, 'message', null, 'detail', null)));
                 insert into due_runs (schedule_id, due_at, status, created_at)
                 values (1, '2026-11-29T09:00:00.000Z', 'pending', '{TS}'),
                        (1, '2026-11-29T10:00:00.000Z', 'pending', '{TS}'),
                        (1, '2026-11-29T11:00:00.000Z', 'pending', '{TS}');
                 update due_runs set status = 'claimed', claimed_at = '{TS}', claimed_by = 'ticker-1'
                  where due_at = '2026-11-29T09:00:00.000Z';
                 update due_runs set status = 'skipped', finished_at = '{TS}', outcome_code = 'MISFIRE'
                  where due_at = '2026-11-29T11:00:00.000Z';
                 update schedules set last_due_at = '2026-11-29T11:00:00.000Z' where id = 1;"
            ))?)
        })
        .unwrap();
    let id = |sql: &str| -> i64 {
        engine
            .with_connection(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .unwrap()
    };
    let t = Target {
        running: running.id,
        created: created.id,
        completed: id("select id from jobs where state = 'completed' order by id limit 1"),
        started_run: id("select id from ingest_runs where status = 'started'"),
        terminal_run: id("select id from ingest_runs where status = 'success' order by id limit 1"),
        claimed_slot: id("select id from due_runs where status = 'claimed'"),
        pending_slot: id("select id from due_runs where status = 'pending'"),
        skipped_slot: id("select id from due_runs where status = 'skipped'"),
        dir,
    };
    drop(engine);
    let report = doctor::check_path(&t.path(), &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
    t
}

/// Every row of every table (sqlite_sequence included), as text.
fn dump(conn: &Connection) -> String {
    let mut out = String::new();
    let names: Vec<String> = conn
        .prepare("select name from sqlite_master where type = 'table' order by name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for name in names {
        out.push_str(&format!("-- {name}\n"));
        let mut stmt = conn
            .prepare(&format!("select * from \"{name}\" order by 1"))
            .unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let vals: Vec<String> = (0..n)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            out.push_str(&vals.join("|"));
            out.push('\n');
        }
    }
    out
}

/// (class, statement, expected code) for every attack.
fn attacks(t: &Target) -> Vec<(u8, String, &'static str)> {
    let (r, c, d) = (t.running, t.created, t.completed);
    let (s, tr) = (t.started_run, t.terminal_run);
    let (k, p, sk) = (t.claimed_slot, t.pending_slot, t.skipped_slot);
    let job = |id: &str, extra_cols: &str, extra_vals: &str| {
        format!(
            "insert into jobs (id, user_id, kind, created_at, updated_at{extra_cols}) values ({id}, 'u', 'k', '{TS}', '{TS}'{extra_vals})"
        )
    };
    let run = |lock: &str, extra_cols: &str, extra_vals: &str| {
        format!(
            "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at{extra_cols})
             values ('attack', 'targets', 'manual', {lock}, '{TS}', '2099-01-01T00:00:00.000Z'{extra_vals})"
        )
    };
    let deep = format!("{}{}", "[".repeat(150), "]".repeat(150));
    let mut v: Vec<(u8, String, &'static str)> = vec![
        // 1. REPLACE and UPSERT
        (1, format!("insert or replace into jobs (id, user_id, kind, created_at, updated_at) values ({d}, 'demo', 'research', '{TS}', '{TS}')"), "IMMUTABLE"),
        (1, format!("replace into jobs (id, user_id, kind, created_at, updated_at) values ({r}, 'alice', 'research', '{TS}', '{TS}')"), "IMMUTABLE"),
        (1, format!("{} on conflict (id) do update set state = 'created', attempt = 0", job(&d.to_string(), "", "")), "IMMUTABLE"),
        (1, format!("insert or replace into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('attack', 'targets', 'manual', 'attack:targets', '{TS}', '{TS}')"), "RUN_ALREADY_ACTIVE"),
        (1, format!("insert or replace into ingest_runs (id, pipeline, scope, trigger, status, lock_key, started_at, finished_at, duration_ms, error_code, meta_json) values ({tr}, 'ingest', 'targets', 'manual', 'failed', 'ingest:targets', '{TS}', '{TS}', 0, 'X', '{{\"blockedStage\":\"x\",\"errorCode\":\"X\",\"source\":\"manual\",\"scope\":\"targets\"}}')"), "IMMUTABLE"),
        (1, "insert or replace into audit_log (id, entity, entity_id, action, actor, at, detail, hash) select id, entity, entity_id, 'forged', actor, at, detail, hash from audit_log order by id limit 1".into(), "IMMUTABLE"),
        (1, "insert or replace into raw_payloads (sha256, size, payload) select sha256, 1, x'00' from raw_payloads limit 1".into(), "IMMUTABLE"),
        (1, "insert or replace into raw_records select * from raw_records limit 1".into(), "IMMUTABLE"),
        (1, format!("insert or replace into schedules (name, pipeline, scope, rule, zone, created_at, updated_at) values ('daily-ingest', 'ingest', 'both', 'daily 19:30', 'Asia/Shanghai', '{TS}', '{TS}')"), "DUPLICATE"),
        (1, format!("insert into schedules (name, pipeline, scope, rule, zone, created_at, updated_at) values ('daily-ingest', 'ingest', 'both', 'daily 19:30', 'Asia/Shanghai', '{TS}', '{TS}') on conflict (name) do update set last_due_at = null"), "DUPLICATE"),
        (1, format!("insert or replace into due_runs (schedule_id, due_at, status, created_at) values (1, '2026-11-29T09:00:00.000Z', 'pending', '{TS}')"), "ILLEGAL_TRANSITION"),
        (1, "insert or replace into supervisor_state (name, ticks) values ('supervisor', 0)".into(), "IMMUTABLE"),
        (1, format!("insert or replace into job_events (cursor, job_id, seq, kind, at, prev_hash, hash) select cursor, job_id, seq, 'failed', at, prev_hash, hash from job_events where job_id = {r} order by seq limit 1"), "EVENT_SEQ"),
        (1, format!("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('attack', 'targets', 'manual', 'attack:targets', '{TS}', '{TS}') on conflict do nothing"), "RUN_ALREADY_ACTIVE"),
        // 2. rules keyed on several columns fire on every update
        (2, format!("update jobs set worker_id = 'thief' where id = {r}"), "STALE_ATTEMPT"),
        (2, format!("update jobs set state = 'running', worker_id = 'w2', heartbeat_at = '{TS}', started_at = '{TS}' where id = {c}"), "STALE_ATTEMPT"),
        (2, format!("update due_runs set claimed_by = 'ticker-2' where id = {k}"), "CLAIM_FENCE"),
        // V6's give-back (claimed -> pending) clears the claim; it never hands it on
        (2, format!("update due_runs set status = 'pending', claimed_by = 'ticker-2' where id = {k}"), "CLAIM_FENCE"),
        (2, format!("update due_runs set status = 'pending', claimed_by = null where id = {k}"), "CLAIM_FENCE"),
        // V7's keep-alive: only the claim's own ticker moves claimed_at, only forward, while claimed
        (2, format!("update due_runs set claimed_at = strftime('%Y-%m-%dT%H:%M:%fZ', claimed_at, '-1 seconds') where id = {k}"), "CLAIM_FENCE"),
        (2, format!("update due_runs set claimed_by = 'ticker-2', claimed_at = strftime('%Y-%m-%dT%H:%M:%fZ', claimed_at, '+60 seconds') where id = {k}"), "CLAIM_FENCE"),
        (2, format!("update due_runs set status = 'skipped', finished_at = '{TS}', outcome_code = 'X', claimed_at = strftime('%Y-%m-%dT%H:%M:%fZ', claimed_at, '+1 seconds') where id = {k}"), "CLAIM_FENCE"),
        (2, "update schedules set last_due_at = null where id = 1".into(), "ILLEGAL_TRANSITION"),
        (2, format!("update jobs set recovery_count = recovery_count + 5 where id = {r}"), "ILLEGAL_TRANSITION"),
        // 3. identity
        (3, format!("update jobs set id = 9999 where id = {r}"), "IMMUTABLE"),
        (3, format!("update ingest_runs set id = 9999 where id = {s}"), "IMMUTABLE"),
        (3, format!("update due_runs set id = 9999 where id = {p}"), "IMMUTABLE"),
        (3, "update schedules set id = 9999 where id = 1".into(), "IMMUTABLE"),
        (3, "update job_events set job_id = 9999".into(), "IMMUTABLE"),
        (3, "update ingest_probes set id = 9999".into(), "IMMUTABLE"),
        (3, format!("delete from ingest_runs where id = {tr}; insert into ingest_runs (id, pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ({tr}, 'attack', 'universe', 'manual', 'attack:universe', '{TS}', '{TS}')"), "IMMUTABLE"),
        (3, job("1", "", ""), "IMMUTABLE"),
        // 4. terminal rows wholly frozen, timeline entries append-only
        (4, format!("update jobs set user_id = 'mallory' where id = {d}"), "IMMUTABLE"),
        (4, format!("update jobs set tags = '[\"forged\"]' where id = {d}"), "IMMUTABLE"),
        (4, format!("update jobs set created_at = '2020-01-01T00:00:00.000Z' where id = {d}"), "IMMUTABLE"),
        (4, format!("update jobs set recovery_count = 7 where id = {d}"), "ILLEGAL_TRANSITION"),
        (4, format!("update jobs set updated_at = '{TS}' where id = {d}"), "ILLEGAL_TRANSITION"),
        (4, format!("update ingest_runs set meta_json = '{{}}' where id = {tr}"), "ILLEGAL_TRANSITION"),
        (4, format!("update ingest_runs set timeline = json_set(timeline, '$[0].stage', 'forged') where id = {s}"), "IMMUTABLE"),
        (4, format!("update ingest_runs set timeline = '[]' where id = {s}"), "IMMUTABLE"),
        (4, format!("update due_runs set outcome_message = 'rewritten' where id = {sk}"), "ILLEGAL_TRANSITION"),
        (4, "update audit_log set actor = 'nobody'".into(), "IMMUTABLE"),
        // 5. type affinity (STRICT)
        (5, job("null", ", max_retries", ", 'lots'"), "CONSTRAINT_VIOLATION"),
        (5, format!("update jobs set progress = 50.5 where id = {r}"), "CONSTRAINT_VIOLATION"),
        (5, run("CAST('attack:universe' AS BLOB)", "", "").replace("'attack', 'targets'", "'attack', 'universe'"), "CONSTRAINT_VIOLATION"),
        (5, format!("update jobs set heartbeat_at = CAST('{TS}' AS BLOB) where id = {r}"), "CONSTRAINT_VIOLATION"),
        (5, job("null", ", timeout_ms", ", 1.5"), "CONSTRAINT_VIOLATION"),
        // 6. canonical forms
        (6, format!("update jobs set heartbeat_at = '2026-11-31T10:00:00.000Z' where id = {r}"), "CONSTRAINT_VIOLATION"),
        (6, format!("update jobs set heartbeat_at = '2026-19-01T10:00:00.000Z' where id = {r}"), "CONSTRAINT_VIOLATION"),
        (6, format!("update jobs set heartbeat_at = '2026-11-29T24:00:00.000Z' where id = {r}"), "CONSTRAINT_VIOLATION"),
        (6, format!("update jobs set heartbeat_at = '2026-02-29T10:00:00.000Z' where id = {r}"), "CONSTRAINT_VIOLATION"),
        (6, format!("update ingest_runs set status = 'success', finished_at = '2026-13-01T00:00:00.000Z', duration_ms = 5 where id = {s}"), "CONSTRAINT_VIOLATION"),
        (6, "insert into due_runs (schedule_id, due_at, status, created_at) values (1, '2026-11-31T12:00:00.000Z', 'pending', '2026-12-01T12:00:00.000Z')".into(), "CONSTRAINT_VIOLATION"),
        (6, run("'attack:universe' || char(0)", "", "").replace("'attack', 'targets'", "'attack', 'universe'"), "CONSTRAINT_VIOLATION"),
        (6, run("'attack:targets:'", "", ""), "CONSTRAINT_VIOLATION"),
        (6, run("'ATTACK:universe'", "", "").replace("'attack', 'targets'", "'attack', 'universe'"), "CONSTRAINT_VIOLATION"),
        (6, format!("insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'k' || char(0) || '{}', '{TS}', '{TS}')", "x".repeat(600)), "CONSTRAINT_VIOLATION"),
        (6, format!("insert into jobs (user_id, kind, created_at, updated_at) values ('u' || char(0) || '{}', 'k', '{TS}', '{TS}')", "x".repeat(600)), "CONSTRAINT_VIOLATION"),
        (6, format!("update jobs set step = 'a' || char(0) || '{}' where id = {r}", "x".repeat(600)), "CONSTRAINT_VIOLATION"),
        // 7. JSON shape
        (7, format!("update ingest_runs set timeline = json_insert(timeline, '$[#]', json('{{\"v\":2}}')) where id = {s}"), "INVALID_SHAPE"),
        (7, format!("insert into ingest_runs (pipeline, scope, trigger, status, lock_key, started_at, finished_at, duration_ms, error_code, meta_json) values ('attack', 'universe', 'manual', 'failed', 'attack:universe', '{TS}', '{TS}', 0, 'X', '{{\"blockedStage\":\"lock\"}}')"), "CONSTRAINT_VIOLATION"),
        (7, job("null", ", tags", ", '[1, 2]'"), "INVALID_SHAPE"),
        (7, job("null", ", tags", ", '{\"a\": \"b\"}'"), "CONSTRAINT_VIOLATION"),
        (7, job("null", ", input", &format!(", '{deep}'")), "INVALID_SHAPE"),
        (7, format!("insert into ingest_modules (module, domain, scopes, updated_at) values ('m', 'd', '[\"galaxy\"]', '{TS}')"), "INVALID_SHAPE"),
        (7, "update ingest_modules set scopes = '[1]'".into(), "INVALID_SHAPE"),
        // 8. references without a key, the cursor, the claim fence
        (8, format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (9999, 1, 'created', '{TS}', '{H}', '{H}')"), "MISSING_REFERENCE"),
        (8, format!("insert into job_events (cursor, job_id, seq, kind, at, prev_hash, hash) values (1, {c}, 2, 'progress', '{TS}', '{H}', '{H}')"), "EVENT_CURSOR"),
        (8, format!("update due_runs set status = 'fired', finished_at = '{TS}', run_ids = '[99999]' where id = {k}"), "MISSING_REFERENCE"),
        (8, format!("update due_runs set status = 'fired', finished_at = '{TS}', run_ids = '[\"1\"]' where id = {k}"), "MISSING_REFERENCE"),
        (8, format!("update due_runs set claimed_by = 'ticker-2', claimed_at = '{TS}' where id = {k}"), "CLAIM_FENCE"),
        (8, format!("insert into job_events (job_id, seq, kind, at) values ({c}, 2, 'progress', '{TS}')"), "INTEGRITY"),
        (8, format!("insert into audit_log (entity, entity_id, action, actor, at) values ('job', '1', 'forged', 'me', '{TS}')"), "INTEGRITY"),
        // 9. values only Rust checked
        (9, "update schedules set rule = 'daily 29:59' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set rule = 'daily 19:30 junk' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set rule = 'daily 19:30 fri,mon' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set rule = 'every 60m' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set rule = 'every 0m' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set rule = 'every 169h' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set rule = 'daily 19:30' || char(0) || 'x' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, "update schedules set zone = 'Mars/Olympus_Mons' where id = 1".into(), "MISSING_REFERENCE"),
        (9, "update schedules set scope = 'galaxy' where id = 1".into(), "CONSTRAINT_VIOLATION"),
        (9, run("'attack:galaxy'", "", "").replace("'attack', 'targets'", "'attack', 'galaxy'"), "CONSTRAINT_VIOLATION"),
        (9, format!("insert into ingest_probes (module, status, latency_ms, tested_at) values ('quotes', 'ok', 999999999999, '{TS}')"), "CONSTRAINT_VIOLATION"),
        (9, format!("insert into ingest_probes (module, status, latency_ms, tested_at) values ('quotes', 'ok', -1, '{TS}')"), "CONSTRAINT_VIOLATION"),
        (9, format!("update jobs set state = 'running', attempt = 1, worker_id = '', heartbeat_at = '{TS}', started_at = '{TS}' where id = {c}"), "CONSTRAINT_VIOLATION"),
        (9, format!("update jobs set state = 'failed', error_code = '', finished_at = '{TS}' where id = {r}"), "CONSTRAINT_VIOLATION"),
        (9, format!("insert into ingest_probes (module, status, code, latency_ms, tested_at) values ('quotes', 'failed', '', 1, '{TS}')"), "CONSTRAINT_VIOLATION"),
        (9, "insert into zones (name) values ('Mars/Olympus_Mons')".into(), "IMMUTABLE"),
        (9, "delete from zones where name = 'Asia/Shanghai'".into(), "IMMUTABLE"),
        // 10. foreign keys are off: triggers hold the references
        (10, format!("insert into ingest_probes (module, status, latency_ms, tested_at) values ('nope', 'ok', 1, '{TS}')"), "MISSING_REFERENCE"),
        (10, format!("insert into due_runs (schedule_id, due_at, status, created_at) values (9999, '{TS}', 'pending', '{TS}')"), "MISSING_REFERENCE"),
        (10, job("null", ", parent_id", ", 9999"), "MISSING_REFERENCE"),
        (10, format!("insert into raw_records (run_id, source, content_type, size, sha256, created_at) select 9999, 'x', 'text/plain', size, sha256, '{TS}' from raw_payloads limit 1"), "IMMUTABLE"),
        (10, "delete from raw_payloads".into(), "IMMUTABLE"),
        (10, "delete from raw_records".into(), "IMMUTABLE"),
        (10, format!("delete from ingest_runs where id = {s}"), "ILLEGAL_TRANSITION"),
        (10, "delete from schedules where id = 1".into(), "ILLEGAL_TRANSITION"),
        (10, format!("delete from jobs where id = {r}"), "ILLEGAL_TRANSITION"),
        (10, "delete from ingest_probes".into(), "IMMUTABLE"),
        (10, format!("delete from job_events where job_id = {r}"), "IMMUTABLE"),
        // the migration history and the legacy boundary are append-only too
        (11, "update refinery_schema_history set checksum = '0'".into(), "IMMUTABLE"),
        (11, "delete from refinery_schema_history where version = 5".into(), "IMMUTABLE"),
        (11, "update integrity_legacy set through_id = 999999".into(), "IMMUTABLE"),
    ];
    v.sort_by_key(|a| a.0);
    v
}

fn refused(conn: &Connection, sql: &str) -> Option<Error> {
    conn.execute_batch("SAVEPOINT attack").unwrap();
    let out = conn.execute_batch(sql).err().map(Error::from);
    conn.execute_batch("ROLLBACK TO attack; RELEASE attack")
        .unwrap();
    out
}

#[test]
fn every_illegal_statement_is_refused_by_the_database_with_its_code() {
    let t = demo();
    let conn = Connection::open(t.path()).unwrap();
    // this build's SQLite turns foreign keys on by default; a stock shell has them off
    conn.execute_batch("pragma foreign_keys = off").unwrap();
    let fk: i64 = conn
        .query_row("pragma foreign_keys", [], |r| r.get(0))
        .unwrap();
    let rec: i64 = conn
        .query_row("pragma recursive_triggers", [], |r| r.get(0))
        .unwrap();
    assert_eq!((fk, rec), (0, 0), "a stock shell's defaults");
    let before = dump(&conn);
    let mut failures = Vec::new();
    let list = attacks(&t);
    for (class, sql, code) in &list {
        match refused(&conn, sql) {
            None => failures.push(format!("class {class}: ACCEPTED: {sql}")),
            Some(e) if e.code() != *code => failures.push(format!(
                "class {class}: {} instead of {code}: {sql}: {e}",
                e.code()
            )),
            Some(_) => {}
        }
        assert_eq!(
            dump(&conn),
            before,
            "class {class}: {sql} changed the database"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        list.len(),
        failures.join("\n")
    );
    let classes: std::collections::BTreeSet<u8> = list.iter().map(|a| a.0).collect();
    assert_eq!(classes.len(), 11, "every class is attacked");
}

fn shell() -> Option<PathBuf> {
    let out = Command::new("sqlite3").arg("-version").output().ok()?;
    out.status.success().then(|| PathBuf::from("sqlite3"))
}

#[test]
fn the_stock_sqlite3_shell_is_refused_too() {
    let Some(sqlite3) = shell() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs sqlite3 (.ci/run)"
        );
        eprintln!("sqlite3 is not installed; skipped");
        return;
    };
    let t = demo();
    let before = dump(&Connection::open(t.path()).unwrap());
    let mut failures = Vec::new();
    for (class, sql, code) in attacks(&t) {
        let out = Command::new(&sqlite3)
            .arg("-bail")
            .arg(t.path())
            // one transaction: a statement refused mid-way leaves nothing behind
            .arg(format!("BEGIN; {sql}; COMMIT;"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = code == "CONSTRAINT_VIOLATION" || stderr.contains(code);
        if out.status.success() || !named {
            failures.push(format!(
                "class {class}: {sql}: exit {:?}, {stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(dump(&Connection::open(t.path()).unwrap()), before);
    // and a legal write through the shell still works (invariant 8)
    let out = Command::new(&sqlite3)
        .arg(t.path())
        .arg("update ingest_modules set enabled = 0 where module = 'quotes'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

// ---------------------------------------------------------------- class 11: doctor

fn shell_batch(path: &Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The statement that creates `name`, to put it back word for word after the write.
fn sql_of(path: &Path, name: &str) -> String {
    Connection::open(path)
        .unwrap()
        .query_row(
            "select sql from sqlite_master where name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
}

fn errors(path: &Path) -> Vec<(&'static str, String)> {
    let report = doctor::check_path(path, &DoctorOptions::default()).unwrap();
    report
        .anomalies
        .iter()
        .filter(|a| a.severity == Severity::Error)
        .map(|a| (a.check, a.table.clone()))
        .collect()
}

fn doctor_cli_exit(path: &Path) -> Option<i32> {
    Command::new(bin())
        .arg("--db")
        .arg(path)
        .arg("doctor")
        .output()
        .unwrap()
        .status
        .code()
}

#[test]
fn doctor_finds_an_audit_row_rewritten_behind_a_dropped_trigger() {
    let t = demo();
    let trig = sql_of(&t.path(), "audit_log_no_update");
    shell_batch(
        &t.path(),
        &format!(
            "drop trigger audit_log_no_update; update audit_log set actor = 'nobody'; {trig};"
        ),
    );
    // One anomaly per rewritten row (the demo's job controls and its audited schedule).
    let found = errors(&t.path());
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|e| *e == ("audit_chain", "audit_log".to_string())),
        "{found:?}"
    );
    assert_eq!(doctor_cli_exit(&t.path()), Some(1));
}

#[test]
fn doctor_finds_an_audit_row_deleted_behind_a_dropped_trigger() {
    let t = demo();
    let trig = sql_of(&t.path(), "audit_log_no_delete");
    shell_batch(
        &t.path(),
        &format!("drop trigger audit_log_no_delete; delete from audit_log; {trig};"),
    );
    assert_eq!(errors(&t.path()), [("sequence", "audit_log".to_string())]);
    assert_eq!(doctor_cli_exit(&t.path()), Some(1));
}

#[test]
fn doctor_finds_the_audit_table_dropped_and_recreated() {
    let t = demo();
    let table = sql_of(&t.path(), "audit_log");
    let index = sql_of(&t.path(), "audit_log_entity");
    let triggers: Vec<String> = [
        "audit_log_append_only",
        "audit_log_no_update",
        "audit_log_no_delete",
    ]
    .iter()
    .map(|n| sql_of(&t.path(), n))
    .collect();
    shell_batch(
        &t.path(),
        &format!(
            "drop table audit_log; {table}; {index}; {};",
            triggers.join("; ")
        ),
    );
    assert_eq!(errors(&t.path()), [("sequence", "audit_log".to_string())]);
    assert_eq!(doctor_cli_exit(&t.path()), Some(1));
}

#[test]
fn doctor_finds_events_rewritten_deleted_or_forged_behind_dropped_triggers() {
    for write in [
        "update job_events set payload = '{\"forged\":true}' where seq = 2 and job_id = 1",
        "delete from job_events where seq = 2 and job_id = 1",
    ] {
        let t = demo();
        let upd = sql_of(&t.path(), "job_events_no_update");
        let del = sql_of(&t.path(), "job_events_no_delete");
        shell_batch(
            &t.path(),
            &format!("drop trigger job_events_no_update; drop trigger job_events_no_delete; {write}; {upd}; {del};"),
        );
        let found = errors(&t.path());
        assert!(
            found.contains(&("event_chain", "job_events".to_string())),
            "{write}: {found:?}"
        );
        assert_eq!(doctor_cli_exit(&t.path()), Some(1), "{write}");
    }
    // an event inserted with a made-up hash
    let t = demo();
    let ins = sql_of(&t.path(), "job_events_seq_follows");
    shell_batch(
        &t.path(),
        &format!(
            "drop trigger job_events_seq_follows;
             insert into job_events (job_id, seq, kind, at, prev_hash, hash)
             select job_id, max(seq) + 1, 'progress', '{TS}', '{H}', '{H}' from job_events where job_id = {};
             {ins};",
            t.running
        ),
    );
    assert_eq!(
        errors(&t.path()),
        [("event_chain", "job_events".to_string())]
    );
}

#[test]
fn doctor_finds_a_rewound_sqlite_sequence() {
    for table in ["jobs", "job_events", "ingest_runs", "due_runs"] {
        let t = demo();
        shell_batch(
            &t.path(),
            &format!("update sqlite_sequence set seq = 0 where name = '{table}'"),
        );
        assert_eq!(
            errors(&t.path()),
            [("sequence", table.to_string())],
            "{table}"
        );
        assert_eq!(doctor_cli_exit(&t.path()), Some(1));
    }
}

#[test]
fn doctor_finds_a_rogue_trigger_or_index() {
    let t = demo();
    shell_batch(
        &t.path(),
        "create trigger jobs_rogue after update on jobs begin update jobs set step = 'x' where 0; end;
         create unique index jobs_rogue_unique on jobs (user_id, id);",
    );
    assert_eq!(
        errors(&t.path()),
        [
            ("schema_object", "jobs".to_string()),
            ("schema_object", "jobs".to_string())
        ]
    );
    assert_eq!(doctor_cli_exit(&t.path()), Some(1));
}

#[test]
fn an_edited_migration_history_is_a_typed_error_and_doctor_still_reports() {
    let t = demo();
    let trig = sql_of(&t.path(), "refinery_schema_history_no_update");
    shell_batch(
        &t.path(),
        &format!(
            "drop trigger refinery_schema_history_no_update;
             update refinery_schema_history set checksum = '42' where version = 3;
             {trig};"
        ),
    );
    let e = Engine::open(t.path()).unwrap_err();
    assert_eq!(e.code(), "MIGRATION_HISTORY", "{e}");
    assert!(
        matches!(e, Error::MigrationHistory { version: 3, .. }),
        "{e:?}"
    );
    assert_eq!(
        errors(&t.path()),
        [("migration_history", "refinery_schema_history".to_string())]
    );
    let out = Command::new(bin())
        .arg("--db")
        .arg(t.path())
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("migration_history"),
        "{out:?}"
    );
}

// ------------------------------------------------------------- upgrading a V4 file

/// A database made by the V4 release (`runledger demo` on main before V5, plus a schedule
/// tick's slots typed through the shell under V4's rules).
fn v4_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v4-demo.sqlite"),
        &path,
    )
    .unwrap();
    (dir, path)
}

const V4_TABLES: &[&str] = &[
    "jobs",
    "audit_log",
    "job_events",
    "supervisor_state",
    "ingest_runs",
    "ingest_modules",
    "ingest_probes",
    "raw_payloads",
    "raw_records",
    "schedules",
    "due_runs",
];

/// Every V4 column of every V4 table, row by row.
fn v4_rows(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for table in V4_TABLES {
        let cols: Vec<String> = conn
            .prepare(&format!(
                "select name from pragma_table_info('{table}') order by cid"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let cols: Vec<String> = cols
            .into_iter()
            // Columns added after V4: hashes (V5), the raw_records rejection marker (V8,
            // NULL on every upgraded row), cancel_reason (V9).
            .filter(|c| {
                ![
                    "hash",
                    "prev_hash",
                    "rejected_code",
                    "rejected_reason",
                    "cancel_reason",
                ]
                .contains(&c.as_str())
            })
            .collect();
        let mut stmt = conn
            .prepare(&format!(
                "select {} from {table} order by 1",
                cols.join(", ")
            ))
            .unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let vals: Vec<String> = (0..n)
                .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                .collect();
            out.push(format!("{table}: {}", vals.join("|")));
        }
    }
    out
}

#[test]
fn a_v4_file_upgrades_with_every_row_and_doctor_clean() {
    let (_dir, path) = v4_fixture();
    let before = v4_rows(&Connection::open(&path).unwrap());
    assert!(
        before.len() > 40,
        "the fixture has rows in every table: {}",
        before.len()
    );
    let engine = Engine::open(&path).unwrap();
    assert_eq!(
        engine.schema_version().unwrap(),
        runledger::known_schema_version()
    );
    drop(engine);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(v4_rows(&conn), before);
    let report = doctor::check_path(&path, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
    // the upgraded file keeps working: a new job, its events and audit rows chain on
    let engine = Engine::open(&path).unwrap();
    let job = engine
        .jobs()
        .create(&NewJob::new("dave", "research", json!({})))
        .unwrap();
    engine.jobs().cancel(job.id, "op", None).unwrap();
    drop(engine);
    let report = doctor::check_path(&path, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
}

#[test]
fn a_v4_row_the_new_rules_refuse_names_itself_and_the_file_stays_v4() {
    for (table, plant) in [
        // a GLOB-shaped timestamp that is not an instant (V4 allowed it)
        ("jobs", "insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'k', '2026-11-31T10:00:00.000Z', '2026-11-31T10:00:00.000Z')"),
        // text in an integer column
        ("ingest_probes", "insert into ingest_probes (module, status, latency_ms, tested_at) values ('quotes', 'ok', 'fast', '2026-11-29T10:00:00.000Z')"),
        // a lock key not in the engine's form
        ("ingest_runs", "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('p', 'targets', 'manual', 'elsewhere', '2026-11-29T10:00:00.000Z', '2026-11-29T10:05:00.000Z')"),
        // an event of a job that does not exist
        ("job_events", "insert into job_events (job_id, seq, kind, at) values (777, 1, 'created', '2026-11-29T10:00:00.000Z')"),
    ] {
        let (_dir, path) = v4_fixture();
        shell_batch(&path, plant);
        let before = v4_rows(&Connection::open(&path).unwrap());
        let e = Engine::open(&path).unwrap_err();
        match &e {
            Error::MigrationRefused { table: t, row } => {
                assert_eq!(t, table, "{e}");
                assert!(!row.is_empty(), "{e}");
            }
            other => panic!("{table}: {other:?}"),
        }
        assert_eq!(e.code(), "MIGRATION_REFUSED");
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("select max(version) from refinery_schema_history", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4, "{table}");
        assert_eq!(v4_rows(&conn), before, "{table}: nothing dropped");
        // doctor still reports on the file, read-only
        let out = Command::new(bin()).arg("--db").arg(&path).arg("doctor").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
}

// ------------------------------------- the machine proof, by REPLACE and upsert

/// Every column of `table`, in order.
fn columns(engine: &Engine, table: &str) -> Vec<String> {
    engine
        .with_connection(|c| {
            let mut stmt = c.prepare(&format!(
                "select name from pragma_table_info('{table}') order by cid"
            ))?;
            let cols = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(cols)
        })
        .unwrap()
}

/// `INSERT OR REPLACE` of the row `id` of `table` with `state_col` set to `to`, and the
/// upsert form of the same write: both must be refused for every (from, to) pair, so neither
/// is a way around the machine (a REPLACE deletes without DELETE triggers in a stock shell).
fn replace_forms(engine: &Engine, table: &str, key: &str, id: i64, state_col: &str, to: &str) {
    let cols = columns(engine, table);
    let select: Vec<String> = cols
        .iter()
        .map(|c| {
            if c == state_col {
                format!("'{to}'")
            } else {
                c.clone()
            }
        })
        .collect();
    let (list, select) = (cols.join(", "), select.join(", "));
    let forms = [
        format!("INSERT OR REPLACE INTO {table} ({list}) SELECT {select} FROM {table} WHERE {key} = {id}"),
        format!("REPLACE INTO {table} ({list}) SELECT {select} FROM {table} WHERE {key} = {id}"),
        format!(
            "INSERT INTO {table} ({list}) SELECT {list} FROM {table} WHERE {key} = {id} AND 1
             ON CONFLICT ({key}) DO UPDATE SET {state_col} = '{to}'"
        ),
    ];
    let before = crate::common::dump(engine);
    for sql in forms {
        let e = engine
            .with_connection(|c| Ok(c.execute_batch(&sql)?))
            .expect_err(&sql);
        assert_eq!(e.code(), "IMMUTABLE", "{sql}: {e}");
        assert_eq!(crate::common::dump(engine), before, "{sql}");
    }
}

#[test]
fn replace_and_upsert_never_move_a_job_run_or_slot() {
    use runledger::job::JobState;
    let (engine, _clock) = crate::common::mem_engine();
    for from in JobState::ALL {
        let job = crate::jobs::job_in(&engine, from);
        for to in JobState::ALL {
            replace_forms(&engine, "jobs", "id", job.id, "state", to.as_str());
        }
        // leave no created or running job for the next job_in's claim
        if matches!(
            from,
            JobState::Created | JobState::Running | JobState::Paused
        ) {
            engine.jobs().cancel(job.id, "op", None).unwrap();
        }
    }
    engine
        .with_connection(|c| {
            Ok(c.execute_batch(&format!(
                "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
                 values ('p', 'targets', 'manual', 'p:targets', '{TS}', '2099-01-01T00:00:00.000Z'),
                        ('q', 'targets', 'manual', 'q:targets', '{TS}', '2099-01-01T00:00:00.000Z');
                 update ingest_runs set status = 'success', finished_at = '{TS}', duration_ms = 0 where id = 2;
                 insert into schedules (name, pipeline, scope, rule, zone, created_at, updated_at)
                 values ('s', 'ingest', 'both', 'daily 19:30', 'UTC', '{TS}', '{TS}');
                 insert into due_runs (schedule_id, due_at, status, created_at)
                 values (1, '2026-11-29T10:00:00.000Z', 'pending', '{TS}'),
                        (1, '2026-11-29T11:00:00.000Z', 'pending', '{TS}');
                 update due_runs set status = 'claimed', claimed_at = '{TS}', claimed_by = 't' where id = 2;"
            ))?)
        })
        .unwrap();
    for id in [1, 2] {
        for to in ["started", "success", "failed"] {
            replace_forms(&engine, "ingest_runs", "id", id, "status", to);
        }
        for to in ["pending", "claimed", "fired", "skipped", "failed"] {
            replace_forms(&engine, "due_runs", "id", id, "status", to);
        }
    }
}

#[test]
fn the_zones_table_is_exactly_the_zones_rust_accepts_on_this_machines_tzdb() {
    use runledger::schedule::{tzdb, Tzdb, Zone};
    // Every name the tz database in use (the system's zoneinfo here) or the bundled copy
    // lists, kept when Zone::new accepts it: zoneinfo's extra entries (Factory, localtime,
    // posixrules) are refused, the zones newer than V5's list (America/Ciudad_Juarez,
    // America/Coyhaique) are accepted, and SQL must agree on every one.
    let mut ours: Vec<String> = tzdb()
        .names()
        .into_iter()
        .chain(Tzdb::bundled().names())
        .chain(["UTC".to_string()])
        .filter(|n| Zone::new(n).is_ok())
        .collect();
    ours.sort();
    ours.dedup();
    let (engine, _clock) = crate::common::mem_engine();
    let stored: Vec<String> = engine
        .with_connection(|c| {
            let mut stmt = c.prepare("select name from zones order by name")?;
            let names = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(names)
        })
        .unwrap();
    assert_eq!(stored, ours, "{}", tzdb());
    assert_eq!(stored.len(), 597);
    for not_a_zone in ["Factory", "localtime", "posixrules"] {
        assert!(Zone::new(not_a_zone).is_err(), "{not_a_zone}");
        assert!(!stored.contains(&not_a_zone.to_string()));
    }
    // A schedule in a zone V9 added is accepted by Rust and by SQL.
    let s = engine
        .schedules()
        .create(&runledger::schedule::NewSchedule::new(
            "juarez",
            "ingest",
            "both",
            "daily 09:00",
            "America/Ciudad_Juarez",
        ))
        .unwrap();
    assert_eq!(s.zone.name(), "America/Ciudad_Juarez");
}

#[test]
fn regression_one_undecodable_row_made_listings_fail_with_an_opaque_database_error() {
    // A row that reached the file around the rules (checks ignored, a trigger dropped):
    // readers name it (CORRUPT_ROW: table, id, column) instead of `DATABASE`.
    let (engine, _clock) = crate::common::mem_engine();
    let job = crate::jobs::job_in(&engine, runledger::job::JobState::Running);
    engine
        .with_connection(|c| {
            Ok(c.execute_batch(&format!(
                "pragma ignore_check_constraints = on;
                 update jobs set input = '{{not json' where id = {};
                 pragma ignore_check_constraints = off;",
                job.id
            ))?)
        })
        .unwrap();
    let e = engine.jobs().get(job.id).unwrap_err();
    assert_eq!(e.code(), "CORRUPT_ROW", "{e}");
    match &e {
        Error::CorruptRow {
            table, id, column, ..
        } => assert_eq!(
            (*table, id.as_str(), column.as_str()),
            ("jobs", job.id.to_string().as_str(), "input")
        ),
        other => panic!("{other:?}"),
    }
    let e = engine.jobs().list_by_user("alice", 10).unwrap_err();
    assert_eq!(e.code(), "CORRUPT_ROW", "{e}");
    assert!(e.to_string().contains("input"), "{e}");
}

#[test]
fn v9_gives_a_job_cancelled_before_it_the_reason_its_audit_row_recorded() {
    let (_dir, path) = v4_fixture();
    {
        // The fixture's cancel gave no reason; give it one, as an older runledger recorded
        // it (in the audit row only).
        let conn = Connection::open(&path).unwrap();
        let changed = conn
            .execute_batch(
                "drop trigger if exists audit_log_no_update;
                 update audit_log set detail = '{\"from\":\"created\",\"reason\":\"duplicate order\"}'
                  where entity = 'job' and action = 'cancel';",
            )
            .map(|()| conn.changes());
        assert_eq!(changed.unwrap(), 1);
    }
    let engine = Engine::open(&path).unwrap();
    let cancelled = engine
        .jobs()
        .list(None, Some(runledger::JobState::Cancelled), None, 10)
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        cancelled[0].cancel_reason.as_deref(),
        Some("duplicate order")
    );
    let others = engine.jobs().list(None, None, None, 10).unwrap();
    assert!(others
        .iter()
        .filter(|j| j.state != runledger::JobState::Cancelled)
        .all(|j| j.cancel_reason.is_none()));
    drop(engine);
    let report = doctor::check_path(&path, &DoctorOptions::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
}
