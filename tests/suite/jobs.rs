//! The job store: state machine (Rust vs SQL), fencing, claims, bad input, records.

use std::collections::BTreeSet;

use runledger::job::record::{self, JobRecord};
use runledger::job::{JobState, TRANSITIONS};
use runledger::{Clock, Engine, Error, Job, NewJob};
use serde_json::json;

use crate::common::*;

fn new_job(kind: &str) -> NewJob {
    NewJob::new("alice", kind, json!({ "symbol": "AAPL" }))
}

/// Brings a fresh job into `state` through the API.
pub fn job_in(engine: &Engine, state: JobState) -> Job {
    let jobs = engine.jobs();
    let job = jobs.create(&new_job("research")).unwrap();
    let claim = || {
        let c = jobs.claim("w1", &[]).unwrap().unwrap();
        assert_eq!(c.id(), job.id, "tests keep one created job at a time");
        c
    };
    match state {
        JobState::Created => job,
        JobState::Running => claim().job,
        JobState::Paused => {
            claim();
            jobs.pause(job.id, "op").unwrap()
        }
        JobState::Completed => {
            let c = claim();
            jobs.complete(&c, &json!({"ok": true})).unwrap()
        }
        JobState::Failed => {
            let c = claim();
            jobs.fail(&c, "BOOM", "it broke").unwrap()
        }
        JobState::Cancelled => jobs.cancel(job.id, "op", None).unwrap(),
    }
}

/// The raw-SQL update that moves a row from its state to `to` with every other column made
/// consistent, so only the transition trigger can refuse it.
fn raw_move(engine: &Engine, id: i64, to: JobState) -> Result<(), Error> {
    let sql = "update jobs set state = :to,
        attempt = case when :to = 'running' and state in ('created', 'paused') then attempt + 1 else attempt end,
        started_at = case when :to = 'created' then null
                          when :to in ('running', 'paused', 'completed') then coalesce(started_at, :now)
                          else started_at end,
        heartbeat_at = case when :to = 'created' then null when :to = 'running' then :now else heartbeat_at end,
        worker_id = case when :to = 'created' then null when :to = 'running' then 'raw' else worker_id end,
        finished_at = case when :to in ('completed', 'failed', 'cancelled') then :now else null end,
        progress = case when :to = 'completed' then 100 else progress end,
        result = null,
        error_code = case when :to = 'failed' then 'RAW' else null end
      where id = :id";
    engine.with_connection(|c| {
        c.execute(
            sql,
            rusqlite::named_params! {":to": to.as_str(), ":id": id, ":now": engine.now()},
        )?;
        Ok(())
    })
}

#[test]
fn job_state_machine_agrees_with_sql() {
    let (engine, _clock) = mem_engine();
    let mut last = None;
    let table = machine_equals_sql(
        &JobState::ALL,
        JobState::can_transition_to,
        |from| {
            // Take the previous job out of the pool so job_in claims its own job.
            if let Some(id) = last.take() {
                park(&engine, id);
            }
            let id = job_in(&engine, from).id;
            last = Some(id);
            (engine.clone(), id)
        },
        raw_move,
        |engine, id| engine.jobs().get(id).unwrap().state,
    );
    let allowed = table.iter().filter(|l| l.ends_with("allowed")).count();
    assert_eq!(allowed, TRANSITIONS.len(), "{table:#?}");
}

