//! Supervisor, recovery tools, the job event log and the worker runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use runledger::job::worker::StopReason;
use runledger::{
    Clock, Engine, Error, EventKind, JobFailure, JobState, NewJob, RecoveryPolicy, Supervisor,
    SupervisorOptions, Worker, WorkerOptions,
};
use serde_json::json;

use crate::common::*;
use crate::jobs::job_in;

fn supervisor(engine: &Engine, policy: RecoveryPolicy) -> Supervisor {
    Supervisor::new(
        engine.clone(),
        SupervisorOptions {
            policy,
            ..SupervisorOptions::default()
        },
    )
    .unwrap()
}

/// Waits (bounded) until `cond` holds; panics with `what` otherwise.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn stale_jobs_are_recovered_by_policy_and_fresh_ones_left_alone() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let with_cp = job_in(&engine, JobState::Running);
    jobs.checkpoint(
        &claim_at(&jobs, with_cp.id, with_cp.attempt),
        &json!({"page": 7}),
    )
    .unwrap();
    let without_cp = job_in(&engine, JobState::Running);
    clock.advance(secs(31));
    let fresh = job_in(&engine, JobState::Running);
    let sup = supervisor(&engine, RecoveryPolicy::Pause);
    let report = sup.tick(clock.now()).unwrap();
    crate::snap_json!("tick_report_pause_policy", &report);
    assert_eq!(jobs.get(with_cp.id).unwrap().state, JobState::Paused);
    let failed = jobs.get(without_cp.id).unwrap();
    assert_eq!(
        (failed.state, failed.error_code.as_deref()),
        (JobState::Failed, Some("STALLED"))
    );
    assert_eq!(jobs.get(fresh.id).unwrap().state, JobState::Running);
    let status = sup.status().unwrap().unwrap();
    assert_eq!(
        (status.ticks, status.jobs_recovered, status.jobs_failed),
        (1, 1, 1)
    );
    assert_eq!(status.last_tick_at, Some(clock.now()));
    // A second tick finds nothing new.
    assert!(sup.tick(clock.now()).unwrap().recovered.is_empty());

    // The paused job is resumable; resume hands the checkpoint to the next claim.
    let opts = jobs.recovery_options(with_cp.id, 3).unwrap();
    assert!(opts.resumable && !opts.restartable);
    assert_eq!(opts.recoveries_left, 2);
    jobs.resume(with_cp.id, "operator").unwrap();
    let claim = jobs.claim("w9", &[]).unwrap().unwrap();
    assert_eq!(claim.id(), with_cp.id);
    assert_eq!(claim.checkpoint(), Some(&json!({"page": 7})));
    assert_eq!(claim.attempt, with_cp.attempt + 1);
    assert!(sup.cleanup().unwrap());
    assert_eq!(sup.status().unwrap(), None);
}

