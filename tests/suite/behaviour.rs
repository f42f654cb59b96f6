//! One behavioural suite, two backends (issue 17): every scenario here takes an [`Engine`]
//! and its manual clock, and asserts what the public API does. `tests/suite` runs each on
//! SQLite; `tests/pg` (feature `postgres`) includes this same file and runs each on an
//! `Engine::open("postgres://...")`, through [`behaviour_tests!`]. A scenario states the
//! behaviour both backends must share: nothing in it may depend on which one it runs on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runledger::{
    Engine, Error, JobFailure, JobState, ManualClock, NewJob, RecoveryPolicy, Supervisor,
    SupervisorOptions, Worker, WorkerOptions,
};
use serde_json::json;

/// One `#[test]` per scenario, each on a fresh engine from `$make` (an expression giving
/// `Option<(Engine, ManualClock, guard)>`; `None` skips the test, the reason printed by
/// `$make`).
#[macro_export]
macro_rules! behaviour_tests {
    ($make:path) => {
        $crate::behaviour_tests!(@each $make;
            job_lifecycle_appends_one_event_per_change,
            a_recovered_attempt_can_no_longer_write,
            operator_transitions_follow_the_machine,
            bad_input_is_refused_with_its_code_and_writes_nothing,
            claims_take_the_oldest_job_of_the_workers_kinds,
            the_worker_runs_handlers_to_their_outcomes,
            recoveries_are_counted_until_exhausted,
            events_since_a_pruned_seq_are_refused,
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let Some((engine, clock, _guard)) = $make(stringify!($name)) else {
                    return;
                };
                $crate::behaviour::$name(&engine, &clock);
            }
        )*
    };
}

fn code<T: std::fmt::Debug>(r: runledger::Result<T>) -> &'static str {
    r.expect_err("the call must be refused").code()
}

fn job(kind: &str) -> NewJob {
    NewJob::new("u1", kind, json!({"n": 1}))
}

fn kinds_of(engine: &Engine, id: i64) -> Vec<String> {
    let events = engine.events().since(id, 0, 1000).unwrap();
    events.iter().map(|e| e.kind.to_string()).collect()
}

/// create -> claim -> progress -> checkpoint -> complete: the job's fields and one event per
/// change, numbered from 1, readable after any seq.
pub fn job_lifecycle_appends_one_event_per_change(engine: &Engine, clock: &ManualClock) {
    let jobs = engine.jobs();
    let created = jobs.create(&job("report")).unwrap();
    assert_eq!(created.state, JobState::Created);
    assert_eq!(created.attempt, 0);
    clock.advance(Duration::from_secs(1));
    let claim = jobs.claim("w1", &["report"]).unwrap().expect("a job waits");
    assert_eq!((claim.id(), claim.attempt), (created.id, 1));
    assert_eq!(claim.job.state, JobState::Running);
    assert_eq!(claim.job.worker_id.as_deref(), Some("w1"));
    jobs.progress(&claim, 40, Some("halfway")).unwrap();
    jobs.checkpoint(&claim, &json!({"page": 3})).unwrap();
    clock.advance(Duration::from_secs(1));
    let done = jobs.complete(&claim, &json!({"ok": true})).unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.progress, 100);
    let got = jobs.get(created.id).unwrap();
    assert_eq!(got.state, JobState::Completed);
    assert_eq!(got.checkpoint, Some(json!({"page": 3})));
    assert_eq!(got.step.as_deref(), Some("halfway"));
    assert_eq!(
        kinds_of(engine, created.id),
        ["created", "claimed", "progress", "checkpoint", "completed"]
    );
    let events = engine.events().since(created.id, 0, 100).unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(
        events[2].payload,
        json!({"progress": 40, "step": "halfway"})
    );
    let after = engine.events().since(created.id, 3, 100).unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    // a completed job is final: no writer can move it again
    assert_eq!(code(jobs.complete(&claim, &json!({}))), "JOB_NOT_RUNNING");
    assert_eq!(
        code(jobs.cancel(created.id, "op", None)),
        "ILLEGAL_TRANSITION"
    );
    assert_eq!(code(jobs.get(created.id + 1000)), "NOT_FOUND");
}

