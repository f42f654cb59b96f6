//! Several processes standing in for machines against one database: each job claimed
//! once, at most one started run per lock key at any time, each due instant materialized
//! once although every node's ticker materializes it, each due slot fired once.

use std::collections::BTreeMap;
use std::time::Duration;

use runledger::pg::PgEngine;
use runledger::{
    Fire, FireOutcome, Misfire, NewJob, NewSchedule, RunStatus, Schedule, Scope, SlotClaim,
    SlotStatus, TickOptions, Timestamp, TriggerKind,
};
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

const TICKS: usize = 24;

/// One node's scheduler through `Engine::open("postgres://...")`: ticks at each minute of
/// the parent's window (all nodes at once), firing each slot it claims by starting and
/// ending one run for it; prints the slots it fired.
#[test]
#[ignore = "child process of pg_engine_tickers_on_several_nodes_fire_each_slot_once"]
fn pg_engine_ticker_child() {
    if !is_child() {
        return;
    }
    let url = std::env::var("RUNLEDGER_PG_URL").unwrap();
    let node = std::env::var("RUNLEDGER_NODE").unwrap();
    let from = Timestamp::parse(&std::env::var("RUNLEDGER_SLOTS_FROM").unwrap()).unwrap();
    let go: i64 = std::env::var("RUNLEDGER_START_MS")
        .unwrap()
        .parse()
        .unwrap();
    let engine = runledger::Engine::open(&url).unwrap();
    let pg = PgEngine::open(&url).unwrap();
    let fire = |claim: &SlotClaim, _: &Schedule| {
        let run = pg
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
        // a pipeline takes a while: meanwhile the other nodes tick on and claim the next slots
        std::thread::sleep(Duration::from_millis(20));
        pg.runs()
            .finish(run, RunStatus::Success, None, &json!({}))
            .unwrap();
        println!("SLOT {}", claim.slot_id);
        FireOutcome::Fired { run_ids: vec![run] }
    };
    let fire = ClaimedFire(&fire);
    // the nodes' "now" runs up to TICKS minutes apart: a claim timeout shorter than that
    // would let a node ahead take another's claim in flight for abandoned (given back and
    // fired again: at least once, the rule for a claim no run names yet)
    let opts = TickOptions {
        ticker: node,
        claim_timeout: Duration::from_secs(3600),
        ..TickOptions::default()
    };
    let wait = go - engine.now().unix_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
    for minute in 1..=TICKS {
        let now = from + Duration::from_secs(60 * minute as u64);
        let report = engine.schedules().tick_with(&opts, now, &fire).unwrap();
        println!("MADE {}", report.materialized);
    }
}

/// A `Fire` that fires through the claim (its runs name the slot).
struct ClaimedFire<'a>(&'a dyn Fn(&SlotClaim, &Schedule) -> FireOutcome);

impl Fire for ClaimedFire<'_> {
    fn fire(&self, _: &Schedule, _: Timestamp) -> FireOutcome {
        unreachable!("the tick calls fire_claimed")
    }

    fn fire_claimed(&self, claim: &SlotClaim, schedule: &Schedule, _: Timestamp) -> FireOutcome {
        (self.0)(claim, schedule)
    }
}

/// Several processes tick one PostgreSQL ledger through `Engine` at the same instants: each
/// due slot is materialized once and fired exactly once (misfire `all`: none is skipped,
/// whichever node runs ahead), by whichever node claimed it.
#[test]
fn pg_engine_tickers_on_several_nodes_fire_each_slot_once() {
    if is_child() {
        return;
    }
    let Some(mut db) = TestDb::new("engine_tickers") else {
        return;
    };
    let engine = runledger::Engine::open(&db.url).unwrap();
    let new = NewSchedule::new("every-minute", "slot", "targets", "every 1m", "UTC");
    engine
        .schedules()
        .create(&new.misfire(Misfire::All))
        .unwrap();
    // the window: the minutes after the schedule's first slot, ticked as "now" by each node
    let from = engine
        .schedules()
        .get("every-minute")
        .unwrap()
        .next_due_at
        .unwrap()
        - Duration::from_secs(60);
    // late enough that every child has opened its engine: they tick together
    let go = engine.now().unix_ms() + 3000;
    let children: Vec<_> = (0..NODES)
        .map(|n| {
            spawn_child(
                "nodes::pg_engine_ticker_child",
                &[
                    ("RUNLEDGER_PG_URL", db.url.clone()),
                    ("RUNLEDGER_NODE", format!("node-{n}")),
                    ("RUNLEDGER_SLOTS_FROM", from.to_string()),
                    ("RUNLEDGER_START_MS", go.to_string()),
                ],
            )
        })
        .collect();
    let mut fired: BTreeMap<i64, usize> = BTreeMap::new();
    let mut made = 0;
    let mut fired_by = Vec::new();
    for child in children {
        let out = finish_child(child);
        let words: Vec<&str> = out.split_whitespace().collect();
        fired_by.push(words.iter().filter(|w| **w == "SLOT").count());
        for pair in words.windows(2) {
            match (pair[0], pair[1].parse::<i64>()) {
                ("SLOT", Ok(id)) => *fired.entry(id).or_default() += 1,
                ("MADE", Ok(n)) => made += n,
                _ => {}
            }
        }
    }
    eprintln!("slots fired by each node: {fired_by:?}");
    assert_eq!(made, TICKS as i64, "each slot materialized by one node");
    assert_eq!(fired.len(), TICKS, "every slot fired");
    assert!(
        fired.values().all(|&n| n == 1),
        "a slot fired twice: {fired:?}"
    );
    let slots = engine.schedules().all_slots().unwrap();
    assert_eq!(slots.len(), TICKS);
    assert!(slots
        .iter()
        .all(|s| s.status == SlotStatus::Fired && s.run_ids.len() == 1));
    assert_eq!(
        slots.iter().map(|s| s.id).collect::<Vec<_>>(),
        fired.keys().copied().collect::<Vec<_>>()
    );
    assert_eq!(
        db.query_i64("select count(*) from ingest_runs where status = 'success'"),
        TICKS as i64
    );
    assert_eq!(
        db.query_i64("select count(distinct claimed_by) from due_runs") as usize,
        fired_by.iter().filter(|&&n| n > 0).count()
    );
}