#[test]
fn auto_resume_requeues_and_the_limit_fails_for_good() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let job = job_in(&engine, JobState::Running);
    jobs.checkpoint(&claim_at(&jobs, job.id, job.attempt), &json!({"n": 1}))
        .unwrap();
    let sup = supervisor(&engine, RecoveryPolicy::AutoResume);
    let mut attempts = vec![job.attempt];
    for round in 1..=3 {
        clock.advance(secs(31));
        let r = sup.tick(clock.now()).unwrap();
        assert_eq!(r.recovered.len(), 1);
        assert_eq!(r.recovered[0].to, JobState::Created, "round {round}");
        assert_eq!(r.recovered[0].recovery_count, round);
        let c = jobs.claim("w", &[]).unwrap().unwrap();
        assert_eq!(c.checkpoint(), Some(&json!({"n": 1})), "checkpoint kept");
        attempts.push(c.attempt);
    }
    clock.advance(secs(31));
    let r = sup.tick(clock.now()).unwrap();
    assert_eq!(r.recovered[0].code.as_deref(), Some("RECOVERY_EXHAUSTED"));
    let done = jobs.get(job.id).unwrap();
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.recovery_count, 4);
    assert_eq!(attempts, [1, 2, 3, 4]);
    // The stale attempts cannot write anymore.
    assert_eq!(
        jobs.heartbeat(&claim_at(&jobs, job.id, 1))
            .unwrap_err()
            .code(),
        "STALE_ATTEMPT"
    );
    // An operator resets the counter and restarts.
    sup.reset_recovery_count(job.id, "operator").unwrap();
    assert_eq!(jobs.get(job.id).unwrap().recovery_count, 0);
    jobs.restart(job.id, "operator", None).unwrap();
    let actions: Vec<String> = engine
        .with_connection(|c| {
            let mut s = c.prepare(
                "select action || ' by ' || actor from audit_log where entity_id = ?1 order by id",
            )?;
            let rows = s.query_map([job.id.to_string()], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(
        actions,
        ["reset_recovery_count by operator", "restart by operator"]
    );
}

#[test]
fn recover_now_moves_one_fresh_job_and_is_audited() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Running);
    let sup = supervisor(&engine, RecoveryPolicy::Pause);
    let r = sup.recover_now(job.id, "operator").unwrap();
    assert_eq!(
        (r.to, r.code.as_deref()),
        (JobState::Failed, Some("STALLED"))
    );
    let err = sup.recover_now(job.id, "operator").unwrap_err();
    assert_eq!(err.code(), "ILLEGAL_TRANSITION");
    assert_eq!(
        sup.recover_now(4242, "operator").unwrap_err().code(),
        "NOT_FOUND"
    );
}

#[test]
fn racing_supervisors_recover_each_job_once() {
    let (engine, clock, dir) = file_engine();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let j = job_in(&engine, JobState::Running);
        engine
            .jobs()
            .checkpoint(
                &claim_at(&engine.jobs(), j.id, j.attempt),
                &json!({"k": j.id}),
            )
            .unwrap();
        ids.push(j.id);
    }
    clock.advance(secs(60));
    let path = dir.path().join("runledger.db");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                let engine =
                    Engine::open_with(&path, crate::common::options().with_clock(clock.clone()))
                        .unwrap();
                let sup = Supervisor::new(
                    engine,
                    SupervisorOptions {
                        name: format!("sup{i}"),
                        ..Default::default()
                    },
                )
                .unwrap();
                sup.tick(clock.now()).unwrap().recovered.len()
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        total,
        ids.len(),
        "each stale job recovered by exactly one supervisor"
    );
    for id in ids {
        let j = engine.jobs().get(id).unwrap();
        assert_eq!((j.state, j.recovery_count), (JobState::Paused, 1));
        let recovered = engine
            .events()
            .since(id, 0, 500)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::Recovered)
            .count();
        assert_eq!(recovered, 1);
    }
}

#[test]
fn recovery_tools_describe_and_validate_checkpoints() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let job = job_in(&engine, JobState::Running);
    assert_eq!(jobs.checkpoint_details(job.id).unwrap(), None);
    assert!(!jobs.validate_checkpoint(job.id).unwrap().valid);
    let cp = json!({"cursor": "2026-11-01", "done": [1, 2, 3], "notes": "x".repeat(500), "a": 1});
    jobs.checkpoint(&claim_at(&jobs, job.id, job.attempt), &cp)
        .unwrap();
    let details = jobs.checkpoint_details(job.id).unwrap().unwrap();
    crate::snap_json!("checkpoint_details", &details);
    assert!(details.sample.iter().all(|(_, v)| v.len() <= 124));
    let check = jobs.validate_checkpoint(job.id).unwrap();
    assert!(check.valid, "{:?}", check.problems);
    assert_eq!(
        jobs.checkpoint_details(999).unwrap_err().code(),
        "NOT_FOUND"
    );
}

