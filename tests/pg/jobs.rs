//! Jobs and events on PostgreSQL through the API, the machine proof against PL/pgSQL, and
//! opening faults.

use runledger::pg::PgEngine;
use runledger::{Engine, EventKind, JobState, NewJob};
use serde_json::json;

use crate::common::TestDb;

#[test]
fn pg_job_lifecycle_events_and_fencing() {
    let Some(db) = TestDb::new("job_lifecycle") else {
        return;
    };
    let engine = db.engine();
    let jobs = engine.jobs();
    let job = jobs
        .create(&NewJob::new("u1", "report", json!({"n": 1})).tags(["a", "b"]))
        .unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Created, 0));
    assert_eq!(job.tags, ["a", "b"]);
    assert_eq!(jobs.claim("w1", &["other"]).unwrap(), None);
    let claim = jobs.claim("w1", &["report"]).unwrap().unwrap();
    assert_eq!((claim.id(), claim.attempt), (job.id, 1));
    assert_eq!(claim.job.state, JobState::Running);
    jobs.heartbeat(&claim).unwrap();
    jobs.progress(&claim, 40, Some("half")).unwrap();
    let done = jobs.complete(&claim, &json!({"ok": true})).unwrap();
    assert_eq!((done.state, done.progress), (JobState::Completed, 100));
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(jobs.get(job.id).unwrap(), done);
    // a worker's write after the job ended is diagnosed, not lost silently
    assert_eq!(
        jobs.heartbeat(&claim).unwrap_err().code(),
        "JOB_NOT_RUNNING"
    );
    let kinds: Vec<EventKind> = engine
        .events()
        .since(job.id, 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::Created,
            EventKind::Claimed,
            EventKind::Progress,
            EventKind::Completed
        ]
    );
    let after = engine.events().since(job.id, 2, 100).unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(after[0].decode().unwrap().kind(), EventKind::Progress);

    // cancel while running: the worker's next write is refused, and the cancel is audited
    let second = jobs
        .create(&NewJob::new("u1", "report", json!({})))
        .unwrap();
    let claim = jobs.claim("w2", &[]).unwrap().unwrap();
    assert_eq!(claim.id(), second.id);
    let cancelled = jobs.cancel(second.id, "ops", Some("not needed")).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        jobs.complete(&claim, &json!({})).unwrap_err().code(),
        "JOB_NOT_RUNNING"
    );
    assert_eq!(
        jobs.cancel(second.id, "ops", None).unwrap_err().code(),
        "ILLEGAL_TRANSITION"
    );
    let mut db = db;
    assert_eq!(
        db.query_i64("select count(*) from audit_log where action = 'cancel'"),
        1
    );
    // a stale attempt: the row moved on to attempt 2 (planted), the holder of 1 is fenced
    let third = jobs
        .create(&NewJob::new("u1", "report", json!({})))
        .unwrap();
    let claim = jobs.claim("w3", &[]).unwrap().unwrap();
    db.exec(&format!(
        "update jobs set state = 'created', worker_id = null, started_at = null, heartbeat_at = null where id = {}",
        third.id
    ))
    .unwrap();
    let again = jobs.claim("w4", &[]).unwrap().unwrap();
    assert_eq!(again.attempt, 2);
    let err = jobs.progress(&claim, 10, None).unwrap_err();
    assert_eq!(err.code(), "STALE_ATTEMPT", "{err}");
    // unknown job, bad input: typed errors, nothing written
    assert_eq!(jobs.get(999_999).unwrap_err().code(), "NOT_FOUND");
    assert_eq!(
        jobs.create(&NewJob::new("u1", "bad kind", json!({})))
            .unwrap_err()
            .code(),
        "INVALID_INPUT"
    );
}

