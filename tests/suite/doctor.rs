//! `doctor`: a clean, populated database reports nothing; every anomaly planted by raw SQL in
//! a copy of it is reported, exactly.

use std::path::Path;
use std::time::Duration;

use runledger::doctor::{self, Anomaly, DoctorOptions, Severity};
use runledger::run::{Pipeline, RawInput, Scope, StageError, StageOutput, TriggerKind};
use runledger::schedule::NewSchedule;
use runledger::{Clock, Engine, ManualClock, NewJob, ScheduledRuns};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::*;

/// Fills `engine` with a bit of everything, all healthy: a fired schedule slot with its
/// runs, a run with a raw record, a failed run, a lock refusal record, jobs in every
/// state with events. Leaves the clock where the running job's heartbeat is fresh.
pub fn populate(engine: &Engine, clock: &ManualClock) {
    engine
        .schedules()
        .create(&NewSchedule::new(
            "quarterly",
            "ingest",
            "targets",
            "every 15m",
            "UTC",
        ))
        .unwrap();
    let ingest = Pipeline::builder("ingest")
        .stage("fetch", |ctx| {
            ctx.store_raw(&RawInput {
                source: "sim",
                upstream_ref: Some("ref-1"),
                content_type: "text/csv",
                bytes: b"a,b\n1,2\n",
            })
            .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            Ok(StageOutput::with_detail(json!({"rows": 1})))
        })
        .build()
        .unwrap();
    let fire = ScheduledRuns::new(engine.clone()).register(ingest);
    clock.advance(Duration::from_secs(15 * 60));
    let report = engine.schedules().tick(clock.now(), &fire).unwrap();
    assert_eq!(report.slots.len(), 1, "{report:?}");
    let failing = Pipeline::builder("flaky")
        .stage("fetch", |_| Err(StageError::fatal("UPSTREAM_DOWN", "503")))
        .build()
        .unwrap();
    engine
        .runs()
        .trigger(&failing, Scope::Targets.into(), TriggerKind::Manual)
        .unwrap();

    let jobs = engine.jobs();
    let mk = |kind: &str| {
        jobs.create(&NewJob::new("alice", kind, json!({"q": 1})))
            .unwrap()
    };
    // cancelled before it ran
    let cancelled = mk("research");
    jobs.cancel(cancelled.id, "alice", Some("not needed"))
        .unwrap();
    // completed, failed, paused with a checkpoint, running
    for outcome in ["complete", "fail", "pause", "run"] {
        mk("research");
        let claim = jobs.claim("w1", &[]).unwrap().unwrap();
        let (id, attempt) = (claim.id(), claim.attempt);
        jobs.progress(&claim_at(&jobs, id, attempt), 40, Some("fetch"))
            .unwrap();
        jobs.checkpoint(&claim_at(&jobs, id, attempt), &json!({"page": 4}))
            .unwrap();
        match outcome {
            "complete" => drop(
                jobs.complete(&claim_at(&jobs, id, attempt), &json!({"ok": true}))
                    .unwrap(),
            ),
            "fail" => drop(
                jobs.fail(&claim_at(&jobs, id, attempt), "BOOM", "it broke")
                    .unwrap(),
            ),
            "pause" => drop(jobs.pause(id, "alice").unwrap()),
            _ => {}
        }
    }
    // and one still waiting
    mk("trade");
}

/// A file database populated by [`populate`], with its clock.
pub fn populated() -> (Engine, ManualClock, tempfile::TempDir) {
    let (engine, clock, dir) = file_engine();
    populate(&engine, &clock);
    (engine, clock, dir)
}

/// A copy of `engine`'s database at `to`, opened on `clock`.
pub fn copy_of(engine: &Engine, to: &Path, clock: &ManualClock) -> Engine {
    let target = to.display().to_string();
    engine
        .with_connection(|c| Ok(c.execute("VACUUM INTO ?1", [target])?))
        .unwrap();
    // Owner-only, as Engine::backup leaves its copies (doctor warns about `file_mode`).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Engine::open_with(to, crate::common::options().with_clock(clock.clone())).unwrap()
}

