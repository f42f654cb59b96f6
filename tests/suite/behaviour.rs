//! One behavioural suite, two backends (issue 17): every scenario here takes an [`Engine`]
//! and its manual clock, and asserts what the public API does. `tests/suite` runs each on
//! SQLite; `tests/pg` (feature `postgres`) includes this same file and runs each on an
//! `Engine::open("postgres://...")`, through [`behaviour_tests!`]. A scenario states the
//! behaviour both backends must share: nothing in it may depend on which one it runs on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger::run::{Gate, RetryPolicy, RunFilter, StageError, StageOutput};
use runledger::schedule::{LoopOptions, DEFAULT_SCHEDULE_NAME, PIPELINE_NOT_HERE};
use runledger::{
    Engine, Error, FeedFilter, Fire, FireOutcome, JobFailure, JobState, ManualClock, Misfire,
    NewJob, NewSchedule, Pipeline, RecoveryPolicy, RunStatus, Schedule, ScheduleEdit, Scope,
    ScopeSelector, SlotStatus, Supervisor, SupervisorOptions, TickOptions, Timestamp, TriggerKind,
    Worker, WorkerOptions,
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
            the_feed_pages_every_event_once_in_cursor_order,
            the_feed_names_jobs_whose_events_were_pruned,
            a_subscriber_receives_the_engines_events_in_order,
            a_trigger_runs_each_scope_through_gates_and_stages,
            gates_and_stages_fail_runs_with_their_stage_named,
            the_lock_refuses_a_second_run_and_records_the_refusal,
            stages_keep_meta_annotations_and_raw_payloads,
            a_swept_run_stops_quietly_and_frees_its_lock,
            the_preflight_gate_probes_modules_and_blocks_a_scope_not_ready,
            retention_prunes_old_terminal_runs_and_their_payloads,
            an_operator_ends_a_started_run_at_once,
            schedules_are_created_edited_and_deleted_with_their_refusals,
            a_tick_fires_each_due_slot_once,
            misfire_policies_decide_which_missed_slots_fire,
            a_disabled_or_edited_schedules_pending_slot_is_skipped,
            fire_failures_are_recorded_with_their_codes,
            a_claim_is_renewed_while_firing_and_given_back_when_abandoned,
            the_schedule_loop_fires_due_slots_and_stops,
            a_due_slot_runs_its_pipeline_once_and_names_the_runs,
            stats_and_listings_count_a_known_mix_of_jobs,
            create_many_is_all_or_nothing,
            operator_fail_resume_on_delete_and_reset_follow_the_machine,
            diagnostics_show_a_job_in_its_stable_shape,
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $crate::behaviour_tests!(@gen $make; $($name),*);
        $crate::behaviour_tests!(@flex $make);
    };
    (@flex $make:path) => {
        #[cfg(feature = "flex")]
        $crate::behaviour_tests!(@gen $make;
            flex_persists_the_statement_then_succeeds,
            flex_failures_keep_what_came_and_remember_an_expired_token
        );
    };
    (@gen $make:path; $($name:ident),* $(,)?) => {
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

/// The global feed: every event once, in growing cursor order, page after page, the same
/// events `since` returns per job and `after` returns in all; `head` is the newest cursor;
/// one job's and one user's feeds hold exactly their events, each with its job's user.
pub fn the_feed_pages_every_event_once_in_cursor_order(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let events = engine.events();
    let empty = events.feed(&FeedFilter::All, 0, 10, true).unwrap();
    assert!(empty.events.is_empty() && empty.pruned_jobs.is_empty());
    assert_eq!(empty.head, 0);
    let mut ids = Vec::new();
    for (user, kind) in [("ann", "a"), ("bob", "b"), ("ann", "c")] {
        let j = jobs.create(&NewJob::new(user, kind, json!({}))).unwrap();
        ids.push(j.id);
    }
    for kind in ["a", "b", "c"] {
        let claim = jobs.claim("w", &[kind]).unwrap().unwrap();
        jobs.progress(&claim, 50, Some("half")).unwrap();
        jobs.complete(&claim, &json!({"ok": kind})).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let page = events.feed(&FeedFilter::All, cursor, 2, true).unwrap();
        assert!(page.pruned_jobs.is_empty());
        let Some(last) = page.events.last() else {
            assert_eq!(page.head, cursor, "an empty page ends at the head");
            break;
        };
        cursor = last.event.cursor;
        assert!(page.head >= cursor);
        seen.extend(page.events);
    }
    // 4 events per job (created, claimed, progress, completed), in growing cursor order
    assert_eq!(seen.len(), 12);
    assert!(seen
        .windows(2)
        .all(|w| w[0].event.cursor < w[1].event.cursor));
    for &id in &ids {
        let of_job: Vec<_> = seen
            .iter()
            .filter(|e| e.event.job_id == id)
            .map(|e| e.event.clone())
            .collect();
        assert_eq!(of_job, events.since(id, 0, 100).unwrap(), "job {id}");
    }
    let users: Vec<_> = seen.iter().map(|e| e.user_id.clone().unwrap()).collect();
    assert_eq!(users.iter().filter(|u| *u == "ann").count(), 8);
    assert_eq!(
        events.after(0, 100).unwrap(),
        seen.iter().map(|e| e.event.clone()).collect::<Vec<_>>()
    );
    assert_eq!(events.after(seen[9].event.cursor, 100).unwrap().len(), 2);
    let one = events.feed(&FeedFilter::Job(ids[1]), 0, 100, true).unwrap();
    assert_eq!(one.events.len(), 4);
    assert!(one
        .events
        .iter()
        .all(|e| e.event.job_id == ids[1] && e.user_id.as_deref() == Some("bob")));
    let ann = events
        .feed(&FeedFilter::User("ann".into()), 0, 100, true)
        .unwrap();
    assert_eq!(ann.events.len(), 8);
    assert!(ann.events.iter().all(|e| e.event.job_id != ids[1]));
    assert_eq!(
        ann.head,
        seen.last().unwrap().event.cursor,
        "head is the whole log's"
    );
    // a deleted job's events go with it; a later page does not name it
    jobs.delete(ids[0], "op").unwrap();
    let rest = events.feed(&FeedFilter::All, 0, 100, true).unwrap();
    assert_eq!(rest.events.len(), 8);
    assert!(rest.events.iter().all(|e| e.event.job_id != ids[0]));
}

/// `subscribe`: every event the engine commits from then on, once, in order; a receiver
/// dropped is let go.
pub fn a_subscriber_receives_the_engines_events_in_order(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let before = jobs.create(&job("early")).unwrap();
    let rx = engine.events().subscribe();
    let j = jobs.create(&job("sub")).unwrap();
    let claim = jobs.claim("w", &["sub"]).unwrap().unwrap();
    jobs.progress(&claim, 40, Some("step")).unwrap();
    jobs.complete(&claim, &json!({"ok": true})).unwrap();
    let got: Vec<runledger::Event> = (0..4)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("an event within 10 s")
        })
        .collect();
    assert_eq!(got, engine.events().since(j.id, 0, 10).unwrap());
    assert!(
        got.iter().all(|e| e.job_id != before.id),
        "nothing from before"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing more"
    );
    drop(rx);
    // a second subscriber after the first is gone gets what comes next
    let again = engine.events().subscribe();
    let next = jobs.create(&job("sub")).unwrap();
    let e = again
        .recv_timeout(Duration::from_secs(10))
        .expect("an event within 10 s");
    assert_eq!((e.job_id, e.seq), (next.id, 1));
}

/// A follower whose cursor is older than a job's oldest kept event is told to reload that
/// job (`pruned_jobs`), and only when it asks for the check.
pub fn the_feed_names_jobs_whose_events_were_pruned(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let quiet = jobs.create(&job("quiet")).unwrap();
    let long = jobs.create(&job("long")).unwrap();
    let claim = jobs.claim("w", &["long"]).unwrap().unwrap();
    for n in 0..205u32 {
        jobs.progress(&claim, (n % 100) as u8, None).unwrap();
    }
    let page = engine
        .events()
        .feed(&FeedFilter::All, 0, 1000, true)
        .unwrap();
    assert_eq!(page.pruned_jobs, [long.id]);
    // 1 event of the quiet job, the long job's newest 200 of 207
    assert_eq!(page.events.len(), 201);
    assert_eq!(page.events[0].event.job_id, quiet.id);
    assert_eq!(page.events[1].event.seq, 8);
    let unchecked = engine
        .events()
        .feed(&FeedFilter::All, 0, 1000, false)
        .unwrap();
    assert!(unchecked.pruned_jobs.is_empty());
    assert_eq!(unchecked.events, page.events);
    // a follower past the gap has nothing to reload
    let later = engine
        .events()
        .feed(
            &FeedFilter::Job(long.id),
            page.events[1].event.cursor,
            10,
            true,
        )
        .unwrap();
    assert!(later.pruned_jobs.is_empty());
    assert_eq!(later.events.len(), 10);
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

fn stages(run: &runledger::run::Run) -> Vec<(String, String, u32)> {
    run.timeline
        .iter()
        .map(|e| (e.stage.clone(), e.status.to_string(), e.attempt))
        .collect()
}

/// `both` runs `targets` then `universe`, each its own run under its own lock, through the
/// gates then the stages; each attempt is a closed timeline entry.
pub fn a_trigger_runs_each_scope_through_gates_and_stages(engine: &Engine, clock: &ManualClock) {
    let tick = clock.clone();
    let p = Pipeline::builder("ingest")
        .gate(Gate::Token, |_| Ok(StageOutput::done()))
        .stage("fetch", move |ctx| {
            tick.advance(Duration::from_millis(250));
            Ok(StageOutput::with_detail(
                json!({"scope": ctx.scope().to_string()}),
            ))
        })
        .stage("store", |ctx| {
            let fetched = ctx.output("fetch").cloned().unwrap_or_default();
            Ok(StageOutput::with_detail(json!({"saw": fetched})))
        })
        .build()
        .unwrap();
    let outcomes = engine
        .runs()
        .trigger(&p, ScopeSelector::Both, TriggerKind::Manual)
        .unwrap();
    assert_eq!(
        outcomes.iter().map(|o| o.scope).collect::<Vec<_>>(),
        [Scope::Targets, Scope::Universe]
    );
    for o in &outcomes {
        let run = o.result.as_ref().unwrap();
        assert_eq!(run.status, RunStatus::Success);
        assert_eq!(run.lock_key, format!("ingest:{}", o.scope));
        assert_eq!(run.duration_ms, Some(250));
        assert_eq!(
            stages(run),
            [
                ("token".into(), "success".into(), 1),
                ("fetch".into(), "success".into(), 1),
                ("store".into(), "success".into(), 1)
            ]
        );
        assert_eq!(
            run.timeline[2].detail,
            Some(json!({"saw": {"scope": o.scope.to_string()}}))
        );
        assert_eq!(run.meta["source"], "manual");
        assert_eq!(engine.runs().get(run.id).unwrap(), *run);
    }
    let listed = engine
        .runs()
        .list(&RunFilter {
            scope: Some(Scope::Universe),
            ..RunFilter::default()
        })
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, outcomes[1].result.as_ref().unwrap().id);
    assert_eq!(
        code(
            engine.runs().trigger(
                &Pipeline::builder("targets_only")
                    .scopes(&[Scope::Targets])
                    .stage("s", |_| Ok(StageOutput::done()))
                    .build()
                    .unwrap(),
                ScopeSelector::Universe,
                TriggerKind::Manual
            )
        ),
        "INVALID_INPUT"
    );
}

