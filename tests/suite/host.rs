//! What a host relies on (issue 14, "for hosts"): the cancel reason on the job, the worker's
//! handling of stops and drops, `JobFailure` from a library error, `JOB_NOT_RUNNING`.

use std::time::Duration;

use runledger::{Engine, Error, JobFailure, JobState, NewJob, Worker, WorkerOptions};
use serde_json::json;

use crate::common::{exec, mem_engine};
use crate::jobs::job_in;

fn refused(engine: &Engine, sql: &str) -> Error {
    exec(engine, sql).expect_err(sql)
}

#[test]
fn a_cancel_reason_is_stored_on_the_job_and_cleared_by_a_restart() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    for from in [JobState::Created, JobState::Running, JobState::Paused] {
        let job = job_in(&engine, from);
        let cancelled = jobs
            .cancel(job.id, "ops", Some("  wrong account  "))
            .unwrap();
        assert_eq!(cancelled.cancel_reason.as_deref(), Some("wrong account"));
        assert_eq!(
            jobs.get(job.id).unwrap().cancel_reason,
            cancelled.cancel_reason
        );
        let restarted = jobs.restart(job.id, "ops", None).unwrap();
        assert_eq!(restarted.cancel_reason, None);
        jobs.cancel(job.id, "ops", None).unwrap();
        jobs.delete(job.id, "ops").unwrap();
    }
    // No reason, or a blank one, leaves it empty; the other states never have one.
    let job = job_in(&engine, JobState::Created);
    assert_eq!(
        jobs.cancel(job.id, "ops", Some(" ")).unwrap().cancel_reason,
        None
    );
    jobs.delete(job.id, "ops").unwrap();
    for state in [JobState::Completed, JobState::Failed] {
        let job = job_in(&engine, state);
        assert_eq!(job.cancel_reason, None);
        jobs.delete(job.id, "ops").unwrap();
    }
}

#[test]
fn a_cancel_reason_too_long_or_with_nul_is_refused_before_any_write() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Created);
    for bad in ["x".repeat(1001), "a\0b".to_string()] {
        let e = engine.jobs().cancel(job.id, "ops", Some(&bad)).unwrap_err();
        assert_eq!(e.code(), "INVALID_INPUT", "{e}");
        assert_eq!(engine.jobs().get(job.id).unwrap().state, JobState::Created);
    }
    let ok = "é".repeat(500); // 1000 bytes
    let job = engine.jobs().cancel(job.id, "ops", Some(&ok)).unwrap();
    assert_eq!(job.cancel_reason.as_deref(), Some(ok.as_str()));
}

#[test]
fn raw_sql_cannot_put_a_cancel_reason_where_the_rules_forbid_it() {
    let (engine, _clock) = mem_engine();
    let created = job_in(&engine, JobState::Created);
    // Not on a job that is not cancelled.
    let e = refused(
        &engine,
        &format!(
            "update jobs set cancel_reason = 'x' where id = {}",
            created.id
        ),
    );
    assert_eq!(e.code(), "IMMUTABLE", "{e}");
    engine
        .jobs()
        .cancel(created.id, "ops", Some("first"))
        .unwrap();
    // Not rewritten or removed while cancelled.
    for set in ["'second'", "null"] {
        let e = refused(
            &engine,
            &format!(
                "update jobs set cancel_reason = {set} where id = {}",
                created.id
            ),
        );
        assert_eq!(e.code(), "IMMUTABLE", "{set}: {e}");
    }
    // Not carried out of cancelled by a restart.
    let e = refused(
        &engine,
        &format!(
            "update jobs set state = 'created', finished_at = null where id = {}",
            created.id
        ),
    );
    assert!(matches!(e, Error::ConstraintViolation { .. }), "{e}");
    assert_eq!(
        engine
            .jobs()
            .get(created.id)
            .unwrap()
            .cancel_reason
            .as_deref(),
        Some("first")
    );
    // Not empty, not over 1000 bytes, not with NUL, when cancelled with it.
    let other = job_in(&engine, JobState::Running);
    let id = other.id;
    for reason in [
        "''",
        "zeroblob(10)",
        "printf('%.1001c', 'x')",
        "'a' || char(0) || 'b'",
    ] {
        let sql = format!(
            "update jobs set state = 'cancelled', finished_at = updated_at, cancel_reason = {reason} where id = {id}"
        );
        assert!(exec(&engine, &sql).is_err(), "{reason}");
    }
    // Not on an insert.
    let sql = "insert into jobs (user_id, kind, input, tags, created_at, updated_at, cancel_reason)
               values ('u', 'k', '{}', '[]', '2026-11-22T11:30:00.000Z', '2026-11-22T11:30:00.000Z', 'x')";
    assert!(exec(&engine, sql).is_err());
    // What the rules allow: the cancel sets it, from raw SQL too.
    exec(
        &engine,
        &format!("update jobs set state = 'cancelled', finished_at = updated_at, cancel_reason = 'by hand' where id = {id}"),
    )
    .unwrap();
    assert_eq!(
        engine.jobs().get(id).unwrap().cancel_reason.as_deref(),
        Some("by hand")
    );
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(report.errors().next().is_none(), "{:#?}", report.anomalies);
}

