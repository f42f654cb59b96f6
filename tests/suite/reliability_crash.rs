//! Crash consistency: a child process runs a mixed workload and is killed with SIGKILL at
//! seeded random points; after each kill this process opens the file, finds no damage
//! (doctor + integrity_check), rescues what the crash left (runs sweep, supervisor, schedule
//! tick past the claim timeout), and finds every commit the child saw return.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use runledger::doctor::{self, DoctorOptions};
use runledger::run::{Pipeline, RawInput, Scope, StageError, StageOutput, TriggerKind};
use runledger::schedule::NewSchedule;
use runledger::{
    Clock, Durability, Engine, Error, ManualClock, NewJob, ScheduledRuns, Supervisor,
    SupervisorOptions, Timestamp,
};
use serde_json::json;

use crate::common::*;
use crate::reliability::{count, durability_of, engine_on, seed, Rng};

const DAY: Duration = Duration::from_secs(86_400);

fn pipeline(clock: &ManualClock, tag: u64) -> Pipeline {
    let c = clock.clone();
    let c2 = clock.clone();
    Pipeline::builder("crash")
        .stage("download", move |ctx| {
            c.advance(Duration::from_millis(300));
            let body = format!("payload {tag} run {} at {}", ctx.run_id(), ctx.now());
            ctx.store_raw(&RawInput {
                source: "sim",
                upstream_ref: None,
                content_type: "text/plain",
                bytes: body.as_bytes(),
            })
            .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            Ok(StageOutput::with_detail(json!({"bytes": body.len()})))
        })
        .stage("persist", move |_| {
            c2.advance(Duration::from_millis(200));
            Ok(StageOutput::with_detail(json!({"rows": 1})))
        })
        .build()
        .unwrap()
}

/// The child: a mixed workload until it is killed. After each commit returns it appends a
/// line to the log file and fsyncs it, so every logged line is a commit that must survive.
#[test]
#[ignore = "child process of crash_consistency_under_sigkill"]
fn child_crash_workload() {
    if !is_child() {
        return;
    }
    let env = |k: &str| std::env::var(k).unwrap();
    let seed: u64 = env("RL_SEED").parse().unwrap();
    let clock = ManualClock::new(Timestamp::parse(&env("RL_BASE")).unwrap());
    let durability = durability_of(&env("RL_DURABILITY"));
    let engine = engine_on(&env("RL_DB"), &clock, durability);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(env("RL_LOG"))
        .unwrap();
    let mut commit = |line: String| {
        log.write_all(format!("{line}\n").as_bytes()).unwrap();
        log.sync_data().unwrap();
    };
    if engine.schedules().get("crash-15m").is_err() {
        engine
            .schedules()
            .create(&NewSchedule::new(
                "crash-15m",
                "crash",
                "targets",
                "every 15m",
                "UTC",
            ))
            .unwrap();
    }
    let p = pipeline(&clock, seed);
    let fire = ScheduledRuns::new(engine.clone()).register(pipeline(&clock, seed));
    let jobs = engine.jobs();
    let mut mine: Vec<(i64, i64, u8)> = Vec::new();
    let mut rng = Rng::new(seed);
    println!("CHILD READY");
    std::io::stdout().flush().unwrap();
    for _ in 0..100_000 {
        clock.advance(Duration::from_secs(1));
        match rng.below(7) {
            0 | 1 => {
                let job = jobs
                    .create(&NewJob::new("crash", "research", json!({"seed": seed})))
                    .unwrap();
                commit(format!("J {}", job.id));
            }
            2 => {
                if let Some(c) = jobs.claim("crasher", &[]).unwrap() {
                    commit(format!("K {} {}", c.id(), c.attempt));
                    mine.push((c.id(), c.attempt, 0));
                }
            }
            3 if !mine.is_empty() => {
                let i = rng.below(mine.len() as u64) as usize;
                let (id, attempt, pct) = mine[i];
                let next = (pct + 1 + rng.below(40) as u8).min(99);
                jobs.progress(&claim_at(&jobs, id, attempt), next, Some("work"))
                    .unwrap();
                jobs.checkpoint(&claim_at(&jobs, id, attempt), &json!({"pct": next}))
                    .unwrap();
                mine[i].2 = next;
                commit(format!("P {id} {next}"));
            }
            4 if !mine.is_empty() => {
                let i = rng.below(mine.len() as u64) as usize;
                let (id, attempt, _) = mine.swap_remove(i);
                if rng.below(4) == 0 {
                    jobs.fail(&claim_at(&jobs, id, attempt), "BOOM", "seeded failure")
                        .unwrap();
                    commit(format!("F {id}"));
                } else {
                    jobs.complete(&claim_at(&jobs, id, attempt), &json!({"ok": id}))
                        .unwrap();
                    commit(format!("C {id}"));
                }
            }
            5 => {
                for out in engine
                    .runs()
                    .trigger(&p, Scope::Targets.into(), TriggerKind::Manual)
                    .unwrap()
                {
                    match out.result {
                        Ok(run) => commit(format!("R {} {}", run.id, run.status)),
                        Err(Error::RunAlreadyActive { .. }) => {}
                        Err(e) => panic!("trigger: {e}"),
                    }
                }
            }
            6 => {
                clock.advance(Duration::from_secs(15 * 60));
                let report = engine.schedules().tick(clock.now(), &fire).unwrap();
                for s in report.slots {
                    commit(format!("S {} {}", s.slot_id, s.status));
                }
            }
            _ => {
                for &(id, attempt, _) in &mine {
                    jobs.heartbeat(&claim_at(&jobs, id, attempt)).unwrap();
                }
            }
        }
    }
}