#[test]
fn events_are_gapless_per_job_and_resync_without_duplicates() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let rx = engine.events().subscribe();
    let job = jobs
        .create(&NewJob::new("u", "research", json!({})))
        .unwrap();
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    jobs.progress(&c, 10, Some("fetch")).unwrap();
    jobs.checkpoint(&c, &json!({"i": 1})).unwrap();
    jobs.pause(job.id, "op").unwrap();
    jobs.resume(job.id, "op").unwrap();
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    jobs.complete(&c, &json!({"rows": 3})).unwrap();
    let all = engine.events().since(job.id, 0, 100).unwrap();
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as i64).collect::<Vec<_>>());
    crate::snap_json!(
        "event_payloads",
        &all.iter().map(|e| (e.kind, &e.payload)).collect::<Vec<_>>()
    );
    // Resync from the middle: exactly the rest.
    let rest = engine.events().since(job.id, 3, 100).unwrap();
    assert_eq!(rest, all[3..].to_vec());
    // Global cursor pages: no duplicates, no gaps.
    let mut cursor = 0;
    let mut paged = Vec::new();
    loop {
        let page = engine.events().after(cursor, 2).unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.cursor;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // The in-process subscription got the same events in order.
    let received: Vec<_> = rx.try_iter().collect();
    assert_eq!(received, all);
    assert_eq!(
        engine.events().since(999, 0, 10).unwrap_err().code(),
        "NOT_FOUND"
    );
}

#[test]
fn backlog_is_bounded_and_a_pruned_seq_is_reported() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let job = job_in(&engine, JobState::Running);
    for i in 0..250u32 {
        jobs.progress(&claim_at(&jobs, job.id, job.attempt), (i % 100) as u8, None)
            .unwrap();
    }
    let kept = engine.events().since(job.id, 52, 1000).unwrap();
    assert_eq!(kept.len(), 200);
    assert_eq!(kept.first().unwrap().seq, 53);
    assert_eq!(kept.last().unwrap().seq, 252);
    match engine.events().since(job.id, 10, 1000).unwrap_err() {
        Error::EventsPruned {
            oldest_kept,
            newest,
            ..
        } => assert_eq!((oldest_kept, newest), (53, 252)),
        other => panic!("unexpected {other:?}"),
    }
    let count: i64 = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select count(*) from job_events where job_id = ?1",
                [job.id],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(count, 200, "pruned in SQL, not just hidden");
}

#[test]
fn raw_sql_cannot_rewrite_or_forge_events() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Running);
    let before = dump(&engine);
    let now = engine.now().to_string();
    let h = "a".repeat(64);
    let cases = [
        ("update job_events set kind = 'completed'".to_string(), "IMMUTABLE"),
        ("delete from job_events".to_string(), "IMMUTABLE"),
        (format!("insert into job_events (job_id, seq, kind, at) values ({}, 9, 'progress', '{now}')", job.id), "EVENT_SEQ"),
        // a shell cannot compute the chain hash, so a forged event without one is refused
        (format!("insert into job_events (job_id, seq, kind, at) values ({}, 3, 'progress', '{now}')", job.id), "INTEGRITY"),
        (format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values ({}, 3, 'exploded', '{now}', '{h}', '{h}')", job.id), "CONSTRAINT_VIOLATION"),
        (format!("insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash) values ({}, 3, 'progress', '[1]', '{now}', '{h}', '{h}')", job.id), "CONSTRAINT_VIOLATION"),
        (format!("insert into job_events (job_id, seq, kind, at, prev_hash, hash) values ({}, 1, 'progress', '{now}', '{h}', '{h}')", job.id + 100), "MISSING_REFERENCE"),
    ];
    for (sql, code) in cases {
        let err = engine
            .with_connection(|c| Ok(c.execute_batch(&sql)?))
            .unwrap_err();
        assert_eq!(err.code(), code, "{sql}: {err}");
    }
    assert_eq!(dump(&engine), before);
}

#[test]
fn the_global_cursor_is_never_reused_after_deletes() {
    let (engine, _clock) = mem_engine();
    let job = job_in(&engine, JobState::Completed);
    let last = engine
        .events()
        .since(job.id, 0, 100)
        .unwrap()
        .last()
        .unwrap()
        .cursor;
    engine.jobs().delete(job.id, "op").unwrap();
    assert!(engine.events().after(0, 100).unwrap().is_empty());
    let next = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let first = engine.events().since(next.id, 0, 10).unwrap()[0].cursor;
    assert!(first > last, "cursor {first} must be beyond {last}");
}