/// Every ordered pair of distinct job states, through raw SQL against the PL/pgSQL trigger:
/// the update is accepted exactly when `job::TRANSITIONS` has the pair, and a refused one
/// is refused by the machine (ILLEGAL_TRANSITION), not by some CHECK.
#[test]
fn pg_job_state_machine_agrees_with_sql() {
    let Some(mut db) = TestDb::new("job_machine") else {
        return;
    };
    let _engine = db.engine();
    let t0 = "2026-11-22T10:00:00.000Z";
    let t1 = "2026-11-22T11:00:00.000Z";
    // the columns a row in each state has (planted with triggers off)
    let plant = |state: JobState| -> String {
        let (attempt, worker, started, heartbeat, finished, code, result, progress) = match state {
            JobState::Created => (0, "null", "null", "null", "null", "null", "null", 0),
            JobState::Running => (1, "'w'", "'$t0'", "'$t0'", "null", "null", "null", 0),
            JobState::Paused => (1, "null", "'$t0'", "'$t0'", "null", "null", "null", 0),
            JobState::Completed => (1, "null", "'$t0'", "'$t0'", "'$t0'", "null", "'{}'", 100),
            JobState::Failed => (1, "null", "'$t0'", "'$t0'", "'$t0'", "'E'", "null", 0),
            JobState::Cancelled => (0, "null", "null", "null", "'$t0'", "null", "null", 0),
        };
        format!(
            "insert into jobs (user_id, kind, state, attempt, worker_id, started_at, heartbeat_at, finished_at,
                               error_code, result, progress, created_at, updated_at)
             values ('u', 'k', '{state}', {attempt}, {worker}, {started}, {heartbeat}, {finished}, {code}, {result},
                     {progress}, '$t0', '$t0') returning id"
        )
        .replace("$t0", t0)
    };
    // the update moving a row to `to` with every other column as `to` requires
    let update = |to: JobState, id: i64| -> String {
        let set = match to {
            JobState::Created => "worker_id = null, started_at = null, heartbeat_at = null, finished_at = null, error_code = null, result = null, progress = 0",
            JobState::Running => "attempt = attempt + 1, worker_id = 'w2', started_at = coalesce(started_at, '$t1'), heartbeat_at = '$t1', finished_at = null, error_code = null, result = null, progress = 0",
            JobState::Paused => "started_at = coalesce(started_at, '$t1'), finished_at = null, error_code = null, result = null",
            JobState::Completed => "started_at = coalesce(started_at, '$t1'), finished_at = coalesce(finished_at, '$t1'), error_code = null, result = '{}', progress = 100",
            JobState::Failed => "started_at = coalesce(started_at, '$t1'), finished_at = coalesce(finished_at, '$t1'), error_code = 'E', result = null, progress = 0",
            JobState::Cancelled => "finished_at = coalesce(finished_at, '$t1'), error_code = null, result = null, progress = 0",
        };
        format!("update jobs set state = '{to}', updated_at = '$t1', {set} where id = {id}")
            .replace("$t1", t1)
    };
    let mut checked = 0;
    for from in JobState::ALL {
        for to in JobState::ALL {
            if from == to {
                continue;
            }
            db.exec("set session_replication_role = replica").unwrap();
            let id: i64 = db.raw.query_one(plant(from).as_str(), &[]).unwrap().get(0);
            db.exec("set session_replication_role = origin").unwrap();
            let outcome = db.exec(&update(to, id));
            let allowed = runledger::job::TRANSITIONS
                .iter()
                .any(|(f, t, _)| *f == from && *t == to);
            match outcome {
                Ok(n) => {
                    assert!(
                        allowed,
                        "{from} -> {to} accepted by SQL, not in TRANSITIONS"
                    );
                    assert_eq!(n, 1);
                }
                Err(message) => {
                    assert!(
                        !allowed,
                        "{from} -> {to} in TRANSITIONS, refused by SQL: {message}"
                    );
                    assert!(
                        message.starts_with("ILLEGAL_TRANSITION: jobs"),
                        "{from} -> {to}: {message}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 30);
}

#[test]
fn pg_open_faults_are_typed() {
    // nothing listens on port 1: UNREACHABLE, no panic, no password in the message
    let err = PgEngine::open("postgres://postgres:secret@127.0.0.1:1/test").unwrap_err();
    assert_eq!(err.code(), "UNREACHABLE", "{err}");
    assert!(!err.to_string().contains("secret"));
    assert_eq!(
        PgEngine::open("postgres://[bad").unwrap_err().code(),
        "INVALID_INPUT"
    );
    // Engine::open on a URL is the same backend: the same typed refusal, no file created
    let err = Engine::open("postgres://postgres:secret@127.0.0.1:1/test").unwrap_err();
    assert_eq!(err.code(), "UNREACHABLE", "{err}");
    assert!(!err.to_string().contains("secret"));
    assert!(!std::path::Path::new("postgres:").exists());

    let Some(mut db) = TestDb::new("newer_schema") else {
        return;
    };
    let engine = db.engine();
    assert_eq!(
        engine.schema_version().unwrap(),
        runledger::pg::known_schema_version()
    );
    drop(engine);
    // opening again is a no-op; a history ahead of this build is refused, untouched
    db.engine();
    db.exec("insert into refinery_schema_history (version, name, applied_on, checksum) values (99, 'future', 'now', '1')")
        .unwrap();
    let err = PgEngine::open(&db.url).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_VERSION", "{err}");
    let err = Engine::open(&db.url).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_VERSION", "{err}");
}

/// Regression: the server ended the engine's idle session (as a restart, a failover or an
/// idle timeout does); the next call found the connection dead at its BEGIN and failed
/// `UNREACHABLE` although the server was there. Nothing of such a call was sent, so it now
/// goes once more on a new connection: writes and reads succeed, each written once. (A call
/// in flight when the session ends fails `UNREACHABLE`: tests/pg/faults.rs, restart.rs.)
#[test]
fn pg_first_call_after_the_server_ended_an_idle_session_succeeds_on_a_new_connection() {
    let Some(mut db) = TestDb::new("reconnect") else {
        return;
    };
    let url = format!("{}&application_name=rl_reconnect_test", db.url);
    let engine = PgEngine::open(&url).unwrap();
    let first = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    let terminate = |db: &mut TestDb| {
        let killed = db.query_i64(
            "select count(*) from (select pg_terminate_backend(pid, 5000) from pg_stat_activity
              where application_name = 'rl_reconnect_test') t",
        );
        assert_eq!(killed, 1);
        // the connection then sits idle a while, as it would between a host's calls (one
        // idle at least 100 ms is checked before use; a one-statement call sent on a
        // connection ended under it could not be retried: it might have committed)
        std::thread::sleep(std::time::Duration::from_millis(150));
    };
    terminate(&mut db);
    let job = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap();
    assert_eq!(
        db.query_i64("select count(*) from jobs"),
        2,
        "written once, on the new connection"
    );
    terminate(&mut db);
    assert_eq!(engine.jobs().get(job.id).unwrap().state, JobState::Created);
    terminate(&mut db);
    assert_eq!(engine.jobs().get(first.id).unwrap().id, first.id);
    assert_eq!(db.query_i64("select count(*) from jobs"), 2);
}

/// `PgJobs::list` answers as `Jobs::list` does on the same jobs: every filter, newest first,
/// paging by `before`, and the limit's bounds.
#[test]
fn pg_job_listing_equals_sqlite_listing() {
    let Some(db) = TestDb::new("job_listing") else {
        return;
    };
    let pg = db.engine();
    let sqlite = Engine::open_in_memory().unwrap();
    for (user, kind) in [
        ("u1", "a"),
        ("u2", "a"),
        ("u1", "b"),
        ("u1", "a"),
        ("u2", "b"),
    ] {
        let new = NewJob::new(user, kind, json!({}));
        pg.jobs().create(&new).unwrap();
        sqlite.jobs().create(&new).unwrap();
    }
    // the same job completed on both sides
    let c = pg.jobs().claim("w", &["b"]).unwrap().unwrap();
    pg.jobs().complete(&c, &json!({})).unwrap();
    let c = sqlite.jobs().claim("w", &["b"]).unwrap().unwrap();
    sqlite.jobs().complete(&c, &json!({})).unwrap();

    let ids = |jobs: Vec<runledger::Job>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    type Filter<'a> = (
        Option<&'a str>,
        Option<JobState>,
        Option<&'a str>,
        Option<i64>,
        u32,
    );
    let cases: [Filter; 6] = [
        (None, None, None, None, 50),
        (Some("u1"), None, None, None, 50),
        (None, Some(JobState::Completed), None, None, 50),
        (Some("u1"), Some(JobState::Created), Some("a"), None, 50),
        (None, None, None, Some(4), 2),
        (Some("nobody"), None, None, None, 50),
    ];
    for (user, state, kind, before, limit) in cases {
        let on_pg = ids(pg
            .jobs()
            .list_before(user, state, kind, before, limit)
            .unwrap());
        let on_sqlite = ids(sqlite
            .jobs()
            .list_before(user, state, kind, before, limit)
            .unwrap());
        assert_eq!(on_pg, on_sqlite, "{user:?} {state:?} {kind:?} {before:?}");
    }
    assert_eq!(
        ids(pg.jobs().list(None, None, None, 50).unwrap()),
        [5, 4, 3, 2, 1]
    );
    for limit in [0, 10_001] {
        assert_eq!(
            pg.jobs().list(None, None, None, limit).unwrap_err().code(),
            "INVALID_INPUT"
        );
    }
}

/// Pause, resume, cancel and restart on PostgreSQL leave the job, its events and its audit rows as
/// they leave them on SQLite; a transition the machine refuses is `ILLEGAL_TRANSITION` on
/// both, with nothing written.
#[test]
fn pg_operator_pause_resume_cancel_restart_equal_sqlite() {
    let Some(mut db) = TestDb::new("job_operator") else {
        return;
    };
    let pg = db.engine();
    let sqlite = Engine::open_in_memory().unwrap();
    let new = NewJob::new("u1", "report", json!({}));
    let pg_job = pg.jobs().create(&new).unwrap();
    let sq_job = sqlite.jobs().create(&new).unwrap();
    assert_eq!(pg_job.id, sq_job.id);
    let id = pg_job.id;

    // pause needs a running job on both
    for code in [
        pg.jobs().pause(id, "ops").unwrap_err().code(),
        sqlite.jobs().pause(id, "ops").unwrap_err().code(),
    ] {
        assert_eq!(code, "ILLEGAL_TRANSITION");
    }
    let pg_claim = pg.jobs().claim("w", &[]).unwrap().unwrap();
    let sq_claim = sqlite.jobs().claim("w", &[]).unwrap().unwrap();
    pg.jobs().progress(&pg_claim, 40, Some("half")).unwrap();
    sqlite.jobs().progress(&sq_claim, 40, Some("half")).unwrap();
    let paused = (
        pg.jobs().pause(id, "ops").unwrap(),
        sqlite.jobs().pause(id, "ops").unwrap(),
    );
    assert_eq!(paused.0.state, JobState::Paused);
    assert_eq!(paused.1.state, JobState::Paused);
    // the worker's next write sees the pause
    assert_eq!(
        pg.jobs().heartbeat(&pg_claim).unwrap_err().code(),
        "JOB_NOT_RUNNING"
    );
    let resumed = (
        pg.jobs().resume(id, "ops").unwrap(),
        sqlite.jobs().resume(id, "ops").unwrap(),
    );
    for job in [&resumed.0, &resumed.1] {
        assert_eq!(job.state, JobState::Created);
        assert_eq!((job.worker_id.as_deref(), job.started_at), (None, None));
    }
    let cancelled = (
        pg.jobs().cancel(id, "ops", Some("not needed")).unwrap(),
        sqlite.jobs().cancel(id, "ops", Some("not needed")).unwrap(),
    );
    for job in [&cancelled.0, &cancelled.1] {
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.cancel_reason.as_deref(), Some("not needed"));
        assert!(job.finished_at.is_some());
    }
    assert_eq!(
        pg.jobs().resume(id, "ops").unwrap_err().code(),
        "ILLEGAL_TRANSITION"
    );
    let input = json!({"again": true});
    let restarted = (
        pg.jobs().restart(id, "ops", Some(&input)).unwrap(),
        sqlite.jobs().restart(id, "ops", Some(&input)).unwrap(),
    );
    for job in [&restarted.0, &restarted.1] {
        assert_eq!((job.state, job.progress), (JobState::Created, 0));
        assert_eq!(job.input, input);
        assert_eq!((job.cancel_reason.as_ref(), job.finished_at), (None, None));
    }
    assert_eq!(
        pg.jobs().restart(id, "ops", None).unwrap_err().code(),
        "ILLEGAL_TRANSITION"
    );

    // the same events, payloads included (times aside), on both
    let shape = |events: Vec<runledger::Event>| {
        events
            .into_iter()
            .map(|e| (e.seq, e.kind, e.payload))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(pg.events().since(id, 0, 100).unwrap()),
        shape(sqlite.events().since(id, 0, 100).unwrap())
    );
    // one audit row per operator action, in order, with the same details
    let rows = db
        .raw
        .query(
            "select action, actor, detail::text from audit_log order by id",
            &[],
        )
        .unwrap();
    let pg_audit: Vec<(String, String, serde_json::Value)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                serde_json::from_str(r.get::<_, &str>(2)).unwrap(),
            )
        })
        .collect();
    let sq_audit: Vec<(String, String, serde_json::Value)> = sqlite
        .with_connection(|c| {
            let mut st = c
                .prepare("select action, actor, detail from audit_log order by id")
                .unwrap();
            let rows = st
                .query_map([], |r| {
                    let d: String = r.get(2)?;
                    Ok((r.get(0)?, r.get(1)?, serde_json::from_str(&d).unwrap()))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            Ok(rows)
        })
        .unwrap();
    assert_eq!(pg_audit, sq_audit);
    assert_eq!(
        pg_audit.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["pause", "resume", "cancel", "restart"]
    );
}

/// The claim and the complete append their event in the job's own statement, with the seq,
/// payload text and chain hash computed by PostgreSQL: the payload is spelled as serde_json
/// writes it (what SQLite stores) and the hash is byte for byte src/integrity.rs's, for
/// worker names that JSON must escape and text beyond ASCII.
#[test]
fn pg_claim_and_complete_events_hash_as_rust_does() {
    let Some(mut db) = TestDb::new("job_event_hash") else {
        return;
    };
    let engine = db.engine();
    let workers = [
        "w1",
        "quote \" and backslash \\ and slash /",
        "é, ß, 日本, 😀",
        "tab-free but 'single' quotes ; -- and $5",
    ];
    for worker in workers {
        let job = engine
            .jobs()
            .create(&NewJob::new("u1", "report", json!({})))
            .unwrap();
        let claim = engine.jobs().claim(worker, &[]).unwrap().unwrap();
        assert_eq!((claim.id(), claim.attempt), (job.id, 1));
        engine.jobs().progress(&claim, 50, Some(worker)).unwrap();
        engine
            .jobs()
            .checkpoint(&claim, &json!({"page": worker}), 1 << 20)
            .unwrap();
        engine.jobs().complete(&claim, &json!({"ok": 1})).unwrap();
        let rows = db
            .raw
            .query(
                "select seq, kind, at, payload::text, prev_hash, hash from job_events
                 where job_id = $1 order by seq",
                &[&job.id],
            )
            .unwrap();
        let kinds: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
        assert_eq!(
            kinds,
            ["created", "claimed", "progress", "checkpoint", "completed"]
        );
        let mut prev = runledger::integrity::GENESIS.to_string();
        for (i, r) in rows.iter().enumerate() {
            let (seq, kind, at): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
            let (payload, prev_hash, hash): (String, String, String) =
                (r.get(3), r.get(4), r.get(5));
            assert_eq!(seq, i as i64 + 1);
            assert_eq!(prev_hash, prev, "{worker:?} seq {seq}");
            let expected = match kind.as_str() {
                "claimed" => json!({"worker": worker, "attempt": 1}).to_string(),
                "completed" => json!({"attempt": 1}).to_string(),
                "created" => json!({"kind": "report", "user_id": "u1"}).to_string(),
                "progress" => json!({"progress": 50, "step": worker}).to_string(),
                "checkpoint" => {
                    let bytes = json!({"page": worker}).to_string().len();
                    json!({ "bytes": bytes }).to_string()
                }
                _ => payload.clone(),
            };
            assert_eq!(payload, expected, "{worker:?} {kind}");
            assert_eq!(
                hash,
                runledger::integrity::event_hash(&prev, job.id, seq, &kind, &at, &payload),
                "{worker:?} {kind}"
            );
            prev = hash;
        }
    }
    // the fast paths still diagnose a write that matched nothing, and append no event
    let job = engine
        .jobs()
        .create(&NewJob::new("u1", "report", json!({})))
        .unwrap();
    let stale = engine.jobs().claim("w", &[]).unwrap().unwrap();
    engine.jobs().pause(job.id, "op").unwrap();
    engine.jobs().resume(job.id, "op").unwrap();
    let fresh = engine.jobs().claim("w", &[]).unwrap().unwrap();
    assert_eq!((fresh.id(), fresh.attempt), (job.id, 2));
    let before = db.query_i64(&format!(
        "select count(*) from job_events where job_id = {}",
        job.id
    ));
    for code in [
        engine.jobs().progress(&stale, 10, None).unwrap_err().code(),
        engine
            .jobs()
            .checkpoint(&stale, &json!({}), 1 << 20)
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, "STALE_ATTEMPT");
    }
    engine.jobs().complete(&fresh, &json!({})).unwrap();
    assert_eq!(
        engine.jobs().progress(&fresh, 10, None).unwrap_err().code(),
        "JOB_NOT_RUNNING"
    );
    assert_eq!(
        db.query_i64(&format!(
            "select count(*) from job_events where job_id = {}",
            job.id
        )),
        before + 1
    );
    // the fast path still diagnoses a complete that matched nothing
    let job = engine
        .jobs()
        .create(&NewJob::new("u1", "report", json!({})))
        .unwrap();
    let claim = engine.jobs().claim("w", &[]).unwrap().unwrap();
    engine.jobs().complete(&claim, &json!({})).unwrap();
    assert_eq!(
        engine
            .jobs()
            .complete(&claim, &json!({}))
            .unwrap_err()
            .code(),
        "JOB_NOT_RUNNING"
    );
    assert_eq!(
        db.query_i64(&format!(
            "select count(*) from job_events where job_id = {}",
            job.id
        )),
        3
    );
}

