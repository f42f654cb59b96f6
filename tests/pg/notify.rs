//! LISTEN/NOTIFY (migrations/postgres/P2__notify.sql, `PgListener`): a waiter wakes when
//! another connection commits a job, never for a rolled-back one, and not before COMMIT;
//! waiting ends at its timeout; a worker loop driven by wake-ups.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use runledger::pg::{PgListener, PgWorker, Wake};
use runledger::{NewJob, SupervisorOptions};
use serde_json::json;

use crate::common::TestDb;

/// Wake latencies above this fail the test (measured: a few ms on loopback).
const WAKE_BOUND: Duration = Duration::from_millis(500);

#[test]
fn pg_waiter_wakes_soon_after_another_connection_creates_a_job() {
    let Some(db) = TestDb::new("notify_wake") else {
        return;
    };
    let engine = db.engine();
    // wake time after `create` returned (its COMMIT acknowledged), and after it was called
    let (mut latencies, mut from_call) = (Vec::new(), Vec::new());
    for round in 0..20 {
        let url = db.url.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let mut listener = PgListener::open(&url).unwrap();
            ready_tx.send(()).unwrap();
            let woke = listener
                .wait_for_work(&["report"], Duration::from_secs(10))
                .unwrap();
            (woke, Instant::now())
        });
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // a job of another kind does not wake a waiter for `report`
        engine
            .jobs()
            .create(&NewJob::new("u", "other", json!({})))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let sent = Instant::now();
        engine
            .jobs()
            .create(&NewJob::new("u", "report", json!({"round": round})))
            .unwrap();
        let committed = Instant::now();
        let (woke, at) = waiter.join().unwrap();
        assert!(woke);
        latencies.push(at.saturating_duration_since(committed));
        from_call.push(at.saturating_duration_since(sent));
    }
    latencies.sort();
    from_call.sort();
    let median = latencies[latencies.len() / 2];
    let max = *latencies.last().unwrap();
    eprintln!(
        "NOTIFY wake after create returned: median {median:?}, max {max:?}; after create was called: median {:?}, max {:?} (20 rounds)",
        from_call[from_call.len() / 2],
        from_call.last().unwrap()
    );
    assert!(max < WAKE_BOUND, "a waiter woke {max:?} after the commit");
}

#[test]
fn pg_notify_arrives_only_after_commit_and_never_for_a_rollback() {
    let Some(mut db) = TestDb::new("notify_commit") else {
        return;
    };
    let _engine = db.engine(); // migrates
    let mut listener = PgListener::open(&db.url).unwrap();
    let insert = "insert into jobs (user_id, kind, created_at, updated_at)
                  values ('u', 'report', '2026-11-20T10:00:00.000Z', '2026-11-20T10:00:00.000Z')";
    // rolled back: nothing arrives
    let mut tx = db.raw.transaction().unwrap();
    tx.execute(insert, &[]).unwrap();
    tx.rollback().unwrap();
    let t = Instant::now();
    assert!(!listener
        .wait_for_work(&[], Duration::from_millis(300))
        .unwrap());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "waited the whole timeout"
    );
    // held open: nothing until COMMIT, then the wake
    let url = db.url.clone();
    let (done_tx, done_rx) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute(insert, &[]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let committing = Instant::now();
        tx.commit().unwrap();
        done_tx.send(committing).unwrap();
    });
    let woke = listener
        .wait_for_work(&["report"], Duration::from_secs(5))
        .unwrap();
    let woke_at = Instant::now();
    writer.join().unwrap();
    let committing = done_rx.recv().unwrap();
    assert!(woke);
    assert!(woke_at >= committing, "woken before the writer committed");
}