/// A failing gate blocks the run (`blockedStage`), a failing stage fails it
/// (`failedStage`); a retryable failure is retried as a new attempt; `targets` failing never
/// stops `universe`.
pub fn gates_and_stages_fail_runs_with_their_stage_named(engine: &Engine, _clock: &ManualClock) {
    let gated = Pipeline::builder("gated")
        .gate(Gate::Readiness, |ctx| match ctx.scope() {
            Scope::Targets => Err(StageError::fatal("NOT_READY", "targets are not ready")),
            Scope::Universe => Ok(StageOutput::done()),
        })
        .stage("work", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    let outcomes = engine
        .runs()
        .trigger(&gated, ScopeSelector::Both, TriggerKind::Manual)
        .unwrap();
    let blocked = outcomes[0].result.as_ref().unwrap();
    assert_eq!(blocked.status, RunStatus::Failed);
    assert_eq!(blocked.error_code.as_deref(), Some("NOT_READY"));
    assert_eq!(blocked.meta["blockedStage"], "readiness");
    assert_eq!(stages(blocked), [("readiness".into(), "failed".into(), 1)]);
    let passed = outcomes[1].result.as_ref().unwrap();
    assert_eq!(
        passed.status,
        RunStatus::Success,
        "one scope failing never stops the other"
    );

    let tries = Arc::new(AtomicUsize::new(0));
    let seen = tries.clone();
    let flaky = Pipeline::builder("flaky")
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        })
        .sleeper(|_| {})
        .stage("fetch", move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(StageError::retryable("UPSTREAM_BUSY", "try again"))
            } else {
                Ok(StageOutput::done())
            }
        })
        .stage("parse", |_| {
            Err(StageError::fatal("BAD_DATA", "cannot parse"))
        })
        .build()
        .unwrap();
    let outcomes = engine
        .runs()
        .trigger(&flaky, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let failed = outcomes[0].result.as_ref().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("BAD_DATA"));
    assert_eq!(failed.meta["failedStage"], "parse");
    assert_eq!(
        stages(failed),
        [
            ("fetch".into(), "failed".into(), 1),
            ("fetch".into(), "success".into(), 2),
            ("parse".into(), "failed".into(), 1)
        ]
    );
    assert_eq!(
        failed.timeline[0].error_code.as_deref(),
        Some("UPSTREAM_BUSY")
    );
}

/// While a run holds `pipeline:scope`, a second trigger is refused `RUN_ALREADY_ACTIVE`, and
/// the refusal is itself recorded as a failed run (`blockedStage: "lock"`); accounts have
/// locks of their own.
pub fn the_lock_refuses_a_second_run_and_records_the_refusal(
    engine: &Engine,
    _clock: &ManualClock,
) {
    let inner: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = inner.clone();
    let p = Pipeline::builder("locked")
        .stage("nested", move |ctx| {
            let again = Pipeline::builder("locked")
                .stage("x", |_| Ok(StageOutput::done()))
                .build()
                .unwrap();
            let runs = ctx.engine().runs();
            let refused = runs
                .trigger(&again, ScopeSelector::Targets, TriggerKind::Manual)
                .unwrap();
            let e = refused[0].result.as_ref().unwrap_err();
            log.lock().unwrap().push(e.code().to_string());
            if let Error::RunAlreadyActive {
                active_run_id,
                recorded_run_id,
                ..
            } = e
            {
                assert_eq!(*active_run_id, Some(ctx.run_id()));
                let rec = runs.get(recorded_run_id.unwrap()).unwrap();
                assert_eq!(rec.status, RunStatus::Failed);
                assert_eq!(rec.meta["blockedStage"], "lock");
                assert_eq!(rec.error_code.as_deref(), Some("RUN_ALREADY_ACTIVE"));
            }
            // another account's lock is free
            let other = runs
                .trigger_with(
                    &again,
                    ScopeSelector::Targets,
                    TriggerKind::Manual,
                    &runledger::run::TriggerOptions {
                        account_id: Some("U123".into()),
                    },
                )
                .unwrap();
            let run = other[0].result.as_ref().unwrap();
            log.lock().unwrap().push(run.lock_key.clone());
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let outer = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    assert_eq!(outer[0].result.as_ref().unwrap().status, RunStatus::Success);
    assert_eq!(
        *inner.lock().unwrap(),
        ["RUN_ALREADY_ACTIVE", "locked:targets:U123"]
    );
    // the lock is free again
    let again = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    assert_eq!(again[0].result.as_ref().unwrap().status, RunStatus::Success);
}

/// A stage's meta, live annotations and raw payloads are kept; a rejected payload fails the
/// run with its code whatever the stages returned.
pub fn stages_keep_meta_annotations_and_raw_payloads(engine: &Engine, _clock: &ManualClock) {
    let p = Pipeline::builder("keeper")
        .stage("download", |ctx| {
            ctx.annotate(Some("waiting"), &json!({"polls": 2}))?;
            // live while the stage runs (its closed entry replaces it at the end)
            let live = ctx.engine().runs().get(ctx.run_id()).unwrap();
            let open = live.timeline.last().unwrap();
            assert_eq!(open.message.as_deref(), Some("waiting"));
            assert_eq!(open.detail, Some(json!({"polls": 2})));
            assert_eq!(open.status.to_string(), "started");
            ctx.merge_meta(&json!({"referenceCode": "R1", "tmp": 1}))?;
            ctx.merge_meta(&json!({"tmp": null}))?;
            assert_eq!(
                ctx.merge_meta(&json!({"errorCode": "X"}))
                    .unwrap_err()
                    .code(),
                "INVALID_INPUT"
            );
            let rec = ctx.store_raw(&runledger::run::RawInput {
                source: "test",
                upstream_ref: Some("R1"),
                content_type: "application/xml",
                bytes: b"<ok/>",
            })?;
            Ok(StageOutput::with_detail(json!({"record": rec.id})))
        })
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run = out[0].result.as_ref().unwrap();
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(run.meta["referenceCode"], "R1");
    assert!(!run.meta.contains_key("tmp"), "null removes a key");
    assert_eq!(
        run.timeline[0].detail,
        Some(json!({"record": records_first_id(engine, run.id)}))
    );
    let records = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].size, 5);
    assert_eq!(records[0].sha256, runledger::run::raw::sha256_hex(b"<ok/>"));
    assert_eq!(
        engine.runs().raw_payload(&records[0].sha256).unwrap(),
        b"<ok/>"
    );
    assert_eq!(engine.runs().raw_record(records[0].id).unwrap(), records[0]);

    let bad = Pipeline::builder("rejecter")
        .stage("check", |ctx| {
            ctx.store_rejected_raw(
                &runledger::run::RawInput {
                    source: "test",
                    upstream_ref: None,
                    content_type: "application/xml",
                    bytes: b"<broken",
                },
                "FLEX_MALFORMED_XML",
                "unclosed tag",
            )?;
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&bad, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run = out[0].result.as_ref().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("FLEX_MALFORMED_XML"));
    assert_eq!(run.meta["failedStage"], "check");
    let kept = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(
        kept[0].rejected.as_ref().unwrap().code,
        "FLEX_MALFORMED_XML"
    );
}

fn records_first_id(engine: &Engine, run_id: i64) -> i64 {
    engine.runs().raw_records(run_id).unwrap()[0].id
}

/// A run whose lease expired is swept `ABANDONED` (its lock freed); its stages, still
/// running, find the lease lost and stop without touching the ended run.
pub fn a_swept_run_stops_quietly_and_frees_its_lock(engine: &Engine, clock: &ManualClock) {
    let tick = clock.clone();
    let p = Pipeline::builder("slow")
        .lease(Duration::from_secs(60))
        .stage("long", move |ctx| {
            tick.advance(Duration::from_secs(61));
            let swept = ctx.engine().runs().sweep().unwrap();
            assert_eq!(swept, [ctx.run_id()]);
            assert_eq!(ctx.keep_alive().unwrap_err().code(), "ILLEGAL_TRANSITION");
            Ok(StageOutput::done())
        })
        .stage("never", |_| panic!("a swept run runs no further stage"))
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run = out[0].result.as_ref().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(stages(run), [("long".into(), "failed".into(), 1)]);
    assert!(engine.runs().sweep().unwrap().is_empty());
}

/// The Flex pipeline against the loopback mock: request, polls while not ready, download,
/// section check, the statement persisted before the run succeeds.
#[cfg(feature = "flex")]
pub fn flex_persists_the_statement_then_succeeds(engine: &Engine, clock: &ManualClock) {
    use crate::flex_mock::{fixture, MockFlex, Reply};
    let mock = MockFlex::start(
        clock,
        vec![
            Reply::accepted(),
            Reply::not_ready(),
            Reply::not_ready(),
            Reply::fixture("activity_ok.xml"),
        ],
    );
    let run = runledger::flex::run_once(engine, &flex_config(&mock, clock), None).unwrap();
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(
        (run.pipeline.as_str(), run.lock_key.as_str()),
        ("flex-777", "flex-777:targets")
    );
    assert_eq!(
        stages(&run)
            .iter()
            .map(|s| s.0.as_str())
            .collect::<Vec<_>>(),
        [
            "token",
            "request",
            "poll",
            "download",
            "section_preflight",
            "persist"
        ]
    );
    let records = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].source, "ib_flex");
    assert_eq!(records[0].upstream_ref.as_deref(), Some("1234567890"));
    assert_eq!(
        engine.runs().raw_payload(&records[0].sha256).unwrap(),
        fixture("activity_ok.xml")
    );
    assert_eq!(mock.seen().len(), 4);
    let stored = serde_json::to_string(&run).unwrap();
    assert!(
        !stored.contains(crate::flex_mock::TOKEN),
        "the token is never stored"
    );
}