/// Regression: while `jobs` had no statistics (a new ledger; a server without autovacuum;
/// a burst of jobs since the last ANALYZE) the planner chose, for the claim's pick, a bitmap
/// scan of every created job and a sort: O(queue) per claim (0.58 ms of each claim with
/// 2,000 queued jobs). The pick (`jobs_claimable`, schema version 7) walks `jobs_claim` in id
/// order: its plan, as auto_explain logs the nested statement, neither sorts nor scans a
/// bitmap, and the claims still take the oldest jobs first.
#[test]
fn regression_the_claim_sorted_the_whole_queue_while_jobs_had_no_statistics() {
    let Some((mut db, engine)) = research_queue("claim_walk", 2000) else {
        return;
    };
    let (first, plans) = pick_plan(&db);
    assert!(
        plans.contains("Index Scan using jobs_claim on jobs"),
        "{plans}"
    );
    assert!(
        !plans.contains("Sort") && !plans.contains("Bitmap"),
        "{plans}"
    );
    let oldest = db.query_i64("select min(id) from jobs");
    assert_eq!(first, oldest);
    let claim = engine.jobs().claim("w", &["research"]).unwrap().unwrap();
    assert_eq!(claim.id(), oldest);
}

/// Regression: with statistics taken while most jobs were created (autovacuum's ANALYZE after
/// a burst of new jobs), the planner chose the primary key for the pick, walking `jobs` in id
/// order past every claimed and completed job (2,108 buffers, 1.0 ms a pick after 3,000 of
/// 6,000 jobs were claimed), until the next ANALYZE. The queue index keeps `id NULLS FIRST`
/// and the pick orders so (schema version 10): only that index returns the order.
#[test]
fn regression_statistics_of_a_full_queue_made_the_claim_walk_the_primary_key() {
    let Some((mut db, engine)) = research_queue("claim_stats", 3000) else {
        return;
    };
    db.exec("analyze jobs").unwrap();
    for _ in 0..1500 {
        let claim = engine.jobs().claim("w", &["research"]).unwrap().unwrap();
        engine.jobs().complete(&claim, &json!({})).unwrap();
    }
    let (first, plans) = pick_plan(&db);
    assert!(
        plans.contains("Index Scan using jobs_claim on jobs"),
        "{plans}"
    );
    assert!(!plans.contains("jobs_pkey"), "{plans}");
    let oldest = db.query_i64("select min(id) from jobs where state = 'created'");
    assert_eq!(first, oldest);
}