#[test]
fn pg_waiting_ends_at_the_timeout_and_events_notify_too() {
    let Some(mut db) = TestDb::new("notify_timeout") else {
        return;
    };
    let engine = db.engine();
    let mut listener = PgListener::open(&db.url).unwrap();
    for ms in [0u64, 50, 250] {
        let t = Instant::now();
        assert!(!listener
            .wait_for_work(&[], Duration::from_millis(ms))
            .unwrap());
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(ms) && took < Duration::from_millis(ms + 200),
            "{ms} ms: {took:?}"
        );
    }
    // events: created (seq 1), then claimed (seq 2)
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    assert_eq!(
        listener
            .wait_for_event(Some(job.id), Duration::from_secs(2))
            .unwrap(),
        Some((job.id, 1))
    );
    engine.jobs().claim("w", &[]).unwrap().unwrap();
    assert_eq!(
        listener
            .wait_for_event(Some(job.id), Duration::from_secs(2))
            .unwrap(),
        Some((job.id, 2))
    );
    // a job put back to `created` by a supervisor wakes workers again
    let (old, _) = db.engine_at(&(engine.now() - Duration::from_secs(3600)).to_string());
    old.jobs()
        .create(&NewJob::new("u", "again", json!({})))
        .unwrap();
    let c = old.jobs().claim("w", &["again"]).unwrap().unwrap();
    db.raw
        .execute(
            "update jobs set checkpoint = '{}', checkpoint_at = created_at where id = $1",
            &[&c.id()],
        )
        .unwrap();
    // drain what the setup sent
    while listener
        .wait_for_work(&[], Duration::from_millis(50))
        .unwrap()
    {}
    let sup = engine
        .supervisor(SupervisorOptions {
            policy: runledger::RecoveryPolicy::AutoResume,
            ..SupervisorOptions::default()
        })
        .unwrap();
    assert_eq!(sup.tick(engine.now()).unwrap().recovered.len(), 1);
    assert_eq!(
        listener
            .wait(Duration::from_secs(2), |w| matches!(w, Wake::Work { .. }))
            .unwrap(),
        Some(Wake::Work {
            kind: "again".into()
        })
    );
    // another schema's ledger on the same database does not wake this one
    let Some(other) = TestDb::new("notify_other") else {
        return;
    };
    other
        .engine()
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    assert!(!listener
        .wait_for_work(&[], Duration::from_millis(200))
        .unwrap());
}

#[test]
fn pg_worker_loop_runs_jobs_as_they_arrive() {
    let Some(db) = TestDb::new("notify_worker") else {
        return;
    };
    let engine = db.engine();
    let worker = PgWorker::new(&db.url, "node-a/w1", &["echo", "boom"]).unwrap();
    let handle = worker
        .spawn(|job| match job.kind.as_str() {
            "boom" => Err(runledger::JobFailure::new("BOOM", "it blew up")),
            _ => Ok(json!({"echo": job.input})),
        })
        .unwrap();
    let mut ids = Vec::new();
    let t = Instant::now();
    for i in 0..10 {
        let kind = if i == 7 { "boom" } else { "echo" };
        ids.push(
            engine
                .jobs()
                .create(&NewJob::new("u", kind, json!({"i": i})))
                .unwrap()
                .id,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = ids
            .iter()
            .filter(|id| engine.jobs().get(**id).unwrap().state.is_terminal())
            .count();
        if done == ids.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t.elapsed();
    let report = handle.stop();
    eprintln!("worker loop: 10 jobs done {elapsed:?} after the first create; {report:?}");
    for (i, id) in ids.iter().enumerate() {
        let job = engine.jobs().get(*id).unwrap();
        if i == 7 {
            assert_eq!(job.error_code.as_deref(), Some("BOOM"));
        } else {
            assert_eq!(job.result, Some(json!({"echo": {"i": i}})));
        }
        assert_eq!(job.worker_id.as_deref(), Some("node-a/w1"));
    }
    assert_eq!(report.completed, 9);
    assert_eq!(report.failed, 1);
}

#[test]
fn pg_worker_heartbeats_while_the_handler_runs_and_drops_a_cancelled_jobs_result() {
    let Some(db) = TestDb::new("notify_worker_cancel") else {
        return;
    };
    let engine = db.engine();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "slow", json!({})))
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let handle = PgWorker::new(&db.url, "w-slow", &["slow"])
        .unwrap()
        .heartbeat_every(Duration::from_millis(50))
        .spawn(move |_job| {
            started_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            Ok(json!({"late": true}))
        })
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let first = engine.jobs().get(job.id).unwrap().heartbeat_at.unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let later = engine.jobs().get(job.id).unwrap().heartbeat_at.unwrap();
    assert!(
        later > first,
        "the heartbeat thread beats while the handler runs"
    );
    engine
        .jobs()
        .cancel(job.id, "ops", Some("not needed"))
        .unwrap();
    release_tx.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let report = handle.stop();
    assert_eq!((report.completed, report.stopped), (0, 1), "{report:?}");
    let job = engine.jobs().get(job.id).unwrap();
    assert_eq!(job.state, runledger::JobState::Cancelled);
    assert_eq!(job.result, None);
}