type Finding = (&'static str, Severity, String, Option<String>);

fn findings(anomalies: &[Anomaly]) -> Vec<Finding> {
    anomalies
        .iter()
        .map(|a| (a.check, a.severity, a.table.clone(), a.row_id.clone()))
        .collect()
}

fn e(check: &'static str, table: &str, row: &str) -> Finding {
    (check, Severity::Error, table.into(), Some(row.into()))
}

fn w(check: &'static str, table: &str, row: &str) -> Finding {
    (check, Severity::Warning, table.into(), Some(row.into()))
}

/// Plants `sql` in a fresh copy of a populated database and returns what doctor finds.
fn plant(sql: &str) -> Vec<Finding> {
    plant_with(sql, &DoctorOptions::default())
}

fn plant_with(sql: &str, opts: &DoctorOptions) -> Vec<Finding> {
    let (engine, clock, dir) = populated();
    let copy = copy_of(&engine, &dir.path().join("copy.db"), &clock);
    assert!(doctor::check(&copy, opts).unwrap().is_clean());
    exec(&copy, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let report = doctor::check(&copy, opts).unwrap();
    findings(&report.anomalies)
}

fn id_of(engine: &Engine, sql: &str) -> String {
    engine
        .with_connection(|c| Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))?))
        .unwrap()
        .to_string()
}

#[test]
fn a_clean_populated_database_reports_nothing() {
    let (engine, _clock, _dir) = populated();
    let report = doctor::check(&engine, &DoctorOptions::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.anomalies);
    assert_eq!(report.schema_version, runledger::known_schema_version());
    for check in [
        "integrity",
        "foreign_key",
        "schema_object",
        "state",
        "timestamps",
        "json",
        "run_lock",
        "abandoned_run",
        "stale_job",
        "event_seq",
        "event_backlog",
        "stuck_slot",
        "raw_payload",
    ] {
        assert!(report.checks.contains(&check), "{check} did not run");
    }
    let counts = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select (select count(*) from jobs), (select count(*) from ingest_runs),
                        (select count(*) from due_runs), (select count(*) from raw_records),
                        (select count(*) from job_events)",
                [],
                |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]),
            )?)
        })
        .unwrap();
    let counts: [i64; 5] = counts;
    assert!(counts.iter().all(|&n| n > 0), "populated: {counts:?}");
}

#[test]
fn a_run_whose_lease_expired_is_a_warning() {
    let found = plant(
        "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
         values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T10:00:00.000Z', '2026-11-22T10:05:00.000Z')",
    );
    assert_eq!(found, [w("abandoned_run", "ingest_runs", "3")]);
}

#[test]
fn a_running_job_without_a_recent_heartbeat_is_a_warning() {
    let (engine, clock, _dir) = populated();
    let running = id_of(&engine, "select id from jobs where state = 'running'");
    let later = DoctorOptions {
        now: Some(clock.now() + Duration::from_secs(31)),
        ..Default::default()
    };
    let found = findings(&doctor::check(&engine, &later).unwrap().anomalies);
    assert_eq!(found, [w("stale_job", "jobs", &running)]);
    let lenient = DoctorOptions {
        stale_after: Duration::from_secs(3600),
        ..later
    };
    assert!(doctor::check(&engine, &lenient).unwrap().is_clean());
}

#[test]
fn a_slot_claimed_too_long_ago_is_a_warning() {
    let found = plant(
        "insert into schedules (name, pipeline, scope, rule, zone, created_at, updated_at)
           values ('old', 'ingest', 'targets', 'daily 01:00', 'UTC', '2026-11-20T00:00:00.000Z', '2026-11-20T00:00:00.000Z');
         insert into due_runs (schedule_id, due_at, created_at)
           values (2, '2026-11-21T01:00:00.000Z', '2026-11-21T01:00:00.000Z');
         update due_runs set status = 'claimed', claimed_at = '2026-11-21T01:00:00.000Z', claimed_by = 'ghost'
           where schedule_id = 2;",
    );
    assert_eq!(found, [w("stuck_slot", "due_runs", "2")]);
}

#[test]
fn a_state_outside_the_machine_is_found_once_its_trigger_is_dropped() {
    let found = plant(
        "drop trigger jobs_state_machine;
         pragma ignore_check_constraints = on;
         update jobs set state = 'zombie' where id = 1;",
    );
    assert_eq!(
        found,
        [
            e("schema_object", "jobs", "jobs_state_machine"),
            e("state", "jobs", "1"),
        ]
    );
}