/// A new ledger holding `jobs` created research jobs (inserted by SQL, without events).
fn research_queue(test: &str, jobs: u32) -> Option<(TestDb, PgEngine)> {
    let mut db = TestDb::new(test)?;
    let engine = db.engine();
    db.exec(&format!(
        "insert into jobs (user_id, kind, created_at, updated_at)
         select 'u', 'research', '2026-11-22T10:00:00.000Z', '2026-11-22T10:00:00.000Z'
         from generate_series(1, {jobs})"
    ))
    .unwrap();
    Some((db, engine))
}

/// The oldest claimable research job as `jobs_claimable` picks it (in a transaction rolled
/// back), and the plans auto_explain logs for its nested statement.
fn pick_plan(db: &TestDb) -> (i64, String) {
    let plans = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = plans.clone();
    let mut client = db
        .url
        .parse::<postgres::Config>()
        .unwrap()
        .notice_callback(move |n| sink.lock().unwrap().push(n.message().to_string()))
        .connect(postgres::NoTls)
        .unwrap();
    client
        .batch_execute(
            "load 'auto_explain'; set auto_explain.log_min_duration = 0;
             set auto_explain.log_nested_statements = on; set client_min_messages = log",
        )
        .unwrap();
    let mut tx = client.transaction().unwrap();
    let first: i64 = tx
        .query_one("select jobs_claimable(false, array['research'])", &[])
        .unwrap()
        .get(0);
    tx.rollback().unwrap();
    let plans = plans.lock().unwrap().join("\n");
    (first, plans)
}

