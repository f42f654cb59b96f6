//! Several processes standing in for machines against one database: each job claimed
//! once, at most one started run per lock key at any time, each due instant materialized
//! once although every node's ticker materializes it, each due slot fired once.

use std::collections::BTreeMap;
use std::time::Duration;

use runledger::pg::PgEngine;
use runledger::{NewJob, RunStatus, Scope, Timestamp, TriggerKind};
use serde_json::json;

use crate::common::{finish_child, is_child, spawn_child, TestDb};

const NODES: usize = 4;
const JOBS: usize = 120;
const SLOTS: usize = 30;

/// One node: materializes the schedule's due instants (as every node's ticker does), claims
/// and completes jobs until none is left (trying the shared run lock with each), then fires
/// due slots until none is left; prints what it did.
#[test]
#[ignore = "child process of pg_several_nodes_share_one_ledger"]
fn pg_node_child() {
    if !is_child() {
        return;
    }
    let url = std::env::var("RUNLEDGER_PG_URL").unwrap();
    let node = std::env::var("RUNLEDGER_NODE").unwrap();
    let engine = PgEngine::open(&url).unwrap();
    // every node's ticker materializes the same due instants, as tickers do on each tick
    let schedule: i64 = std::env::var("RUNLEDGER_SCHEDULE")
        .unwrap()
        .parse()
        .unwrap();
    let start = Timestamp::parse(&std::env::var("RUNLEDGER_SLOTS_FROM").unwrap()).unwrap();
    // the nodes start together at the parent's instant, so their tickers race
    let go: i64 = std::env::var("RUNLEDGER_START_MS")
        .unwrap()
        .parse()
        .unwrap();
    let wait = go - engine.now().unix_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
    for i in 0..SLOTS {
        let due = start + Duration::from_secs(60 * i as u64);
        if let Some(slot) = engine.schedules().materialize(schedule, due).unwrap() {
            println!("MADE {slot}");
        }
    }
    let jobs = engine.jobs();
    while let Some(claim) = jobs.claim(&node, &[]).unwrap() {
        jobs.complete(&claim, &json!({"by": node})).unwrap();
        println!("JOB {}", claim.id());
        match engine.runs().start(
            "shared",
            Scope::Targets,
            TriggerKind::Manual,
            None,
            Duration::from_secs(60),
        ) {
            Ok(run) => {
                engine
                    .runs()
                    .finish(run, RunStatus::Success, None, &json!({}))
                    .unwrap();
                println!("RUN {run}");
            }
            Err(e) => assert_eq!(e.code(), "RUN_ALREADY_ACTIVE", "{e}"),
        }
    }
    loop {
        let claims = engine.schedules().claim_due(&node, 2).unwrap();
        if claims.is_empty() {
            break;
        }
        for claim in claims {
            let run = engine
                .runs()
                .start_for_slot(
                    "slot",
                    Scope::Targets,
                    TriggerKind::Schedule,
                    Some(&claim.slot_id.to_string()),
                    Duration::from_secs(60),
                    Some(claim.slot_id),
                )
                .unwrap();
            engine
                .runs()
                .finish(run, RunStatus::Success, None, &json!({}))
                .unwrap();
            engine.schedules().fired(&claim, &[run]).unwrap();
            println!("SLOT {}", claim.slot_id);
        }
    }
}

#[test]
fn pg_several_nodes_share_one_ledger() {
    if is_child() {
        return;
    }
    let Some(mut db) = TestDb::new("nodes") else {
        return;
    };
    let engine = db.engine();
    for i in 0..JOBS {
        engine
            .jobs()
            .create(&NewJob::new("u", "k", json!({"i": i})))
            .unwrap();
    }
    let rule = "every 15m".parse().unwrap();
    let zone = "UTC".parse().unwrap();
    let s = engine
        .schedules()
        .create("s", "slot", runledger::ScopeSelector::Targets, &rule, &zone)
        .unwrap();
    let start = engine.now() - Duration::from_secs(3600 * 24);
    let go = engine.now().unix_ms() + 1000;
    let children: Vec<_> = (0..NODES)
        .map(|n| {
            spawn_child(
                "nodes::pg_node_child",
                &[
                    ("RUNLEDGER_PG_URL", db.url.clone()),
                    ("RUNLEDGER_NODE", format!("node-{n}")),
                    ("RUNLEDGER_SCHEDULE", s.to_string()),
                    ("RUNLEDGER_SLOTS_FROM", start.to_string()),
                    ("RUNLEDGER_START_MS", go.to_string()),
                ],
            )
        })
        .collect();
    let mut jobs: BTreeMap<i64, usize> = BTreeMap::new();
    let mut made: BTreeMap<i64, usize> = BTreeMap::new();
    let mut slots: BTreeMap<i64, usize> = BTreeMap::new();
    let mut runs = 0;
    let mut made_by = Vec::new();
    for child in children {
        let out = finish_child(child);
        // the harness's "test ... " prefix may share a line with the first record
        let words: Vec<&str> = out.split_whitespace().collect();
        made_by.push(words.iter().filter(|w| **w == "MADE").count());
        for pair in words.windows(2) {
            match (pair[0], pair[1].parse::<i64>()) {
                ("JOB", Ok(id)) => *jobs.entry(id).or_default() += 1,
                ("MADE", Ok(id)) => *made.entry(id).or_default() += 1,
                ("SLOT", Ok(id)) => *slots.entry(id).or_default() += 1,
                ("RUN", Ok(_)) => runs += 1,
                _ => {}
            }
        }
    }
    eprintln!("slots materialized by each node: {made_by:?}");
    assert_eq!(jobs.len(), JOBS, "every job claimed");
    assert!(
        jobs.values().all(|&n| n == 1),
        "a job claimed twice: {jobs:?}"
    );
    assert_eq!(made.len(), SLOTS, "every due instant materialized");
    assert!(
        made.values().all(|&n| n == 1),
        "a slot reported made twice: {made:?}"
    );
    assert_eq!(
        db.query_i64("select count(*) from due_runs"),
        SLOTS as i64,
        "one slot per due instant, whichever node made it"
    );
    assert_eq!(
        db.query_i64("select count(distinct due_at) from due_runs"),
        SLOTS as i64
    );
    assert_eq!(
        slots.keys().collect::<Vec<_>>(),
        made.keys().collect::<Vec<_>>()
    );
    assert_eq!(slots.len(), SLOTS, "every slot fired");
    assert!(
        slots.values().all(|&n| n == 1),
        "a slot fired twice: {slots:?}"
    );
    assert!(runs >= 1);
    assert_eq!(
        db.query_i64("select count(*) from jobs where state = 'completed'"),
        JOBS as i64
    );
    assert_eq!(
        db.query_i64("select count(*) from due_runs where status = 'fired'"),
        SLOTS as i64
    );
    assert_eq!(
        db.query_i64(
            "select count(*) from ingest_runs where pipeline = 'shared' and status = 'success'"
        ),
        runs as i64
    );
    // the lock itself is the unique index: whatever the interleaving, every attempt either
    // held the key alone or was recorded as a refusal, and none is left holding it
    assert_eq!(
        db.query_i64("select count(*) from ingest_runs where pipeline = 'shared' and status = 'failed' and error_code <> 'RUN_ALREADY_ACTIVE'"),
        0
    );
    assert_eq!(
        db.query_i64("select count(*) from ingest_runs where status = 'started'"),
        0
    );
}
