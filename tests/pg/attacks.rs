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