/// Rows a version-8 ledger holds: `jobs` completed jobs with 3 events each, chained as
/// runledger chains them (written with the triggers off, the CHECKs on).
fn completed_jobs_at_version_8(db: &mut TestDb, jobs: u32) {
    let mut sql = format!(
        "set session_replication_role = replica;
         insert into jobs (user_id, kind, state, result, progress, attempt, worker_id,
                           created_at, updated_at, started_at, heartbeat_at, finished_at)
           select 'u', 'research', 'completed', '{{\"ok\": true}}', 100, 1, 'w',
                  '2026-11-22T10:00:00.000Z', '2026-11-22T10:00:02.000Z',
                  '2026-11-22T10:00:01.000Z', '2026-11-22T10:00:01.000Z',
                  '2026-11-22T10:00:02.000Z'
           from generate_series(1, {jobs});"
    );
    for (seq, kind) in [(1, "created"), (2, "claimed"), (3, "completed")] {
        let prev = if seq == 1 {
            format!("'{}'", "0".repeat(64))
        } else {
            format!("(select hash from job_events e where e.job_id = j.id and e.seq = {seq} - 1)")
        };
        sql.push_str(&format!(
            "insert into job_events (job_id, seq, kind, at, prev_hash, hash)
               select id, {seq}, '{kind}', '2026-11-22T10:00:00.000Z', p,
                      encode(sha256(convert_to(concat_ws(chr(10), 'runledger-event-v1', p,
                          id::text, '{seq}', '{kind}', '2026-11-22T10:00:00.000Z', '{{}}'),
                          'UTF8')), 'hex')
               from (select j.id, {prev} as p from jobs j) j;"
        ));
    }
    sql.push_str("set session_replication_role = origin");
    db.raw.batch_execute(&sql).unwrap();
}

