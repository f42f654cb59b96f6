//! Exactly-once slots across a crash (issue 13, item 3): a ticker killed between claiming
//! a slot and firing it, or after its run started but before recording the outcome.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use runledger::run::{Pipeline, StageOutput};
use runledger::schedule::NewSchedule;
use runledger::{
    Clock, Engine, Fire, FireOutcome, ManualClock, Schedule, ScheduledRuns, SlotClaim, SlotStatus,
    TickOptions, Timestamp,
};

use crate::common::*;

fn quarter() -> Duration {
    Duration::from_secs(15 * 60)
}

fn engine_at(path: &str, clock: &ManualClock) -> Engine {
    Engine::open_with(path, crate::common::options().with_clock(clock.clone())).unwrap()
}

/// The pipeline every test fires; with `RUNLEDGER_HANG_IN_STAGE` its stage prints
/// `IN_STAGE` and hangs (so the parent can kill the process after the run started).
fn ingest() -> Pipeline {
    Pipeline::builder("ingest")
        .stage("fetch", |_| {
            if std::env::var_os("RUNLEDGER_HANG_IN_STAGE").is_some() {
                println!("IN_STAGE");
                std::thread::sleep(Duration::from_secs(600));
            }
            Ok(StageOutput::done())
        })
        .build()
        .unwrap()
}

/// Child: ticks once as `ticker-dead`. Without `RUNLEDGER_HANG_IN_STAGE`, its fire prints
/// `CLAIMED` and hangs before starting anything; with it, the run starts and its stage hangs.
#[test]
#[ignore = "child process of the slot crash tests"]
fn child_ticks_and_hangs() {
    if !is_child() {
        return;
    }
    let path = std::env::var("RUNLEDGER_PATH").unwrap();
    let clock = ManualClock::new(t0() + quarter());
    let engine = engine_at(&path, &clock);
    struct HangBeforeFire;
    impl Fire for HangBeforeFire {
        fn fire(&self, _: &Schedule, _: Timestamp) -> FireOutcome {
            println!("CLAIMED");
            std::thread::sleep(Duration::from_secs(600));
            unreachable!("killed")
        }
    }
    let opts = TickOptions {
        ticker: "ticker-dead".into(),
        ..Default::default()
    };
    let runs = ScheduledRuns::new(engine.clone()).register(ingest());
    let fire: &dyn Fire = if std::env::var_os("RUNLEDGER_HANG_IN_STAGE").is_some() {
        &runs
    } else {
        &HangBeforeFire
    };
    engine
        .schedules()
        .tick_with(&opts, clock.now(), fire)
        .unwrap();
    unreachable!("killed before the tick returns");
}

/// A fresh file with schedule `q` (every 15 min), on a manual clock at [`t0`].
fn ledger_with_schedule() -> (tempfile::TempDir, String, Engine, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slots.db").display().to_string();
    let clock = ManualClock::new(t0());
    let engine = engine_at(&path, &clock);
    engine
        .schedules()
        .create(&NewSchedule::new(
            "q",
            "ingest",
            "targets",
            "every 15m",
            "UTC",
        ))
        .unwrap();
    (dir, path, engine, clock)
}