/// A malformed statement is kept, rejected, and fails the run with its code; a token IB
/// declared expired blocks the next run at the token gate without a request (found from the
/// earlier runs), until a new token is given.
#[cfg(feature = "flex")]
pub fn flex_failures_keep_what_came_and_remember_an_expired_token(
    engine: &Engine,
    clock: &ManualClock,
) {
    use crate::flex_mock::{MockFlex, Reply};
    let mock = MockFlex::start(
        clock,
        vec![
            Reply::accepted(),
            Reply::fixture("malformed_bare_ampersand.xml"),
            Reply::accepted(),
            Reply::fail(1012),
            Reply::accepted(),
            Reply::fixture("activity_ok.xml"),
        ],
    );
    let cfg = flex_config(&mock, clock);
    let bad = runledger::flex::run_once(engine, &cfg, None).unwrap();
    assert_eq!(bad.status, RunStatus::Failed);
    assert_eq!(bad.error_code.as_deref(), Some("FLEX_MALFORMED_XML"));
    let kept = engine.runs().raw_records(bad.id).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].rejected.as_ref().unwrap().code,
        "FLEX_MALFORMED_XML"
    );
    clock.advance(Duration::from_secs(60));
    let expired = runledger::flex::run_once(engine, &cfg, None).unwrap();
    assert_eq!(expired.error_code.as_deref(), Some("FLEX_1012"));
    clock.advance(Duration::from_secs(3600));
    let blocked = runledger::flex::run_once(engine, &cfg, None).unwrap();
    assert_eq!(blocked.error_code.as_deref(), Some("FLEX_TOKEN_EXPIRED"));
    assert_eq!(blocked.meta["blockedStage"], "token");
    assert_eq!(mock.seen().len(), 4, "the gate spends no request");
    let renewed = runledger::flex::FlexConfig {
        token: runledger::flex::TokenSource::Given(
            runledger::flex::FlexToken::new("111122223333444455556666").unwrap(),
        ),
        ..cfg
    };
    let ok = runledger::flex::run_once(engine, &renewed, None).unwrap();
    assert_eq!(ok.status, RunStatus::Success, "{ok:?}");
}

/// A Flex config for query 777 against `mock`, paced on `clock` (its sleeper advances it).
#[cfg(feature = "flex")]
fn flex_config(
    mock: &crate::flex_mock::MockFlex,
    clock: &ManualClock,
) -> runledger::flex::FlexConfig {
    use runledger::flex::{ClientConfig, FlexConfig, Pacer, RateLimits, TokenSource};
    let c = clock.clone();
    FlexConfig {
        token: TokenSource::Given(crate::flex_mock::token()),
        client: ClientConfig {
            base_url: mock.base_url(),
            read_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        },
        pacer: Pacer::new(clock.clone(), move |d| c.advance(d), RateLimits::default()),
        ..FlexConfig::new("777")
    }
}

// ---- schedules

fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn quarterly(name: &str) -> NewSchedule {
    NewSchedule::new(name, "ingest", "targets", "every 15m", "UTC")
}

fn ticker(name: &str) -> TickOptions {
    TickOptions {
        ticker: name.into(),
        ..TickOptions::default()
    }
}

/// A `Fire` that records every call and answers `outcome` (the slots it fires name no run,
/// so the scenarios need no pipeline): which slots were fired, and how often.
struct Recorder {
    calls: Mutex<Vec<(String, Timestamp)>>,
    outcome: FireOutcome,
}

impl Recorder {
    fn answering(outcome: FireOutcome) -> Self {
        Recorder {
            calls: Mutex::new(Vec::new()),
            outcome,
        }
    }

    /// Turns every slot away with code `HELD` (recorded `skipped`, never retried).
    fn holding() -> Self {
        Self::answering(FireOutcome::TurnedAway {
            run_ids: vec![],
            code: "HELD".into(),
        })
    }

    fn calls(&self) -> Vec<(String, Timestamp)> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_of(&self, name: &str) -> Vec<Timestamp> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.0 == name).map(|c| c.1).collect()
    }
}

impl Fire for Recorder {
    fn fire(&self, schedule: &Schedule, slot: Timestamp) -> FireOutcome {
        self.calls
            .lock()
            .unwrap()
            .push((schedule.name.clone(), slot));
        self.outcome.clone()
    }
}

fn names(engine: &Engine) -> Vec<String> {
    let list = engine.schedules().list().unwrap();
    list.into_iter().map(|s| s.name).collect()
}

/// create / get / list / edit / enable / disable / delete, and each refusal with its code,
/// writing nothing.
pub fn schedules_are_created_edited_and_deleted_with_their_refusals(
    engine: &Engine,
    clock: &ManualClock,
) {
    let schedules = engine.schedules();
    let now = engine.now();
    let created = schedules.create(&quarterly("quarter")).unwrap();
    assert_eq!(created.name, "quarter");
    assert_eq!(
        (created.pipeline.as_str(), created.scope.as_str()),
        ("ingest", "targets")
    );
    assert_eq!(created.rule.to_string(), "every 15m");
    assert_eq!(created.zone.name(), "UTC");
    assert!(created.enabled);
    assert_eq!(created.misfire, Misfire::LatestOnly);
    assert_eq!(created.last_due_at, None);
    assert_eq!(created.next_due_at, Some(ts("2026-11-22T11:45:00.000Z")));
    assert_eq!((created.created_at, created.updated_at), (now, now));
    assert_eq!(schedules.get("quarter").unwrap(), created);
    // names sort by their bytes on both backends
    let daily = NewSchedule::new(
        "Zeta",
        "ingest",
        "both",
        "daily 19:30 mon-fri",
        "Asia/Shanghai",
    );
    let zeta = schedules.create(&daily.misfire(Misfire::All)).unwrap();
    assert_eq!(zeta.misfire, Misfire::All);
    assert_eq!(zeta.rule.to_string(), "daily 19:30 mon-fri");
    schedules.create(&quarterly("alpha")).unwrap();
    assert_eq!(names(engine), ["Zeta", "alpha", "quarter"]);
    assert_eq!(
        schedules.ensure_default().unwrap().name,
        DEFAULT_SCHEDULE_NAME
    );
    let default_id = schedules.ensure_default().unwrap().id;
    assert_eq!(schedules.get(DEFAULT_SCHEDULE_NAME).unwrap().id, default_id);

    // refusals: nothing stored, nothing changed
    let before = schedules.list().unwrap();
    let bad = |f: &dyn Fn(&mut NewSchedule)| {
        let mut new = quarterly("fresh");
        f(&mut new);
        schedules.create(&new).map(|_| ())
    };
    let taken = schedules.create(&quarterly("quarter")).unwrap_err();
    assert_eq!(taken.code(), "INVALID_INPUT");
    assert!(matches!(&taken, Error::InvalidInput { field, .. } if field == "name"));
    assert_eq!(code(bad(&|n| n.name = "no spaces".into())), "INVALID_INPUT");
    assert_eq!(code(bad(&|n| n.name = String::new())), "INVALID_INPUT");
    assert_eq!(code(bad(&|n| n.pipeline = "a b".into())), "INVALID_INPUT");
    assert_eq!(code(bad(&|n| n.scope = "galaxy".into())), "INVALID_INPUT");
    assert_eq!(code(bad(&|n| n.rule = "hourly".into())), "INVALID_INPUT");
    assert_eq!(
        code(bad(&|n| n.zone = "Mars/Olympus".into())),
        "INVALID_INPUT"
    );
    assert_eq!(
        code(schedules.by("").create(&quarterly("fresh"))),
        "INVALID_INPUT"
    );
    let rule_edit = ScheduleEdit {
        rule: Some("every 0m".into()),
        ..ScheduleEdit::default()
    };
    assert_eq!(code(schedules.edit("quarter", &rule_edit)), "INVALID_INPUT");
    let scope_edit = ScheduleEdit {
        scope: Some("universe".into()),
        ..ScheduleEdit::default()
    };
    assert_eq!(code(schedules.get("missing")), "NOT_FOUND");
    assert_eq!(code(schedules.slots("missing")), "NOT_FOUND");
    assert_eq!(code(schedules.edit("missing", &scope_edit)), "NOT_FOUND");
    assert_eq!(code(schedules.enable("missing")), "NOT_FOUND");
    assert_eq!(code(schedules.disable("missing")), "NOT_FOUND");
    assert_eq!(code(schedules.delete("missing")), "NOT_FOUND");
    assert_eq!(schedules.list().unwrap(), before);

    // an edit of the scope keeps the cursor; one of the rule restarts it from now
    clock.advance(Duration::from_secs(60));
    let edited = schedules.by("ops").edit("quarter", &scope_edit).unwrap();
    assert_eq!(edited.scope, "universe");
    assert_eq!(edited.next_due_at, created.next_due_at);
    assert_eq!(edited.updated_at, engine.now());
    let hourly = ScheduleEdit {
        rule: Some("every 1h".into()),
        misfire: Some(Misfire::Skip),
        ..ScheduleEdit::default()
    };
    let edited = schedules.edit("quarter", &hourly).unwrap();
    assert_eq!(edited.rule.to_string(), "every 1h");
    assert_eq!(edited.misfire, Misfire::Skip);
    assert_eq!(edited.scope, "universe");
    assert_eq!(edited.next_due_at, Some(ts("2026-11-22T12:00:00.000Z")));
    assert_eq!(schedules.get("quarter").unwrap(), edited);

    // disable takes it out of next_due; enable restarts its cursor from now
    assert_eq!(
        schedules.next_due().unwrap(),
        Some(ts("2026-11-22T11:45:00.000Z"))
    );
    let off = schedules.disable("alpha").unwrap();
    assert!(!off.enabled);
    assert_eq!(
        schedules.disable("alpha").unwrap(),
        off,
        "disabling twice changes nothing"
    );
    assert_eq!(
        schedules.next_due().unwrap(),
        Some(ts("2026-11-22T12:00:00.000Z"))
    );
    clock.advance(Duration::from_secs(3600));
    let on = schedules.enable("alpha").unwrap();
    assert!(on.enabled);
    assert_eq!(on.next_due_at, Some(ts("2026-11-22T12:45:00.000Z")));
    assert_eq!(schedules.enable("alpha").unwrap(), on);

    schedules.by("ops").delete("alpha").unwrap();
    assert_eq!(code(schedules.get("alpha")), "NOT_FOUND");
    assert_eq!(names(engine), ["Zeta", DEFAULT_SCHEDULE_NAME, "quarter"]);
    assert_eq!(schedules.all_slots().unwrap(), []);
    assert_eq!(schedules.last_claimed_at().unwrap(), None);
}