/// Tries every API operation whose target state is `to` on job `id`; true if one did it.
fn api_move(engine: &Engine, id: i64, to: JobState) -> bool {
    use runledger::{RecoveryPolicy, Supervisor, SupervisorOptions};
    let jobs = engine.jobs();
    let attempt = jobs.get(id).unwrap().attempt;
    let recover = |policy| {
        let opts = SupervisorOptions {
            policy,
            ..Default::default()
        };
        Supervisor::new(engine.clone(), opts)
            .unwrap()
            .recover_now(id, "op")
            .map(|r| r.to == to)
    };
    let tries: Vec<Result<bool, Error>> = match to {
        JobState::Created => vec![
            jobs.resume(id, "op").map(|_| true),
            jobs.restart(id, "op", None).map(|_| true),
            {
                // the supervisor requeues under auto-resume (needs a checkpoint)
                let _ = jobs.checkpoint(&claim_at(&jobs, id, attempt), &json!({"cp": 1}));
                recover(RecoveryPolicy::AutoResume)
            },
        ],
        JobState::Running => vec![
            jobs.claim("w1", &[])
                .map(|c| c.is_some_and(|c| c.id() == id)),
            jobs.resume_on(id, "w1", "op").map(|_| true),
        ],
        JobState::Paused => vec![jobs.pause(id, "op").map(|_| true)],
        JobState::Completed => vec![jobs
            .complete(&claim_at(&jobs, id, attempt), &json!(1))
            .map(|_| true)],
        JobState::Failed => vec![
            jobs.fail(&claim_at(&jobs, id, attempt), "X", "x")
                .map(|_| true),
            jobs.mark_failed(id, "op", "X", "x").map(|_| true),
        ],
        JobState::Cancelled => vec![jobs.cancel(id, "op", None).map(|_| true)],
    };
    let moved = tries.into_iter().any(|r| r.unwrap_or(false));
    assert_eq!(jobs.get(id).unwrap().state == to, moved);
    moved
}

#[test]
fn job_api_allows_exactly_the_transition_table() {
    let (engine, _clock) = mem_engine();
    let mut api_allowed = BTreeSet::new();
    for from in JobState::ALL {
        for to in JobState::ALL {
            if from == to {
                continue;
            }
            let job = job_in(&engine, from);
            let before = engine.jobs().get(job.id).unwrap().state;
            assert_eq!(before, from);
            if api_move(&engine, job.id, to) {
                api_allowed.insert((from.as_str(), to.as_str()));
            }
            park(&engine, job.id);
        }
    }
    let rust: BTreeSet<_> = TRANSITIONS
        .iter()
        .map(|(f, t, _)| (f.as_str(), t.as_str()))
        .collect();
    assert_eq!(api_allowed, rust);
}

/// Takes a job out of the created/running pool so later claims see only new jobs.
fn park(engine: &Engine, id: i64) {
    let state = engine.jobs().get(id).unwrap().state;
    if matches!(
        state,
        JobState::Created | JobState::Running | JobState::Paused
    ) {
        engine.jobs().cancel(id, "test", Some("park")).unwrap();
    }
}

#[test]
fn completed_is_final_even_for_raw_sql() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Completed);
    for sql in [
        "update jobs set progress = 50 where id = ?1",
        "update jobs set result = '{\"forged\":1}' where id = ?1",
        "update jobs set state = 'created', finished_at = null, started_at = null where id = ?1",
    ] {
        let err = engine
            .with_connection(|c| Ok(c.execute(sql, [job.id])?))
            .unwrap_err();
        assert_eq!(err.code(), "ILLEGAL_TRANSITION", "{sql}: {err}");
    }
    assert_eq!(engine.jobs().get(job.id).unwrap(), job);
}

#[test]
fn raw_sql_cannot_break_the_row_rules() {
    let (engine, _clock) = mem_engine();
    let running = job_in(&engine, JobState::Running);
    let before = dump(&engine);
    let now = engine.now().to_string();
    let cases: Vec<(String, &str)> = vec![
        (format!("insert into jobs (user_id, kind, state, attempt, created_at, updated_at) values ('u', 'k', 'running', 1, '{now}', '{now}')"), "ILLEGAL_TRANSITION"),
        (format!("insert into jobs (user_id, kind, created_at, updated_at) values ('', 'k', '{now}', '{now}')"), "CONSTRAINT_VIOLATION"),
        (format!("insert into jobs (user_id, kind, created_at, updated_at) values ('u', '', '{now}', '{now}')"), "CONSTRAINT_VIOLATION"),
        (format!("insert into jobs (user_id, kind, input, created_at, updated_at) values ('u', 'k', '{{not json', '{now}', '{now}')"), "CONSTRAINT_VIOLATION"),
        (format!("insert into jobs (user_id, kind, tags, created_at, updated_at) values ('u', 'k', '{{}}', '{now}', '{now}')"), "CONSTRAINT_VIOLATION"),
        ("insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'k', '2026-11-22 11:30:00', '2026-11-22 11:30:00')".into(), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set progress = 101 where id = {}", running.id), "CONSTRAINT_VIOLATION"),
        (format!("insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'bad kind!', '{now}', '{now}')"), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set step = '{}' where id = {}", "s".repeat(257), running.id), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set progress = -1 where id = {}", running.id), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set finished_at = '{now}' where id = {}", running.id), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set heartbeat_at = null where id = {}", running.id), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set checkpoint = 'nope' where id = {}", running.id), "CONSTRAINT_VIOLATION"),
        (format!("update jobs set attempt = attempt + 1 where id = {}", running.id), "STALE_ATTEMPT"),
        (format!("update jobs set attempt = 0 where id = {}", running.id), "STALE_ATTEMPT"),
        (format!("update jobs set state = 'failed', finished_at = '{now}' where id = {}", running.id), "CONSTRAINT_VIOLATION"),
        (format!("delete from jobs where id = {}", running.id), "ILLEGAL_TRANSITION"),
    ];
    for (sql, code) in cases {
        let err = engine
            .with_connection(|c| Ok(c.execute_batch(&sql)?))
            .unwrap_err();
        assert_eq!(err.code(), code, "{sql}: {err}");
    }
    assert_eq!(dump(&engine), before, "nothing changed");
}