/// Upgrading a version-8 ledger: version 9 swaps the per-column CHECKs for the row checks
/// NOT VALID and version 11 validates them against the rows already there (in a transaction
/// of its own, writers not held). Every row is kept and the checks end valid; a row that
/// breaks a rule (written while a constraint was dropped) fails the upgrade with the rule's
/// name, and the ledger stays at version 10 with the checks NOT VALID.
#[test]
fn pg_upgrade_from_version_8_validates_the_rows_already_there() {
    let Some(mut db) = TestDb::new("upgrade_v8") else {
        return;
    };
    db.migrate_to_version_8();
    completed_jobs_at_version_8(&mut db, 500);
    let engine = db.engine();
    assert_eq!(
        engine.schema_version().unwrap(),
        runledger::pg::known_schema_version()
    );
    assert_eq!(db.query_i64("select count(*) from jobs"), 500);
    assert_eq!(db.query_i64("select count(*) from job_events"), 1500);
    assert_eq!(
        db.query_i64(
            "select count(*) from pg_constraint where conname in ('jobs_row_check', 'job_events_row_check')
               and convalidated and connamespace = current_schema()::regnamespace"
        ),
        2
    );
    let report = runledger::pg::doctor::check(&engine, &Default::default()).unwrap();
    assert!(
        report.anomalies.is_empty(),
        "{:?}",
        &report.anomalies[..report.anomalies.len().min(3)]
    );

    let Some(mut bad) = TestDb::new("upgrade_v8_bad_row") else {
        return;
    };
    bad.migrate_to_version_8();
    completed_jobs_at_version_8(&mut bad, 10);
    bad.exec("alter table jobs drop constraint jobs_recovery_count_check")
        .unwrap();
    bad.raw
        .batch_execute(
            "set session_replication_role = replica;
             update jobs set recovery_count = -1 where id = 3;
             set session_replication_role = origin",
        )
        .unwrap();
    let err = PgEngine::open(&bad.url).unwrap_err();
    assert_eq!(err.code(), "MIGRATION_FAILED", "{err}");
    let message = err.to_string();
    assert!(message.contains("at V11__validate_row_checks"), "{message}");
    assert!(
        message
            .contains("violates check constraint \"jobs_recovery_count_check\" (SQLSTATE 23514)"),
        "{message}"
    );
    assert!(!message.contains("Failing row"), "{message}");
    assert_eq!(
        bad.query_i64("select max(version)::bigint from refinery_schema_history"),
        10
    );
    assert_eq!(
        bad.query_i64(
            "select count(*) from pg_constraint where conname = 'jobs_row_check'
               and not convalidated and connamespace = current_schema()::regnamespace"
        ),
        1
    );
    assert_eq!(
        bad.query_i64("select recovery_count from jobs where id = 3"),
        -1
    );
    // the row mended (as an operator would: the job machine refuses changes to a completed
    // job), the next open finishes the upgrade
    bad.raw
        .batch_execute(
            "set session_replication_role = replica;
             update jobs set recovery_count = 0 where id = 3;
             set session_replication_role = origin",
        )
        .unwrap();
    let engine = PgEngine::open(&bad.url).unwrap();
    assert_eq!(
        engine.schema_version().unwrap(),
        runledger::pg::known_schema_version()
    );
}