/// Runs the child until it prints `marker`, then SIGKILLs it. Returns the file's path.
fn kill_child_at(marker: &str, hang_in_stage: bool) -> (tempfile::TempDir, String) {
    let (dir, path, engine, _) = ledger_with_schedule();
    drop(engine);
    let mut envs = vec![("RUNLEDGER_PATH", path.clone())];
    if hang_in_stage {
        envs.push(("RUNLEDGER_HANG_IN_STAGE", "1".into()));
    }
    let mut child = spawn_child("reliability_slots::child_ticks_and_hangs", &envs);
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = false;
    for line in out.lines() {
        if line.unwrap().trim_end().ends_with(marker) {
            seen = true;
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(seen, "the child never printed {marker} ({status:?})");
    (dir, path)
}

fn slot_of(engine: &Engine) -> runledger::Slot {
    let slots = engine.schedules().slots("q").unwrap();
    assert_eq!(slots.len(), 1, "{slots:?}");
    slots.into_iter().next().unwrap()
}

fn runs_naming(engine: &Engine, slot_id: i64) -> Vec<i64> {
    engine
        .with_connection(|c| {
            let mut s = c.prepare(
                "select id from ingest_runs where json_extract(meta_json, '$.slotId') = ?1 order by id",
            )?;
            let ids = s.query_map([slot_id], |r| r.get(0))?;
            Ok(ids.collect::<Result<Vec<i64>, _>>()?)
        })
        .unwrap()
}

#[test]
fn regression_a_slot_claimed_by_a_ticker_killed_before_firing_was_lost() {
    let (_dir, path) = kill_child_at("CLAIMED", false);
    let clock = ManualClock::new(t0() + quarter());
    let engine = engine_at(&path, &clock);
    let slot = slot_of(&engine);
    assert_eq!(slot.status, SlotStatus::Claimed);
    assert!(runs_naming(&engine, slot.id).is_empty());
    let fire = ScheduledRuns::new(engine.clone()).register(ingest());
    let opts = TickOptions {
        ticker: "ticker-live".into(),
        ..Default::default()
    };

    // Within the claim timeout the claim is left alone: its ticker may be alive.
    let early = clock.now() + Duration::from_secs(60);
    clock.set(early);
    let r = engine.schedules().tick_with(&opts, early, &fire).unwrap();
    assert!(r.slots.is_empty(), "{r:?}");

    // Past it (10 minutes, not 6 hours), the slot is given back and fired by this ticker.
    let later = t0() + quarter() + TickOptions::default().claim_timeout + Duration::from_secs(1);
    assert!(TickOptions::default().claim_timeout <= Duration::from_secs(10 * 60));
    clock.set(later);
    let r = engine.schedules().tick_with(&opts, later, &fire).unwrap();
    assert_eq!(r.count(SlotStatus::Fired), 1, "{r:?}");
    let slot = slot_of(&engine);
    assert_eq!(slot.status, SlotStatus::Fired);
    assert_eq!(slot.run_ids, runs_naming(&engine, slot.id));
    assert_eq!(slot.run_ids.len(), 1);
    let report = runledger::doctor::check(&engine, &Default::default()).unwrap();
    assert!(report.is_clean(), "{:#?}", report.anomalies);
}

#[test]
fn a_ticker_killed_after_its_run_started_gets_its_slot_finished_from_that_run_not_fired_twice() {
    let (_dir, path) = kill_child_at("IN_STAGE", true);
    let clock = ManualClock::new(t0() + quarter());
    let engine = engine_at(&path, &clock);
    let slot = slot_of(&engine);
    assert_eq!(slot.status, SlotStatus::Claimed);
    let named = runs_naming(&engine, slot.id);
    assert_eq!(
        named.len(),
        1,
        "the run names its slot from its first commit"
    );
    let fire = ScheduledRuns::new(engine.clone()).register(ingest());
    let later = t0() + quarter() + TickOptions::default().claim_timeout + Duration::from_secs(1);
    clock.set(later);
    let r = engine
        .schedules()
        .tick_with(&TickOptions::default(), later, &fire)
        .unwrap();
    assert_eq!(r.count(SlotStatus::Fired), 1, "{r:?}");
    let slot = slot_of(&engine);
    assert_eq!(slot.run_ids, named);
    // No second run: the only run is the crashed one (swept once its lease expires).
    assert_eq!(engine.runs().list(&Default::default()).unwrap().len(), 1);
}

#[test]
fn a_live_ticker_whose_claim_was_given_back_cannot_start_a_second_run() {
    let (_dir, _path, engine, clock) = ledger_with_schedule();
    let runs = ScheduledRuns::new(engine.clone()).register(ingest());
    // A ticker that stalls past the claim timeout before firing; meanwhile another ticker
    // gives its claim back and fires the slot.
    struct Stalls<'a> {
        engine: &'a Engine,
        clock: &'a ManualClock,
        runs: &'a ScheduledRuns,
    }
    impl Fire for Stalls<'_> {
        fn fire(&self, _: &Schedule, _: Timestamp) -> FireOutcome {
            unreachable!("the tick calls fire_claimed")
        }
        fn fire_claimed(&self, claim: &SlotClaim, s: &Schedule, at: Timestamp) -> FireOutcome {
            let later = claim.claimed_at + TickOptions::default().claim_timeout + quarter() / 15;
            self.clock.set(later);
            let other = TickOptions {
                ticker: "other".into(),
                ..Default::default()
            };
            let r = self
                .engine
                .schedules()
                .tick_with(&other, later, self.runs)
                .unwrap();
            assert_eq!(r.count(SlotStatus::Fired), 1, "{r:?}");
            self.runs.fire_claimed(claim, s, at)
        }
    }
    let stalls = Stalls {
        engine: &engine,
        clock: &clock,
        runs: &runs,
    };
    let now = t0() + quarter();
    clock.set(now);
    engine.schedules().tick(now, &stalls).unwrap();
    let slot = slot_of(&engine);
    assert_eq!(slot.status, SlotStatus::Fired);
    assert_eq!(slot.run_ids.len(), 1);
    assert_eq!(runs_naming(&engine, slot.id), slot.run_ids);
    assert_eq!(engine.runs().list(&Default::default()).unwrap().len(), 1);
}