#[test]
fn a_terminal_job_without_its_finish_time_is_found() {
    let found = plant(
        "drop trigger jobs_state_machine;
         pragma ignore_check_constraints = on;
         update jobs set finished_at = null where state = 'failed';",
    );
    assert_eq!(
        found,
        [
            e("schema_object", "jobs", "jobs_state_machine"),
            e("timestamps", "jobs", "3"),
        ]
    );
}

#[test]
fn a_run_duration_that_disagrees_with_its_times_is_found() {
    let found = plant(
        "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
         values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T11:45:00.000Z', '2099-01-01T00:00:00.000Z');
         pragma ignore_check_constraints = on;
         update ingest_runs set status = 'success', finished_at = '2026-11-22T11:45:01.000Z', duration_ms = 5
           where id = 3;",
    );
    assert_eq!(found, [e("timestamps", "ingest_runs", "3")]);
}

#[test]
fn json_of_the_wrong_shape_is_found() {
    let found = plant(
        "drop trigger ingest_runs_timeline_shape_insert;
         drop trigger audit_log_append_only;
         pragma ignore_check_constraints = on;
         insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at, timeline)
         values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T11:45:00.000Z', '2099-01-01T00:00:00.000Z', '{\"stage\": 1}');
         insert into audit_log (entity, entity_id, action, actor, at, detail)
         values ('job', '1', 'poke', 'op', '2026-11-22T11:45:00.000Z', 'not json');",
    );
    let audit = found
        .iter()
        .find(|f| f.2 == "audit_log")
        .and_then(|f| f.3.clone());
    assert!(audit.is_some(), "{found:?}");
    assert_eq!(
        found,
        [
            e("audit_chain", "audit_log", audit.as_deref().unwrap()),
            e("json", "audit_log", audit.as_deref().unwrap()),
            e("json", "ingest_runs", "3"),
            e("schema_object", "audit_log", "audit_log_append_only"),
            e(
                "schema_object",
                "ingest_runs",
                "ingest_runs_timeline_shape_insert"
            ),
        ]
    );
}

#[test]
fn two_started_runs_on_one_lock_are_found_once_the_lock_index_is_dropped() {
    let found = plant(
        "drop index ingest_runs_one_active;
         drop trigger ingest_runs_insert_started;
         insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
         values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T11:45:00.000Z', '2099-01-01T00:00:00.000Z'),
                ('p', 'targets', 'manual', 'p:targets', '2026-11-22T11:45:00.500Z', '2099-01-01T00:00:00.000Z');",
    );
    assert_eq!(
        found,
        [
            e("run_lock", "ingest_runs", "p:targets"),
            e("schema_object", "ingest_runs", "ingest_runs_insert_started"),
            e("schema_object", "ingest_runs", "ingest_runs_one_active"),
        ]
    );
}

#[test]
fn an_event_sequence_gap_is_found() {
    let found = plant(
        "drop trigger job_events_seq_follows;
         insert into job_events (job_id, seq, kind, at)
         values (2, (select max(seq) + 2 from job_events where job_id = 2), 'progress', '2026-11-22T11:45:00.000Z');",
    );
    let chain = found
        .iter()
        .find(|f| f.0 == "event_chain")
        .and_then(|f| f.3.clone());
    assert!(chain.is_some(), "{found:?}");
    assert_eq!(
        found,
        [
            // the planted event carries no chain hash
            e("event_chain", "job_events", chain.as_deref().unwrap()),
            e("event_seq", "job_events", "2"),
            e("schema_object", "job_events", "job_events_seq_follows"),
        ]
    );
}

#[test]
fn more_events_than_the_backlog_are_found_once_pruning_is_dropped() {
    let found = plant(
        "drop trigger job_events_prune;
         drop trigger job_events_seq_follows;
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 200)
         insert into job_events (job_id, seq, kind, at)
         select 6, (select max(seq) from job_events where job_id = 6) + i, 'progress', '2026-11-22T11:45:00.000Z' from n;",
    );
    let chain = found
        .iter()
        .find(|f| f.0 == "event_chain")
        .and_then(|f| f.3.clone());
    assert!(chain.is_some(), "{found:?}");
    assert_eq!(
        found,
        [
            e("event_backlog", "job_events", "6"),
            // the planted events carry no chain hash: one finding for the job
            e("event_chain", "job_events", chain.as_deref().unwrap()),
            e("schema_object", "job_events", "job_events_prune"),
            e("schema_object", "job_events", "job_events_seq_follows"),
        ]
    );
}