#[test]
fn another_connection_sees_commits_through_data_version() {
    let (engine, _clock, dir) = file_engine();
    let other = Engine::open(dir.path().join("runledger.db")).unwrap();
    let v1 = other.events().data_version().unwrap();
    assert_eq!(
        other.events().data_version().unwrap(),
        v1,
        "no change, no new version"
    );
    engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    assert_ne!(other.events().data_version().unwrap(), v1);
}

fn fast_worker(id: &str) -> WorkerOptions {
    WorkerOptions {
        heartbeat_every: Duration::from_millis(5),
        idle_poll: Duration::from_millis(5),
        ..WorkerOptions::new(id, ["research"])
    }
}

#[test]
fn worker_runs_handlers_and_survives_their_panics() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let ok = jobs
        .create(&NewJob::new("u", "research", json!({"n": 2})))
        .unwrap();
    let boom = jobs
        .create(&NewJob::new("u", "research", json!({"panic": true})))
        .unwrap();
    let bad = jobs
        .create(&NewJob::new("u", "research", json!({"fail": true})))
        .unwrap();
    let after = jobs
        .create(&NewJob::new("u", "research", json!({"n": 3})))
        .unwrap();
    let worker = Worker::start(engine.clone(), fast_worker("w1"), |ctx| {
        let input = ctx.input().clone();
        if input["panic"] == json!(true) {
            panic!("model diverged at step 3");
        }
        if input["fail"] == json!(true) {
            return Err(JobFailure::new("NO_DATA", "provider returned nothing"));
        }
        let n = input["n"].as_u64().unwrap();
        ctx.progress(50, Some("half")).unwrap();
        ctx.checkpoint(&json!({"done": n})).unwrap();
        Ok(json!({"sum": n * 10}))
    })
    .unwrap();
    wait_for("all four jobs to finish", || {
        [ok.id, boom.id, bad.id, after.id]
            .iter()
            .all(|id| jobs.get(*id).unwrap().state.is_terminal())
    });
    let report = worker.shutdown(Duration::from_secs(5));
    assert_eq!(
        (report.completed, report.failed, report.abandoned.len()),
        (2, 2, 0)
    );
    assert_eq!(jobs.get(ok.id).unwrap().result, Some(json!({"sum": 20})));
    let panicked = jobs.get(boom.id).unwrap();
    assert_eq!(panicked.error_code.as_deref(), Some("PANIC"));
    assert_eq!(
        panicked.error_message.as_deref(),
        Some("model diverged at step 3")
    );
    assert_eq!(
        jobs.get(bad.id).unwrap().error_code.as_deref(),
        Some("NO_DATA")
    );
    assert_eq!(
        jobs.get(after.id).unwrap().state,
        JobState::Completed,
        "worker kept going"
    );
}

#[test]
fn a_cancel_is_seen_by_the_running_handler() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let job = jobs
        .create(&NewJob::new("u", "research", json!({})))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = Worker::start(engine.clone(), fast_worker("w1"), move |ctx| {
        while !ctx.should_stop() {
            std::thread::sleep(Duration::from_millis(2));
        }
        tx.send(ctx.stop_reason()).unwrap();
        Ok(json!("ignored"))
    })
    .unwrap();
    wait_for("the claim", || {
        jobs.get(job.id).unwrap().state == JobState::Running
    });
    jobs.cancel(job.id, "user", Some("changed my mind"))
        .unwrap();
    let reason = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(reason, Some(StopReason::Cancelled));
    let report = worker.shutdown(Duration::from_secs(5));
    assert_eq!(report.stopped, 1);
    assert_eq!(
        jobs.get(job.id).unwrap().state,
        JobState::Cancelled,
        "not overwritten by the handler's result"
    );
}

