//! The supervisor on PostgreSQL: the SQLite supervisor's rules, events and audit rows, and
//! several supervisors (processes standing in for nodes) rescuing each stalled job once.

use std::collections::BTreeMap;
use std::time::Duration;

use runledger::pg::PgEngine;
use runledger::{
    Engine, EngineOptions, EventKind, JobState, ManualClock, NewJob, RecoveryPolicy,
    SupervisorOptions, Timestamp,
};
use serde_json::{json, Value};

use crate::common::{finish_child, is_child, spawn_child, TestDb};

const T0: &str = "2026-11-20T10:00:00.000Z";

fn opts(policy: RecoveryPolicy) -> SupervisorOptions {
    SupervisorOptions {
        stale_after: Duration::from_secs(30),
        max_recoveries: 2,
        policy,
        ..SupervisorOptions::default()
    }
}

/// The events of job `id` after `seq`, as (kind, payload) pairs.
fn pg_events(engine: &PgEngine, id: i64, seq: i64) -> Vec<(EventKind, Value)> {
    engine
        .events()
        .since(id, seq, 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.payload))
        .collect()
}

/// Job 1: no checkpoint (STALLED); job 2: a checkpoint (paused or requeued); job 3: a
/// checkpoint and recovered to the limit already (RECOVERY_EXHAUSTED); job 4: fresh
/// heartbeat (left alone).
#[test]
fn pg_supervisor_applies_the_sqlite_supervisors_rules() {
    let Some(mut db) = TestDb::new("sup_rules") else {
        return;
    };
    for policy in [RecoveryPolicy::Pause, RecoveryPolicy::AutoResume] {
        let (pg, pg_clock) = db.engine_at(T0);
        let clock = ManualClock::new(Timestamp::parse(T0).unwrap());
        let lite = Engine::open_in_memory_with(EngineOptions::default().with_clock(clock.clone()))
            .unwrap();
        let base = pg
            .jobs()
            .create(&NewJob::new("u", "k", json!({})))
            .unwrap()
            .id
            - 1;
        // the first PostgreSQL job above only aligns ids with SQLite's: finish it
        let c = pg.jobs().claim("w", &["k"]).unwrap().unwrap();
        pg.jobs().complete(&c, &json!({})).unwrap();
        let lite_first = lite
            .jobs()
            .create(&NewJob::new("u", "k", json!({})))
            .unwrap();
        let c = lite.jobs().claim("w", &["k"]).unwrap().unwrap();
        lite.jobs().complete(&c, &json!({})).unwrap();
        let mut seqs = Vec::new();
        for i in 1..=4 {
            let pj = pg
                .jobs()
                .create(&NewJob::new("u", "k", json!({"i": i})))
                .unwrap();
            let lj = lite
                .jobs()
                .create(&NewJob::new("u", "k", json!({"i": i})))
                .unwrap();
            let pc = pg.jobs().claim("w", &["k"]).unwrap().unwrap();
            let lc = lite.jobs().claim("w", &["k"]).unwrap().unwrap();
            assert_eq!((pc.id(), lc.id()), (pj.id, lj.id));
            if i >= 2 {
                lite.jobs().checkpoint(&lc, &json!({"page": i})).unwrap();
                db.exec(&format!(
                    "update jobs set checkpoint = '{{\"page\": {i}}}', checkpoint_at = '{T0}' where id = {}",
                    pj.id
                ))
                .unwrap();
            }
            if i == 3 {
                for _ in 0..2 {
                    db.exec(&format!(
                        "update jobs set recovery_count = recovery_count + 1 where id = {}",
                        pj.id
                    ))
                    .unwrap();
                }
                lite.with_connection(|c| {
                    for _ in 0..2 {
                        c.execute(
                            "update jobs set recovery_count = recovery_count + 1 where id = ?1",
                            [lj.id],
                        )?;
                    }
                    Ok(())
                })
                .unwrap();
            }
            let last = |v: Vec<runledger::Event>| v.last().unwrap().seq;
            seqs.push((
                pj.id,
                last(pg.events().since(pj.id, 0, 100).unwrap()),
                lj.id,
                last(lite.events().since(lj.id, 0, 100).unwrap()),
            ));
        }
        let later = Duration::from_secs(60);
        pg_clock.advance(later);
        clock.advance(later);
        // job 4 heartbeats just before the tick
        let c4 = pg.jobs().get(seqs[3].0).unwrap();
        let claim4 = runledger::Claim {
            attempt: c4.attempt,
            job: c4,
        };
        pg.jobs().heartbeat(&claim4).unwrap();
        let lc4 = lite.jobs().get(seqs[3].2).unwrap();
        let lclaim4 = runledger::Claim {
            attempt: lc4.attempt,
            job: lc4,
        };
        lite.jobs().heartbeat(&lclaim4).unwrap();

        let pg_report = pg.supervisor(opts(policy)).unwrap().tick(pg.now()).unwrap();
        let lite_report = runledger::Supervisor::new(lite.clone(), opts(policy))
            .unwrap()
            .tick(lite.now())
            .unwrap();
        let shift = |r: &runledger::job::supervisor::RecoveryReport, base: i64| {
            r.recovered
                .iter()
                .map(|x| {
                    (
                        x.job_id - base,
                        x.attempt,
                        x.to,
                        x.code.clone(),
                        x.recovery_count,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shift(&pg_report, base),
            shift(&lite_report, lite_first.id - 1),
            "{policy:?}"
        );
        assert_eq!(pg_report.recovered.len(), 3, "{policy:?}");
        for (pid, pseq, lid, lseq) in &seqs {
            let (p, l) = (pg.jobs().get(*pid).unwrap(), lite.jobs().get(*lid).unwrap());
            assert_eq!(
                (
                    p.state,
                    &p.error_code,
                    p.recovery_count,
                    &p.worker_id,
                    p.started_at.is_some()
                ),
                (
                    l.state,
                    &l.error_code,
                    l.recovery_count,
                    &l.worker_id,
                    l.started_at.is_some()
                ),
                "{policy:?} job {pid}"
            );
            let lite_events: Vec<(EventKind, Value)> = lite
                .events()
                .since(*lid, *lseq, 100)
                .unwrap()
                .into_iter()
                .map(|e| (e.kind, e.payload))
                .collect();
            assert_eq!(
                pg_events(&pg, *pid, *pseq),
                lite_events,
                "{policy:?} job {pid}"
            );
        }
        let to = if policy == RecoveryPolicy::Pause {
            JobState::Paused
        } else {
            JobState::Created
        };
        assert_eq!(pg.jobs().get(seqs[1].0).unwrap().state, to);
        assert_eq!(
            pg.jobs().get(seqs[2].0).unwrap().error_code.as_deref(),
            Some("RECOVERY_EXHAUSTED")
        );
        assert_eq!(pg.jobs().get(seqs[3].0).unwrap().state, JobState::Running);
        // a second tick finds nothing more
        assert!(pg
            .supervisor(opts(policy))
            .unwrap()
            .tick(pg.now())
            .unwrap()
            .recovered
            .is_empty());
        // the fresh job: an operator's recovery, audited like SQLite's
        let r = pg
            .supervisor(opts(policy))
            .unwrap()
            .recover_now(seqs[3].0, "ops@example")
            .unwrap();
        assert_eq!(r.to, to);
        let audit = db.query_i64(&format!(
            "select count(*) from audit_log where entity_id = '{}' and action = 'recover' and actor = 'ops@example'",
            seqs[3].0
        ));
        assert_eq!(audit, 1);
        let again = pg
            .supervisor(opts(policy))
            .unwrap()
            .recover_now(seqs[3].0, "ops@example")
            .unwrap_err();
        assert_eq!(again.code(), "ILLEGAL_TRANSITION");
        // cancel what is left so the next policy starts from no running job
        for (pid, ..) in &seqs {
            let _ = pg.jobs().cancel(*pid, "test", None);
        }
    }
}

const NODES: usize = 4;
const STALLED: usize = 60;

/// One node's supervisor: waits for the common start instant, then ticks until no stale
/// job is left; prints each recovery.
#[test]
#[ignore = "child process of pg_supervisors_on_every_node_rescue_each_stalled_job_once"]
fn pg_supervisor_child() {
    if !is_child() {
        return;
    }
    let url = std::env::var("RUNLEDGER_PG_URL").unwrap();
    let node = std::env::var("RUNLEDGER_NODE").unwrap();
    let start: i64 = std::env::var("RUNLEDGER_START_MS")
        .unwrap()
        .parse()
        .unwrap();
    let engine = PgEngine::open(&url).unwrap();
    let supervisor = engine
        .supervisor(SupervisorOptions {
            name: node.clone(),
            stale_after: Duration::from_secs(30),
            ..SupervisorOptions::default()
        })
        .unwrap();
    let wait = start - engine.now().unix_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
    // the jobs go stale one by one over the first seconds: tick until past the last
    let until = start + 4_000;
    let mut idle = 0;
    while idle < 3 {
        let report = supervisor.tick(engine.now()).unwrap();
        if report.recovered.is_empty() && engine.now().unix_ms() > until {
            idle += 1;
        }
        for r in report.recovered {
            println!("RECOVERED {} {}", r.job_id, r.attempt);
        }
    }
}

#[test]
fn pg_supervisors_on_every_node_rescue_each_stalled_job_once() {
    if is_child() {
        return;
    }
    let Some(mut db) = TestDb::new("sup_nodes") else {
        return;
    };
    // the nodes start together at `start`; job i's last heartbeat is 30 s (stale_after)
    // before `start + 40 ms * i`, so the jobs go stale one by one while every node ticks
    let engine = db.engine();
    let start = engine.now().unix_ms() + 1500;
    let (old, clock) = db.engine_at(&engine.now().to_string());
    for i in 0..STALLED {
        let beat = start - 30_000 + 40 * i as i64;
        clock.set(Timestamp::from_unix_ms(beat).unwrap());
        old.jobs()
            .create(&NewJob::new("u", "k", json!({"i": i})))
            .unwrap();
        old.jobs().claim("dead-worker", &["k"]).unwrap().unwrap();
    }
    let children: Vec<_> = (0..NODES)
        .map(|n| {
            spawn_child(
                "supervisor::pg_supervisor_child",
                &[
                    ("RUNLEDGER_PG_URL", db.url.clone()),
                    ("RUNLEDGER_NODE", format!("node-{n}")),
                    ("RUNLEDGER_START_MS", start.to_string()),
                ],
            )
        })
        .collect();
    let mut recovered: BTreeMap<i64, usize> = BTreeMap::new();
    let mut by_node = Vec::new();
    for child in children {
        let out = finish_child(child);
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut mine = 0;
        for w in words.windows(2) {
            if let ("RECOVERED", Ok(id)) = (w[0], w[1].parse::<i64>()) {
                *recovered.entry(id).or_default() += 1;
                mine += 1;
            }
        }
        by_node.push(mine);
    }
    eprintln!("recoveries per node: {by_node:?}");
    assert_eq!(recovered.len(), STALLED, "every stalled job recovered");
    assert!(
        recovered.values().all(|&n| n == 1),
        "a job recovered twice: {recovered:?}"
    );
    // the ledger agrees: one recovery per job, one recovered and one failed event each
    assert_eq!(
        db.query_i64("select count(*) from jobs where state = 'failed' and error_code = 'STALLED' and recovery_count = 1"),
        STALLED as i64
    );
    assert_eq!(
        db.query_i64("select count(*) from job_events where kind = 'recovered'"),
        STALLED as i64
    );
    assert_eq!(
        db.query_i64("select count(*) from job_events where kind = 'failed'"),
        STALLED as i64
    );
    assert_eq!(
        db.query_i64("select count(*) from (select job_id from job_events where kind in ('recovered', 'failed') group by job_id having count(*) <> 2) x"),
        0
    );
    // a tick by the supervisor does not audit (only an operator's recovery does)
    assert_eq!(db.query_i64("select count(*) from audit_log"), 0);
    // each node's bookkeeping row counts its own recoveries (all STALLED: failed)
    for (n, mine) in by_node.iter().enumerate() {
        let status = engine
            .supervisor(SupervisorOptions {
                name: format!("node-{n}"),
                ..SupervisorOptions::default()
            })
            .unwrap()
            .status()
            .unwrap()
            .unwrap();
        assert_eq!(
            (status.jobs_failed, status.jobs_recovered),
            (*mine as i64, 0),
            "node-{n}"
        );
        assert!(
            status.ticks >= 3 && status.last_tick_at.is_some(),
            "{status:?}"
        );
    }
    assert_eq!(
        db.query_i64("select sum(jobs_failed)::bigint from supervisor_state"),
        STALLED as i64
    );
}