/// A stale attempt, once the supervisor moved its job, is fenced out of every write.
pub fn a_recovered_attempt_can_no_longer_write(engine: &Engine, clock: &ManualClock) {
    let jobs = engine.jobs();
    let supervisor = Supervisor::new(engine.clone(), SupervisorOptions::default()).unwrap();
    // without a checkpoint: failed STALLED, and the old worker's writes are refused
    let a = jobs.create(&job("a")).unwrap();
    let old = jobs.claim("w1", &["a"]).unwrap().unwrap();
    clock.advance(Duration::from_secs(31));
    let report = supervisor.tick(engine.now()).unwrap();
    assert_eq!(report.recovered.len(), 1);
    assert_eq!(report.recovered[0].job_id, a.id);
    assert_eq!(report.recovered[0].to, JobState::Failed);
    assert_eq!(report.recovered[0].code.as_deref(), Some("STALLED"));
    assert_eq!(code(jobs.heartbeat(&old)), "JOB_NOT_RUNNING");
    assert_eq!(code(jobs.complete(&old, &json!({}))), "JOB_NOT_RUNNING");
    let failed = jobs.get(a.id).unwrap();
    assert_eq!(failed.error_code.as_deref(), Some("STALLED"));
    // with a checkpoint: paused; resumed and claimed again, the first attempt is stale
    let b = jobs.create(&job("b")).unwrap();
    let first = jobs.claim("w1", &["b"]).unwrap().unwrap();
    jobs.checkpoint(&first, &json!({"step": 1})).unwrap();
    clock.advance(Duration::from_secs(31));
    let report = supervisor.tick(engine.now()).unwrap();
    assert_eq!(report.recovered[0].to, JobState::Paused);
    jobs.resume(b.id, "op").unwrap();
    let second = jobs.claim("w2", &["b"]).unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.checkpoint(), Some(&json!({"step": 1})));
    assert_eq!(code(jobs.complete(&first, &json!({}))), "STALE_ATTEMPT");
    assert_eq!(code(jobs.progress(&first, 10, None)), "STALE_ATTEMPT");
    jobs.complete(&second, &json!({"by": "w2"})).unwrap();
    assert_eq!(
        kinds_of(engine, b.id),
        [
            "created",
            "claimed",
            "checkpoint",
            "recovered",
            "resumed",
            "claimed",
            "completed"
        ]
    );
    // a fresh heartbeat keeps a job from the tick
    let c = jobs.create(&job("c")).unwrap();
    let live = jobs.claim("w1", &["c"]).unwrap().unwrap();
    clock.advance(Duration::from_secs(20));
    jobs.heartbeat(&live).unwrap();
    clock.advance(Duration::from_secs(20));
    assert!(supervisor.tick(engine.now()).unwrap().recovered.is_empty());
    assert_eq!(jobs.get(c.id).unwrap().state, JobState::Running);
}

/// Operators pause, resume, cancel and restart along the machine; everything else is
/// `ILLEGAL_TRANSITION` and changes nothing.
pub fn operator_transitions_follow_the_machine(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let j = jobs.create(&job("op")).unwrap();
    assert_eq!(code(jobs.pause(j.id, "op")), "ILLEGAL_TRANSITION");
    assert_eq!(code(jobs.resume(j.id, "op")), "ILLEGAL_TRANSITION");
    assert_eq!(code(jobs.restart(j.id, "op", None)), "ILLEGAL_TRANSITION");
    assert_eq!(jobs.get(j.id).unwrap(), j, "refusals change nothing");
    let claim = jobs.claim("w", &["op"]).unwrap().unwrap();
    let paused = jobs.pause(j.id, "op").unwrap();
    assert_eq!(paused.state, JobState::Paused);
    assert_eq!(code(jobs.heartbeat(&claim)), "JOB_NOT_RUNNING");
    let resumed = jobs.resume(j.id, "op").unwrap();
    assert_eq!(resumed.state, JobState::Created);
    let cancelled = jobs.cancel(j.id, "op", Some("not needed")).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.cancel_reason.as_deref(), Some("not needed"));
    assert_eq!(code(jobs.cancel(j.id, "op", None)), "ILLEGAL_TRANSITION");
    let restarted = jobs.restart(j.id, "op", Some(&json!({"n": 2}))).unwrap();
    assert_eq!(restarted.state, JobState::Created);
    assert_eq!(restarted.input, json!({"n": 2}));
    assert_eq!(restarted.cancel_reason, None);
    let events = engine.events().since(j.id, 0, 100).unwrap();
    let kinds: Vec<String> = events.iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "claimed",
            "paused",
            "resumed",
            "cancelled",
            "restarted"
        ]
    );
    assert_eq!(events[2].payload["by"], "op");
    assert_eq!(events[4].payload["reason"], "not needed");
}