/// A tick materializes each due slot once, fires it once, and records the outcome; ticks
/// before the slot or after it do nothing more.
pub fn a_tick_fires_each_due_slot_once(engine: &Engine, clock: &ManualClock) {
    let schedules = engine.schedules();
    schedules.create(&quarterly("q")).unwrap();
    let fire = Recorder::holding();
    let opts = ticker("ticker-a");
    let slot = ts("2026-11-22T11:45:00.000Z");
    let early = schedules
        .tick_with(&opts, slot - Duration::from_millis(1), &fire)
        .unwrap();
    assert_eq!((early.materialized, early.slots.len()), (0, 0));
    assert_eq!(early.next_due, Some(slot));
    clock.set(slot + Duration::from_secs(2));
    let report = schedules.tick_with(&opts, slot, &fire).unwrap();
    assert_eq!(report.materialized, 1);
    assert_eq!(report.slots.len(), 1);
    let r = &report.slots[0];
    assert_eq!((r.schedule.as_str(), r.due_at), ("q", slot));
    assert_eq!(r.status, SlotStatus::Skipped);
    assert_eq!(r.code.as_deref(), Some("HELD"));
    assert_eq!(report.next_due, Some(ts("2026-11-22T12:00:00.000Z")));
    assert_eq!(fire.calls(), [("q".to_string(), slot)]);
    // later ticks before the next slot: nothing again
    for later in [slot, slot + Duration::from_secs(60)] {
        let again = schedules.tick_with(&opts, later, &fire).unwrap();
        assert_eq!((again.materialized, again.slots.len()), (0, 0));
    }
    assert_eq!(fire.calls().len(), 1);
    let slots = schedules.slots("q").unwrap();
    assert_eq!(slots.len(), 1);
    let s = &slots[0];
    assert_eq!(
        (s.id, s.due_at, s.status),
        (r.slot_id, slot, SlotStatus::Skipped)
    );
    assert_eq!(s.claimed_by.as_deref(), Some("ticker-a"));
    assert_eq!(s.claimed_at, Some(slot));
    assert_eq!(s.finished_at, Some(slot + Duration::from_secs(2)));
    assert_eq!(s.outcome_code.as_deref(), Some("HELD"));
    assert_eq!(s.run_ids, Vec::<i64>::new());
    assert_eq!(schedules.last_claimed_at().unwrap(), Some(slot));
    let q = schedules.get("q").unwrap();
    assert_eq!(q.last_due_at, Some(slot));
    assert_eq!(q.next_due_at, Some(ts("2026-11-22T12:00:00.000Z")));
    // three more slots at their times: each fired once, in order
    for n in 1..=3u64 {
        let at = slot + Duration::from_secs(900 * n);
        clock.set(at);
        let r = schedules.tick(at, &fire).unwrap();
        assert_eq!((r.materialized, r.count(SlotStatus::Skipped)), (1, 1));
    }
    let fired: Vec<Timestamp> = fire.calls_of("q");
    assert_eq!(fired.len(), 4);
    assert!(fired
        .windows(2)
        .all(|w| w[1] == w[0] + Duration::from_secs(900)));
    assert_eq!(schedules.all_slots().unwrap().len(), 4);
}

/// Downtime across three slots: `latest_only` fires the latest, `all` each, `skip` none
/// (later than the grace); after it, `skip` fires an on-time slot again.
pub fn misfire_policies_decide_which_missed_slots_fire(engine: &Engine, clock: &ManualClock) {
    let schedules = engine.schedules();
    for m in Misfire::ALL {
        let new = NewSchedule::new(m.as_str(), "ingest", "targets", "every 1h", "UTC");
        schedules.create(&new.misfire(m)).unwrap();
    }
    let fire = Recorder::holding();
    let first = ts("2026-11-22T12:00:00.000Z");
    let now = first + Duration::from_secs(2 * 3600 + 30 * 60);
    clock.set(now);
    let report = schedules.tick_with(&ticker("t"), now, &fire).unwrap();
    assert_eq!(report.materialized, 9);
    let codes = |name: &str| -> Vec<Option<String>> {
        let slots = schedules.slots(name).unwrap();
        slots.into_iter().map(|s| s.outcome_code).collect()
    };
    let held = Some("HELD".to_string());
    let superseded = Some("MISFIRE_SUPERSEDED".to_string());
    let late = Some("MISFIRE_SKIPPED".to_string());
    assert_eq!(
        fire.calls_of("latest_only"),
        [first + Duration::from_secs(7200)]
    );
    assert_eq!(
        codes("latest_only"),
        [superseded.clone(), superseded, held.clone()]
    );
    assert_eq!(fire.calls_of("all").len(), 3);
    assert_eq!(codes("all"), [held.clone(), held.clone(), held.clone()]);
    assert_eq!(fire.calls_of("skip"), []);
    assert_eq!(codes("skip"), [late.clone(), late.clone(), late]);
    assert_eq!(report.slots.len(), 9);
    assert!(report.slots.iter().all(|s| s.status == SlotStatus::Skipped));
    // a slot late by less than the grace (5 minutes by default) fires under `skip`
    let next = first + Duration::from_secs(3 * 3600);
    let at = next + Duration::from_secs(4 * 60);
    clock.set(at);
    let report = schedules.tick_with(&ticker("t"), at, &fire).unwrap();
    assert_eq!(report.materialized, 3);
    assert_eq!(fire.calls_of("skip"), [next]);
    assert_eq!(fire.calls().len(), 4 + 3);
}

