//! Contention: 4 processes x 2 threads hammer one file (triggers on one lock key, claims,
//! heartbeats, schedule ticks) for both durability settings, while this process samples the
//! lock. Exactly one started run per lock key at every sample, every job claimed by exactly
//! one worker, each slot fired once, and no error at all (BUSY included) reaches a caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runledger::run::{Pipeline, Scope, StageError, StageOutput, TriggerKind};
use runledger::schedule::NewSchedule;
use runledger::{Clock, Error, FireOutcome, ManualClock, NewJob};
use serde_json::json;

use crate::common::*;
use crate::reliability::{count, durability_of, engine_on, seed, Rng};

const PROCESSES: usize = 4;
const THREADS: usize = 2;

#[test]
#[ignore = "child process of contention_processes_and_threads"]
fn child_contention_workload() {
    if !is_child() {
        return;
    }
    let env = |k: &str| std::env::var(k).unwrap();
    let ops: usize = env("RL_OPS").parse().unwrap();
    let seed: u64 = env("RL_SEED").parse().unwrap();
    let me = env("RL_NAME");
    let clock = ManualClock::new(t0());
    let engine = engine_on(&env("RL_DB"), &clock, durability_of(&env("RL_DURABILITY")));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (engine, clock, me) = (engine.clone(), clock.clone(), format!("{me}-t{t}"));
            std::thread::spawn(move || {
                let holder = engine.clone();
                let p = Pipeline::builder("hammer")
                    .stage("hold", move |ctx| {
                        let started: i64 = holder
                            .with_connection(|c| {
                                Ok(c.query_row(
                                    "select count(*) from ingest_runs where status = 'started' and lock_key = 'hammer:targets'",
                                    [],
                                    |r| r.get(0),
                                )?)
                            })
                            .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
                        if started != 1 {
                            println!("VIOLATION {} started runs seen by run {}", started, ctx.run_id());
                        }
                        Ok(StageOutput::done())
                    })
                    .build()
                    .unwrap();
                let fire = |s: &runledger::Schedule, slot: runledger::Timestamp| {
                    println!("FIRED {} {slot}", s.name);
                    FireOutcome::TurnedAway {
                        run_ids: vec![],
                        code: "HAMMER".into(),
                    }
                };
                let mut rng = Rng::new(seed ^ ((t as u64 + 1) * 0x9E37));
                let report = |e: Error| println!("ERROR {} {e}", e.code());
                for _ in 0..ops {
                    // 1 s per op keeps the processes' clocks within the 300 s lease of each other, so
                    // no process finalizes a live holder as abandoned.
                    clock.advance(Duration::from_secs(1));
                    match rng.below(3) {
                        0 => match engine.runs().trigger(&p, Scope::Targets.into(), TriggerKind::Manual) {
                            Ok(outs) => {
                                for o in outs {
                                    match o.result {
                                        Ok(run) => println!("WON {} {}", run.id, run.status),
                                        Err(Error::RunAlreadyActive { .. }) => println!("REFUSED"),
                                        Err(e) => report(e),
                                    }
                                }
                            }
                            Err(e) => report(e),
                        },
                        1 => match engine.jobs().claim(&me, &[]) {
                            Ok(Some(c)) => {
                                println!("CLAIMED {} {}", c.id(), c.attempt);
                                let r = engine
                                    .jobs()
                                    .heartbeat(&c)
                                    .and_then(|_| engine.jobs().progress(&c, 50, None))
                                    .and_then(|_| engine.jobs().complete(&c, &json!(me)));
                                if let Err(e) = r {
                                    report(e);
                                }
                            }
                            Ok(None) => {}
                            Err(e) => report(e),
                        },
                        _ => {
                            if let Err(e) = engine.schedules().tick(clock.now(), &fire) {
                                report(e);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn hammer(durability: &str, ops: usize, seed: u64) -> BTreeMap<&'static str, usize> {
    let (engine, _clock, dir) = file_engine();
    let db = dir.path().join("runledger.db").display().to_string();
    let jobs = PROCESSES * THREADS * ops / 4;
    for i in 0..jobs {
        engine
            .jobs()
            .create(&NewJob::new("hammer", "analysis", json!({ "i": i })))
            .unwrap();
    }
    engine
        .schedules()
        .create(&NewSchedule::new(
            "every-minute",
            "hammer",
            "targets",
            "every 1m",
            "UTC",
        ))
        .unwrap();
    // Sample the lock from this process while the children run.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, engine) = (done.clone(), engine.clone());
        std::thread::spawn(move || {
            let (mut samples, mut violations) = (0usize, 0usize);
            while !done.load(Ordering::Relaxed) {
                let over: i64 = engine
                    .with_connection(|c| {
                        Ok(c.query_row(
                            "select count(*) from (select lock_key from ingest_runs where status = 'started'
                             group by lock_key having count(*) > 1)",
                            [],
                            |r| r.get(0),
                        )?)
                    })
                    .unwrap();
                samples += 1;
                violations += over as usize;
                std::thread::sleep(Duration::from_millis(1));
            }
            (samples, violations)
        })
    };
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            spawn_child(
                "reliability_contention::child_contention_workload",
                &[
                    ("RL_DB", db.clone()),
                    ("RL_OPS", ops.to_string()),
                    ("RL_SEED", (seed + i as u64).to_string()),
                    ("RL_NAME", format!("p{i}")),
                    ("RL_DURABILITY", durability.into()),
                ],
            )
        })
        .collect();
    let mut stdout = String::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    done.store(true, Ordering::Relaxed);
    let (samples, violations) = sampler.join().unwrap();

    let lines: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            ["WON", "REFUSED", "CLAIMED", "FIRED", "ERROR", "VIOLATION"]
                .iter()
                .find_map(|k| l.find(k).map(|i| &l[i..]))
        })
        .collect();
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "{durability}: errors reached callers: {errors:#?}"
    );
    let seen: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("VIOLATION"))
        .collect();
    assert!(seen.is_empty(), "{durability}: {seen:#?}");
    assert_eq!(violations, 0, "{durability}: two started runs on one lock");
    let mut claims: HashMap<&str, usize> = HashMap::new();
    let mut fired: HashMap<&str, usize> = HashMap::new();
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    for l in &lines {
        let (kind, rest) = l.split_once(' ').unwrap_or((l, ""));
        let key = match kind {
            "CLAIMED" => {
                *claims.entry(rest.split(' ').next().unwrap()).or_default() += 1;
                "claims"
            }
            "FIRED" => {
                *fired.entry(rest).or_default() += 1;
                "slots fired"
            }
            "WON" if rest.ends_with("success") => "runs won",
            "WON" => "runs ended otherwise",
            "REFUSED" => "runs refused",
            _ => "other",
        };
        *tally.entry(key).or_default() += 1;
    }
    let doubles: Vec<_> = claims.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        doubles.is_empty(),
        "{durability}: claimed twice: {doubles:?}"
    );
    let doubles: Vec<_> = fired.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubles.is_empty(), "{durability}: fired twice: {doubles:?}");
    // The database agrees with what the callers saw.
    let (completed, attempts_ok, won): (i64, bool, i64) = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select (select count(*) from jobs where state = 'completed'),
                        (select coalesce(max(attempt), 0) <= 1 from jobs),
                        (select count(*) from ingest_runs where status = 'success')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?)
        })
        .unwrap();
    assert_eq!(completed as usize, claims.len());
    assert!(attempts_ok);
    assert_eq!(won as usize, tally.get("runs won").copied().unwrap_or(0));
    assert!(tally.get("runs won").copied().unwrap_or(0) > 0);
    assert_eq!(
        tally.get("runs ended otherwise"),
        None,
        "a holder was cut short"
    );
    assert!(!claims.is_empty());
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert_eq!(report.errors().count(), 0, "{:#?}", report.anomalies);
    tally.insert("lock samples", samples);
    tally.insert("operations", PROCESSES * THREADS * ops);
    tally
}

#[test]
fn contention_processes_and_threads() {
    let ops = count(100, 1000);
    let seed = seed(0x00C0_4E4D);
    for durability in ["full", "normal"] {
        let tally = hammer(durability, ops, seed);
        eprintln!(
            "contention ({durability}): seed {seed:#x}, {PROCESSES} processes x {THREADS} threads x {ops} ops: {tally:?}, 0 errors"
        );
    }
}
