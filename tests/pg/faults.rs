//! Faults: the server ending the engine's session in the middle of a transaction (what a
//! server restart does to a client, without restarting the server other tests use), and
//! kill -9 of a node process mid-run, with every invariant checked in SQL afterwards.

use std::time::{Duration, Instant};

use runledger::pg::PgEngine;
use runledger::{JobState, NewJob, RunStatus, Scope, SupervisorOptions, TriggerKind};
use serde_json::json;

use crate::common::{finish_child, is_child, spawn_child, TestDb};

/// The backend of the connection blocked behind `holder`'s locks, once it is waiting.
pub fn blocked_behind(raw: &mut postgres::Client, holder: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = raw
            .query_opt(
                "select pid from pg_stat_activity where $1 = any(pg_blocking_pids(pid))",
                &[&holder],
            )
            .unwrap();
        if let Some(r) = row {
            return r.get(0);
        }
        assert!(Instant::now() < deadline, "the engine never blocked");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pg_backend_killed_mid_transaction_fails_unreachable_writes_nothing_and_reconnects() {
    let Some(mut db) = TestDb::new("fault_kill_backend") else {
        return;
    };
    let engine = db.engine();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let claim = engine.jobs().claim("w", &["k"]).unwrap().unwrap();
    // A second connection holds an uncommitted event seq 3 of the job: the engine's
    // complete updates the job row, then waits on that key when it appends its event.
    let mut holder = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
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
    let call = std::thread::spawn(move || e2.jobs().complete(&c2, &json!({"ok": true})));
    let engine_pid = blocked_behind(&mut db.raw, holder_pid);
    // the job row is already updated inside the engine's open transaction
    let killed: bool = db
        .raw
        .query_one("select pg_terminate_backend($1)", &[&engine_pid])
        .unwrap()
        .get(0);
    assert!(killed);
    let err = call.join().unwrap().unwrap_err();
    assert_eq!(err.code(), "UNREACHABLE", "{err}");
    hold.rollback().unwrap();
    // nothing half-written: still running at the same attempt, events created and claimed
    let j = engine.jobs().get(job.id).unwrap(); // reconnects
    assert_eq!((j.state, j.attempt, j.result), (JobState::Running, 1, None));
    assert_eq!(
        db.query_i64(&format!(
            "select count(*) from job_events where job_id = {}",
            job.id
        )),
        2
    );
    // the engine is connected again and the worker's write goes through
    let done = engine
        .jobs()
        .complete(&claim, &json!({"ok": true}))
        .unwrap();
    assert_eq!(done.state, JobState::Completed);
    let pid_now: i64 = db.query_i64(&format!(
        "select count(*) from pg_stat_activity where pid = {engine_pid}"
    ));
    assert_eq!(pid_now, 0, "the killed backend is gone");
}

const NODES: usize = 3;
const JOBS: usize = 300;

/// One node that works slowly (claim, progress, complete, and a run per job) until killed
/// or out of jobs.
#[test]
#[ignore = "child process of pg_kill_9_of_a_node_mid_run_leaves_every_invariant_intact"]
fn pg_fault_node_child() {
    if !is_child() {
        return;
    }
    let url = std::env::var("RUNLEDGER_PG_URL").unwrap();
    let node = std::env::var("RUNLEDGER_NODE").unwrap();
    let engine = PgEngine::open(&url).unwrap();
    let jobs = engine.jobs();
    while let Some(claim) = jobs.claim(&node, &[]).unwrap() {
        println!("CLAIMED {}", claim.id());
        jobs.progress(&claim, 50, Some("half")).unwrap();
        if let Ok(run) = engine.runs().start(
            "shared",
            Scope::Targets,
            TriggerKind::Manual,
            None,
            Duration::from_secs(2),
        ) {
            std::thread::sleep(Duration::from_millis(2));
            engine
                .runs()
                .finish(run, RunStatus::Success, None, &json!({}))
                .unwrap();
        }
        jobs.complete(&claim, &json!({"by": node})).unwrap();
    }
}

/// Every invariant of the ledger that SQL can state, as violation counts (all must be 0).
pub fn invariant_violations(raw: &mut postgres::Client) -> Vec<(&'static str, i64)> {
    let checks: &[(&str, &str)] = &[
        (
            "event seq gapless from 1 per job",
            "select count(*) from (select job_id, count(*) n, min(seq) lo, max(seq) hi from job_events group by job_id) x where lo <> 1 or hi <> n",
        ),
        (
            "event hash chain links",
            "select count(*) from job_events e join job_events p on p.job_id = e.job_id and p.seq = e.seq - 1 where e.prev_hash <> p.hash",
        ),
        (
            "every job has its created event",
            "select count(*) from jobs j where not exists (select 1 from job_events e where e.job_id = j.id and e.kind = 'created')",
        ),
        (
            "a completed job has exactly one completed event",
            "select count(*) from jobs j where j.state = 'completed' and (select count(*) from job_events e where e.job_id = j.id and e.kind = 'completed') <> 1",
        ),
        (
            "claimed events match the attempt",
            "select count(*) from jobs j where (select count(*) from job_events e where e.job_id = j.id and e.kind = 'claimed') <> j.attempt",
        ),
        (
            "at most one started run per lock key",
            "select count(*) from (select lock_key from ingest_runs where status = 'started' group by lock_key having count(*) > 1) x",
        ),
    ];
    checks
        .iter()
        .map(|(name, sql)| (*name, raw.query_one(*sql, &[]).unwrap().get(0)))
        .collect()
}

#[test]
fn pg_kill_9_of_a_node_mid_run_leaves_every_invariant_intact() {
    if is_child() {
        return;
    }
    let Some(mut db) = TestDb::new("fault_kill9") else {
        return;
    };
    let engine = db.engine();
    for i in 0..JOBS {
        engine
            .jobs()
            .create(&NewJob::new("u", "k", json!({"i": i})))
            .unwrap();
    }
    let mut children: Vec<_> = (0..NODES)
        .map(|n| {
            spawn_child(
                "faults::pg_fault_node_child",
                &[
                    ("RUNLEDGER_PG_URL", db.url.clone()),
                    ("RUNLEDGER_NODE", format!("node-{n}")),
                ],
            )
        })
        .collect();
    // kill -9 node 0 once it has done some work
    let deadline = Instant::now() + Duration::from_secs(30);
    while db
        .query_i64("select count(*) from jobs where worker_id = 'node-0' and state = 'completed'")
        < 10
    {
        assert!(Instant::now() < deadline, "node 0 never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut victim = children.remove(0);
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    for child in children {
        finish_child(child);
    }
    let violations = invariant_violations(&mut db.raw);
    assert!(violations.iter().all(|(_, n)| *n == 0), "{violations:?}");
    // the dead node left at most the one job it held running; the supervisor rescues it
    let running = db.query_i64("select count(*) from jobs where state = 'running'");
    assert!(running <= 1, "{running} jobs left running");
    assert_eq!(
        db.query_i64("select count(*) from jobs where state = 'running' and worker_id <> 'node-0'"),
        0
    );
    let supervisor = engine
        .supervisor(SupervisorOptions {
            stale_after: Duration::from_secs(30),
            ..SupervisorOptions::default()
        })
        .unwrap();
    let report = supervisor
        .tick(engine.now() + Duration::from_secs(60))
        .unwrap();
    assert_eq!(report.recovered.len() as i64, running);
    // a run the dead node held expires and is swept (its lease is 2 s)
    std::thread::sleep(Duration::from_millis(2100));
    engine.runs().sweep().unwrap();
    assert_eq!(
        db.query_i64("select count(*) from ingest_runs where status = 'started'"),
        0
    );
    assert_eq!(
        db.query_i64("select count(*) from jobs where state not in ('completed', 'failed')"),
        0
    );
    let violations = invariant_violations(&mut db.raw);
    assert!(violations.iter().all(|(_, n)| *n == 0), "{violations:?}");
}

/// A connection refused at open (nothing listens on the port): `PgEngine::open`,
/// `PgListener::open` and `PgWorker::spawn` fail `UNREACHABLE` at once, and neither the
/// message nor the error's debug form carries the URL, its user or its password. Needs no
/// server.
#[test]
fn pg_open_refused_fails_unreachable_at_once_without_the_url_or_password() {
    let port = crate::cluster::free_port(); // free now: nothing listens there
    let url = format!("postgres://rl_secret_user:pa55-w0rd-xyz@127.0.0.1:{port}/ledger");
    type Open<'a> = Box<dyn Fn() -> runledger::Error + 'a>;
    let opens: [(&str, Open); 3] = [
        ("engine", Box::new(|| PgEngine::open(&url).unwrap_err())),
        (
            "listener",
            Box::new(|| runledger::pg::PgListener::open(&url).unwrap_err()),
        ),
        (
            "worker",
            Box::new(|| {
                runledger::pg::PgWorker::new(&url, "w", &[])
                    .unwrap()
                    .spawn(|_| Ok(json!({})))
                    .unwrap_err()
            }),
        ),
    ];
    for (what, open) in opens {
        let t = Instant::now();
        let err = open();
        let took = t.elapsed();
        assert_eq!(err.code(), "UNREACHABLE", "{what}: {err}");
        assert!(
            took < Duration::from_secs(2),
            "{what}: refused after {took:?}"
        );
        for shown in [err.to_string(), format!("{err:?}")] {
            for secret in ["pa55-w0rd-xyz", "rl_secret_user", "postgres://"] {
                assert!(!shown.contains(secret), "{what} shows {secret}: {shown}");
            }
        }
    }
}

/// A database migrated by a newer build: `PgEngine::open` refuses it `UNSUPPORTED_VERSION`
/// and changes nothing (no migration started, no row, object or trigger touched), whether
/// the ledger has rows or the newer build's history is all there is.
#[test]
fn pg_newer_schema_is_refused_and_left_untouched() {
    let Some(mut db) = TestDb::new("newer_untouched") else {
        return;
    };
    let engine = db.engine();
    engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    engine.jobs().claim("w", &[]).unwrap().unwrap();
    drop(engine);
    db.exec(
        "insert into refinery_schema_history (version, name, applied_on, checksum)
         values (99, 'future', 'now', '1')",
    )
    .unwrap();
    // everything in the schema: objects with their definitions' size, and the rows
    let snapshot = |db: &mut TestDb| -> Vec<String> {
        let objects = db
            .raw
            .query(
                "select c.relname || ':' || c.relkind::text from pg_class c
                  where c.relnamespace = current_schema()::regnamespace order by 1",
                &[],
            )
            .unwrap();
        let triggers = db
            .raw
            .query(
                "select tgname || ':' || tgenabled::text from pg_trigger t join pg_class c on c.oid = t.tgrelid
                  where c.relnamespace = current_schema()::regnamespace order by 1",
                &[],
            )
            .unwrap();
        let rows = db
            .raw
            .query(
                "select (select string_agg(j::text, '|' order by id) from jobs j)
                     || (select string_agg(e::text, '|' order by job_id, seq) from job_events e)
                     || (select string_agg(h::text, '|' order by version) from refinery_schema_history h)",
                &[],
            )
            .unwrap();
        objects
            .iter()
            .chain(&triggers)
            .chain(&rows)
            .map(|r| r.get::<_, String>(0))
            .collect()
    };
    let before = snapshot(&mut db);
    assert!(before.len() > 10, "{before:?}");
    let err = PgEngine::open(&db.url).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_VERSION", "{err}");
    assert!(err.to_string().contains("99"), "{err}");
    assert_eq!(snapshot(&mut db), before);

    // a schema holding only a newer build's history: refused before anything is created
    let Some(mut bare) = TestDb::new("newer_bare") else {
        return;
    };
    bare.exec(
        "create table refinery_schema_history (version int4 primary key, name varchar(255),
           applied_on varchar(255), checksum varchar(255))",
    )
    .unwrap();
    bare.exec("insert into refinery_schema_history values (1000, 'V1000__later', 'now', '7')")
        .unwrap();
    let err = PgEngine::open(&bare.url).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_VERSION", "{err}");
    assert_eq!(
        bare.query_i64(
            "select count(*) from pg_class where relnamespace = current_schema()::regnamespace
              and relkind = 'r'"
        ),
        1,
        "no table created"
    );
    assert_eq!(
        bare.query_i64("select count(*) from refinery_schema_history"),
        1
    );
}

/// A call blocked by a row lock another session holds (an operator's transaction left open
/// in psql) used to wait for as long as that session kept it. It now waits the engine's busy
/// timeout (`EngineOptions::db.busy_timeout`, PostgreSQL's `lock_timeout`) per try, fails
/// `BUSY` after its retries with nothing written, and goes through once the lock is gone.
#[test]
fn regression_a_call_behind_a_held_row_lock_waited_forever() {
    let Some(mut db) = TestDb::new("lock_timeout") else {
        return;
    };
    let mut opts = runledger::EngineOptions::default();
    opts.db.busy_timeout = Duration::from_millis(100);
    let engine = runledger::Engine::open_with(&db.url, opts).unwrap();
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let mut holder = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let mut hold = holder.transaction().unwrap();
    hold.execute("select 1 from jobs where id = $1 for update", &[&job.id])
        .unwrap();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let blocked = engine.clone();
    std::thread::spawn(move || {
        let _ = tx.send(blocked.jobs().cancel(job.id, "op", None));
    });
    // without a lock timeout the call waits as long as the holder: bounded here
    let err = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the call still waited after 20 s")
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code(), "BUSY", "{err}");
    // one wait per try (the first and 5 retries), not an unbounded one
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(
        engine.jobs().get(job.id).unwrap().state,
        JobState::Created,
        "nothing written"
    );
    hold.rollback().unwrap();
    let cancelled = engine.jobs().cancel(job.id, "op", None).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        db.query_i64("select count(*) from audit_log where action = 'cancel'"),
        1
    );
}