/// A slot of a schedule no ticker here handles stays pending (`PIPELINE_NOT_HERE`); disabled,
/// its pending slot is skipped (`SCHEDULE_DISABLED`) and never fired; the slots that fell
/// while it was disabled are never materialized; a rule edit skips a pending slot
/// (`SCHEDULE_EDITED`).
pub fn a_disabled_or_edited_schedules_pending_slot_is_skipped(
    engine: &Engine,
    clock: &ManualClock,
) {
    struct Elsewhere;
    impl Fire for Elsewhere {
        fn fire(&self, _: &Schedule, _: Timestamp) -> FireOutcome {
            unreachable!("handles nothing")
        }
        fn handles(&self, _: &Schedule) -> bool {
            false
        }
    }
    let schedules = engine.schedules();
    schedules.create(&quarterly("q")).unwrap();
    schedules.create(&quarterly("r")).unwrap();
    let slot = ts("2026-11-22T11:45:00.000Z");
    clock.set(slot);
    let report = schedules.tick(slot, &Elsewhere).unwrap();
    assert_eq!(report.materialized, 2);
    assert!(report
        .slots
        .iter()
        .all(|s| s.status == SlotStatus::Pending && s.code.as_deref() == Some(PIPELINE_NOT_HERE)));
    // disabled: its pending slot skipped at once, nothing fired by a ticker that has it
    schedules.disable("q").unwrap();
    let rule = ScheduleEdit {
        rule: Some("every 30m".into()),
        ..ScheduleEdit::default()
    };
    let r = schedules.edit("r", &rule).unwrap();
    assert_eq!(r.next_due_at, Some(ts("2026-11-22T12:00:00.000Z")));
    let q_slots = schedules.slots("q").unwrap();
    assert_eq!(q_slots.len(), 1);
    assert_eq!(q_slots[0].status, SlotStatus::Skipped);
    assert_eq!(
        q_slots[0].outcome_code.as_deref(),
        Some("SCHEDULE_DISABLED")
    );
    assert_eq!(q_slots[0].claimed_at, None);
    let r_slots = schedules.slots("r").unwrap();
    assert_eq!(r_slots[0].outcome_code.as_deref(), Some("SCHEDULE_EDITED"));
    let fire = Recorder::holding();
    let later = slot + Duration::from_secs(3600);
    clock.set(later);
    let report = schedules.tick(later, &fire).unwrap();
    // r: 12:00 and 12:30 are due (latest_only: 12:00 superseded), q: nothing while disabled
    assert_eq!(report.materialized, 2);
    assert_eq!(
        fire.calls(),
        [("r".to_string(), later - Duration::from_secs(900))]
    );
    assert_eq!(schedules.slots("q").unwrap().len(), 1);
    // enabled: its cursor restarts after now, the slots that fell meanwhile never exist
    let q = schedules.enable("q").unwrap();
    assert_eq!(q.next_due_at, Some(later + Duration::from_secs(900)));
    let at = later + Duration::from_secs(900);
    clock.set(at);
    schedules.tick(at, &fire).unwrap();
    assert_eq!(fire.calls_of("q"), [at]);
    assert_eq!(schedules.slots("q").unwrap().len(), 2);
}