#[test]
fn doctor_finds_a_cancel_reason_written_behind_the_rules() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Created);
    exec(
        &engine,
        &format!(
            "pragma ignore_check_constraints = on;
             drop trigger jobs_cancel_reason_fixed;
             update jobs set cancel_reason = 'sneaky' where id = {};
             pragma ignore_check_constraints = off;",
            job.id
        ),
    )
    .unwrap();
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(
        report
            .anomalies
            .iter()
            .any(|a| a.check == "outcome" && a.detail == "cancel_reason on a created job"),
        "{:#?}",
        report.anomalies
    );
}

#[test]
fn a_second_complete_gets_job_not_running() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let claim = jobs.claim("w", &[]).unwrap().unwrap();
    jobs.complete(&claim, &json!({"n": 1})).unwrap();
    let e = jobs.complete(&claim, &json!({"n": 2})).unwrap_err();
    assert_eq!(e.code(), "JOB_NOT_RUNNING");
    assert!(matches!(
        e,
        Error::JobNotRunning {
            state: JobState::Completed,
            ..
        }
    ));
    for e in [
        jobs.fail(&claim, "LATE", "after the complete").unwrap_err(),
        jobs.heartbeat(&claim).unwrap_err(),
        jobs.progress(&claim, 50, None).unwrap_err(),
    ] {
        assert_eq!(e.code(), "JOB_NOT_RUNNING", "{e}");
    }
    assert_eq!(jobs.get(claim.id()).unwrap().result, Some(json!({"n": 1})));
}

#[test]
fn job_failure_converts_from_a_library_error_and_is_an_error() {
    let e = Error::invalid("n", "must not be negative");
    let text = e.to_string();
    let failure: JobFailure = e.into();
    assert_eq!(failure.code, "INVALID_INPUT");
    assert_eq!(failure.message, text);
    assert_eq!(failure.to_string(), format!("INVALID_INPUT: {text}"));
    let boxed: Box<dyn std::error::Error> = Box::new(failure);
    assert!(boxed.to_string().starts_with("INVALID_INPUT: "));
}

fn fast(id: &str) -> WorkerOptions {
    WorkerOptions {
        idle_poll: Duration::from_millis(5),
        heartbeat_every: Duration::from_millis(10),
        ..WorkerOptions::new(id, ["k"])
    }
}