/// Schema version 4: an appended event sends its NOTIFY only while an event listener
/// (`PgListener::open`) is registered, so a ledger nobody follows runs its claims and
/// completes without the notify lock; a worker's listener (`open_for_work`) does not
/// register and hears no events; a registration whose session ended is removed by the next.
#[test]
fn pg_events_notify_only_while_an_event_listener_is_registered() {
    let Some(mut db) = TestDb::new("notify_registry") else {
        return;
    };
    let engine = db.engine();
    let mut raw = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    raw.batch_execute("LISTEN runledger_events").unwrap();
    // the payloads of this ledger heard within 300 ms, without the schema: `<job_id>/<seq>`
    // (the channel is database-wide: tests running beside this one notify on it too)
    let heard = |raw: &mut postgres::Client| -> Vec<String> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut notes = raw.notifications();
        let mut iter = notes.timeout_iter(Duration::from_millis(300));
        let mut out = Vec::new();
        while let Ok(Some(n)) = iter.next() {
            if let Some(rest) = n.payload().strip_prefix("rl_notify_registry/") {
                out.push(rest.to_string());
            }
        }
        out
    };
    let run_one = |engine: &runledger::pg::PgEngine| {
        let job = engine
            .jobs()
            .create(&NewJob::new("u", "k", json!({})))
            .unwrap();
        let claim = engine.jobs().claim("w", &[]).unwrap().unwrap();
        engine.jobs().complete(&claim, &json!({})).unwrap();
        job.id
    };
    // nobody registered: a bare LISTEN hears no event (the work channel is another one)
    run_one(&engine);
    assert_eq!(heard(&mut raw), Vec::<String>::new());
    // a worker's listener does not register, and refuses to wait for events
    let mut worker = PgListener::open_for_work(&db.url).unwrap();
    run_one(&engine);
    assert_eq!(heard(&mut raw), Vec::<String>::new());
    assert_eq!(
        worker
            .wait_for_event(None, Duration::from_millis(10))
            .unwrap_err()
            .code(),
        "INVALID_INPUT"
    );
    // an event listener registers: each of the three events notifies, seqs 1, 2, 3
    let mut follower = PgListener::open(&db.url).unwrap();
    assert_eq!(
        db.query_i64("select count(*) from runledger_event_listeners"),
        1
    );
    let id = run_one(&engine);
    assert_eq!(
        heard(&mut raw),
        [format!("{id}/1"), format!("{id}/2"), format!("{id}/3")]
    );
    assert_eq!(
        follower
            .wait_for_event(Some(id), Duration::from_secs(2))
            .unwrap(),
        Some((id, 1))
    );
    // dropped: unregistered, silent again
    drop(follower);
    assert_eq!(
        db.query_i64("select count(*) from runledger_event_listeners"),
        0
    );
    run_one(&engine);
    assert_eq!(heard(&mut raw), Vec::<String>::new());
    // a registration left by a session that ended (a crash, a killed connection) notifies
    // until the next registration removes it
    db.exec("insert into runledger_event_listeners (pid) values (-1)")
        .unwrap();
    run_one(&engine);
    assert_eq!(heard(&mut raw).len(), 3);
    let follower = PgListener::open(&db.url).unwrap();
    assert_eq!(
        db.query_i64("select count(*) from runledger_event_listeners where pid = -1"),
        0
    );
    drop(follower);
    drop(worker);
    // a transaction left open over the table (as an event writer's is until it commits)
    // holds a registration back at most 5 s: BUSY, and the writers behind it go on
    let mut open_tx = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    open_tx
        .batch_execute("begin; select count(*) from runledger_event_listeners")
        .unwrap();
    let started = Instant::now();
    assert_eq!(PgListener::open(&db.url).unwrap_err().code(), "BUSY");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    open_tx.batch_execute("rollback").unwrap();
    run_one(&engine);
    assert_eq!(
        db.query_i64("select count(*) from runledger_event_listeners"),
        0
    );
}