/// Each fire outcome is recorded on its slot with its code, and a finished slot is never
/// fired again: a failure (`failed` with the code and message), a panic (`FIRE_PANICKED`),
/// success without a run (`NO_RUN_IDS`), a turn-away without a code (`TURNED_AWAY`).
pub fn fire_failures_are_recorded_with_their_codes(engine: &Engine, clock: &ManualClock) {
    let schedules = engine.schedules();
    for name in ["fails", "panics", "no-runs", "away"] {
        schedules.create(&quarterly(name)).unwrap();
    }
    let calls = AtomicUsize::new(0);
    let fire = |s: &Schedule, _: Timestamp| {
        calls.fetch_add(1, Ordering::SeqCst);
        match s.name.as_str() {
            "fails" => FireOutcome::Failed {
                run_ids: vec![],
                code: "PIPELINE_DOWN".into(),
                message: "the pipeline is down".into(),
            },
            "panics" => panic!("fire blew up"),
            "no-runs" => FireOutcome::Fired { run_ids: vec![] },
            _ => FireOutcome::TurnedAway {
                run_ids: vec![],
                code: String::new(),
            },
        }
    };
    let slot = ts("2026-11-22T11:45:00.000Z");
    clock.set(slot);
    let report = schedules.tick(slot, &fire).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(report.count(SlotStatus::Failed), 3);
    assert_eq!(report.count(SlotStatus::Skipped), 1);
    let outcome = |name: &str| {
        let s = schedules.slots(name).unwrap().remove(0);
        (s.status, s.outcome_code, s.outcome_message)
    };
    assert_eq!(
        outcome("fails"),
        (
            SlotStatus::Failed,
            Some("PIPELINE_DOWN".into()),
            Some("the pipeline is down".into())
        )
    );
    assert_eq!(
        outcome("panics"),
        (
            SlotStatus::Failed,
            Some("FIRE_PANICKED".into()),
            Some("fire blew up".into())
        )
    );
    let (status, code_, _) = outcome("no-runs");
    assert_eq!(
        (status, code_.as_deref()),
        (SlotStatus::Failed, Some("NO_RUN_IDS"))
    );
    assert_eq!(
        outcome("away"),
        (SlotStatus::Skipped, Some("TURNED_AWAY".into()), None)
    );
    // finished slots are final: the next ticks fire nothing of them
    clock.advance(Duration::from_secs(60));
    let again = schedules.tick(engine.now(), &fire).unwrap();
    assert_eq!((again.materialized, again.slots.len()), (0, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// While a slot is being fired its claim is renewed (its `claimed_at` follows the clock),
/// and its schedule cannot be deleted (`ILLEGAL_TRANSITION`); a claim older than the claim
/// timeout that no run names is given back to the next ticker, which fires it (at least
/// once), and the first ticker's late outcome does not overwrite it.
pub fn a_claim_is_renewed_while_firing_and_given_back_when_abandoned(
    engine: &Engine,
    clock: &ManualClock,
) {
    let schedules = engine.schedules();
    schedules.create(&quarterly("q")).unwrap();
    let slot = ts("2026-11-22T11:45:00.000Z");
    clock.set(slot);
    let opts = TickOptions {
        ticker: "a".into(),
        misfire_grace: Duration::from_secs(300),
        claim_timeout: Duration::from_millis(40),
    };
    let seen = Mutex::new(Vec::new());
    let fire = |_: &Schedule, _: Timestamp| {
        seen.lock().unwrap().push(code(schedules.delete("q")));
        // the clock moves on: the keep-alive (every 10 ms here) renews the claim
        clock.advance(Duration::from_secs(5));
        let renewed = slot + Duration::from_secs(5);
        let mut claimed_at = None;
        for _ in 0..300 {
            claimed_at = schedules.all_slots().unwrap()[0].claimed_at;
            if claimed_at == Some(renewed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(claimed_at, Some(renewed), "the claim follows the clock");
        FireOutcome::TurnedAway {
            run_ids: vec![],
            code: "HELD".into(),
        }
    };
    let report = schedules.tick_with(&opts, slot, &fire).unwrap();
    assert_eq!(*seen.lock().unwrap(), ["ILLEGAL_TRANSITION"]);
    let s = &schedules.all_slots().unwrap()[0];
    assert_eq!(report.slots[0].status, SlotStatus::Skipped);
    assert_eq!(s.claimed_at, Some(slot + Duration::from_secs(5)));
    assert_eq!(s.finished_at, Some(slot + Duration::from_secs(5)));

    // ticker `a` dies mid-fire (its fire outlives the claim timeout, the clock does not
    // move so nothing renews it): ticker `b`'s tick gives the claim back and fires it
    let next = slot + Duration::from_secs(900);
    clock.set(next);
    let calls = Mutex::new(Vec::new());
    let b_opts = TickOptions {
        ticker: "b".into(),
        claim_timeout: Duration::from_secs(600),
        ..opts.clone()
    };
    let dying = |_: &Schedule, _: Timestamp| {
        calls.lock().unwrap().push("a");
        let b_fire = |_: &Schedule, _: Timestamp| {
            calls.lock().unwrap().push("b");
            FireOutcome::Failed {
                run_ids: vec![],
                code: "B_FAILED".into(),
                message: "b fired it".into(),
            }
        };
        let b = schedules
            .tick_with(&b_opts, next + Duration::from_secs(601), &b_fire)
            .unwrap();
        assert_eq!(b.slots.len(), 1);
        assert_eq!(b.slots[0].status, SlotStatus::Failed);
        FireOutcome::TurnedAway {
            run_ids: vec![],
            code: "HELD".into(),
        }
    };
    let a_opts = TickOptions {
        claim_timeout: Duration::from_secs(600),
        ..opts
    };
    let a = schedules.tick_with(&a_opts, next, &dying).unwrap();
    assert_eq!(*calls.lock().unwrap(), ["a", "b"]);
    let s = &schedules.slots("q").unwrap()[1];
    assert_eq!(s.due_at, next);
    assert_eq!(s.status, SlotStatus::Failed);
    assert_eq!(s.claimed_by.as_deref(), Some("b"));
    assert_eq!(s.outcome_code.as_deref(), Some("B_FAILED"));
    assert_eq!(
        a.slots[0].code.as_deref(),
        Some("B_FAILED"),
        "a's outcome came too late"
    );
}

/// `spawn`: the background loop ticks on the engine's clock, fires the due slot once on its
/// pool, records it, and stops when told.
pub fn the_schedule_loop_fires_due_slots_and_stops(engine: &Engine, clock: &ManualClock) {
    engine.schedules().create(&quarterly("l")).unwrap();
    let fire = Arc::new(Recorder::holding());
    let opts = LoopOptions {
        tick: ticker("loop"),
        poll: Duration::from_millis(5),
        ..LoopOptions::default()
    };
    let handle = engine.schedules().spawn(fire.clone(), opts).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(fire.calls().is_empty(), "nothing is due yet");
    let slot = ts("2026-11-22T11:45:00.000Z");
    clock.set(slot);
    let finished = || {
        let slots = engine.schedules().all_slots().unwrap();
        slots
            .first()
            .is_some_and(|s| s.status == SlotStatus::Skipped)
    };
    let mut tries = 0;
    while !finished() {
        tries += 1;
        assert!(tries < 2000, "the loop never fired the due slot");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    handle.stop();
    assert_eq!(fire.calls(), [("l".to_string(), slot)]);
    let s = engine.schedules().all_slots().unwrap().remove(0);
    assert_eq!(s.claimed_by.as_deref(), Some("loop"));
    assert_eq!(s.outcome_code.as_deref(), Some("HELD"));
}

/// The host's usual `Fire`, `ScheduledRuns`: a due slot runs its pipeline for its scope
/// (trigger `schedule`, the run naming the slot, started behind the slot's claim), the slot
/// records the run, and a later tick fires nothing again.
pub fn a_due_slot_runs_its_pipeline_once_and_names_the_runs(engine: &Engine, clock: &ManualClock) {
    let schedules = engine.schedules();
    schedules
        .create(&NewSchedule::new(
            "nightly",
            "ingest",
            "both",
            "every 15m",
            "UTC",
        ))
        .unwrap();
    let fire = runledger::ScheduledRuns::new(engine.clone()).register(
        Pipeline::builder("ingest")
            .stage("fetch", |ctx| {
                Ok(StageOutput::with_detail(
                    json!({"scope": ctx.scope().to_string()}),
                ))
            })
            .build()
            .unwrap(),
    );
    let slot = ts("2026-11-22T11:45:00.000Z");
    clock.set(slot + Duration::from_secs(1));
    let report = schedules.tick_with(&ticker("t1"), slot, &fire).unwrap();
    assert_eq!(report.slots.len(), 1);
    assert_eq!(report.slots[0].status, SlotStatus::Fired, "{report:?}");
    let fired = &schedules.slots("nightly").unwrap()[0];
    assert_eq!(fired.run_ids.len(), 2, "targets then universe");
    for (id, scope) in fired.run_ids.iter().zip([Scope::Targets, Scope::Universe]) {
        let run = engine.runs().get(*id).unwrap();
        assert_eq!(
            (run.status, run.scope, run.trigger),
            (RunStatus::Success, scope, TriggerKind::Schedule)
        );
        assert_eq!(run.meta["slotId"], json!(fired.id));
    }
    let again = schedules
        .tick_with(&ticker("t2"), slot + Duration::from_secs(60), &fire)
        .unwrap();
    assert!(again.slots.is_empty(), "a fired slot is never fired again");
    let runs = engine.runs().list(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 2);
}

/// The module catalog and the preflight gate: stale or untested modules are probed (the
/// results kept), a scope with a module not ready is blocked at the gate, the other runs;
/// readiness reads the kept probes.
pub fn the_preflight_gate_probes_modules_and_blocks_a_scope_not_ready(
    engine: &Engine,
    clock: &ManualClock,
) {
    use runledger::run::{Module, PreflightConfig, ProbeError, ProbeSet};
    let runs = engine.runs();
    for (module, scopes) in [
        ("ib_flex", vec![Scope::Targets, Scope::Universe]),
        ("quotes", vec![Scope::Targets]),
    ] {
        runs.upsert_module(&Module {
            module: module.into(),
            domain: "d".into(),
            scopes,
            enabled: true,
        })
        .unwrap();
    }
    assert_eq!(runs.modules().unwrap().len(), 2);
    assert_eq!(code(runs.set_module_enabled("nope", false)), "NOT_FOUND");
    let calls = Arc::new(AtomicUsize::new(0));
    let (c1, c2, k) = (calls.clone(), calls.clone(), clock.clone());
    let probes = ProbeSet::new()
        .with("ib_flex", move || {
            c1.fetch_add(1, Ordering::SeqCst);
            k.advance(Duration::from_millis(40));
            Ok(())
        })
        .with("quotes", move || {
            c2.fetch_add(1, Ordering::SeqCst);
            Err(ProbeError::new("HTTP_503", "quotes unavailable"))
        });
    let p = Pipeline::builder("gated_by_probes")
        .preflight(probes, PreflightConfig::default())
        .stage("work", |_| Ok(StageOutput::done()))
        .build()
        .unwrap();
    let out = runs
        .trigger(&p, ScopeSelector::Both, TriggerKind::Manual)
        .unwrap();
    let targets = out[0].result.as_ref().unwrap();
    assert_eq!(targets.status, RunStatus::Failed);
    assert_eq!(targets.meta["blockedStage"], "preflight");
    assert_eq!(targets.error_code.as_deref(), Some("PREFLIGHT_NOT_READY"));
    let universe = out[1].result.as_ref().unwrap();
    assert_eq!(universe.status, RunStatus::Success, "{universe:?}");
    // targets probed both modules; universe found ib_flex fresh and probed nothing
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let ready = runs
        .readiness(Scope::Universe, &PreflightConfig::default())
        .unwrap();
    assert!(ready.ready, "{ready:?}");
    let not = runs
        .readiness(Scope::Targets, &PreflightConfig::default())
        .unwrap();
    assert!(!not.ready);
    assert!(not.why_not().contains("quotes"), "{}", not.why_not());
    let id = runs.record_probe("quotes", &Ok(()), 12).unwrap();
    assert!(id > 0);
    let now_ready = runs
        .readiness(Scope::Targets, &PreflightConfig::default())
        .unwrap();
    assert!(now_ready.ready, "{now_ready:?}");
    assert_eq!(code(runs.record_probe("nope", &Ok(()), 1)), "NOT_FOUND");
}

/// Retention: terminal runs finished before the cutoff go with their records, then the
/// payloads no record references; a started run and newer runs stay.
pub fn retention_prunes_old_terminal_runs_and_their_payloads(engine: &Engine, clock: &ManualClock) {
    let store = |bytes: &'static [u8]| {
        Pipeline::builder("keep")
            .stage("s", move |ctx| {
                ctx.store_raw(&runledger::run::RawInput {
                    source: "t",
                    upstream_ref: None,
                    content_type: "text/plain",
                    bytes,
                })?;
                Ok(StageOutput::done())
            })
            .build()
            .unwrap()
    };
    let runs = engine.runs();
    let old = runs
        .trigger(&store(b"old"), ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap()[0]
        .result
        .as_ref()
        .unwrap()
        .id;
    clock.advance(Duration::from_secs(3600));
    let cutoff = engine.now();
    clock.advance(Duration::from_secs(60));
    let new = runs
        .trigger(&store(b"new"), ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap()[0]
        .result
        .as_ref()
        .unwrap()
        .id;
    let report = runs.prune(cutoff).unwrap();
    assert_eq!((report.runs, report.records, report.payloads), (1, 1, 1));
    assert_eq!(code(runs.get(old)), "NOT_FOUND");
    assert_eq!(runs.raw_records(new).unwrap().len(), 1);
    assert_eq!(
        code(runs.raw_payload(&runledger::run::raw::sha256_hex(b"old"))),
        "NOT_FOUND"
    );
    assert_eq!(
        runs.prune(cutoff).unwrap(),
        runledger::run::PruneReport::default()
    );
}

/// An operator ends a started run at once (`abandon`: its holder is gone; `interrupt`), its
/// open stage closed failed with the code; the holder, still running, finds its lease lost
/// and stops. Only a started run can be ended; the arguments are checked first.
pub fn an_operator_ends_a_started_run_at_once(engine: &Engine, _clock: &ManualClock) {
    let runs = engine.runs();
    assert_eq!(code(runs.abandon(424242, "gone", "op")), "NOT_FOUND");
    let p = Pipeline::builder("ended")
        .stage("long", |ctx| {
            let runs = ctx.engine().runs();
            assert_eq!(
                code(runs.abandon(ctx.run_id(), "  ", "op")),
                "INVALID_INPUT"
            );
            let ended = runs.abandon(ctx.run_id(), "host died", "op").unwrap();
            assert_eq!(ended.status, RunStatus::Failed);
            assert_eq!(ended.error_code.as_deref(), Some("ABANDONED"));
            assert_eq!(
                ended.error_message.as_deref(),
                Some("abandon by op: host died")
            );
            assert_eq!(ended.meta["endedBy"], "op");
            assert_eq!(ended.meta["openStage"], "long");
            assert_eq!(
                code(runs.interrupt(ctx.run_id(), "again", "op")),
                "ILLEGAL_TRANSITION"
            );
            Ok(StageOutput::done())
        })
        .stage("never", |_| panic!("an ended run runs no further stage"))
        .build()
        .unwrap();
    let out = runs
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run = out[0].result.as_ref().unwrap();
    assert_eq!(run.error_code.as_deref(), Some("ABANDONED"));
    assert_eq!(stages(run), [("long".into(), "failed".into(), 1)]);
    assert_eq!(run.timeline[0].error_code.as_deref(), Some("ABANDONED"));
    // the lock is free: the next trigger runs
    let q = Pipeline::builder("ended")
        .stage("s", |ctx| {
            let ended = ctx
                .engine()
                .runs()
                .interrupt(ctx.run_id(), "ctrl-c", "cli")
                .unwrap();
            assert_eq!(ended.error_code.as_deref(), Some("INTERRUPTED"));
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let again = runs
        .trigger(&q, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    assert_eq!(
        again[0].result.as_ref().unwrap().error_code.as_deref(),
        Some("INTERRUPTED")
    );
}

fn ids(jobs: &[runledger::Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

/// Counts per state and kind (`stats`, `stats_for_user`), the per-user listings newest
/// first, `running` and `stale` stalest first, `resumable`: after a known mix of jobs.
pub fn stats_and_listings_count_a_known_mix_of_jobs(engine: &Engine, clock: &ManualClock) {
    use runledger::job::StateCounts;
    let jobs = engine.jobs();
    let start = engine.now();
    let make = |user: &str, kind: &str| jobs.create(&NewJob::new(user, kind, json!({}))).unwrap();
    let claim = |kind: &str| jobs.claim("w", &[kind]).unwrap().unwrap();
    // each job is claimed before the next of its kind is created
    let done = make("u1", "a");
    jobs.complete(&claim("a"), &json!({})).unwrap();
    let failed = make("u1", "b");
    jobs.fail(&claim("b"), "E_X", "broke").unwrap();
    clock.advance(Duration::from_secs(1));
    let run_old = make("u2", "a");
    claim("a");
    clock.advance(Duration::from_secs(1));
    let paused_cp = make("u2", "b");
    let c = claim("b");
    jobs.checkpoint(&c, &json!({"at": 1})).unwrap();
    jobs.pause(paused_cp.id, "op").unwrap();
    let paused_bare = make("u2", "a");
    claim("a");
    jobs.pause(paused_bare.id, "op").unwrap();
    clock.advance(Duration::from_secs(1));
    let run_new = make("u1", "a");
    let live = claim("a");
    let waiting = make("u1", "a");
    let cancelled = make("u1", "b");
    jobs.cancel(cancelled.id, "op", None).unwrap();
    clock.advance(Duration::from_secs(10));

    let counts = |c: [u64; 6]| StateCounts {
        created: c[0],
        running: c[1],
        paused: c[2],
        completed: c[3],
        failed: c[4],
        cancelled: c[5],
    };
    let stats = jobs.stats().unwrap();
    assert_eq!(stats.total, 8);
    assert_eq!(stats.by_state, counts([1, 2, 2, 1, 1, 1]));
    assert_eq!(
        stats.by_kind.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(stats.by_kind["a"], counts([1, 2, 1, 1, 0, 0]));
    assert_eq!(stats.by_kind["b"], counts([0, 0, 1, 0, 1, 1]));
    assert_eq!(
        stats.oldest_running_heartbeat,
        Some(start + Duration::from_secs(1))
    );
    let u1 = jobs.stats_for_user("u1").unwrap();
    assert_eq!(u1.total, 5);
    assert_eq!(u1.by_state, counts([1, 1, 0, 1, 1, 1]));
    assert_eq!(u1.by_kind["a"], counts([1, 1, 0, 1, 0, 0]));
    assert_eq!(
        u1.oldest_running_heartbeat,
        Some(start + Duration::from_secs(3))
    );
    let u2 = jobs.stats_for_user("u2").unwrap();
    assert_eq!((u2.total, u2.by_state.paused), (3, 2));
    assert_eq!(
        jobs.stats_for_user("nobody").unwrap(),
        runledger::JobStats::default()
    );

    assert_eq!(
        ids(&jobs.list_by_user("u1", 100).unwrap()),
        [cancelled.id, waiting.id, run_new.id, failed.id, done.id]
    );
    assert_eq!(
        ids(&jobs.list_by_user("u1", 2).unwrap()),
        [cancelled.id, waiting.id]
    );
    assert_eq!(
        ids(&jobs.active("u1", 100).unwrap()),
        [waiting.id, run_new.id]
    );
    assert_eq!(
        ids(&jobs.active("u2", 100).unwrap()),
        [paused_bare.id, paused_cp.id, run_old.id]
    );
    assert_eq!(ids(&jobs.active("u2", 1).unwrap()), [paused_bare.id]);
    assert_eq!(ids(&jobs.completed("u1", 100).unwrap()), [done.id]);
    assert_eq!(ids(&jobs.failed("u1", 100).unwrap()), [failed.id]);
    assert!(jobs.completed("u2", 100).unwrap().is_empty());
    assert!(jobs.list_by_user("nobody", 100).unwrap().is_empty());
    let listed = jobs.failed("u1", 100).unwrap().remove(0);
    assert_eq!(listed, jobs.get(failed.id).unwrap(), "the whole job");
    assert_eq!(listed.error_code.as_deref(), Some("E_X"));

    // running and stale: stalest heartbeat first
    assert_eq!(ids(&jobs.running().unwrap()), [run_old.id, run_new.id]);
    assert_eq!(
        ids(&jobs.stale(Duration::from_secs(5)).unwrap()),
        [run_old.id, run_new.id]
    );
    jobs.heartbeat(&live).unwrap();
    assert_eq!(
        ids(&jobs.stale(Duration::from_secs(5)).unwrap()),
        [run_old.id]
    );
    assert_eq!(ids(&jobs.running().unwrap()), [run_old.id, run_new.id]);
    assert!(jobs.stale(Duration::from_secs(3600)).unwrap().is_empty());
    let resumable = jobs.resumable().unwrap();
    assert_eq!(ids(&resumable), [paused_cp.id]);
    assert_eq!(resumable[0].checkpoint, Some(json!({"at": 1})));
    // a resume empties the list; the counts follow the jobs
    jobs.resume(paused_cp.id, "op").unwrap();
    assert!(jobs.resumable().unwrap().is_empty());
    let after = jobs.stats().unwrap();
    assert_eq!(after.by_state, counts([2, 2, 1, 1, 1, 1]));
    assert_eq!(after.total, 8);
}

/// `create_many` stores every job with its `created` event, in the order given, or none:
/// a bad job is refused with its index in the field before anything is written, and a
/// refusal half way through the inserts leaves nothing either.
pub fn create_many_is_all_or_nothing(engine: &Engine, _clock: &ManualClock) {
    let jobs = engine.jobs();
    let parent = jobs.create(&job("p")).unwrap();
    let batch = [
        NewJob::new("u1", "m", json!({"n": 1})),
        NewJob::new("u2", "n", json!({"n": 2})).tags(["x"]),
        NewJob::new("u1", "m", json!({"n": 3})).parent(parent.id),
    ];
    let made = jobs.create_many(&batch).unwrap();
    assert_eq!(made.len(), 3);
    assert!(made.windows(2).all(|w| w[0].id < w[1].id), "in order");
    for (j, n) in made.iter().zip(&batch) {
        assert_eq!(
            (&j.user_id, &j.kind, &j.input, &j.tags, j.parent_id),
            (&n.user_id, &n.kind, &n.input, &n.tags, n.parent_id)
        );
        assert_eq!((j.state, j.attempt), (JobState::Created, 0));
        assert_eq!(jobs.get(j.id).unwrap(), *j);
        let events = engine.events().since(j.id, 0, 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].payload,
            json!({"kind": n.kind, "user_id": n.user_id})
        );
    }
    assert!(jobs.create_many(&[]).unwrap().is_empty());
    let stored = || jobs.list(None, None, None, 100).unwrap().len();
    assert_eq!(stored(), 4);

    // refused before any write: the first bad job, by index
    let bad = [
        job("fine"),
        NewJob::new("u1", "bad kind!", json!({})),
        NewJob::new("", "x", json!({})),
    ];
    match jobs.create_many(&bad) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "jobs[1].kind"),
        other => panic!("refused INVALID_INPUT, got {other:?}"),
    }
    let untagged = [job("fine"), job("fine").tags(["t".repeat(65)])];
    match jobs.create_many(&untagged) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "jobs[1].tags[0]"),
        other => panic!("refused INVALID_INPUT, got {other:?}"),
    }
    // refused by the third insert (its parent does not exist): the first two go too
    let late = [
        job("fine"),
        job("fine"),
        job("fine").parent(parent.id + 1000),
    ];
    match jobs.create_many(&late) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "parent_id"),
        other => panic!("refused INVALID_INPUT, got {other:?}"),
    }
    assert_eq!(stored(), 4, "nothing of a refused batch is stored");
    assert!(jobs.claim("w", &["fine"]).unwrap().is_none());
    let next = jobs.create(&job("after")).unwrap();
    assert_eq!(ids(&jobs.list_by_user("u1", 1).unwrap()), [next.id]);
}

/// `mark_failed`, `resume_on`, `delete` and `reset_recovery_count`: what each allows, its
/// events, and its refusals, which change nothing.
pub fn operator_fail_resume_on_delete_and_reset_follow_the_machine(
    engine: &Engine,
    clock: &ManualClock,
) {
    let jobs = engine.jobs();
    // mark_failed: running or paused only
    let created = jobs.create(&job("f")).unwrap();
    assert_eq!(
        code(jobs.mark_failed(created.id, "op", "LOST", "gone")),
        "ILLEGAL_TRANSITION"
    );
    assert_eq!(
        jobs.get(created.id).unwrap(),
        created,
        "refusal changes nothing"
    );
    let running = jobs.claim("w1", &["f"]).unwrap().unwrap();
    assert_eq!(
        code(jobs.mark_failed(created.id, "op", "bad code!", "m")),
        "INVALID_INPUT"
    );
    assert_eq!(
        code(jobs.mark_failed(created.id, "", "LOST", "m")),
        "INVALID_INPUT"
    );
    clock.advance(Duration::from_secs(1));
    let failed = jobs.mark_failed(created.id, "op", "LOST", "gone").unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        (
            failed.error_code.as_deref(),
            failed.error_message.as_deref()
        ),
        (Some("LOST"), Some("gone"))
    );
    assert_eq!(failed.finished_at, Some(engine.now()));
    assert_eq!(code(jobs.heartbeat(&running)), "JOB_NOT_RUNNING");
    let last = engine.events().since(created.id, 2, 10).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].kind.to_string(), &last[0].payload),
        (
            "failed".to_string(),
            &json!({"code": "LOST", "message": "gone", "by": "op"})
        )
    );
    assert_eq!(
        code(jobs.mark_failed(created.id, "op", "LOST", "again")),
        "ILLEGAL_TRANSITION"
    );
    assert_eq!(
        code(jobs.mark_failed(created.id + 1000, "op", "LOST", "m")),
        "NOT_FOUND"
    );
    let p = jobs.create(&job("fp")).unwrap();
    jobs.claim("w1", &["fp"]).unwrap().unwrap();
    jobs.pause(p.id, "op").unwrap();
    let from_paused = jobs.mark_failed(p.id, "op", "ABANDONED", "never").unwrap();
    assert_eq!(from_paused.state, JobState::Failed);
    // a failed job restarts from scratch: the error goes
    let again = jobs.restart(p.id, "op", None).unwrap();
    assert_eq!((again.error_code, again.finished_at), (None, None));

    // resume_on: paused -> running on a worker, next attempt, checkpoint handed over
    let r = jobs.create(&job("r")).unwrap();
    assert_eq!(code(jobs.resume_on(r.id, "w2", "op")), "ILLEGAL_TRANSITION");
    let first = jobs.claim("w1", &["r"]).unwrap().unwrap();
    assert_eq!(code(jobs.resume_on(r.id, "w2", "op")), "ILLEGAL_TRANSITION");
    jobs.checkpoint(&first, &json!({"page": 7})).unwrap();
    jobs.pause(r.id, "op").unwrap();
    assert_eq!(code(jobs.resume_on(r.id, "", "op")), "INVALID_INPUT");
    assert_eq!(code(jobs.resume_on(r.id, "w2", "")), "INVALID_INPUT");
    assert_eq!(jobs.get(r.id).unwrap().state, JobState::Paused);
    clock.advance(Duration::from_secs(1));
    let second = jobs.resume_on(r.id, "w2", "op").unwrap();
    assert_eq!((second.id(), second.attempt), (r.id, 2));
    assert_eq!(second.job.state, JobState::Running);
    assert_eq!(second.job.worker_id.as_deref(), Some("w2"));
    assert_eq!(second.job.heartbeat_at, Some(engine.now()));
    assert_eq!(second.checkpoint(), Some(&json!({"page": 7})));
    assert_eq!(second.job, jobs.get(r.id).unwrap());
    let events = engine.events().since(r.id, 0, 100).unwrap();
    let tail: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| (e.kind.to_string(), e.payload.clone()))
        .collect();
    assert_eq!(
        tail,
        [
            (
                "resumed".to_string(),
                json!({"by": "op", "from": "paused", "to": "running"})
            ),
            ("claimed".to_string(), json!({"worker": "w2", "attempt": 2})),
        ]
    );
    assert_eq!(code(jobs.complete(&first, &json!({}))), "STALE_ATTEMPT");
    assert_eq!(code(jobs.resume_on(r.id, "w3", "op")), "ILLEGAL_TRANSITION");
    assert_eq!(code(jobs.resume_on(r.id + 1000, "w3", "op")), "NOT_FOUND");
    jobs.complete(&second, &json!({"ok": true})).unwrap();

    // reset_recovery_count: any job but a completed one
    let supervisor = Supervisor::new(engine.clone(), SupervisorOptions::default()).unwrap();
    let s = jobs.create(&job("s")).unwrap();
    let c = jobs.claim("w1", &["s"]).unwrap().unwrap();
    jobs.checkpoint(&c, &json!({})).unwrap();
    supervisor.recover_now(s.id, "op").unwrap();
    assert_eq!(jobs.get(s.id).unwrap().recovery_count, 1);
    assert_eq!(
        code(supervisor.reset_recovery_count(s.id, "")),
        "INVALID_INPUT"
    );
    clock.advance(Duration::from_secs(1));
    supervisor.reset_recovery_count(s.id, "op").unwrap();
    let reset = jobs.get(s.id).unwrap();
    assert_eq!((reset.state, reset.recovery_count), (JobState::Paused, 0));
    assert_eq!(reset.updated_at, engine.now());
    assert_eq!(
        code(supervisor.reset_recovery_count(r.id, "op")),
        "ILLEGAL_TRANSITION"
    );
    assert_eq!(
        code(supervisor.reset_recovery_count(r.id + 1000, "op")),
        "NOT_FOUND"
    );

    // delete: terminal jobs only; the job and its events go, a child loses its parent
    assert_eq!(code(jobs.delete(s.id, "op")), "ILLEGAL_TRANSITION");
    assert_eq!(
        kinds_of(engine, s.id).len(),
        4,
        "a refused delete keeps the events"
    );
    assert_eq!(code(jobs.delete(r.id, "")), "INVALID_INPUT");
    let child = jobs.create(&job("child").parent(r.id)).unwrap();
    jobs.delete(r.id, "op").unwrap();
    assert_eq!(code(jobs.get(r.id)), "NOT_FOUND");
    assert_eq!(code(engine.events().since(r.id, 0, 10)), "NOT_FOUND");
    assert_eq!(jobs.get(child.id).unwrap().parent_id, None);
    assert_eq!(code(jobs.delete(r.id, "op")), "NOT_FOUND");
    jobs.cancel(child.id, "op", None).unwrap();
    jobs.delete(child.id, "op").unwrap();
    jobs.delete(created.id, "op").unwrap();
    assert_eq!(
        ids(&jobs.list(None, None, None, 100).unwrap()),
        [s.id, p.id]
    );
}

/// `diagnostics`: the job and its events in the stable, redacted shape (ids left out, times
/// relative to the job's creation), the same document on every backend.
pub fn diagnostics_show_a_job_in_its_stable_shape(engine: &Engine, clock: &ManualClock) {
    let jobs = engine.jobs();
    let parent = jobs.create(&job("p")).unwrap();
    let j = jobs
        .create(
            &NewJob::new("u9", "diag", json!({"file": "a.csv"}))
                .parent(parent.id)
                .tags(["t1"]),
        )
        .unwrap();
    clock.advance(Duration::from_millis(250));
    let c = jobs.claim("w1", &["diag"]).unwrap().unwrap();
    clock.advance(Duration::from_millis(250));
    jobs.progress(&c, 50, Some("half")).unwrap();
    jobs.checkpoint(&c, &json!({"row": 10})).unwrap();
    clock.advance(Duration::from_millis(500));
    jobs.fail(&c, "E_PARSE", "bad row").unwrap();
    let d = jobs.diagnostics(j.id).unwrap();
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({
            "version": 1,
            "kind": "diag",
            "user_id": "u9",
            "state": "failed",
            "attempt": 1,
            "recovery_count": 0,
            "progress": 50,
            "step": "half",
            "tags": ["t1"],
            "parent": "[id]",
            "worker_id": "w1",
            "input": {"file": "a.csv"},
            "result": null,
            "checkpoint": {"row": 10},
            "error": {"code": "E_PARSE", "message": "bad row"},
            "cancel_reason": null,
            "times": {
                "started_ms": 250,
                "heartbeat_ms": 500,
                "checkpoint_ms": 500,
                "finished_ms": 1000,
                "updated_ms": 1000
            },
            "events_pruned": 0,
            "events": [
                {"seq": 1, "kind": "created", "at_ms": 0,
                 "payload": {"kind": "diag", "user_id": "u9"}},
                {"seq": 2, "kind": "claimed", "at_ms": 250,
                 "payload": {"attempt": 1, "worker": "w1"}},
                {"seq": 3, "kind": "progress", "at_ms": 500,
                 "payload": {"progress": 50, "step": "half"}},
                {"seq": 4, "kind": "checkpoint", "at_ms": 500, "payload": {"bytes": 10}},
                {"seq": 5, "kind": "failed", "at_ms": 1000,
                 "payload": {"code": "E_PARSE", "message": "bad row"}}
            ]
        })
    );
    assert_eq!(code(jobs.diagnostics(j.id + 1000)), "NOT_FOUND");
}