fn wait_for(engine: &Engine, id: i64, state: JobState) {
    for _ in 0..2000 {
        if engine.jobs().get(id).unwrap().state == state {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("job {id} never reached {state}");
}

#[test]
fn a_dropped_worker_claims_nothing_more() {
    let (engine, _clock, _dir) = crate::common::file_engine();
    let first = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let worker = Worker::start(engine.clone(), fast("w"), |_| Ok(json!({}))).unwrap();
    wait_for(&engine, first.id, JobState::Completed);
    drop(worker);
    let later = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100)); // 20 idle polls
    assert_eq!(
        engine.jobs().get(later.id).unwrap().state,
        JobState::Created
    );
}

#[test]
fn a_dropped_worker_tells_its_running_handler_to_stop_and_leaves_the_job_to_the_supervisor() {
    let (engine, _clock) = mem_engine();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let worker = Worker::start(engine.clone(), fast("w"), move |ctx| {
        while !ctx.should_stop() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = seen_tx.send(ctx.stop_reason());
        Ok(json!({"discarded": true}))
    })
    .unwrap();
    wait_for(&engine, job.id, JobState::Running);
    drop(worker);
    let reason = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(reason, Some(runledger::StopReason::Shutdown));
    std::thread::sleep(Duration::from_millis(50));
    let job = engine.jobs().get(job.id).unwrap();
    assert_eq!(
        job.state,
        JobState::Running,
        "abandoned, for the supervisor"
    );
    assert_eq!(job.result, None, "the handler's result was discarded");
}

#[test]
fn a_handlers_result_after_a_cancel_is_discarded_and_the_reason_kept() {
    let (engine, _clock) = mem_engine();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let worker = Worker::start(engine.clone(), fast("w"), |ctx| {
        while !ctx.should_stop() {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Either outcome is dropped once the job was stopped.
        Err(JobFailure::new("WOULD_FAIL", "not written"))
    })
    .unwrap();
    wait_for(&engine, job.id, JobState::Running);
    engine
        .jobs()
        .cancel(job.id, "ops", Some("duplicate"))
        .unwrap();
    let report = worker.shutdown(Duration::from_secs(5));
    assert_eq!((report.failed, report.stopped), (0, 1));
    let job = engine.jobs().get(job.id).unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.error_code, None);
    assert_eq!(job.cancel_reason.as_deref(), Some("duplicate"));
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

#[cfg(unix)]
#[test]
fn the_database_its_wal_and_shm_and_a_backup_are_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let engine = Engine::open(&path).unwrap();
    engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&path, suffix);
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let backup = dir.path().join("copy.db");
    engine.backup(&backup).unwrap();
    assert_eq!(mode(&backup), 0o600);
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(report.checks.contains(&"file_mode"));
    assert!(report.is_clean(), "{:#?}", report.anomalies);
}

#[cfg(unix)]
#[test]
fn doctor_warns_about_a_database_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let engine = Engine::open(&path).unwrap();
    engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    for (suffix, loose) in [("", 0o644), ("-wal", 0o660)] {
        let file = with_suffix(&path, suffix);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    let found = |report: &runledger::doctor::DoctorReport| -> Vec<(String, String)> {
        report
            .anomalies
            .iter()
            .filter(|a| a.check == "file_mode")
            .inspect(|a| assert_eq!(a.severity, runledger::doctor::Severity::Warning))
            .map(|a| (a.row_id.clone().unwrap(), a.detail.clone()))
            .collect()
    };
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    let warned = found(&report);
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].0.ends_with("shared.db") && warned[0].1.starts_with("mode 0644"));
    assert!(warned[1].0.ends_with("shared.db-wal") && warned[1].1.starts_with("mode 0660"));
    assert_eq!(report.errors().count(), 0);
    // The read-only path (a file the engine refuses) checks it too.
    let report =
        runledger::doctor::check_path(&path, &runledger::doctor::DoctorOptions::default()).unwrap();
    assert_eq!(found(&report).len(), 2);
    for suffix in ["", "-wal"] {
        let file = with_suffix(&path, suffix);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(found(&report).is_empty());
}