#[test]
fn events_of_a_deleted_job_are_found() {
    // Since V5 a job deleted through SQL takes its events with it (a trigger does what the
    // foreign key does when foreign keys are on): nothing to find.
    assert_eq!(plant("delete from jobs where id = 1"), []);
    // With that trigger dropped, the orphans are found.
    let found = plant(
        "drop trigger jobs_delete_cascades; pragma foreign_keys = off;
         delete from jobs where id = 1; pragma foreign_keys = on;",
    );
    assert_eq!(
        found,
        [
            e("event_orphan", "job_events", "1"),
            // job_events.job_id is a foreign key since V5
            e("foreign_key", "job_events", "1"),
            e("foreign_key", "job_events", "2"),
            e("schema_object", "jobs", "jobs_delete_cascades"),
        ]
    );
}

#[test]
fn a_raw_payload_whose_size_or_hash_is_wrong_is_found() {
    let bytes = b"xyz";
    let sha: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let found = plant(&format!(
        "pragma ignore_check_constraints = on;
         insert into raw_payloads (sha256, size, payload) values ('{sha}', 10, x'78797a');
         insert into raw_payloads (sha256, size, payload) values ('{}', 3, x'78797a');",
        "0".repeat(64)
    ));
    assert_eq!(
        found,
        [
            e("raw_payload", "raw_payloads", &"0".repeat(64)),
            e("raw_payload", "raw_payloads", &sha),
        ]
    );
}

#[test]
fn a_dropped_immutability_trigger_is_found() {
    let found = plant(
        "drop trigger audit_log_no_update;
         drop trigger raw_payloads_no_update;",
    );
    assert_eq!(
        found,
        [
            e("immutable_guard", "audit_log", "audit_log_no_update"),
            e("immutable_guard", "raw_payloads", "raw_payloads_no_update"),
        ]
    );
}

#[test]
fn a_dangling_reference_is_found() {
    let found = plant(
        "pragma foreign_keys = off;
         delete from ingest_runs where id = (select run_id from raw_records limit 1);
         pragma foreign_keys = on;",
    );
    assert_eq!(found, [e("foreign_key", "raw_records", "1")]);
}

#[test]
fn an_object_the_migrations_do_not_create_is_an_error() {
    // A rogue index or trigger can change what the rules mean (a trigger that rewrites
    // rows, an index that makes a key unique): an error since V5.
    let found = plant("create index jobs_extra on jobs (kind)");
    assert_eq!(found, [e("schema_object", "jobs", "jobs_extra")]);
    let found = plant("create trigger jobs_rogue after update on jobs begin select 1; end");
    assert_eq!(found, [e("schema_object", "jobs", "jobs_rogue")]);
}

#[test]
fn a_dropped_table_is_reported_not_fatal() {
    let found = plant("drop table supervisor_state");
    assert_eq!(
        found,
        [
            e("schema_object", "supervisor_state", "supervisor_state"),
            e(
                "schema_object",
                "supervisor_state",
                "supervisor_state_counters_grow"
            ),
            e(
                "schema_object",
                "supervisor_state",
                "supervisor_state_insert_new"
            ),
        ]
    );
}

#[test]
fn doctor_writes_nothing() {
    let (engine, clock, _dir) = populated();
    exec(
        &engine,
        "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
         values ('p', 'targets', 'manual', 'p:targets', '2026-11-22T10:00:00.000Z', '2026-11-22T10:05:00.000Z')",
    )
    .unwrap();
    let before = dump(&engine);
    let opts = DoctorOptions {
        now: Some(clock.now() + Duration::from_secs(86_400)),
        ..Default::default()
    };
    let report = doctor::check(&engine, &opts).unwrap();
    assert_eq!(report.warnings().count(), 2, "{:#?}", report.anomalies);
    assert_eq!(report.errors().count(), 0);
    assert_eq!(dump(&engine), before);
}