fn query_text(engine: &Engine, sql: &str, id: i64) -> Option<String> {
    engine
        .with_connection(|c| {
            use rusqlite::OptionalExtension;
            Ok(c.query_row(sql, [id], |r| r.get(0)).optional()?)
        })
        .unwrap()
}

/// Every logged commit is in the database, in the state (or a later one) it was logged in.
fn verify_log(engine: &Engine, log: &str, skip: usize) -> usize {
    let mut checked = 0;
    // The last line may be torn by the kill: only whole lines count.
    let whole = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    for line in whole.lines().skip(skip) {
        let parts: Vec<&str> = line.split(' ').collect();
        let id: i64 = parts[1].parse().unwrap();
        let job_state = || query_text(engine, "select state from jobs where id = ?1", id);
        match parts[0] {
            "J" => assert!(job_state().is_some(), "lost job {id}"),
            "K" => {
                let attempt = query_i64(engine, "select attempt from jobs where id = ?1", [id]);
                assert!(
                    attempt >= Some(parts[2].parse().unwrap()),
                    "lost claim {line}"
                );
            }
            "P" => {
                let state = job_state().unwrap();
                let progress = query_i64(engine, "select progress from jobs where id = ?1", [id]);
                assert!(
                    state == "completed" || progress >= Some(parts[2].parse().unwrap()),
                    "lost progress {line}: {state} {progress:?}"
                );
                assert!(
                    query_text(engine, "select checkpoint from jobs where id = ?1", id).is_some(),
                    "lost checkpoint {line}"
                );
            }
            "C" => assert_eq!(job_state().as_deref(), Some("completed"), "{line}"),
            "F" => assert_eq!(job_state().as_deref(), Some("failed"), "{line}"),
            "R" => assert_eq!(
                query_text(engine, "select status from ingest_runs where id = ?1", id).as_deref(),
                Some(parts[2]),
                "{line}"
            ),
            "S" => assert_eq!(
                query_text(engine, "select status from due_runs where id = ?1", id).as_deref(),
                Some(parts[2]),
                "{line}"
            ),
            other => panic!("unknown log line {other}"),
        }
        checked += 1;
    }
    skip + checked
}