#[test]
fn shutdown_abandons_unfinished_work_to_the_supervisor() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let job = jobs
        .create(&NewJob::new("u", "research", json!({})))
        .unwrap();
    let worker = Worker::start(engine.clone(), fast_worker("w1"), |ctx| {
        ctx.checkpoint(&json!({"row": 41})).unwrap();
        while !ctx.should_stop() {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            matches!(
                ctx.progress(99, None),
                Err(Error::JobStopped {
                    reason: StopReason::Shutdown,
                    ..
                })
            ),
            "no writes after abandonment"
        );
        Ok(json!("late"))
    })
    .unwrap();
    wait_for("the checkpoint", || {
        jobs.get(job.id).unwrap().checkpoint.is_some()
    });
    let report = worker.shutdown(Duration::from_millis(50));
    assert_eq!(report.abandoned, vec![job.id]);
    std::thread::sleep(Duration::from_millis(50));
    clock.advance(secs(31));
    let r = supervisor(&engine, RecoveryPolicy::AutoResume)
        .tick(clock.now())
        .unwrap();
    assert_eq!(r.recovered.len(), 1);
    let j = jobs.get(job.id).unwrap();
    assert_eq!(
        (j.state, j.checkpoint),
        (JobState::Created, Some(json!({"row": 41})))
    );
}