/// The audit rows of a job (`action`, `actor`, `detail`), oldest first, as a backend's
/// test reads them from its `audit_log`.
pub type AuditRows<'a> = &'a dyn Fn(i64) -> Vec<(String, String, serde_json::Value)>;

/// Every operator call of the jobs API leaves one audit row (the deleted job's stay, and
/// one more records the deletion); refusals leave none. Run by each backend's tests with
/// its own reader of `audit_log` (the public API has none).
pub fn operator_job_calls_are_audited(engine: &Engine, _clock: &ManualClock, audit: AuditRows<'_>) {
    let jobs = engine.jobs();
    let supervisor = Supervisor::new(engine.clone(), SupervisorOptions::default()).unwrap();
    let j = jobs.create(&job("au")).unwrap();
    let first = jobs.claim("w1", &["au"]).unwrap().unwrap();
    jobs.checkpoint(&first, &json!({"at": 1})).unwrap();
    jobs.pause(j.id, "alice").unwrap();
    assert!(jobs.mark_failed(j.id, "bob", "bad code!", "m").is_err());
    assert!(jobs.resume_on(j.id, "", "bob").is_err());
    assert!(jobs.delete(j.id, "bob").is_err());
    jobs.resume_on(j.id, "w2", "bob").unwrap();
    supervisor.recover_now(j.id, "carol").unwrap();
    supervisor.reset_recovery_count(j.id, "dave").unwrap();
    jobs.mark_failed(j.id, "erin", "ABANDONED", "not needed")
        .unwrap();
    assert!(supervisor
        .reset_recovery_count(j.id + 1000, "dave")
        .is_err());
    jobs.delete(j.id, "frank").unwrap();
    let row = |action: &str, actor: &str, detail: serde_json::Value| {
        (action.to_string(), actor.to_string(), detail)
    };
    assert_eq!(
        audit(j.id),
        [
            row("pause", "alice", json!({"from": "running"})),
            row("resume", "bob", json!({"worker": "w2"})),
            row("recover", "carol", json!({"to": "paused", "code": null})),
            row("reset_recovery_count", "dave", json!({})),
            row(
                "fail",
                "erin",
                json!({"from": "paused", "code": "ABANDONED", "message": "not needed"})
            ),
            row("delete", "frank", json!({"state": "failed", "kind": "au"})),
        ]
    );
    assert_eq!(code(jobs.get(j.id)), "NOT_FOUND");
}