#[test]
fn audit_rows_are_immutable() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Cancelled);
    let audit: (String, String) = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select action, actor from audit_log where entity = 'job' and entity_id = ?1",
                [job.id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!(audit, ("cancel".into(), "op".into()));
    for sql in [
        "update audit_log set actor = 'mallory'",
        "delete from audit_log",
    ] {
        let err = engine
            .with_connection(|c| Ok(c.execute(sql, [])?))
            .unwrap_err();
        assert_eq!(err.code(), "IMMUTABLE", "{sql}");
    }
}

#[test]
fn a_stale_attempt_cannot_write_after_the_job_was_reclaimed() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let job = jobs.create(&new_job("trade")).unwrap();
    let first = jobs.claim("w1", &["trade"]).unwrap().unwrap();
    assert_eq!(first.attempt, 1);
    jobs.checkpoint(&claim_at(&jobs, job.id, 1), &json!({"page": 3}))
        .unwrap();
    // The first worker goes silent; the job is paused and resumed on another worker.
    jobs.pause(job.id, "op").unwrap();
    let second = jobs.resume_on(job.id, "w2", "op").unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.checkpoint(), Some(&json!({"page": 3})));
    clock.advance(secs(1));
    let before = dump(&engine);
    let stale = [
        jobs.heartbeat(&claim_at(&jobs, job.id, 1)).unwrap_err(),
        jobs.progress(&claim_at(&jobs, job.id, 1), 50, Some("late"))
            .unwrap_err(),
        jobs.checkpoint(&claim_at(&jobs, job.id, 1), &json!({"page": 1}))
            .unwrap_err(),
        jobs.complete(&claim_at(&jobs, job.id, 1), &json!({}))
            .unwrap_err(),
        jobs.fail(&claim_at(&jobs, job.id, 1), "LATE", "late")
            .unwrap_err(),
    ];
    for err in stale {
        match err {
            Error::StaleAttempt {
                attempt, current, ..
            } => assert_eq!((attempt, current), (1, 2)),
            other => panic!("expected STALE_ATTEMPT, got {other:?}"),
        }
    }
    assert_eq!(dump(&engine), before);
    jobs.progress(&claim_at(&jobs, job.id, 2), 80, Some("resumed"))
        .unwrap();
    let done = jobs
        .complete(&claim_at(&jobs, job.id, 2), &json!({"pages": 10}))
        .unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.progress, 100);
    assert_eq!(done.finished_at, Some(clock.now()));
}

#[test]
fn a_cancelled_running_job_tells_its_worker_to_stop() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let running = job_in(&engine, JobState::Running);
    jobs.cancel(running.id, "op", Some("user asked")).unwrap();
    let err = jobs
        .heartbeat(&claim_at(&jobs, running.id, running.attempt))
        .unwrap_err();
    assert_eq!(err.code(), "JOB_NOT_RUNNING", "{err}");
    assert!(
        matches!(err, Error::JobNotRunning { state: JobState::Cancelled, job_id } if job_id == running.id),
        "the state is typed: {err:?}"
    );
    let err = jobs
        .complete(&claim_at(&jobs, running.id, running.attempt), &json!(1))
        .unwrap_err();
    assert_eq!(err.code(), "JOB_NOT_RUNNING");
}

