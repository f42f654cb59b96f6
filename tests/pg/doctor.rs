//! `runledger::pg::doctor`: clean on a fresh and a busy ledger; each kind of damage a
//! superuser can plant by raw SQL (a trigger disabled or added, a constraint dropped or
//! `NOT VALID`, rows rewritten in replica mode) reported under its check's name.

use std::time::Duration;

use runledger::doctor::{DoctorOptions, DoctorReport, Severity};
use runledger::pg::{doctor, PgEngine};
use runledger::run::{Module, ProbeError, RawInput};
use runledger::{NewJob, RunStatus, Scope, ScopeSelector, TriggerKind};
use serde_json::json;

use crate::common::TestDb;

/// A ledger with rows of every kind: jobs in five states with events and an audit row, runs
/// started, finished, failed and blocked, a schedule with pending, fired and skipped slots,
/// a module with probes, a supervisor's row, raw payloads and records (one rejected).
pub fn busy(engine: &PgEngine) {
    let jobs = engine.jobs();
    let new = |n: i64| {
        NewJob::new(
            "u1",
            "report",
            json!({"n": n, "text": "tab\tline\nquote\"\\"}),
        )
    };
    jobs.create(&NewJob::new("u1", "later", json!({"n": 1})))
        .unwrap(); // stays created
    let running = jobs.create(&new(2)).unwrap();
    let claim = jobs.claim("node-a/w1", &["report"]).unwrap().unwrap();
    assert_eq!(claim.id(), running.id);
    jobs.progress(&claim, 40, Some("half")).unwrap();
    jobs.create(&new(3)).unwrap();
    let claim = jobs.claim("node-a/w1", &["report"]).unwrap().unwrap();
    jobs.complete(&claim, &json!({"ok": true})).unwrap();
    jobs.create(&new(4)).unwrap();
    let claim = jobs.claim("node-a/w2", &["report"]).unwrap().unwrap();
    jobs.fail(&claim, "UPSTREAM", "503 from the feed").unwrap();
    let cancelled = jobs.create(&new(5)).unwrap();
    jobs.cancel(cancelled.id, "ops", Some("not needed"))
        .unwrap();

    let runs = engine.runs();
    let lease = Duration::from_secs(600);
    runs.start("feed", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    let blocked = runs.start("feed", Scope::Targets, TriggerKind::Manual, None, lease);
    assert_eq!(blocked.unwrap_err().code(), "RUN_ALREADY_ACTIVE");
    let done = runs
        .start(
            "feed",
            Scope::Universe,
            TriggerKind::Manual,
            Some("acct-1"),
            lease,
        )
        .unwrap();
    runs.finish(done, RunStatus::Success, None, &json!({"rows": 12}))
        .unwrap();

    let schedules = engine.schedules();
    let rule = "every 15m".parse().unwrap();
    let zone = "Europe/Zurich".parse().unwrap();
    let s = schedules
        .create("feed-15m", "feed", ScopeSelector::Targets, &rule, &zone)
        .unwrap();
    let now = engine.now();
    schedules
        .materialize(s, now - Duration::from_secs(1800))
        .unwrap()
        .unwrap();
    schedules
        .materialize(s, now - Duration::from_secs(900))
        .unwrap()
        .unwrap();
    let claims = schedules.claim_due("ticker-1", 2).unwrap();
    assert_eq!(claims.len(), 2);
    let fired = runs
        .start_for_slot(
            "feed",
            Scope::Universe,
            TriggerKind::Schedule,
            None,
            lease,
            Some(claims[0].slot_id),
        )
        .unwrap();
    runs.finish(
        fired,
        RunStatus::Failed,
        Some(("UPSTREAM", "503")),
        &json!({}),
    )
    .unwrap();
    schedules.fired(&claims[0], &[fired]).unwrap();
    schedules
        .skipped(&claims[1], "PIPELINE_NOT_HERE", Some("no such pipeline"))
        .unwrap();
    schedules.materialize(s, now).unwrap().unwrap(); // pending

    // the tables of schema version 3: a module and its probes, the supervisor's row, raw
    // records of a failed run (one rejected) and a successful one
    runs.upsert_module(&Module {
        module: "quotes".into(),
        domain: "market_data".into(),
        scopes: vec![Scope::Targets],
        enabled: true,
    })
    .unwrap();
    runs.record_probe("quotes", &Ok(()), 12).unwrap();
    runs.record_probe("quotes", &Err(ProbeError::new("HTTP_503", "down")), 40)
        .unwrap();
    engine
        .supervisor(runledger::SupervisorOptions::default())
        .unwrap()
        .tick(engine.now())
        .unwrap();
    let raw = |bytes: &'static [u8]| RawInput {
        source: "ib_flex",
        upstream_ref: Some("ref-1"),
        content_type: "application/xml",
        bytes,
    };
    let kept = runs
        .start("raw", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    runs.store_raw(kept, &raw(b"<ok/>")).unwrap();
    runs.store_rejected_raw(kept, &raw(b"<broken"), "FLEX_MALFORMED_XML", "byte 7")
        .unwrap();
    runs.finish(
        kept,
        RunStatus::Failed,
        Some(("FLEX_MALFORMED_XML", "byte 7")),
        &json!({}),
    )
    .unwrap();
    let ok = runs
        .start("raw", Scope::Universe, TriggerKind::Manual, None, lease)
        .unwrap();
    runs.store_raw(ok, &raw(b"<ok/>")).unwrap();
    runs.finish(ok, RunStatus::Success, None, &json!({}))
        .unwrap();
}

fn report(engine: &PgEngine) -> DoctorReport {
    doctor::check(engine, &DoctorOptions::default()).unwrap()
}

/// The `(check, detail)` of every anomaly.
fn found(report: &DoctorReport) -> Vec<(String, String)> {
    report
        .anomalies
        .iter()
        .map(|a| (a.check.to_string(), a.detail.clone()))
        .collect()
}

fn has(report: &DoctorReport, check: &str, detail_part: &str) -> bool {
    report
        .anomalies
        .iter()
        .any(|a| a.check == check && a.detail.contains(detail_part))
}

#[test]
fn pg_doctor_is_clean_on_a_fresh_and_a_busy_ledger() {
    let Some(db) = TestDb::new("doctor_clean") else {
        return;
    };
    let (engine, _clock) = db.engine_at("2026-11-22T11:30:00.000Z");
    let fresh = report(&engine);
    assert!(fresh.is_clean(), "{:#?}", fresh.anomalies);
    for check in [
        "schema_object",
        "immutable_guard",
        "migration_history",
        "audit_chain",
        "event_chain",
        "run_lock",
        "sequence",
        "stale_job",
    ] {
        assert!(
            fresh.checks.contains(&check),
            "{check} in {:?}",
            fresh.checks
        );
    }
    assert_eq!(fresh.schema_version, runledger::pg::known_schema_version());
    busy(&engine);
    let busy = report(&engine);
    assert!(busy.is_clean(), "{:#?}", busy.anomalies);
    // read-only: nothing of the reference schema is left behind
    let mut raw = db.raw;
    let left: i64 = raw
        .query_one(
            "select count(*) from pg_namespace where nspname = 'runledger_doctor_reference'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn pg_doctor_warns_of_expired_leases_stale_heartbeats_and_stuck_claims() {
    let Some(db) = TestDb::new("doctor_warn") else {
        return;
    };
    let (engine, clock) = db.engine_at("2026-11-22T11:30:00.000Z");
    busy(&engine);
    let schedules = engine.schedules();
    assert_eq!(schedules.claim_due("ticker-1", 5).unwrap().len(), 1);
    clock.advance(Duration::from_secs(3600));
    let r = report(&engine);
    assert!(r.errors().next().is_none(), "{:#?}", r.anomalies);
    let mut warned: Vec<&str> = r.warnings().map(|a| a.check).collect();
    warned.dedup();
    assert_eq!(
        warned,
        ["abandoned_run", "stale_job", "stuck_slot"],
        "{:#?}",
        r
    );
}

/// One kind of damage: the SQL a superuser runs on a busy ledger, and the check (and part
/// of its detail) doctor must report.
struct Damage {
    name: &'static str,
    sql: &'static str,
    check: &'static str,
    detail: &'static str,
}

const DAMAGE: &[Damage] = &[
    Damage {
        name: "cursor_cache",
        sql: "alter sequence job_events_cursor_seq cache 20",
        check: "schema_object",
        detail: "sequence job_events_cursor_seq differs from the migrations",
    },
    Damage {
        name: "feed_horizon",
        sql: "create or replace function runledger_feed_horizon() returns bigint language sql as 'select 9223372036854775807'",
        check: "schema_object",
        detail: "function runledger_feed_horizon() differs from the migrations",
    },
    Damage {
        name: "trigger_disabled",
        sql: "alter table jobs disable trigger jobs_state_machine",
        check: "schema_object",
        detail: "trigger jobs_state_machine is disabled",
    },
    Damage {
        name: "guard_disabled",
        sql: "alter table audit_log disable trigger audit_log_no_update",
        check: "immutable_guard",
        detail: "trigger audit_log_no_update is disabled",
    },
    Damage {
        name: "guard_dropped",
        sql: "drop trigger job_events_no_delete on job_events",
        check: "immutable_guard",
        detail: "trigger job_events_no_delete is missing",
    },
    Damage {
        name: "trigger_replica",
        sql: "alter table due_runs enable replica trigger due_runs_state_machine",
        check: "schema_object",
        detail: "fires only when session_replication_role is replica",
    },
    Damage {
        name: "rogue_trigger",
        sql: "create function rogue() returns trigger language plpgsql as $$ begin return new; end $$;
              create trigger jobs_rogue before update on jobs for each row execute function rogue()",
        check: "schema_object",
        detail: "trigger jobs_rogue is not created by the migrations",
    },
    Damage {
        name: "function_replaced",
        sql: "create or replace function jobs_delete_terminal_only() returns trigger language plpgsql
              as $$ begin return old; end $$",
        check: "schema_object",
        detail: "function jobs_delete_terminal_only() differs from the migrations",
    },
    Damage {
        name: "row_check_function_replaced",
        sql: "create or replace function jobs_row_ok(r jobs) returns boolean language plpgsql
              immutable as $$ begin return true; end $$",
        check: "schema_object",
        detail: "function jobs_row_ok(r jobs) differs from the migrations",
    },
    Damage {
        name: "constraint_dropped",
        sql: "alter table jobs drop constraint jobs_row_check;
              set session_replication_role = replica;
              update jobs set progress = 150 where state = 'created';
              set session_replication_role = origin",
        check: "outcome",
        detail: "progress 150 out of 0..100",
    },
    Damage {
        name: "constraint_dropped_object",
        sql: "alter table jobs drop constraint jobs_row_check",
        check: "schema_object",
        detail: "constraint jobs.jobs_row_check is missing",
    },
    Damage {
        name: "constraint_not_valid",
        sql: "alter table jobs drop constraint jobs_row_check;
              alter table jobs add constraint jobs_row_check check (jobs_row_ok(jobs)) not valid",
        check: "schema_object",
        detail: "NOT VALID",
    },
    Damage {
        name: "index_dropped",
        sql: "drop index ingest_runs_one_active;
              insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
              values ('feed', 'targets', 'manual', 'feed:targets', '2026-11-22T11:30:00.000Z', '2026-11-22T12:30:00.000Z')",
        check: "run_lock",
        detail: "2 started runs hold this lock",
    },
    Damage {
        name: "audit_tampered",
        sql: "set session_replication_role = replica;
              update audit_log set actor = 'mallory';
              set session_replication_role = origin",
        check: "audit_chain",
        detail: "the hash chain breaks here",
    },
    Damage {
        name: "event_tampered",
        sql: "set session_replication_role = replica;
              update job_events set payload = '{\"forged\": true}' where job_id = 3 and seq = 2;
              set session_replication_role = origin",
        check: "event_chain",
        detail: "the hash chain of job 3 breaks at seq 2",
    },
    Damage {
        name: "event_deleted",
        sql: "set session_replication_role = replica;
              delete from job_events where job_id = 3 and seq = 2;
              set session_replication_role = origin",
        check: "event_seq",
        detail: "kept seqs 1..",
    },
    Damage {
        name: "event_orphan",
        sql: "set session_replication_role = replica;
              delete from jobs where id = 4;
              set session_replication_role = origin",
        check: "event_orphan",
        detail: "events of a job that does not exist",
    },
    Damage {
        name: "sequence_behind",
        sql: "select setval(pg_get_serial_sequence('jobs', 'id'), 1)",
        check: "sequence",
        detail: "behind the largest id 5",
    },
    Damage {
        name: "history_edited",
        sql: "update refinery_schema_history set checksum = '1'",
        check: "migration_history",
        detail: "with checksum 1",
    },
    Damage {
        name: "payload_hash",
        sql: "alter table raw_payloads drop constraint raw_payloads_key_is_sha256;
              set session_replication_role = replica;
              update raw_payloads set payload = '\\x3c6f6b2f3f' where payload = '\\x3c6f6b2f3e';
              set session_replication_role = origin",
        check: "raw_payload",
        detail: "the payload's sha-256 is",
    },
    Damage {
        name: "raw_record_size",
        sql: "set session_replication_role = replica;
              update raw_records set size = size + 1 where id = 1;
              set session_replication_role = origin",
        check: "raw_record",
        detail: "but its payload has 5 bytes",
    },
    Damage {
        name: "raw_run_deleted",
        sql: "set session_replication_role = replica;
              delete from ingest_runs where pipeline = 'raw' and scope = 'targets';
              set session_replication_role = origin",
        check: "foreign_key",
        detail: "2 raw records of run",
    },
    Damage {
        name: "rejecting_run_succeeded",
        sql: "set session_replication_role = replica;
              update ingest_runs set status = 'success', error_code = null, error_message = null
                where pipeline = 'raw' and scope = 'targets';
              set session_replication_role = origin",
        check: "raw_rejection",
        detail: "a run that rejected its statement ended success",
    },
    Damage {
        name: "module_scopes",
        sql: "set session_replication_role = replica;
              update ingest_modules set scopes = '[\"everything\"]';
              set session_replication_role = origin",
        check: "json",
        detail: "are not among the scopes",
    },
    Damage {
        name: "probe_orphan",
        sql: "set session_replication_role = replica;
              insert into ingest_probes (module, status, latency_ms, tested_at)
              values ('ghost', 'ok', 1, '2026-11-22T11:30:00.000Z');
              set session_replication_role = origin",
        check: "foreign_key",
        detail: "module 'ghost' names no module",
    },
    Damage {
        name: "raw_sequence_behind",
        sql: "select setval(pg_get_serial_sequence('raw_records', 'id'), 1)",
        check: "sequence",
        detail: "behind the largest id 3",
    },
    Damage {
        name: "column_added",
        sql: "alter table ingest_runs add column note text",
        check: "schema_object",
        detail: "column ingest_runs.note is not created by the migrations",
    },
];

#[test]
fn pg_doctor_reports_each_kind_of_damage_by_its_check() {
    if TestDb::new("doctor_probe").is_none() {
        return;
    }
    for d in DAMAGE {
        let mut db = TestDb::new(&format!("doctor_{}", d.name)).unwrap();
        let (engine, _clock) = db.engine_at("2026-11-22T11:30:00.000Z");
        busy(&engine);
        assert!(report(&engine).is_clean(), "{}: clean before", d.name);
        db.raw
            .batch_execute(d.sql)
            .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        let r = report(&engine);
        assert!(
            has(&r, d.check, d.detail),
            "{}: expected {} ({}), found {:#?}",
            d.name,
            d.check,
            d.detail,
            found(&r)
        );
        assert!(
            r.anomalies
                .iter()
                .filter(|a| a.check == d.check)
                .all(|a| a.severity == Severity::Error),
            "{}",
            d.name
        );
        let _ = db.exec("select 1");
    }
}

#[test]
fn pg_doctor_survives_a_dropped_table_and_says_which_checks_could_not_run() {
    let Some(mut db) = TestDb::new("doctor_dropped") else {
        return;
    };
    let (engine, _clock) = db.engine_at("2026-11-22T11:30:00.000Z");
    busy(&engine);
    db.exec("drop table due_runs").unwrap();
    let r = report(&engine);
    assert!(
        has(&r, "schema_object", "table due_runs is missing"),
        "{r:#?}"
    );
    assert!(has(&r, "stuck_slot", "check could not run"), "{r:#?}");
}