/// Regression: refinery committed each migration and the history row recording it in two
/// transactions, so a failure (or a kill) between them left a migrated schema recorded at
/// the older version, and the next open applied the migration again. Each version now
/// commits with its row: a history insert that fails (here a trigger on the history table
/// refusing version 11) leaves version 11's change undone too.
#[test]
fn regression_a_migration_and_its_history_row_were_committed_apart() {
    let Some(mut db) = TestDb::new("migration_atomic") else {
        return;
    };
    db.migrate_to_version_8();
    db.raw
        .batch_execute(
            "create function refuse_v11() returns trigger language plpgsql as $$
             begin
                 if new.version = 11 then raise exception 'history refused'; end if;
                 return new;
             end $$;
             create trigger refuse_v11 before insert on refinery_schema_history
                 for each row execute function refuse_v11();",
        )
        .unwrap();
    let err = PgEngine::open(&db.url).unwrap_err();
    assert_eq!(err.code(), "MIGRATION_FAILED", "{err}");
    assert!(err.to_string().contains("history refused"), "{err}");
    assert_eq!(
        db.query_i64("select max(version)::bigint from refinery_schema_history"),
        10
    );
    assert_eq!(
        db.query_i64(
            "select count(*) from pg_constraint where conname = 'jobs_row_check'
               and not convalidated and connamespace = current_schema()::regnamespace"
        ),
        1,
        "version 11's validation was committed without its history row"
    );
}