#[test]
fn bad_input_is_typed_and_changes_nothing() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let running = job_in(&engine, JobState::Running);
    let done = job_in(&engine, JobState::Completed);
    let before = dump(&engine);
    let big = json!({ "blob": "x".repeat(engine.options().max_checkpoint_bytes) });
    let cases: Vec<(&str, Error)> = vec![
        ("NOT_FOUND", jobs.get(999).unwrap_err()),
        (
            "NOT_FOUND",
            jobs.heartbeat(&claim_at(&jobs, 999, 1)).unwrap_err(),
        ),
        ("NOT_FOUND", jobs.cancel(999, "op", None).unwrap_err()),
        ("ILLEGAL_TRANSITION", jobs.pause(done.id, "op").unwrap_err()),
        (
            "ILLEGAL_TRANSITION",
            jobs.restart(done.id, "op", None).unwrap_err(),
        ),
        (
            "ILLEGAL_TRANSITION",
            jobs.restart(running.id, "op", None).unwrap_err(),
        ),
        (
            "ILLEGAL_TRANSITION",
            jobs.resume(running.id, "op").unwrap_err(),
        ),
        (
            "ILLEGAL_TRANSITION",
            jobs.delete(running.id, "op").unwrap_err(),
        ),
        (
            "STALE_ATTEMPT",
            jobs.heartbeat(&claim_at(&jobs, running.id, running.attempt + 1))
                .unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            runledger::job::parse_json("input", "{oops").unwrap_err(),
        ),
        (
            "TOO_LARGE",
            jobs.checkpoint(&claim_at(&jobs, running.id, running.attempt), &big)
                .unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.progress(&claim_at(&jobs, running.id, running.attempt), 101, None)
                .unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.create(&NewJob::new("alice", "", json!({})))
                .unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.create(&NewJob::new("", "research", json!({})))
                .unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.create(&NewJob::new("a", "bad kind!", json!({})))
                .unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.create(&new_job("research").parent(12345)).unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.create(&new_job("research").tags([""])).unwrap_err(),
        ),
        ("INVALID_INPUT", jobs.claim("", &[]).unwrap_err()),
        (
            "INVALID_INPUT",
            jobs.cancel(running.id, "", None).unwrap_err(),
        ),
        (
            "INVALID_INPUT",
            jobs.fail(&claim_at(&jobs, running.id, running.attempt), "", "x")
                .unwrap_err(),
        ),
    ];
    for (code, err) in &cases {
        assert_eq!(err.code(), *code, "{err}");
    }
    assert_eq!(
        dump(&engine),
        before,
        "refused calls left the database as it was"
    );
    let messages: Vec<String> = cases
        .iter()
        .map(|(_, e)| format!("{}: {e}", e.code()))
        .collect();
    crate::snap_json!("bad_input_errors", messages);
}

#[test]
fn claims_take_the_oldest_job_of_the_workers_kinds() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let a = jobs.create(&new_job("trade")).unwrap();
    let b = jobs.create(&new_job("research")).unwrap();
    let c = jobs.create(&new_job("trade")).unwrap();
    assert_eq!(jobs.claim("w", &["research"]).unwrap().unwrap().id(), b.id);
    assert_eq!(jobs.claim("w", &["analysis"]).unwrap(), None);
    assert_eq!(
        jobs.claim("w", &["trade", "analysis"])
            .unwrap()
            .unwrap()
            .id(),
        a.id
    );
    assert_eq!(jobs.claim("w", &[]).unwrap().unwrap().id(), c.id);
    assert_eq!(jobs.claim("w", &[]).unwrap(), None);
}

#[test]
fn threads_with_their_own_connections_never_claim_the_same_job() {
    let (engine, _clock, dir) = file_engine();
    let n = 120;
    for i in 0..n {
        engine
            .jobs()
            .create(&new_job(if i % 2 == 0 { "trade" } else { "research" }))
            .unwrap();
    }
    let path = dir.path().join("runledger.db");
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let engine = Engine::open(&path).unwrap();
                let mut mine = Vec::new();
                while let Some(c) = engine.jobs().claim(&format!("w{w}"), &[]).unwrap() {
                    engine.jobs().complete(&c, &json!(w)).unwrap();
                    mine.push(c.id());
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<i64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    let unique: BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), n, "every job claimed exactly once");
    assert_eq!(unique.len(), n);
    assert_eq!(engine.jobs().stats().unwrap().by_state.completed, n as u64);
}

