//! The raw-SQL attack suite in its PostgreSQL form: each invariant attacked with plain SQL
//! (what a host bug, another program or an operator's psql session could type) and refused
//! by PostgreSQL itself, with the same `CODE: table: rule` messages as SQLite.

use runledger::{NewJob, Scope, TriggerKind};
use serde_json::json;
use std::time::Duration;

use crate::common::TestDb;

const T: &str = "2026-11-22T11:30:00.000Z";

fn refused(db: &mut TestDb, sql: &str, prefix: &str) {
    match db.exec(sql) {
        Ok(n) => panic!("accepted ({n} rows): {sql}"),
        Err(message) => assert!(
            message.starts_with(prefix),
            "{sql}\n  -> {message}\n  expected {prefix}"
        ),
    }
}

#[test]
fn pg_raw_sql_cannot_break_the_rules() {
    let Some(mut db) = TestDb::new("attacks") else {
        return;
    };
    let engine = db.engine();
    let jobs = engine.jobs();
    let job = jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let claim = jobs.claim("w", &[]).unwrap().unwrap();
    let id = job.id;

    // illegal transitions and fencing
    refused(
        &mut db,
        &format!("update jobs set state = 'created', attempt = 5 where id = {id}"),
        "STALE_ATTEMPT: jobs",
    );
    refused(
        &mut db,
        &format!("update jobs set attempt = attempt + 1 where id = {id}"),
        "STALE_ATTEMPT: jobs",
    );
    refused(
        &mut db,
        &format!("update jobs set worker_id = 'thief' where id = {id}"),
        "STALE_ATTEMPT: jobs",
    );
    refused(
        &mut db,
        &format!("update jobs set kind = 'other' where id = {id}"),
        "IMMUTABLE: jobs",
    );
    refused(
        &mut db,
        &format!("delete from jobs where id = {id}"),
        "ILLEGAL_TRANSITION: jobs",
    );
    refused(
        &mut db,
        &format!("insert into jobs (user_id, kind, state, created_at, updated_at) values ('u', 'k', 'running', '{T}', '{T}')"),
        "ILLEGAL_TRANSITION: jobs",
    );
    jobs.complete(&claim, &json!({"r": 1})).unwrap();
    refused(
        &mut db,
        &format!("update jobs set result = '{{\"r\": 2}}' where id = {id}"),
        "ILLEGAL_TRANSITION: jobs: completed is final",
    );
    refused(
        &mut db,
        &format!("update jobs set state = 'created' where id = {id}"),
        "ILLEGAL_TRANSITION: jobs",
    );
    refused(&mut db, "truncate jobs cascade", "IMMUTABLE: jobs");

    // non-canonical times and bad JSON shapes (CHECKs, or the shape triggers)
    for bad in [
        "2026-02-30T00:00:00.000Z",
        "2026-11-22 11:30:00.000Z",
        "2026-11-22T11:30:00Z",
        "2026-11-22T11:30:00.000+01:00",
        "2026-11-22T24:00:00.000Z",
    ] {
        refused(
            &mut db,
            &format!("insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'k', '{bad}', '{bad}')"),
            "new row for relation \"jobs\" violates check constraint",
        );
    }
    refused(
        &mut db,
        &format!("insert into jobs (user_id, kind, tags, created_at, updated_at) values ('u', 'k', '{{\"a\": 1}}', '{T}', '{T}')"),
        "new row for relation \"jobs\" violates check constraint",
    );
    refused(
        &mut db,
        &format!("insert into jobs (user_id, kind, tags, created_at, updated_at) values ('u', 'k', '[1]', '{T}', '{T}')"),
        "INVALID_SHAPE: jobs",
    );
    refused(
        &mut db,
        &format!("insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'bad kind', '{T}', '{T}')"),
        "new row for relation \"jobs\" violates check constraint",
    );
    refused(
        &mut db,
        &format!("insert into jobs (user_id, kind, input, created_at, updated_at) values ('u', 'k', '{{not json', '{T}', '{T}')"),
        "invalid input syntax for type json",
    );

    // audit rows and events are immutable; events follow their job's sequence
    jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let other = jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    jobs.cancel(other.id, "ops", None).unwrap();
    // a cancel reason only on a cancelled job, and fixed once there (as V9 in SQLite)
    refused(
        &mut db,
        &format!("update jobs set cancel_reason = 'why' where id = {id}"),
        "new row for relation \"jobs\" violates check constraint",
    );
    let reasoned = jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let kept = jobs
        .cancel(reasoned.id, "ops", Some("  duplicate  "))
        .unwrap();
    assert_eq!(kept.cancel_reason.as_deref(), Some("duplicate"), "trimmed");
    refused(
        &mut db,
        &format!(
            "update jobs set cancel_reason = 'rewritten' where id = {}",
            reasoned.id
        ),
        "ILLEGAL_TRANSITION: jobs",
    );
    refused(
        &mut db,
        &format!(
            "update jobs set cancel_reason = null where id = {}",
            reasoned.id
        ),
        "ILLEGAL_TRANSITION: jobs",
    );
    refused(
        &mut db,
        &format!(
            "update jobs set cancel_reason = 'added later' where id = {}",
            other.id
        ),
        "ILLEGAL_TRANSITION: jobs",
    );
    refused(
        &mut db,
        "update audit_log set actor = 'someone else'",
        "IMMUTABLE: audit_log",
    );
    refused(&mut db, "delete from audit_log", "IMMUTABLE: audit_log");
    refused(&mut db, "truncate audit_log", "IMMUTABLE: audit_log");
    refused(
        &mut db,
        "update job_events set payload = '{}'",
        "IMMUTABLE: job_events",
    );
    refused(
        &mut db,
        &format!("delete from job_events where job_id = {id}"),
        "IMMUTABLE: job_events",
    );
    let h = "0".repeat(64);
    refused(
        &mut db,
        &format!("insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash) values ({id}, 9, 'progress', '{{}}', '{T}', '{h}', '{h}')"),
        "EVENT_SEQ: job_events",
    );
    refused(
        &mut db,
        &format!("insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash) values (987654, 1, 'created', '{{}}', '{T}', '{h}', '{h}')"),
        "MISSING_REFERENCE: job_events",
    );
    refused(
        &mut db,
        &format!("insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash) values ({id}, 4, 'progress', '[]', '{T}', '{h}', '{h}')"),
        "new row for relation \"job_events\" violates check constraint",
    );
    refused(
        &mut db,
        &format!("insert into audit_log (entity, entity_id, action, actor, at, detail) values ('job', '1', 'x', 'me', '{T}', '{{}}')"),
        "null value in column \"hash\"",
    );

    // one started run per lock key; terminal runs are final
    let run = engine
        .runs()
        .start(
            "feed",
            Scope::Targets,
            TriggerKind::Manual,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    refused(
        &mut db,
        &format!("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('feed', 'targets', 'manual', 'feed:targets', '{T}', '{T}')"),
        "duplicate key value violates unique constraint \"ingest_runs_one_active\"",
    );
    refused(
        &mut db,
        &format!("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at) values ('feed', 'targets', 'manual', 'feed:targets:x', '{T}', '{T}')"),
        "new row for relation \"ingest_runs\" violates check constraint",
    );
    refused(
        &mut db,
        &format!("delete from ingest_runs where id = {run}"),
        "ILLEGAL_TRANSITION: ingest_runs",
    );
    refused(&mut db, &format!("update ingest_runs set lock_key = 'feed:universe', scope = 'universe' where id = {run}"), "IMMUTABLE: ingest_runs");
    refused(
        &mut db,
        &format!("update ingest_runs set timeline = '[{{\"v\": 2}}]' where id = {run}"),
        "INVALID_SHAPE: ingest_runs",
    );
    engine
        .runs()
        .finish(run, runledger::RunStatus::Success, None, &json!({}))
        .unwrap();
    refused(
        &mut db,
        &format!("update ingest_runs set status = 'failed', error_code = 'X' where id = {run}"),
        "ILLEGAL_TRANSITION: ingest_runs: terminal runs are immutable",
    );
    refused(
        &mut db,
        &format!("update ingest_runs set duration_ms = duration_ms + 1 where id = {run}"),
        "ILLEGAL_TRANSITION: ingest_runs",
    );

    // slots: a claim is never handed to another ticker; terminal slots are final
    let rule: runledger::schedule::Rule = "every 15m".parse().unwrap();
    let zone: runledger::schedule::Zone = "UTC".parse().unwrap();
    let schedules = engine.schedules();
    let s = schedules
        .create(
            "s1",
            "feed",
            runledger::ScopeSelector::Targets,
            &rule,
            &zone,
        )
        .unwrap();
    let slot = schedules
        .materialize(s, engine.now() - Duration::from_secs(60))
        .unwrap()
        .unwrap();
    let claims = schedules.claim_due("ticker-a", 10).unwrap();
    assert_eq!(claims.len(), 1);
    refused(
        &mut db,
        &format!("update due_runs set claimed_by = 'ticker-b' where id = {slot}"),
        "CLAIM_FENCE: due_runs",
    );
    // schema version 5: the claim's own ticker renews it forward, never back
    let claimed_at = claims[0].claimed_at;
    refused(
        &mut db,
        &format!(
            "update due_runs set claimed_at = '{}' where id = {slot}",
            claimed_at - Duration::from_millis(1)
        ),
        "CLAIM_FENCE: due_runs",
    );
    assert_eq!(
        db.exec(&format!(
            "update due_runs set claimed_at = '{}' where id = {slot}",
            claimed_at + Duration::from_millis(1)
        )),
        Ok(1),
        "a renewal moves the claim forward"
    );
    refused(&mut db, &format!("update due_runs set status = 'fired', finished_at = claimed_at, run_ids = '[999999]' where id = {slot}"), "MISSING_REFERENCE: due_runs");
    refused(
        &mut db,
        &format!("delete from due_runs where id = {slot}"),
        "ILLEGAL_TRANSITION: due_runs",
    );
    refused(
        &mut db,
        &format!("insert into due_runs (schedule_id, due_at, created_at) values ({s}, '2000-01-01T00:00:00.000Z', '{T}')"),
        "ILLEGAL_TRANSITION: due_runs",
    );
    schedules.skipped(&claims[0], "TURNED_AWAY", None).unwrap();
    refused(
        &mut db,
        &format!("update due_runs set outcome_message = 'edited' where id = {slot}"),
        "ILLEGAL_TRANSITION: due_runs: terminal slots are final",
    );
    refused(
        &mut db,
        &format!("update schedules set last_due_at = null where id = {s}"),
        "ILLEGAL_TRANSITION: schedules",
    );
}

/// Schema version 9 folded the 33 CHECKs of `jobs` and the 6 of `job_events` into one row
/// check per table. Every rule, broken alone with raw SQL (triggers off, so that only the
/// CHECKs answer), fails on the current schema exactly as on version 8's per-column CHECKs:
/// the same SQLSTATE, constraint name and message; a row breaking two rules names the one
/// PostgreSQL checks first (by constraint name).
#[test]
fn pg_row_checks_refuse_each_rule_as_the_per_column_checks_did() {
    let Some(mut now) = TestDb::new("rowcheck_now") else {
        return;
    };
    let mut v8 = TestDb::new("rowcheck_v8").unwrap();
    v8.migrate_to_version_8();
    drop(now.engine()); // migrates to the newest version
    let rows = format!(
        "insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'k', '{T}', '{T}');
         insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'k', '{T}', '{T}');
         update jobs set state = 'running', attempt = 1, worker_id = 'w', started_at = '{T}',
             heartbeat_at = '{T}', updated_at = '{T}' where id = 2;
         set session_replication_role = replica"
    );
    for db in [&mut now, &mut v8] {
        db.raw.batch_execute(&rows).unwrap();
    }
    const LATER: &str = "2026-11-23T00:00:00.000Z";
    const EARLY: &str = "2000-01-01T00:00:00.000Z";
    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let big = "jsonb_build_object('a', repeat('x', 4194304))";
    // (the constraint expected to answer, the statement); job 1 is created, job 2 running
    let cases: Vec<(&str, String)> = vec![
        ("jobs_attempt_check", "update jobs set attempt = -1 where id = 1".into()),
        ("jobs_cancel_reason_check", format!("update jobs set state = 'cancelled', finished_at = '{LATER}', cancel_reason = '' where id = 1")),
        ("jobs_check", "update jobs set parent_id = 1 where id = 1".into()),
        ("jobs_check1", format!("update jobs set finished_at = '{LATER}' where id = 1")),
        ("jobs_check10", "update jobs set checkpoint = '{}' where id = 1".into()),
        ("jobs_check11", "update jobs set cancel_reason = 'why' where id = 1".into()),
        ("jobs_check2", format!("update jobs set state = 'cancelled', finished_at = '{EARLY}' where id = 1")),
        ("jobs_check3", "update jobs set state = 'paused' where id = 1".into()),
        ("jobs_check4", "update jobs set worker_id = 'w' where id = 1".into()),
        ("jobs_check5", "update jobs set heartbeat_at = null where id = 2".into()),
        ("jobs_check6", format!("update jobs set started_at = '{EARLY}' where id = 2")),
        ("jobs_check7", "update jobs set result = '{}' where id = 2".into()),
        ("jobs_check8", format!("update jobs set state = 'completed', finished_at = '{LATER}' where id = 2")),
        ("jobs_check9", "update jobs set error_code = 'E' where id = 2".into()),
        ("jobs_checkpoint_at_check", "update jobs set checkpoint = '{}', checkpoint_at = '2026-02-30T00:00:00.000Z' where id = 2".into()),
        ("jobs_created_at_check", "update jobs set created_at = '2026-11-22 11:30:00.000Z' where id = 1".into()),
        ("jobs_error_code_check", format!("update jobs set state = 'failed', finished_at = '{LATER}', error_code = 'bad code' where id = 2")),
        ("jobs_finished_at_check", "update jobs set state = 'cancelled', finished_at = '2026-13-01T00:00:00.000Z' where id = 1".into()),
        ("jobs_heartbeat_at_check", "update jobs set heartbeat_at = '2026-11-22T11:30:00Z' where id = 2".into()),
        ("jobs_input_check", format!("update jobs set input = {big} where id = 1")),
        ("jobs_kind_check", "update jobs set kind = 'bad kind' where id = 1".into()),
        ("jobs_kind_check", "update jobs set kind = '' where id = 1".into()),
        ("jobs_kind_check", "update jobs set kind = repeat('k', 65) where id = 1".into()),
        ("jobs_kind_check", "update jobs set kind = 'kind' || E'\\n' where id = 1".into()),
        ("jobs_kind_check", "update jobs set kind = 'k\u{e9}' where id = 1".into()),
        ("jobs_kind_check", "update jobs set kind = 'a/b' where id = 1".into()),
        ("jobs_max_retries_check", "update jobs set max_retries = -1 where id = 1".into()),
        ("jobs_progress_check", "update jobs set progress = 101 where id = 2".into()),
        ("jobs_recovery_count_check", "update jobs set recovery_count = -1 where id = 1".into()),
        ("jobs_result_check", format!("update jobs set state = 'completed', progress = 100, finished_at = '{LATER}', result = {big} where id = 2")),
        ("jobs_started_at_check", "update jobs set started_at = '2026-11-31T00:00:00.000Z' where id = 2".into()),
        ("jobs_state_check", "update jobs set state = 'done' where id = 1".into()),
        ("jobs_step_check", "update jobs set step = repeat('s', 257) where id = 2".into()),
        ("jobs_tags_check", "update jobs set tags = '{\"a\": 1}' where id = 1".into()),
        ("jobs_timeout_ms_check", "update jobs set timeout_ms = 0 where id = 1".into()),
        ("jobs_updated_at_check", "update jobs set updated_at = '2026-02-29T00:00:00.000Z' where id = 1".into()),
        ("jobs_user_id_check", "update jobs set user_id = E'a\\x01b' where id = 1".into()),
        ("jobs_worker_id_check", "update jobs set worker_id = repeat('w', 257) where id = 2".into()),
        // two rules broken: the first by name answers
        ("jobs_progress_check", "update jobs set progress = 101, updated_at = 'x' where id = 2".into()),
        ("jobs_check7", "update jobs set result = '{}', progress = -1, kind = '' where id = 2".into()),
        ("job_events_at_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '2026-11-22T11:30:00Z', '{HEX}', '{HEX}')")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', 'x')")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', upper('{HEX}'))")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', substr('{HEX}', 2))")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', '{HEX}' || '0')")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', overlay('{HEX}' placing 'g' from 7))")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', overlay('{HEX}' placing 'é' from 64))")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', overlay('{HEX}' placing E'\n' from 64))")),
        ("job_events_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', '')")),
        ("job_events_kind_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'boom', '{T}', '{HEX}', '{HEX}')")),
        ("job_events_payload_check", format!("insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash) values (1, 1, 'created', '[]', '{T}', '{HEX}', '{HEX}')")),
        ("job_events_prev_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', upper('{HEX}'), '{HEX}')")),
        ("job_events_prev_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}' || E'\n', '{HEX}')")),
        ("job_events_prev_hash_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', overlay('{HEX}' placing ' ' from 1), '{HEX}')")),
        ("job_events_seq_check", format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 0, 'created', '{T}', '{HEX}', '{HEX}')")),
    ];
    let answer = |db: &mut TestDb, sql: &str| {
        let err = db.raw.execute(sql, &[]).expect_err(sql);
        let e = err.as_db_error().expect(sql);
        (
            e.code().code().to_string(),
            e.constraint().map(str::to_string),
            e.message().to_string(),
        )
    };
    for (constraint, sql) in &cases {
        let old = answer(&mut v8, sql);
        let new = answer(&mut now, sql);
        assert_eq!(new, old, "{sql}");
        assert_eq!(new.0, "23514", "{sql}: check_violation");
        assert_eq!(new.1.as_deref(), Some(*constraint), "{sql}");
        assert_eq!(
            new.2,
            format!(
                "new row for relation \"{}\" violates check constraint \"{constraint}\"",
                if constraint.starts_with("job_events") {
                    "job_events"
                } else {
                    "jobs"
                }
            )
        );
    }
    // and rows that keep every rule pass on both (the calendar's 29th-31st included)
    for sql in [
        "update jobs set updated_at = '2028-02-29T00:00:00.000Z' where id = 1".to_string(),
        format!("update jobs set kind = '{}' where id = 1", "Az09_.:-".repeat(8)),
        "update jobs set heartbeat_at = '2026-12-31T23:59:59.999Z' where id = 2".to_string(),
        "update jobs set checkpoint = '{}', checkpoint_at = '2026-11-30T00:00:00.000Z' where id = 2".to_string(),
        format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values (1, 1, 'created', '{T}', '{HEX}', '{HEX}')"),
    ] {
        assert_eq!(now.raw.execute(&sql, &[]).unwrap(), 1, "{sql}");
        assert_eq!(v8.raw.execute(&sql, &[]).unwrap(), 1, "{sql}");
    }
}