/// `value` displays as its serialized text.
fn displays_its_text<T: std::fmt::Display + serde::Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            let text = serde_json::to_value(v).unwrap();
            let shown = v.to_string();
            assert_eq!(Some(shown.as_str()), text.as_str(), "{shown}");
            shown
        })
        .collect()
}

/// The name of every `pub enum` of `src/` that has a text form: a `text_enum!`, a serde
/// `rename_all`, or a serialized unit enum (the source scanned as text).
fn enums_with_a_text_form() -> Vec<String> {
    fn scan(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("bin") {
                    scan(&path, out);
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if let Some(rest) = line.trim().strip_prefix("text_enum!(") {
                    out.push(rest.split(',').next().unwrap().to_string());
                }
                let Some(name) = line.strip_prefix("pub enum ") else {
                    continue;
                };
                let name = name.trim_end_matches(" {").to_string();
                let attrs = &lines[i.saturating_sub(3)..i];
                let body = lines[i + 1..].iter().take_while(|l| **l != "}");
                let unit = body
                    .filter(|l| {
                        !l.trim_start().starts_with("//") && !l.trim_start().starts_with('#')
                    })
                    .all(|l| !l.contains('(') && !l.contains('{'));
                let renamed = attrs.iter().any(|a| a.contains("serde(rename_all"));
                let serialized = attrs.iter().any(|a| a.contains("Serialize"));
                if renamed || (serialized && unit) {
                    out.push(name);
                }
            }
        }
    }
    let mut out = Vec::new();
    scan(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut out,
    );
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_public_enum_with_a_text_form_implements_display() {
    use runledger::run::{Gate, PreflightPolicy, ProbeStatus, StageKind, StageStatus};
    use runledger::schedule::{Misfire, SlotStatus};
    use runledger::{EventKind, JobState, RecoveryPolicy, RunStatus, Scope, ScopeSelector};
    let mut listed = vec![
        ("JobState", displays_its_text(&JobState::ALL)),
        ("RunStatus", displays_its_text(&RunStatus::ALL)),
        ("Scope", displays_its_text(&Scope::ALL)),
        ("ScopeSelector", displays_its_text(&ScopeSelector::ALL)),
        (
            "TriggerKind",
            displays_its_text(&runledger::TriggerKind::ALL),
        ),
        ("SlotStatus", displays_its_text(&SlotStatus::ALL)),
        ("ProbeStatus", displays_its_text(&ProbeStatus::ALL)),
        ("Gate", displays_its_text(&Gate::ALL)),
        ("Misfire", displays_its_text(&Misfire::ALL)),
        (
            "RecoveryPolicy",
            displays_its_text(&[RecoveryPolicy::Pause, RecoveryPolicy::AutoResume]),
        ),
        (
            "EventKind",
            displays_its_text(&[
                EventKind::Created,
                EventKind::Claimed,
                EventKind::Progress,
                EventKind::Checkpoint,
                EventKind::Paused,
                EventKind::Resumed,
                EventKind::Recovered,
                EventKind::Completed,
                EventKind::Failed,
                EventKind::Cancelled,
                EventKind::Restarted,
            ]),
        ),
        (
            "Severity",
            displays_its_text(&[
                runledger::doctor::Severity::Error,
                runledger::doctor::Severity::Warning,
            ]),
        ),
        (
            "StageKind",
            displays_its_text(&[StageKind::Lock, StageKind::Gate, StageKind::Runner]),
        ),
        (
            "StageStatus",
            displays_its_text(&[
                StageStatus::Started,
                StageStatus::Success,
                StageStatus::Failed,
                StageStatus::Skipped,
            ]),
        ),
        (
            "PreflightPolicy",
            displays_its_text(&[
                PreflightPolicy::ProbeThenCheck,
                PreflightPolicy::CheckOnly,
                PreflightPolicy::Off,
            ]),
        ),
    ];
    // Not unit enums, so not through serde: displayed by hand.
    assert_eq!(
        runledger::schedule::Tzdb::bundled().source.to_string(),
        "bundled"
    );
    let mut by_hand = vec!["TzdbSource"];
    #[cfg(feature = "flex")]
    {
        use runledger::flex::envelope::{BodyKind, CodeClass, EnvelopeStatus};
        use runledger::flex::statement::RootType;
        use runledger::flex::Missing;
        listed.extend([
            (
                "EnvelopeStatus",
                displays_its_text(&[
                    EnvelopeStatus::Success,
                    EnvelopeStatus::Warn,
                    EnvelopeStatus::Fail,
                ]),
            ),
            (
                "CodeClass",
                displays_its_text(&[
                    CodeClass::NotReady,
                    CodeClass::Throttled,
                    CodeClass::Transient,
                    CodeClass::Fatal,
                ]),
            ),
            (
                "BodyKind",
                displays_its_text(&[
                    BodyKind::Envelope,
                    BodyKind::Statement,
                    BodyKind::Html,
                    BodyKind::Csv,
                    BodyKind::Empty,
                    BodyKind::Other,
                ]),
            ),
            (
                "Missing",
                displays_its_text(&[Missing::Absent, Missing::Empty]),
            ),
            (
                "PolicyPreset",
                displays_its_text(&[
                    runledger::flex::PolicyPreset::Activity,
                    runledger::flex::PolicyPreset::None,
                ]),
            ),
            (
                "WaitReason",
                displays_its_text(&[
                    runledger::flex::WaitReason::Throttled,
                    runledger::flex::WaitReason::Transient,
                    runledger::flex::WaitReason::RateLimit,
                ]),
            ),
        ]);
        assert_eq!(RootType::Activity.to_string(), "AF");
        assert_eq!(RootType::Other("X".into()).to_string(), "X");
        // `RequireRows` has a list variant (`only`), so it has no one-word text form.
        by_hand.extend(["RequireRows"]);
    }
    assert_eq!(listed[0].1[0], "created");
    let mut names: Vec<&str> = listed.iter().map(|(n, _)| *n).chain(by_hand).collect();
    names.sort();
    let mut found = enums_with_a_text_form();
    if !cfg!(feature = "flex") {
        found.retain(|n| {
            ![
                "EnvelopeStatus",
                "CodeClass",
                "BodyKind",
                "Missing",
                "RequireRows",
                "PolicyPreset",
                "WaitReason",
            ]
            .contains(&n.as_str())
        });
    }
    assert_eq!(found, names, "every text-form enum of src/ is listed here");
}