#[test]
#[ignore = "child process of a_killed_worker_process_is_recovered_from_another_process"]
fn child_worker_that_will_be_killed() {
    if !is_child() {
        return;
    }
    let engine = Engine::open(std::env::var("RUNLEDGER_TEST_DB").unwrap()).unwrap();
    let _worker = Worker::start(engine, fast_worker("doomed"), |ctx| {
        for i in 1..=3 {
            ctx.progress(i * 10, Some("crunching")).unwrap();
            ctx.checkpoint(&json!({ "chunk": i })).unwrap();
        }
        println!("checkpointed");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_killed_worker_process_is_recovered_from_another_process() {
    let (engine, clock, dir) = file_engine();
    // The child uses the system clock; this engine's manual clock follows it.
    clock.set(runledger::SystemClock.now());
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "research", json!({"q": 1})))
        .unwrap();
    let db = dir
        .path()
        .join("runledger.db")
        .to_string_lossy()
        .into_owned();
    let mut child = spawn_child(
        "supervision::child_worker_that_will_be_killed",
        &[("RUNLEDGER_TEST_DB", db)],
    );
    wait_for("the child's third checkpoint", || {
        engine.jobs().get(job.id).unwrap().checkpoint == Some(json!({"chunk": 3}))
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let running = engine.jobs().get(job.id).unwrap();
    assert_eq!(
        running.state,
        JobState::Running,
        "dead worker left it running"
    );
    clock.set(runledger::SystemClock.now() + secs(31));
    let r = supervisor(&engine, RecoveryPolicy::Pause)
        .tick(clock.now())
        .unwrap();
    assert_eq!(r.recovered.len(), 1);
    let ok: String = engine
        .with_connection(|c| Ok(c.query_row("pragma integrity_check", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(ok, "ok");
    let events = engine.events().since(job.id, 0, 100).unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "no event lost or duplicated"
    );
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [
            Created, Claimed, Progress, Checkpoint, Progress, Checkpoint, Progress, Checkpoint,
            Recovered
        ]
    );
    // Resume and finish from the checkpoint in this process.
    let claim = engine
        .jobs()
        .resume_on(job.id, "rescuer", "operator")
        .unwrap();
    assert_eq!(claim.checkpoint(), Some(&json!({"chunk": 3})));
    engine
        .jobs()
        .complete(&claim, &json!({"chunks": 3}))
        .unwrap();
}

#[test]
#[ignore = "child process of load_many_jobs_across_threads_and_processes"]
fn child_load_worker() {
    if !is_child() {
        return;
    }
    let engine = Engine::open(std::env::var("RUNLEDGER_TEST_DB").unwrap()).unwrap();
    run_load_worker(&engine, &std::env::var("RUNLEDGER_TEST_WORKER").unwrap(), 2);
}

fn run_load_worker(engine: &Engine, id: &str, threads: usize) {
    let opts = WorkerOptions {
        concurrency: threads,
        heartbeat_every: Duration::from_millis(3),
        idle_poll: Duration::from_millis(3),
        ..WorkerOptions::new(id, ["analysis"])
    };
    let worker = Worker::start(engine.clone(), opts, |ctx| {
        for step in 1..=4u8 {
            ctx.progress(step * 20, Some("step")).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        ctx.checkpoint(&json!({"at": 4})).unwrap();
        Ok(json!({"job": ctx.job().id}))
    })
    .unwrap();
    wait_for("the queue to drain", || {
        let s = engine.jobs().stats().unwrap();
        s.by_state.created == 0 && s.by_state.running == 0
    });
    let report = worker.shutdown(Duration::from_secs(10));
    assert!(report.abandoned.is_empty());
    println!("completed {}", report.completed);
}

#[test]
fn load_many_jobs_across_threads_and_processes() {
    let (engine, _clock, dir) = file_engine();
    drop(engine);
    let path = dir.path().join("runledger.db");
    let engine = Engine::open(&path).unwrap();
    let n = 200;
    for i in 0..n {
        engine
            .jobs()
            .create(&NewJob::new(
                format!("u{}", i % 7),
                "analysis",
                json!({"i": i}),
            ))
            .unwrap();
    }
    let db = path.to_string_lossy().into_owned();
    let children: Vec<_> = (0..2)
        .map(|i| {
            spawn_child(
                "supervision::child_load_worker",
                &[
                    ("RUNLEDGER_TEST_DB", db.clone()),
                    ("RUNLEDGER_TEST_WORKER", format!("proc{i}")),
                ],
            )
        })
        .collect();
    run_load_worker(&engine, "parent", 4);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stats = engine.jobs().stats().unwrap();
    assert_eq!(stats.by_state.completed, n, "{stats:?}");
    let mut ids = BTreeSet::new();
    for e in engine.events().after(0, 1_000_000).unwrap() {
        ids.insert(e.job_id);
    }
    assert_eq!(ids.len() as u64, n);
    for id in ids {
        let events = engine.events().since(id, 0, 1000).unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as i64).collect::<Vec<_>>(),
            "job {id}"
        );
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == EventKind::Claimed).count(),
            1,
            "job {id}: {kinds:?}"
        );
        assert_eq!(kinds.last(), Some(&EventKind::Completed));
    }
}

#[test]
fn a_worker_fails_an_attempt_that_runs_past_its_timeout() {
    let (engine, clock) = mem_engine();
    let jobs = engine.jobs();
    let job = jobs
        .create(&NewJob::new("u", "research", json!({})).timeout(secs(60)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = Worker::start(engine.clone(), fast_worker("w1"), move |ctx| {
        while !ctx.should_stop() {
            std::thread::sleep(Duration::from_millis(2));
        }
        tx.send(ctx.stop_reason()).unwrap();
        Ok(json!("too late"))
    })
    .unwrap();
    wait_for("the claim", || {
        jobs.get(job.id).unwrap().state == JobState::Running
    });
    // 59 s in: still running; past 60 s: failed by the next heartbeat.
    clock.advance(secs(59));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(jobs.get(job.id).unwrap().state, JobState::Running);
    clock.advance(secs(2));
    let reason = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(reason, Some(StopReason::TimedOut));
    let report = worker.shutdown(Duration::from_secs(5));
    assert_eq!(report.stopped, 1);
    let failed = jobs.get(job.id).unwrap();
    assert_eq!(
        (failed.state, failed.error_code.as_deref()),
        (JobState::Failed, Some("TIMEOUT"))
    );
    assert_eq!(
        failed.result, None,
        "the handler's late result was not written"
    );
}

/// Regression (found by the HTTP fuzz): `since(job, i64::MAX)` overflowed `seq + 1` and
/// panicked; it is simply past the end.
#[test]
fn events_since_the_largest_seq_does_not_overflow() {
    let (engine, _clock) = crate::common::mem_engine();
    let job = engine
        .jobs()
        .create(&runledger::NewJob::new(
            "u",
            "research",
            serde_json::json!({}),
        ))
        .unwrap();
    assert_eq!(engine.events().since(job.id, i64::MAX, 10).unwrap(), vec![]);
}
