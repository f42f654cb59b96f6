//! A real server restart (`pg_ctl restart -m fast`, and `-m immediate`: a crash) and a
//! stopped server, on a private cluster (tests/pg/cluster.rs): the engine's call in flight
//! fails `UNREACHABLE` with nothing written, calls while the server is away fail at once,
//! the engine reconnects by itself, a worker's claim survives (the fence accepts its retried
//! complete, also when the handler finishes while the server is down), and a listener
//! reports `Wake::Reconnected`, then hears what comes after.

use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;
use runledger::pg::{PgEngine, PgListener, PgWorker, Wake};
use runledger::{JobState, NewJob};
use serde_json::json;

use crate::cluster::Cluster;
use crate::faults::{blocked_behind, invariant_violations};

/// A call in flight when the server goes away must fail within this (measured: a few ms).
const FAIL_BOUND: Duration = Duration::from_secs(5);

/// Rows of one job's events: (seq, kind).
fn events(raw: &mut Client, job: i64) -> Vec<(i64, String)> {
    raw.query(
        "select seq, kind from job_events where job_id = $1 order by seq",
        &[&job],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Takes what the listener has heard so far, reconnecting if it was lost (so its next wake
/// is about what comes next).
fn drain(listener: &mut PgListener) {
    while listener
        .wait(Duration::from_millis(50), |_| true)
        .unwrap()
        .is_some()
    {}
}

/// After the server went away and came back: the listener's next wait reports
/// `Wake::Reconnected`, and a job of `kind` created next wakes it. The job.
fn listener_carries_on(listener: &mut PgListener, engine: &PgEngine, kind: &str) -> runledger::Job {
    let waited = Instant::now();
    assert_eq!(
        listener.wait(Duration::from_secs(3), |_| true).unwrap(),
        Some(Wake::Reconnected)
    );
    assert!(
        waited.elapsed() < Duration::from_secs(1),
        "{:?}",
        waited.elapsed()
    );
    let job = engine
        .jobs()
        .create(&NewJob::new("u", kind, json!({})))
        .unwrap();
    assert_eq!(
        listener
            .wait(Duration::from_secs(5), |w| matches!(w, Wake::Work { .. }))
            .unwrap(),
        Some(Wake::Work { kind: kind.into() })
    );
    job
}

/// [`restart_round`] until the call is caught in flight: the shutdown ends the holder and
/// the engine's backend at about the same time, and when the holder goes first the blocked
/// `complete` may commit before its own backend is told to stop (seen on a loaded machine),
/// answering `Ok`, or `UNREACHABLE` when its answer was lost with the connection. Such a
/// round must have committed the whole call; at most 5 rounds.
fn restart_mid_complete(cluster: &Cluster, mode: &str) {
    for round in 0..5 {
        if restart_round(cluster, mode, round) {
            return;
        }
        eprintln!("restart -m {mode}: round {round} committed before the shutdown; again");
    }
    panic!("restart -m {mode}: the call was never caught in flight in 5 rounds");
}

/// One round: a `complete` whose transaction has updated the job row and waits (behind a
/// second connection's uncommitted event) is in flight when the server restarts in `mode`.
/// `false` when the call committed whole before the shutdown reached it (checked).
fn restart_round(cluster: &Cluster, mode: &str, round: u32) -> bool {
    let schema = format!("rl_restart_{mode}_{round}");
    let mut raw = cluster.raw(&schema);
    let engine = PgEngine::open(&cluster.url(&schema)).unwrap();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let claim = engine.jobs().claim("w", &["k"]).unwrap().unwrap();
    let mut holder = cluster.raw(&schema);
    let holder_pid: i32 = holder
        .query_one("select pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut hold = holder.transaction().unwrap();
    let h = "0".repeat(64);
    hold.execute(
        "insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
         values ($1, 3, 'progress', '{}', '2026-11-20T10:00:00.000Z', $2, $2)",
        &[&job.id, &h],
    )
    .unwrap();
    let (e2, c2) = (engine.clone(), claim.clone());
    let call = std::thread::spawn(move || {
        let r = e2.jobs().complete(&c2, &json!({"ok": true}));
        (r, Instant::now())
    });
    blocked_behind(&mut raw, holder_pid);
    drop(raw);
    let t = Instant::now();
    cluster.restart(mode);
    let back = t.elapsed();
    let (result, failed_at) = call.join().unwrap();
    if let Ok(done) = &result {
        drop(hold);
        drop(holder);
        let mut raw = cluster.raw(&schema);
        assert_eq!(done.state, JobState::Completed, "{mode}");
        assert_eq!(
            events(&mut raw, job.id),
            [
                (1, "created".into()),
                (2, "claimed".into()),
                (3, "completed".into())
            ],
            "{mode}: a call that returned Ok committed whole"
        );
        return false;
    }
    let err = result.unwrap_err();
    assert_eq!(err.code(), "UNREACHABLE", "{mode}: {err}");
    {
        // The one-statement complete may have committed and lost only its answer (the holder
        // died first, the statement went through, then its own backend was stopped): the
        // outcome a lost connection leaves unknown. Then it committed whole; run a round again.
        let mut raw = cluster.raw(&schema);
        let state: String = raw
            .query_one("select state from jobs where id = $1", &[&job.id])
            .unwrap()
            .get(0);
        if state == "completed" {
            drop(hold);
            drop(holder);
            assert_eq!(
                events(&mut raw, job.id),
                [
                    (1, "created".into()),
                    (2, "claimed".into()),
                    (3, "completed".into())
                ],
                "{mode}: a call whose answer was lost committed whole"
            );
            assert_eq!(
                engine
                    .jobs()
                    .complete(&claim, &json!({"ok": true}))
                    .unwrap_err()
                    .code(),
                "JOB_NOT_RUNNING",
                "{mode}: its retry meets the fence, never a second completion"
            );
            return false;
        }
    }
    assert!(
        failed_at.duration_since(t) < FAIL_BOUND,
        "{mode}: the call failed {:?} after the restart began",
        failed_at.duration_since(t)
    );
    assert!(!err.to_string().contains("postgres://"), "{err}");
    drop(hold);
    drop(holder);
    eprintln!(
        "restart -m {mode}: server back after {back:?}; the call in flight failed after {:?}",
        failed_at.duration_since(t)
    );

    // nothing half-written: running at the same attempt, no result, created + claimed only
    let mut raw = cluster.raw(&schema);
    let row = raw
        .query_one(
            "select state, attempt, result is null from jobs where id = $1",
            &[&job.id],
        )
        .unwrap();
    let (state, attempt, no_result): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (state.as_str(), attempt, no_result),
        ("running", 1, true),
        "{mode}"
    );
    assert_eq!(
        events(&mut raw, job.id),
        [(1, "created".into()), (2, "claimed".into())],
        "{mode}"
    );
    // the engine reconnects by itself; the worker's claim is intact and the fence accepts
    // the retried complete
    assert_eq!(engine.jobs().get(job.id).unwrap().state, JobState::Running);
    let done = engine
        .jobs()
        .complete(&claim, &json!({"ok": true}))
        .unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Completed, 1));
    assert_eq!(
        events(&mut raw, job.id),
        [
            (1, "created".into()),
            (2, "claimed".into()),
            (3, "completed".into())
        ],
        "{mode}"
    );
    let violations = invariant_violations(&mut raw);
    assert!(violations.iter().all(|(_, n)| *n == 0), "{violations:?}");
    assert_eq!(
        engine.schema_version().unwrap(),
        runledger::pg::known_schema_version()
    );
    true
}

#[test]
fn pg_server_restart_mid_transaction_fails_unreachable_writes_nothing_and_reconnects() {
    let Some(cluster) = Cluster::start("restart") else {
        return;
    };
    let t = Instant::now();
    restart_mid_complete(&cluster, "fast");
    restart_mid_complete(&cluster, "immediate");

    // a stopped server: calls fail UNREACHABLE at once and write nothing; after the start
    // the same engine goes on
    let schema = "rl_stopped";
    let mut raw = cluster.raw(schema);
    let engine = PgEngine::open(&cluster.url(schema)).unwrap();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    drop(raw);
    cluster.stop("fast");
    for _ in 0..3 {
        let t = Instant::now();
        let err = engine
            .jobs()
            .create(&NewJob::new("u", "k", json!({})))
            .unwrap_err();
        assert_eq!(err.code(), "UNREACHABLE", "{err}");
        assert!(t.elapsed() < FAIL_BOUND, "{:?}", t.elapsed());
        assert_eq!(engine.jobs().get(job.id).unwrap_err().code(), "UNREACHABLE");
    }
    cluster.start_again();
    let again = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    raw = cluster.raw(schema);
    let ids: Vec<i64> = raw
        .query("select id from jobs order by id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ids,
        [job.id, again.id],
        "nothing written while the server was away"
    );
    eprintln!("restart test: {:?}", t.elapsed());
}

#[test]
fn pg_listener_and_worker_carry_on_across_a_server_restart() {
    let Some(cluster) = Cluster::start("listen") else {
        return;
    };
    let t = Instant::now();
    let schema = "rl_listen";
    let url = cluster.url(schema);
    let mut raw = cluster.raw(schema);
    let engine = PgEngine::open(&url).unwrap();
    let mut listener = PgListener::open(&url).unwrap();

    // a worker holds a claim across the restart: its handler is released after it
    let slow = engine
        .jobs()
        .create(&NewJob::new("u", "slow", json!({})))
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let worker = PgWorker::new(&url, "w-restart", &["slow", "quick"])
        .unwrap()
        .idle_poll(Duration::from_millis(200))
        .spawn(move |job| {
            if job.kind == "slow" {
                started_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
            }
            Ok(json!({"done": job.id}))
        })
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    drain(&mut listener);
    drop(raw);

    cluster.restart("fast");

    // the listener: its next wait reconnects and says so, then hears what is committed after
    let quick = listener_carries_on(&mut listener, &engine, "quick");

    // the worker: its claim survived the restart; released, it completes the job (then the
    // quick one, woken by its notification)
    release_tx.send(()).unwrap();
    let terminal = |id| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.jobs().get(id).unwrap().state.is_terminal() {
            assert!(Instant::now() < deadline, "job {id} never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    terminal(slow.id);
    terminal(quick.id);

    // regression: the handler finishes while the server is stopped; the worker's complete
    // failed UNREACHABLE and the result was dropped (counted stopped, the job left running
    // for a supervisor). The write is now retried until the server is back.
    let late = engine
        .jobs()
        .create(&NewJob::new("u", "slow", json!({})))
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    cluster.stop("fast");
    release_tx.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(700)); // the complete fails, retried each 200 ms
    cluster.start_again();
    terminal(late.id);
    let report = worker.stop();
    for id in [slow.id, quick.id, late.id] {
        let job = engine.jobs().get(id).unwrap();
        assert_eq!(
            (job.state, job.attempt, job.result),
            (JobState::Completed, 1, Some(json!({"done": id}))),
            "{report:?}"
        );
    }
    assert_eq!((report.completed, report.stopped), (3, 0), "{report:?}");
    raw = cluster.raw(schema);
    for id in [slow.id, late.id] {
        assert_eq!(
            events(&mut raw, id),
            [
                (1, "created".into()),
                (2, "claimed".into()),
                (3, "completed".into())
            ]
        );
    }
    let violations = invariant_violations(&mut raw);
    assert!(violations.iter().all(|(_, n)| *n == 0), "{violations:?}");

    // the listener across a crash (immediate), and across a stop: its wait fails UNREACHABLE
    // at once while the server is away (it does not spin to its timeout), then reconnects
    drop(raw);
    drain(&mut listener);
    cluster.restart("immediate");
    listener_carries_on(&mut listener, &engine, "after_crash");
    drain(&mut listener);
    cluster.stop("fast");
    let waited = Instant::now();
    let err = listener.wait(Duration::from_secs(3), |_| true).unwrap_err();
    assert_eq!(err.code(), "UNREACHABLE", "{err}");
    assert!(
        waited.elapsed() < Duration::from_secs(1),
        "{:?}",
        waited.elapsed()
    );
    cluster.start_again();
    listener_carries_on(&mut listener, &engine, "after_stop");
    eprintln!("listener/worker restart test: {:?}", t.elapsed());
}

/// Regression: with a pool, a restart ends every idle connection at once. The first call
/// after it met a dead one at `BEGIN` and was retried, but the retry took the next idle
/// connection, as dead, and failed `UNREACHABLE` although the server was back. The retry
/// now drops the other idle connections and connects anew. Through `Engine::open` on the
/// URL, the seam hosts use.
#[test]
fn regression_a_pool_of_dead_idle_connections_failed_the_first_call_after_a_restart() {
    let Some(cluster) = Cluster::start("pool") else {
        return;
    };
    let schema = "rl_pool";
    let mut raw = cluster.raw(schema);
    let engine = runledger::Engine::open(cluster.url(schema)).unwrap();
    // several threads at once: the engine ends up with several idle connections
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..10 {
                    engine
                        .jobs()
                        .create(&NewJob::new("u", "k", json!({})))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let open: i64 = raw
        .query_one(
            "select count(*) from pg_stat_activity
              where datname = current_database() and pid <> pg_backend_pid()
                and backend_type = 'client backend'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        open >= 2,
        "the pool holds {open} connections; the test needs 2"
    );
    drop(raw);
    cluster.restart("fast");
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .expect("the first call after the restart goes through");
    assert_eq!(engine.jobs().get(job.id).unwrap().id, job.id);
    raw = cluster.raw(schema);
    let n: i64 = raw
        .query_one("select count(*) from jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 41);
}