#[test]
fn doctor_expects_a_hosts_own_tables_but_not_rogue_objects_on_runledgers() {
    let (engine, _clock, _dir) = crate::common::file_engine();
    // What the guide invites: the host's own tables, with their indexes, views and
    // triggers, in the same file.
    exec(
        &engine,
        "create table host_orders (id integer primary key, symbol text not null, job_id integer) strict;
         create index host_orders_symbol on host_orders (symbol);
         create table host_audit (at text, what text) strict;
         create trigger host_orders_audit after insert on host_orders
           begin insert into host_audit values ('now', new.symbol); end;
         create view host_open_jobs as select id, kind from jobs where state = 'running';
         insert into host_orders (symbol) values ('AAPL');",
    )
    .unwrap();
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.anomalies);

    // A rogue index or trigger on runledger's tables stays an error, and so does a host
    // trigger that writes runledger's tables behind the API.
    exec(
        &engine,
        "create index jobs_rogue on jobs (kind);
         create trigger host_orders_rogue after insert on host_orders
           begin update jobs set step = 'x' where id = new.job_id; end;",
    )
    .unwrap();
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    let errors: Vec<(&str, &str, Option<&str>)> = report
        .errors()
        .map(|a| (a.check, a.table.as_str(), a.row_id.as_deref()))
        .collect();
    assert_eq!(
        errors,
        [
            ("schema_object", "host_orders", Some("host_orders_rogue")),
            ("schema_object", "jobs", Some("jobs_rogue")),
        ]
    );
}