/// Nothing half-applied: every outcome comes with the rest of its transaction.
fn assert_whole(engine: &Engine) {
    let broken: Vec<String> = engine
        .with_connection(|c| {
            let mut s = c.prepare(
                "select 'completed job ' || j.id || ' without its completed event or result' from jobs j
                   where j.state = 'completed' and (j.result is null or
                     (select kind from job_events where job_id = j.id order by seq desc limit 1) <> 'completed')
                 union all
                 select 'job ' || j.id || ' without events' from jobs j
                   where not exists (select 1 from job_events where job_id = j.id)
                 union all
                 select 'success run ' || r.id || ' without both stages and its raw record' from ingest_runs r
                   where r.status = 'success' and r.pipeline = 'crash'
                     and (json_array_length(r.timeline) <> 2
                          or (select count(*) from raw_records where run_id = r.id) <> 1)
                 union all
                 select 'fired slot ' || d.id || ' names a missing run' from due_runs d, json_each(d.run_ids) e
                   where d.status = 'fired' and not exists (select 1 from ingest_runs where id = e.value)
                 union all
                 select 'claimed job ' || j.id || ' without its claimed event' from jobs j
                   where j.attempt > 0 and not exists
                     (select 1 from job_events where job_id = j.id and kind = 'claimed')",
            )?;
            let rows = s.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert!(broken.is_empty(), "half-applied: {broken:#?}");
}

#[test]
fn crash_consistency_under_sigkill() {
    // RUNLEDGER_CRASH_KILLS overrides the count, so that a long run can be split over
    // several processes, each with its own seed (RUNLEDGER_SEED) and file.
    let kills = std::env::var("RUNLEDGER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| count(20, 500));
    let seed = seed(0x5EED_C0A5);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db").display().to_string();
    let log_path = dir.path().join("commits.log");
    let mut total_lines = 0;
    let mut rescued: HashMap<&str, usize> = HashMap::new();
    for round in 0..kills {
        let base = t0() + DAY * 30 * round as u32;
        let durability = if round % 2 == 0 { "full" } else { "normal" };
        let mut child = spawn_child(
            "reliability_crash::child_crash_workload",
            &[
                ("RL_DB", db.clone()),
                ("RL_LOG", log_path.display().to_string()),
                ("RL_SEED", (seed ^ round as u64).to_string()),
                ("RL_BASE", base.to_string()),
                ("RL_DURABILITY", durability.into()),
            ],
        );
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            if line.trim_end().ends_with("CHILD READY") {
                break;
            }
            if n == 0 {
                let o = child.wait_with_output().unwrap();
                panic!(
                    "child died before starting: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: child finished before the kill"
        );

        // Another process (this one) opens the file at a time past every lease and threshold.
        let clock = ManualClock::new(base + DAY * 29);
        let engine = engine_on(&db, &clock, Durability::Full);
        let ok: String = engine
            .with_connection(|c| Ok(c.query_row("pragma integrity_check", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(ok, "ok", "round {round}");
        let report = doctor::check(&engine, &DoctorOptions::default()).unwrap();
        let errors: Vec<_> = report.errors().collect();
        assert!(errors.is_empty(), "round {round}: {errors:#?}");
        for w in report.warnings() {
            *rescued.entry(w.check).or_default() += 1;
        }
        // Rescue as specified: sweep abandoned runs, recover stalled jobs, fail stuck slots.
        engine.runs().sweep().unwrap();
        Supervisor::new(engine.clone(), SupervisorOptions::default())
            .unwrap()
            .tick(clock.now())
            .unwrap();
        let fire = ScheduledRuns::new(engine.clone()).register(pipeline(&clock, seed));
        engine.schedules().tick(clock.now(), &fire).unwrap();
        let after = doctor::check(&engine, &DoctorOptions::default()).unwrap();
        assert!(
            after.is_clean(),
            "round {round} after rescue: {:#?}",
            after.anomalies
        );
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        // The lines of this round (earlier ones were checked after earlier kills, and all
        // of them again at the end).
        total_lines = verify_log(&engine, &log, total_lines);
        assert_whole(&engine);
        if (round + 1) % 10 == 0 {
            // Progress for the long mode (hours on a loaded machine): figures so far.
            eprintln!(
                "crash consistency: {} of {kills} SIGKILLs survived, doctor clean after each, {total_lines} logged commits verified, rescued: {rescued:?}",
                round + 1
            );
        }
    }
    let clock = ManualClock::new(t0());
    let engine = engine_on(&db, &clock, Durability::Full);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(verify_log(&engine, &log, 0), total_lines);
    eprintln!(
        "crash consistency: seed {seed:#x}, {kills} SIGKILLs survived, {total_lines} logged commits verified, rescued after kills: {rescued:?}"
    );
    assert!(total_lines > 0);
}