#[test]
#[ignore = "child process of processes_never_claim_the_same_job"]
fn child_claim_worker() {
    if !is_child() {
        return;
    }
    let engine = Engine::open(std::env::var("RUNLEDGER_TEST_DB").unwrap()).unwrap();
    let worker = std::env::var("RUNLEDGER_TEST_WORKER").unwrap();
    while let Some(c) = engine.jobs().claim(&worker, &[]).unwrap() {
        engine.jobs().heartbeat(&c).unwrap();
        engine.jobs().complete(&c, &json!(worker)).unwrap();
        println!("claimed {}", c.id());
    }
}

#[test]
fn processes_never_claim_the_same_job() {
    let (engine, _clock, dir) = file_engine();
    let n = 150;
    for _ in 0..n {
        engine.jobs().create(&new_job("analysis")).unwrap();
    }
    let db = dir
        .path()
        .join("runledger.db")
        .to_string_lossy()
        .into_owned();
    let children: Vec<_> = (0..2)
        .map(|i| {
            spawn_child(
                "jobs::child_claim_worker",
                &[
                    ("RUNLEDGER_TEST_DB", db.clone()),
                    ("RUNLEDGER_TEST_WORKER", format!("p{i}")),
                ],
            )
        })
        .collect();
    // The parent claims too, so three processes race.
    while let Some(c) = engine.jobs().claim("parent", &[]).unwrap() {
        engine.jobs().complete(&c, &json!("parent")).unwrap();
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let owners: Vec<(i64, i64)> = engine
        .with_connection(|c| {
            let mut s = c.prepare("select attempt, count(*) from jobs group by attempt")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(
        owners,
        vec![(1, n)],
        "every job claimed once, by one process"
    );
    assert_eq!(engine.jobs().stats().unwrap().by_state.completed, n as u64);
}

#[test]
fn listings_stats_and_record_shapes() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let _ = job_in(&engine, JobState::Failed);
    let parent = jobs
        .create(&NewJob::new("bob", "analysis", json!({"x": 1})))
        .unwrap();
    clock.advance(secs(1));
    let child = jobs
        .create(
            &NewJob::new("bob", "research", json!({"q": "rates"}))
                .tags(["daily", "macro"])
                .parent(parent.id)
                .timeout(secs(600))
                .max_retries(2),
        )
        .unwrap();
    let claim = jobs.claim("w", &["analysis"]).unwrap().unwrap();
    clock.advance(secs(5));
    jobs.progress(&claim, 40, Some("loading")).unwrap();
    assert_eq!(jobs.active("bob", 10).unwrap().len(), 2);
    assert_eq!(jobs.failed("alice", 10).unwrap().len(), 1);
    assert_eq!(jobs.list_by_user("bob", 1).unwrap()[0].id, child.id);
    assert_eq!(jobs.running().unwrap().len(), 1);
    assert_eq!(jobs.stale(secs(10)).unwrap().len(), 0);
    clock.advance(secs(30));
    assert_eq!(jobs.stale(secs(10)).unwrap()[0].id, claim.id());
    crate::snap_json!("stats_all", jobs.stats().unwrap());
    crate::snap_json!("stats_bob", jobs.stats_for_user("bob").unwrap());
    let record = JobRecord::from(&jobs.get(child.id).unwrap()).to_json();
    crate::snap_json!("job_record_v2", record);
    assert_eq!(JobRecord::from_json(&record).unwrap().id, child.id);
}

#[test]
fn job_records_migrate_from_v1_and_refuse_unknown_versions() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Completed);
    let mut v1 = JobRecord::from(&job).to_json();
    let obj = v1.as_object_mut().unwrap();
    for field in ["tags", "parent_id", "timeout_ms", "max_retries"] {
        obj.remove(field);
    }
    obj.insert("schema_version".into(), json!(1));
    let read = JobRecord::from_json(&v1).unwrap();
    assert_eq!(read, JobRecord::from(&job));
    assert_eq!(record::migrate(&v1).unwrap()["tags"], json!([]));

    let mut v9 = JobRecord::from(&job).to_json();
    v9["schema_version"] = json!(9);
    assert_eq!(
        JobRecord::from_json(&v9).unwrap_err().code(),
        "UNSUPPORTED_VERSION"
    );

    let mut broken = JobRecord::from(&job).to_json();
    broken["progress"] = json!(150);
    broken["state"] = json!("finished");
    broken.as_object_mut().unwrap().remove("created_at");
    match record::validate(&broken).unwrap_err() {
        Error::InvalidRecord { errors, .. } => {
            let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, ["/state", "/progress", "/created_at"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut inconsistent = JobRecord::from(&job).to_json();
    inconsistent["finished_at"] = json!(null);
    assert_eq!(
        record::validate(&inconsistent).unwrap_err().code(),
        "INVALID_RECORD"
    );
}

#[test]
fn restart_clears_the_outcome_and_may_replace_input() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    jobs.create(&new_job("research")).unwrap();
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    jobs.checkpoint(&c, &json!({"page": 2})).unwrap();
    let failed = jobs.fail(&c, "BOOM", "it broke").unwrap();
    assert!(failed.checkpoint.is_some());
    let again = jobs
        .restart(failed.id, "op", Some(&json!({"symbol": "MSFT"})))
        .unwrap();
    assert_eq!(
        (again.checkpoint, again.checkpoint_at),
        (None, None),
        "from scratch"
    );
    assert_eq!(again.state, JobState::Created);
    assert_eq!(
        (again.error_code, again.finished_at, again.started_at),
        (None, None, None)
    );
    assert_eq!(again.input, json!({"symbol": "MSFT"}));
    assert_eq!(again.attempt, failed.attempt, "attempt only grows on claim");
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    assert_eq!(c.attempt, failed.attempt + 1);
    jobs.complete(&c, &json!(null)).unwrap();
    jobs.delete(c.id(), "op").unwrap();
    assert_eq!(jobs.get(c.id()).unwrap_err().code(), "NOT_FOUND");
}

#[test]
fn regression_a_clock_that_stepped_back_made_claim_and_complete_break_the_time_rules() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let job = jobs.create(&new_job("research")).unwrap();
    clock.rewind(secs(3_600));
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    assert_eq!(
        c.job.started_at,
        Some(job.created_at),
        "clamped to its creation"
    );
    let done = jobs.complete(&c, &json!(1)).unwrap();
    assert_eq!(done.finished_at, Some(job.created_at));
    let other = jobs.create(&new_job("research")).unwrap();
    clock.rewind(secs(60));
    let cancelled = jobs.cancel(other.id, "op", None).unwrap();
    assert_eq!(cancelled.finished_at, Some(other.created_at));
}

#[test]
fn create_many_stores_all_or_nothing_and_claim_many_takes_the_oldest_in_one_call() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let batch: Vec<NewJob> = (0..5)
        .map(|i| NewJob::new("u", "batch", serde_json::json!({ "i": i })))
        .collect();
    let mut bad = batch.clone();
    bad[2].kind = "no spaces allowed".into();
    let before = dump(&engine);
    let err = jobs.create_many(&bad).unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    assert!(err.to_string().contains("jobs[2].kind"), "{err}");
    assert_eq!(dump(&engine), before, "a refused batch stores nothing");

    let created = jobs.create_many(&batch).unwrap();
    assert_eq!(created.len(), 5);
    assert!(created.windows(2).all(|w| w[0].id < w[1].id));
    for (i, job) in created.iter().enumerate() {
        assert_eq!(job.input, serde_json::json!({ "i": i }));
        let ev = engine.events().since(job.id, 0, 10).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, runledger::EventKind::Created);
    }

    assert_eq!(
        jobs.claim_many("w", &[], 0).unwrap_err().code(),
        "INVALID_INPUT"
    );
    let first = jobs.claim_many("w", &["batch"], 3).unwrap();
    let ids: Vec<i64> = first.iter().map(|c| c.id()).collect();
    assert_eq!(ids, created[..3].iter().map(|j| j.id).collect::<Vec<_>>());
    for c in &first {
        assert_eq!(c.attempt, 1);
        assert_eq!(c.job.state, JobState::Running);
        let ev = engine.events().since(c.id(), 1, 10).unwrap();
        assert_eq!(ev[0].kind, runledger::EventKind::Claimed);
        assert_eq!(ev[0].payload["attempt"], 1);
    }
    assert_eq!(jobs.claim_many("w", &["other"], 3).unwrap().len(), 0);
    assert_eq!(jobs.claim_many("w", &[], 3).unwrap().len(), 2);
    assert!(jobs.claim_many("w", &[], 3).unwrap().is_empty());
    // Fencing holds for batch claims like single ones.
    let c = &first[0];
    let stale = jobs.complete(
        &claim_at(&jobs, c.id(), c.attempt + 1),
        &serde_json::json!(1),
    );
    assert_eq!(stale.unwrap_err().code(), "STALE_ATTEMPT");
}