/// Bad input is refused with `INVALID_INPUT` (or `TOO_LARGE`) before anything is written.
pub fn bad_input_is_refused_with_its_code_and_writes_nothing(
    engine: &Engine,
    _clock: &ManualClock,
) {
    let jobs = engine.jobs();
    let j = jobs.create(&job("ok")).unwrap();
    let claim = jobs.claim("w", &["ok"]).unwrap().unwrap();
    assert_eq!(code(jobs.create(&job("bad kind!"))), "INVALID_INPUT");
    assert_eq!(
        code(jobs.create(&NewJob::new("", "ok", json!({})))),
        "INVALID_INPUT"
    );
    assert_eq!(code(jobs.claim("", &[])), "INVALID_INPUT");
    assert_eq!(code(jobs.claim("w", &["no spaces"])), "INVALID_INPUT");
    assert_eq!(code(jobs.progress(&claim, 101, None)), "INVALID_INPUT");
    assert_eq!(code(jobs.fail(&claim, "bad code!", "m")), "INVALID_INPUT");
    assert_eq!(code(jobs.cancel(j.id, "", None)), "INVALID_INPUT");
    assert_eq!(code(jobs.list(None, None, None, 0)), "INVALID_INPUT");
    let big = json!({"x": "y".repeat(2 << 20)});
    assert_eq!(code(jobs.checkpoint(&claim, &big)), "TOO_LARGE");
    let listed = jobs.list(None, None, None, 100).unwrap();
    assert_eq!(listed.len(), 1, "no refused create stored a job");
    assert_eq!(
        jobs.get(j.id).unwrap(),
        claim.job,
        "no refused write changed the job"
    );
    assert_eq!(kinds_of(engine, j.id), ["created", "claimed"]);
}

/// Claims take the oldest created job of the worker's kinds, once; `claim_many` takes the
/// oldest first up to its limit.
pub fn claims_take_the_oldest_job_of_the_workers_kinds(engine: &Engine, clock: &ManualClock) {
    let jobs = engine.jobs();
    let mut ids = Vec::new();
    for kind in ["x", "y", "x", "x", "y"] {
        ids.push(jobs.create(&job(kind)).unwrap().id);
        clock.advance(Duration::from_millis(10));
    }
    let first = jobs.claim("w", &["y"]).unwrap().unwrap();
    assert_eq!(first.id(), ids[1]);
    let many = jobs.claim_many("w", &["x"], 2).unwrap();
    assert_eq!(
        many.iter().map(|c| c.id()).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    let any = jobs.claim("w", &[]).unwrap().unwrap();
    assert_eq!(any.id(), ids[3]);
    assert_eq!(jobs.claim("w", &["y"]).unwrap().unwrap().id(), ids[4]);
    assert!(
        jobs.claim("w", &[]).unwrap().is_none(),
        "every job was taken once"
    );
    let running = jobs.list(None, Some(JobState::Running), None, 100).unwrap();
    assert_eq!(running.len(), 5);
    let page = jobs
        .list_before(None, None, None, Some(ids[2]), 100)
        .unwrap();
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
}

/// A `Worker` with two slots runs every job to its outcome: a result completes it, a
/// `JobFailure` fails it with its code, a panic fails it `PANIC`; progress and checkpoints
/// written from the handler are kept.
pub fn the_worker_runs_handlers_to_their_outcomes(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let mut ids = Vec::new();
    for n in 0..6 {
        let new = NewJob::new("u1", "work", json!({"n": n}));
        ids.push(jobs.create(&new).unwrap().id);
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let seen = ran.clone();
    let mut opts = WorkerOptions::new("w-behaviour", ["work"]);
    opts.concurrency = 2;
    opts.idle_poll = Duration::from_millis(20);
    let worker = Worker::start(engine.clone(), opts, move |ctx| {
        seen.fetch_add(1, Ordering::SeqCst);
        let n = ctx.input()["n"].as_i64().unwrap();
        ctx.progress(50, Some("half"))?;
        ctx.checkpoint(&json!({"n": n}))?;
        match n {
            4 => Err(JobFailure::new("BAD_INPUT", "four is refused")),
            5 => panic!("five panics"),
            _ => Ok(json!({"double": n * 2})),
        }
    })
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ran.load(Ordering::SeqCst) < 6
        || !jobs
            .list(None, Some(JobState::Running), None, 10)
            .unwrap()
            .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "the worker stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = worker.shutdown(Duration::from_secs(5));
    assert_eq!((report.completed, report.failed), (4, 2));
    for (n, id) in ids.iter().enumerate() {
        let j = jobs.get(*id).unwrap();
        assert_eq!(j.worker_id.as_deref(), Some("w-behaviour"));
        assert_eq!(j.checkpoint, Some(json!({"n": n})));
        match n {
            4 => assert_eq!(
                (j.state, j.error_code.as_deref()),
                (JobState::Failed, Some("BAD_INPUT"))
            ),
            5 => assert_eq!(
                (j.state, j.error_code.as_deref()),
                (JobState::Failed, Some("PANIC"))
            ),
            _ => {
                assert_eq!(j.state, JobState::Completed);
                assert_eq!(j.result, Some(json!({"double": n * 2})));
            }
        }
        let kinds = kinds_of(engine, *id);
        let last = if n >= 4 { "failed" } else { "completed" };
        assert_eq!(
            kinds,
            ["created", "claimed", "progress", "checkpoint", last]
        );
    }
}

/// Recoveries count in `recovery_count`; past `max_recoveries` a job fails
/// `RECOVERY_EXHAUSTED`. An operator's `recover_now` moves a job however fresh it is.
pub fn recoveries_are_counted_until_exhausted(engine: &Engine, clock: &ManualClock) {
    let jobs = engine.jobs();
    let opts = SupervisorOptions {
        max_recoveries: 1,
        policy: RecoveryPolicy::AutoResume,
        ..SupervisorOptions::default()
    };
    let supervisor = Supervisor::new(engine.clone(), opts).unwrap();
    let j = jobs.create(&job("r")).unwrap();
    let c1 = jobs.claim("w", &["r"]).unwrap().unwrap();
    jobs.checkpoint(&c1, &json!({"at": 1})).unwrap();
    clock.advance(Duration::from_secs(31));
    let r1 = supervisor.tick(engine.now()).unwrap();
    assert_eq!(r1.recovered.len(), 1);
    assert_eq!(
        (r1.recovered[0].to, r1.recovered[0].recovery_count),
        (JobState::Created, 1)
    );
    let c2 = jobs.claim("w", &["r"]).unwrap().unwrap();
    assert_eq!(c2.attempt, 2);
    assert_eq!(c2.checkpoint(), Some(&json!({"at": 1})));
    clock.advance(Duration::from_secs(31));
    let r2 = supervisor.tick(engine.now()).unwrap();
    assert_eq!(r2.recovered[0].to, JobState::Failed);
    assert_eq!(r2.recovered[0].code.as_deref(), Some("RECOVERY_EXHAUSTED"));
    let status = supervisor
        .status()
        .unwrap()
        .expect("the ticks kept their row");
    assert_eq!(status.ticks, 2);
    let failed = jobs.get(j.id).unwrap();
    assert_eq!(failed.recovery_count, 2);
    assert_eq!(failed.error_code.as_deref(), Some("RECOVERY_EXHAUSTED"));
    // recover_now: an operator's recovery of a live job, refused for a job not running
    let k = jobs.create(&job("r")).unwrap();
    assert_eq!(
        code(supervisor.recover_now(k.id, "op")),
        "ILLEGAL_TRANSITION"
    );
    let live = jobs.claim("w", &["r"]).unwrap().unwrap();
    jobs.checkpoint(&live, &json!({"at": 2})).unwrap();
    let moved = supervisor.recover_now(k.id, "op").unwrap();
    assert_eq!((moved.job_id, moved.to), (k.id, JobState::Created));
    let events = engine.events().since(k.id, 0, 100).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.kind.to_string(), "recovered");
    assert_eq!(last.payload["by"], "op");
    assert!(supervisor.cleanup().unwrap());
    assert!(supervisor.status().unwrap().is_none());
}

/// The kept backlog is 200 events per job: asking for events after a pruned seq is
/// `EVENTS_PRUNED`, never a partial history.
pub fn events_since_a_pruned_seq_are_refused(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let j = jobs.create(&job("long")).unwrap();
    let claim = jobs.claim("w", &["long"]).unwrap().unwrap();
    for n in 0..220u32 {
        jobs.progress(&claim, (n % 100) as u8, None).unwrap();
    }
    // 222 events in all; the oldest 22 are gone: from the start is refused too
    assert!(matches!(
        engine.events().since(j.id, 0, 1000),
        Err(Error::EventsPruned {
            oldest_kept: 23,
            ..
        })
    ));
    let kept = engine.events().since(j.id, 22, 1000).unwrap();
    assert_eq!(kept.len(), 200);
    assert_eq!(kept.first().unwrap().seq, 23);
    assert_eq!(kept.last().unwrap().seq, 222);
    assert!(matches!(
        engine.events().since(j.id, 5, 10),
        Err(Error::EventsPruned { .. })
    ));
    let tail = engine.events().since(j.id, 220, 10).unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [221, 222]);
}