#[test]
fn every_event_payload_decodes_to_its_kind_and_failed_has_one_shape() {
    use runledger::{EventKind, EventPayload, Supervisor, SupervisorOptions};
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    // Worker path: created, claimed, progress, checkpoint, failed (by the worker).
    jobs.create(&new_job("research")).unwrap();
    let c = jobs.claim("w1", &[]).unwrap().unwrap();
    jobs.progress(&c, 10, Some("s")).unwrap();
    jobs.checkpoint(&c, &json!({"p": 1})).unwrap();
    jobs.fail(&c, "BOOM", "worker says").unwrap();
    // Operator paths: restarted, claimed, paused, resumed, cancelled; failed by an operator.
    jobs.restart(c.id(), "op", None).unwrap();
    let c2 = jobs.claim("w1", &[]).unwrap().unwrap();
    jobs.pause(c2.id(), "op").unwrap();
    jobs.resume(c2.id(), "op").unwrap();
    jobs.cancel(c2.id(), "op", Some("why")).unwrap();
    jobs.restart(c2.id(), "op", None).unwrap();
    let c3 = jobs.claim("w1", &[]).unwrap().unwrap();
    jobs.mark_failed(c3.id(), "op", "GONE", "operator says")
        .unwrap();
    // Supervisor path: a stalled job without a checkpoint is recovered and failed.
    jobs.create(&new_job("research")).unwrap();
    let stalled = jobs.claim("w2", &[]).unwrap().unwrap();
    clock.advance(std::time::Duration::from_secs(120));
    Supervisor::new(engine.clone(), SupervisorOptions::default())
        .unwrap()
        .tick(clock.now())
        .unwrap();
    // Completed.
    jobs.create(&new_job("research")).unwrap();
    let c4 = jobs.claim("w1", &[]).unwrap().unwrap();
    jobs.complete(&c4, &json!(1)).unwrap();

    let all = engine.events().after(0, 1000).unwrap();
    let mut kinds = BTreeSet::new();
    let mut failed_by = Vec::new();
    for e in &all {
        let p = e.decode().unwrap_or_else(|err| panic!("{e:?}: {err}"));
        assert_eq!(p.kind(), e.kind, "{e:?}");
        kinds.insert(e.kind.as_str());
        if let EventPayload::Failed { code, by, .. } = p {
            failed_by.push((e.job_id, code, by));
        }
    }
    assert_eq!(kinds.len(), 11, "every kind emitted: {kinds:?}");
    let sup = SupervisorOptions::default().name;
    assert_eq!(
        failed_by,
        [
            (c.id(), "BOOM".to_string(), None),
            (c3.id(), "GONE".to_string(), Some("op".to_string())),
            (stalled.id(), "STALLED".to_string(), Some(sup)),
        ]
    );
    // The stored shape of v1 has no kind and no `v`; an unknown version is refused.
    let cancelled = all.iter().find(|e| e.kind == EventKind::Cancelled).unwrap();
    assert_eq!(
        cancelled.payload,
        json!({"by": "op", "from": "created", "to": "cancelled", "reason": "why"})
    );
    let mut future = cancelled.clone();
    future.payload["v"] = json!(2);
    assert_eq!(future.decode().unwrap_err().code(), "UNSUPPORTED_VERSION");
    let mut wrong = cancelled.clone();
    wrong.payload = json!({"by": 1});
    assert_eq!(wrong.decode().unwrap_err().code(), "INVALID_RECORD");
}
