//! Schedules and due slots: the tick, misfire policies, races, DST, edits, and the
//! due_runs state machine from both sides.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use runledger::schedule::{state::TRANSITIONS, LoopOptions, DEFAULT_SCHEDULE_NAME};
use runledger::{
    Engine, Error, Fire, FireOutcome, ManualClock, Misfire, NewSchedule, Schedule, ScheduleEdit,
    SlotStatus, TickOptions, Timestamp,
};

use crate::common::*;
use crate::snap_json;

/// Since V5 a fired slot's run_ids must name runs that exist, so the fake `Fire`s of these
/// tests name runs seeded here: ids 1..=500, terminal (turned away), written before any slot.
fn seed_runs(engine: &Engine) {
    engine
        .with_connection(|c| {
            Ok(c.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
                 INSERT INTO ingest_runs (pipeline, scope, trigger, status, lock_key, started_at,
                                          finished_at, duration_ms, error_code, meta_json)
                 SELECT 'seed', 'targets', 'schedule', 'failed', 'seed:targets',
                        '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 0, 'SEED',
                        '{\"blockedStage\":\"seed\",\"errorCode\":\"SEED\",\"source\":\"schedule\",\"scope\":\"targets\"}'
                 FROM n",
            )?)
        })
        .unwrap();
}

/// [`crate::common::mem_engine`] with [`seed_runs`].
fn mem_engine() -> (Engine, ManualClock) {
    let (engine, clock) = crate::common::mem_engine();
    seed_runs(&engine);
    (engine, clock)
}

/// [`crate::common::file_engine`] with [`seed_runs`].
fn file_engine() -> (Engine, ManualClock, tempfile::TempDir) {
    let (engine, clock, dir) = crate::common::file_engine();
    seed_runs(&engine);
    (engine, clock, dir)
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn days(n: u64) -> Duration {
    hours(24 * n)
}

fn ticker(name: &str) -> TickOptions {
    TickOptions {
        ticker: name.into(),
        ..TickOptions::default()
    }
}

/// A fire that records every call and hands out run ids 1, 2, 3...; a `both` scope gets
/// two runs (targets then universe).
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, Timestamp)>>,
    next_run: AtomicI64,
}

impl Recorder {
    fn calls(&self) -> Vec<(String, String)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(n, t)| (n.clone(), t.to_string()))
            .collect()
    }
}

impl Fire for Recorder {
    fn fire(&self, schedule: &Schedule, slot: Timestamp) -> FireOutcome {
        self.calls
            .lock()
            .unwrap()
            .push((schedule.name.clone(), slot));
        let runs = if schedule.scope == "both" { 2 } else { 1 };
        let run_ids = (0..runs)
            .map(|_| self.next_run.fetch_add(1, Ordering::SeqCst) + 1)
            .collect();
        FireOutcome::Fired { run_ids }
    }
}

/// Ticks at the clock's time, with the clock set to `at` first.
fn tick_at(
    engine: &Engine,
    clock: &ManualClock,
    at: Timestamp,
    fire: &dyn Fire,
) -> runledger::TickReport {
    clock.set(at);
    engine
        .schedules()
        .tick_with(&ticker("ticker-a"), at, fire)
        .unwrap()
}

fn history(engine: &Engine) -> Vec<runledger::Slot> {
    engine.schedules().all_slots().unwrap()
}

/// The due_runs history as one line per slot, for snapshots:
/// `due_at schedule status [runs] code | created claimed by finished`.
fn history_lines(engine: &Engine) -> Vec<String> {
    let t = |t: Option<Timestamp>| t.map_or("-".to_string(), |t| t.to_string());
    history(engine)
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {:?} {} | created {} claimed {} by {} finished {}",
                s.due_at,
                s.schedule,
                s.status,
                s.run_ids,
                s.outcome_code.as_deref().unwrap_or("-"),
                s.created_at,
                t(s.claimed_at),
                s.claimed_by.as_deref().unwrap_or("-"),
                t(s.finished_at),
            )
        })
        .collect()
}

fn daily(name: &str, rule: &str, zone: &str) -> NewSchedule {
    NewSchedule::new(name, "ingest", "targets", rule, zone)
}

#[test]
fn a_week_of_daily_slots_fires_each_once_with_both_scopes_run_ids() {
    let (engine, clock) = mem_engine();
    let s = engine.schedules().ensure_default().unwrap();
    snap_json!("default_schedule", &s);
    // t0 is 19:30 Shanghai exactly: the first slot is strictly after it, tomorrow.
    assert_eq!(s.next_due_at, Some(ts("2026-11-23T11:30:00.000Z")));
    let fire = Recorder::default();
    for day in 1..=7u64 {
        // A tick before the slot does nothing, one at the slot fires it, one after does not.
        let slot = t0() + days(day);
        let before = tick_at(&engine, &clock, slot - Duration::from_millis(1), &fire);
        assert_eq!((before.materialized, before.slots.len()), (0, 0));
        let at = tick_at(&engine, &clock, slot, &fire);
        assert_eq!(at.count(SlotStatus::Fired), 1, "day {day}");
        assert_eq!(at.next_due, Some(slot + days(1)));
        let after = tick_at(&engine, &clock, slot + hours(1), &fire);
        assert!(after.slots.is_empty());
    }
    assert_eq!(fire.calls().len(), 7);
    let h = history(&engine);
    assert!(h
        .iter()
        .all(|s| s.status == SlotStatus::Fired && s.run_ids.len() == 2));
    snap_json!("week_of_daily_slots", &history_lines(&engine));
    // ensure_default is idempotent.
    assert_eq!(engine.schedules().ensure_default().unwrap().id, s.id);
    assert_eq!(engine.schedules().list().unwrap().len(), 1);
}

#[test]
fn downtime_across_three_slots_under_each_misfire_policy() {
    let (engine, clock) = mem_engine();
    for m in Misfire::ALL {
        engine
            .schedules()
            .create(&daily(m.as_str(), "daily 19:30", "Asia/Shanghai").misfire(m))
            .unwrap();
    }
    let fire = Recorder::default();
    // Down from t0 until one hour after the third slot.
    let report = tick_at(&engine, &clock, t0() + days(3) + hours(1), &fire);
    assert_eq!(report.materialized, 9);
    let by = |name: &str, st: SlotStatus| {
        report
            .slots
            .iter()
            .filter(|s| s.schedule == name && s.status == st)
            .count()
    };
    assert_eq!(by("latest_only", SlotStatus::Fired), 1);
    assert_eq!(by("latest_only", SlotStatus::Skipped), 2);
    assert_eq!(by("all", SlotStatus::Fired), 3);
    assert_eq!(by("skip", SlotStatus::Skipped), 3);
    // latest_only fired the latest one.
    let latest = report
        .slots
        .iter()
        .find(|s| s.schedule == "latest_only" && s.status == SlotStatus::Fired)
        .unwrap();
    assert_eq!(latest.due_at, t0() + days(3));
    // After the downtime, the skip policy fires an on-time slot again.
    let next = tick_at(&engine, &clock, t0() + days(4), &fire);
    assert_eq!(next.count(SlotStatus::Fired), 3);
    snap_json!("downtime_three_slots_each_policy", &history_lines(&engine));
}

#[test]
fn the_skip_policy_fires_a_slot_that_is_late_by_less_than_the_grace() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("s", "daily 19:30", "Asia/Shanghai").misfire(Misfire::Skip))
        .unwrap();
    let fire = Recorder::default();
    let opts = TickOptions {
        ticker: "t".into(),
        misfire_grace: Duration::from_secs(60),
        ..TickOptions::default()
    };
    let slot = t0() + days(1);
    clock.set(slot + Duration::from_secs(60));
    let r = engine
        .schedules()
        .tick_with(&opts, slot + Duration::from_secs(60), &fire)
        .unwrap();
    assert_eq!(r.count(SlotStatus::Fired), 1, "exactly at the grace: fired");
    let slot2 = slot + days(1);
    let late = slot2 + Duration::from_secs(61);
    clock.set(late);
    let r = engine.schedules().tick_with(&opts, late, &fire).unwrap();
    assert_eq!(r.count(SlotStatus::Skipped), 1, "past the grace: skipped");
    assert_eq!(r.slots[0].code.as_deref(), Some("MISFIRE_SKIPPED"));
}

#[test]
fn two_tickers_racing_in_threads_fire_each_slot_once() {
    let (engine, clock, dir) = file_engine();
    for i in 0..20 {
        engine
            .schedules()
            .create(
                &NewSchedule::new(&format!("s{i:02}"), "ingest", "targets", "every 1m", "UTC")
                    .misfire(Misfire::All),
            )
            .unwrap();
    }
    let path = dir.path().join("runledger.db");
    let fire = Arc::new(Recorder::default());
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = ["ticker-a", "ticker-b"]
        .into_iter()
        .map(|name| {
            let (path, fire, barrier, clock) =
                (path.clone(), fire.clone(), barrier.clone(), clock.clone());
            std::thread::spawn(move || {
                // Each thread has its own connection, like a separate process.
                let engine =
                    Engine::open_with(&path, crate::common::options().with_clock(clock)).unwrap();
                let mut fired = 0;
                for minute in 1..=10u64 {
                    barrier.wait();
                    let now = t0() + Duration::from_secs(minute * 60);
                    let r = engine
                        .schedules()
                        .tick_with(&ticker(name), now, &*fire)
                        .unwrap();
                    fired += r.count(SlotStatus::Fired);
                }
                fired
            })
        })
        .collect();
    let fired: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(fired, 200);
    let mut seen = HashMap::new();
    for call in fire.calls() {
        *seen.entry(call).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 200);
    assert!(seen.values().all(|&n| n == 1), "a slot fired twice");
    let h = history(&engine);
    assert_eq!(h.len(), 200);
    assert!(h.iter().all(|s| s.status == SlotStatus::Fired));
}

/// Child of `two_ticker_processes_fire_each_slot_once`: ticks the file in
/// `RUNLEDGER_DB` at `RUNLEDGER_NOW` and appends each fired slot to `RUNLEDGER_LOG`.
#[test]
#[ignore]
fn child_ticker() {
    if !is_child() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let now = ts(&var("RUNLEDGER_NOW"));
    let engine = Engine::open_with(
        var("RUNLEDGER_DB"),
        crate::common::options().with_clock(ManualClock::new(now)),
    )
    .unwrap();
    let log = Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(var("RUNLEDGER_LOG"))
            .unwrap(),
    );
    let fire = |s: &Schedule, slot: Timestamp| {
        // One write per line with O_APPEND: lines from two processes never interleave.
        let line = format!("{} {slot}\n", s.name);
        log.lock().unwrap().write_all(line.as_bytes()).unwrap();
        FireOutcome::Fired {
            run_ids: vec![i64::from(std::process::id() % 500 + 1)],
        }
    };
    let opts = ticker(&format!("child-{}", std::process::id()));
    for _ in 0..5 {
        engine.schedules().tick_with(&opts, now, &fire).unwrap();
    }
}

#[test]
fn two_ticker_processes_fire_each_slot_once() {
    let (engine, _clock, dir) = file_engine();
    for i in 0..30 {
        engine
            .schedules()
            .create(
                &NewSchedule::new(&format!("p{i:02}"), "ingest", "targets", "every 1m", "UTC")
                    .misfire(Misfire::All),
            )
            .unwrap();
    }
    let log = dir.path().join("fires.log");
    std::fs::write(&log, "").unwrap();
    let envs = [
        (
            "RUNLEDGER_DB",
            dir.path().join("runledger.db").display().to_string(),
        ),
        ("RUNLEDGER_LOG", log.display().to_string()),
        (
            "RUNLEDGER_NOW",
            (t0() + Duration::from_secs(600)).to_string(),
        ),
    ];
    let children: Vec<_> = (0..2)
        .map(|_| spawn_child("schedule::child_ticker", &envs))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 300, "30 schedules x 10 minutes");
    let unique: std::collections::HashSet<_> = lines.iter().collect();
    assert_eq!(unique.len(), 300, "a slot fired twice");
    let h = history(&engine);
    assert_eq!(h.len(), 300);
    assert!(h.iter().all(|s| s.status == SlotStatus::Fired));
}

#[test]
fn new_york_dst_transitions_fire_once_per_day_by_the_documented_policy() {
    let (engine, clock) = mem_engine();
    // Write times never go back within an engine: start before the first window.
    clock.set(ts("2026-03-07T00:00:00.000Z"));
    for (name, rule) in [
        ("gap-0230", "daily 02:30"),
        ("overlap-0130", "daily 01:30"),
        ("edge-0200", "daily 02:00"),
        ("evening-1930", "daily 19:30"),
    ] {
        engine
            .schedules()
            .create(&daily(name, rule, "America/New_York"))
            .unwrap();
    }
    let fire = Recorder::default();
    // Tick every 10 minutes across both 2026 transitions.
    for (from, to) in [
        ("2026-03-07T00:00:00.000Z", "2026-03-10T00:00:00.000Z"),
        ("2026-10-31T00:00:00.000Z", "2026-11-03T00:00:00.000Z"),
    ] {
        // Jump over the time between the windows without firing (disable, re-enable).
        for s in engine.schedules().list().unwrap() {
            engine.schedules().disable(&s.name).unwrap();
        }
        clock.set(ts(from));
        for s in engine.schedules().list().unwrap() {
            engine.schedules().enable(&s.name).unwrap();
        }
        let mut now = ts(from);
        while now < ts(to) {
            let r = tick_at(&engine, &clock, now, &fire);
            assert!(r.slots.iter().all(|s| s.status == SlotStatus::Fired));
            now = now + Duration::from_secs(600);
        }
    }
    let fired: Vec<(String, String)> = fire.calls();
    let of = |name: &str| -> Vec<String> {
        fired
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .collect()
    };
    assert_eq!(
        of("gap-0230"),
        [
            "2026-03-07T07:30:00.000Z", // 02:30 EST
            "2026-03-08T07:00:00.000Z", // 02:30 does not exist: 03:00 EDT
            "2026-03-09T06:30:00.000Z", // 02:30 EDT
            "2026-10-31T06:30:00.000Z",
            "2026-11-01T07:30:00.000Z", // 02:30 EST (after the fall back)
            "2026-11-02T07:30:00.000Z",
        ]
    );
    assert_eq!(
        of("overlap-0130"),
        [
            "2026-03-07T06:30:00.000Z",
            "2026-03-08T06:30:00.000Z", // 01:30 EST, before the gap
            "2026-03-09T05:30:00.000Z",
            "2026-10-31T05:30:00.000Z",
            "2026-11-01T05:30:00.000Z", // 01:30 EDT, the earlier one; not 06:30Z again
            "2026-11-02T06:30:00.000Z",
        ]
    );
    snap_json!("new_york_dst", &history_lines(&engine));
}

#[test]
fn a_disabled_schedule_materializes_nothing_and_resumes_from_now() {
    let (engine, clock) = mem_engine();
    let mut new = daily("off", "daily 19:30", "Asia/Shanghai");
    new.enabled = false;
    let s = engine.schedules().create(&new).unwrap();
    assert!(!s.enabled);
    engine
        .schedules()
        .create(&daily("on", "daily 19:30", "Asia/Shanghai").misfire(Misfire::All))
        .unwrap();
    let fire = Recorder::default();
    for day in 1..=3 {
        tick_at(&engine, &clock, t0() + days(day), &fire);
    }
    assert!(engine.schedules().slots("off").unwrap().is_empty());
    assert_eq!(engine.schedules().slots("on").unwrap().len(), 3);
    // Enabled at 12:00 Shanghai on the fourth day: the missed slots are not fired; the next
    // one is that evening.
    clock.set(t0() + days(3) + hours(17));
    let s = engine.schedules().enable("off").unwrap();
    assert_eq!(s.next_due_at, Some(t0() + days(4)));
    let r = tick_at(&engine, &clock, t0() + days(4), &fire);
    assert_eq!(r.count(SlotStatus::Fired), 2);
    // Disabled again, then ticked through two slots: nothing for it.
    engine.schedules().disable("off").unwrap();
    tick_at(&engine, &clock, t0() + days(6), &fire);
    assert_eq!(engine.schedules().slots("off").unwrap().len(), 1);
    snap_json!("disabled_schedule", &history_lines(&engine));
}

#[test]
fn a_schedule_edited_between_ticks_never_fires_an_old_rule_slot() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("e", "daily 19:30", "Asia/Shanghai").misfire(Misfire::All))
        .unwrap();
    let fire = Recorder::default();
    tick_at(&engine, &clock, t0() + days(1), &fire); // 11-23 19:30 fired
                                                     // Edited at 11-24 08:00 Shanghai to 07:00: 07:00 today has passed, so the next is
                                                     // tomorrow 07:00; the old 19:30 slot of today is never materialized.
    clock.set(ts("2026-11-24T00:00:00.000Z"));
    let s = engine
        .schedules()
        .edit(
            "e",
            &ScheduleEdit {
                rule: Some("daily 07:00".into()),
                ..ScheduleEdit::default()
            },
        )
        .unwrap();
    assert_eq!(s.next_due_at, Some(ts("2026-11-24T23:00:00.000Z")));
    assert_eq!(s.rule.to_string(), "daily 07:00");
    let r = tick_at(&engine, &clock, ts("2026-11-24T11:30:00.000Z"), &fire);
    assert!(r.slots.is_empty(), "old rule's 19:30 must not fire: {r:?}");
    tick_at(&engine, &clock, ts("2026-11-24T23:00:00.000Z"), &fire);
    // Down for two days, then edited to another zone before any tick: the missed slots of
    // the old rule are not fired either.
    clock.set(ts("2026-11-27T01:00:00.000Z"));
    engine
        .schedules()
        .edit(
            "e",
            &ScheduleEdit {
                zone: Some("America/New_York".into()),
                scope: Some("universe".into()),
                ..ScheduleEdit::default()
            },
        )
        .unwrap();
    let r = tick_at(&engine, &clock, ts("2026-11-27T01:00:00.000Z"), &fire);
    assert!(r.slots.is_empty(), "{r:?}");
    // 07:00 New York (EST) is 12:00Z.
    let r = tick_at(&engine, &clock, ts("2026-11-27T12:00:00.000Z"), &fire);
    assert_eq!(r.count(SlotStatus::Fired), 1);
    // Editing only the misfire policy keeps the cursor: missed slots are then handled by
    // the new policy.
    clock.set(ts("2026-11-30T13:00:00.000Z"));
    engine
        .schedules()
        .edit(
            "e",
            &ScheduleEdit {
                misfire: Some(Misfire::LatestOnly),
                ..ScheduleEdit::default()
            },
        )
        .unwrap();
    let r = tick_at(&engine, &clock, ts("2026-11-30T13:00:00.000Z"), &fire);
    assert_eq!(
        (r.count(SlotStatus::Skipped), r.count(SlotStatus::Fired)),
        (2, 1)
    );
    snap_json!("edited_between_ticks", &history_lines(&engine));
}

#[test]
fn a_clock_that_jumps_backwards_never_fires_a_slot_twice() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("b", "daily 19:30", "Asia/Shanghai").misfire(Misfire::All))
        .unwrap();
    engine
        .schedules()
        .create(
            &NewSchedule::new("i", "ingest", "targets", "every 15m", "UTC").misfire(Misfire::All),
        )
        .unwrap();
    let fire = Recorder::default();
    let slot = t0() + days(1);
    tick_at(&engine, &clock, slot, &fire);
    let fired_once = fire.calls().len();
    assert_eq!(
        fired_once,
        1 + 96,
        "one daily slot and a day of quarter hours"
    );
    // Back by a day and a half, then forward again past the same slots in steps.
    let mut now = slot - hours(36);
    while now <= slot {
        let r = tick_at(&engine, &clock, now, &fire);
        assert!(r.slots.is_empty(), "at {now}: {r:?}");
        now = now + Duration::from_secs(7 * 60);
    }
    assert_eq!(fire.calls().len(), fired_once);
    // The database refuses it too: no slot at or before the high-water mark, and the mark
    // only moves forward.
    let id = engine.schedules().get("b").unwrap().id;
    let e = engine
        .with_connection(|c| {
            c.execute(
                "insert into due_runs (schedule_id, due_at, created_at) values (?1, ?2, ?2)",
                rusqlite::params![id, slot.to_string()],
            )
            .map_err(Error::from)
        })
        .unwrap_err();
    assert_eq!(e.code(), "ILLEGAL_TRANSITION", "{e}");
    let e = engine
        .with_connection(|c| {
            c.execute(
                "update schedules set last_due_at = ?2 where id = ?1",
                rusqlite::params![id, (slot - days(1)).to_string()],
            )
            .map_err(Error::from)
        })
        .unwrap_err();
    assert_eq!(e.code(), "ILLEGAL_TRANSITION", "{e}");
}

#[test]
fn fire_outcomes_are_recorded_turned_away_is_skipped_not_retried() {
    let (engine, clock) = mem_engine();
    for name in ["fired", "turned-away", "failed", "panics", "empty"] {
        engine
            .schedules()
            .create(&NewSchedule::new(
                name,
                "ingest",
                "both",
                "daily 19:30",
                "Asia/Shanghai",
            ))
            .unwrap();
    }
    let fire = |s: &Schedule, _slot: Timestamp| match s.name.as_str() {
        "fired" => FireOutcome::Fired {
            run_ids: vec![10, 11],
        },
        "turned-away" => FireOutcome::TurnedAway {
            run_ids: vec![12],
            code: "RUN_ALREADY_ACTIVE".into(),
        },
        "failed" => FireOutcome::Failed {
            run_ids: vec![],
            code: "PIPELINE_UNKNOWN".into(),
            message: "no pipeline called ingest".into(),
        },
        "panics" => panic!("orchestrator exploded"),
        _ => FireOutcome::Fired { run_ids: vec![] },
    };
    let r = tick_at(&engine, &clock, t0() + days(1), &fire);
    assert_eq!(r.slots.len(), 5);
    // A turned-away slot stays skipped: the next tick does not fire it again.
    let again = tick_at(&engine, &clock, t0() + days(1) + hours(1), &fire);
    assert!(again.slots.is_empty());
    snap_json!("fire_outcomes", &history(&engine));
}

#[test]
fn an_abandoned_claim_that_no_run_names_is_given_back_after_the_timeout_and_fired_once() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("a", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    // A ticker that claimed the slot and died before recording (simulated in raw SQL,
    // exactly as the tick's first transaction leaves it).
    let slot = t0() + days(1);
    let id = engine.schedules().get("a").unwrap().id;
    engine
        .with_connection(|c| {
            c.execute_batch("begin")?;
            c.execute(
                "insert into due_runs (schedule_id, due_at, created_at) values (?1, ?2, ?2)",
                rusqlite::params![id, slot.to_string()],
            )?;
            c.execute(
                "update schedules set last_due_at = ?2, next_due_at = ?3 where id = ?1",
                rusqlite::params![id, slot.to_string(), (slot + days(1)).to_string()],
            )?;
            c.execute(
                "update due_runs set status = 'claimed', claimed_at = ?1, claimed_by = 'dead' ",
                [slot.to_string()],
            )?;
            c.execute_batch("commit")?;
            Ok(())
        })
        .unwrap();
    let fire = Recorder::default();
    let r = tick_at(&engine, &clock, slot + secs(5 * 60), &fire);
    assert!(r.slots.is_empty(), "within the claim timeout: left alone");
    // Past the claim timeout (10 min): no run names the slot, so its ticker died before
    // firing; the slot is given back and fired, once.
    let r = tick_at(&engine, &clock, slot + secs(11 * 60), &fire);
    assert_eq!(r.count(SlotStatus::Fired), 1, "{r:?}");
    assert_eq!(fire.calls().len(), 1);
    let r = tick_at(&engine, &clock, slot + hours(7), &fire);
    assert!(r.slots.is_empty(), "{r:?}");
    assert_eq!(fire.calls().len(), 1);
    snap_json!("abandoned_claim", &history_lines(&engine));
}

#[test]
fn the_loop_fires_due_slots_and_stops_cleanly() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("l", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    let fire = Arc::new(Recorder::default());
    let opts = LoopOptions {
        tick: ticker("loop"),
        poll: Duration::from_millis(5),
        ..LoopOptions::default()
    };
    let handle = engine.schedules().spawn(fire.clone(), opts).unwrap();
    // Nothing is due yet: the loop ticks and fires nothing.
    std::thread::sleep(Duration::from_millis(20));
    assert!(fire.calls().is_empty());
    clock.set(t0() + days(1));
    // Wait (bounded) until the loop has fired the slot.
    let mut tries = 0;
    while fire.calls().is_empty() {
        tries += 1;
        assert!(tries < 6000, "the loop never fired the due slot");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.stop();
    assert_eq!(fire.calls().len(), 1);
    let h = history(&engine);
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].status, h[0].claimed_by.as_deref()),
        (SlotStatus::Fired, Some("loop"))
    );
}

#[test]
fn stop_interrupts_a_long_sleep() {
    let (engine, _clock) = mem_engine();
    let opts = LoopOptions {
        tick: ticker("loop"),
        poll: Duration::from_secs(3600),
        ..LoopOptions::default()
    };
    let handle = engine
        .schedules()
        .spawn(Arc::new(Recorder::default()), opts)
        .unwrap();
    // Let it reach its hour-long sleep (stop works before the first tick too).
    std::thread::sleep(Duration::from_millis(20));
    assert!(!handle.is_finished());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.stop();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the loop did not wake up from its sleep");
}

#[test]
fn bad_input_is_a_typed_error_and_stores_nothing() {
    let (engine, _clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("taken", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    let before = dump(&engine);
    let cases: Vec<(NewSchedule, &str)> = vec![
        (daily("z", "daily 19:30", "Mars/Olympus_Mons"), "zone"),
        (daily("z", "daily 19:30", "China Standard Time"), "zone"),
        (daily("z", "daily 25:00", "Asia/Shanghai"), "rule.time"),
        (daily("z", "daily 19:61", "Asia/Shanghai"), "rule.time"),
        (daily("z", "daily 19:30 ", "Asia/Shanghai"), "rule.weekdays"),
        (
            daily("z", "daily 19:30 ,", "Asia/Shanghai"),
            "rule.weekdays",
        ),
        (daily("z", "every 0m", "UTC"), "rule.interval"),
        (daily("z", "every 0h", "UTC"), "rule.interval"),
        (daily("z", "hourly", "UTC"), "rule"),
        (daily("", "daily 19:30", "UTC"), "name"),
        (daily("has space", "daily 19:30", "UTC"), "name"),
        (daily("taken", "daily 20:00", "UTC"), "name"),
        (
            NewSchedule::new("z", "in gest", "both", "daily 19:30", "UTC"),
            "pipeline",
        ),
        (
            NewSchedule::new("z", "ingest", "", "daily 19:30", "UTC"),
            "scope",
        ),
        (
            NewSchedule::new("z", "ingest", "all", "daily 19:30", "UTC"),
            "scope",
        ),
    ];
    let mut errors = vec![];
    for (new, field) in cases {
        match engine.schedules().create(&new) {
            Err(Error::InvalidInput { field: f, reason }) => {
                assert_eq!(f, field, "{new:?}: {reason}");
                errors.push(format!("{f}: {reason}"));
            }
            other => panic!("{new:?}: unexpected {other:?}"),
        }
        assert_eq!(dump(&engine), before, "{new:?} changed the database");
    }
    snap_json!("bad_input_errors", &errors);
    for edit in [
        ScheduleEdit {
            rule: Some("every 0m".into()),
            ..ScheduleEdit::default()
        },
        ScheduleEdit {
            zone: Some("Nowhere/Land".into()),
            scope: Some("universe".into()),
            ..ScheduleEdit::default()
        },
        ScheduleEdit {
            rule: Some("daily 19:30".into()),
            zone: Some("UTC".into()),
            scope: Some("UNIVERSE".into()),
            ..ScheduleEdit::default()
        },
    ] {
        let e = engine.schedules().edit("taken", &edit).unwrap_err();
        assert_eq!(e.code(), "INVALID_INPUT", "{edit:?}");
        assert_eq!(dump(&engine), before, "{edit:?} changed the database");
    }
    for e in [
        engine
            .schedules()
            .edit("missing", &ScheduleEdit::default())
            .unwrap_err(),
        engine.schedules().enable("missing").unwrap_err(),
        engine.schedules().delete("missing").unwrap_err(),
        engine.schedules().get("missing").unwrap_err(),
    ] {
        assert_eq!(e.code(), "NOT_FOUND");
    }
    assert_eq!(dump(&engine), before);
}

#[test]
fn raw_sql_cannot_break_the_schedule_tables() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("r", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    let fire = Recorder::default();
    tick_at(&engine, &clock, t0() + days(1), &fire);
    let before = dump(&engine);
    let attempts = [
        // schedules
        "update schedules set misfire = 'sometimes'",
        "update schedules set enabled = 2",
        "update schedules set rule = 'hourly'",
        "update schedules set rule = 'daily 7:30'",
        "update schedules set next_due_at = last_due_at",
        "update schedules set created_at = '2026-11-22 11:30:00'",
        "insert into schedules (name, pipeline, scope, rule, zone, created_at, updated_at) values ('r', 'ingest', 'both', 'daily 19:30', 'UTC', '2026-11-22T11:30:00.000Z', '2026-11-22T11:30:00.000Z')",
        // due_runs
        "insert into due_runs (schedule_id, due_at, status, created_at, finished_at, outcome_code) values (1, '2030-01-01T00:00:00.000Z', 'skipped', '2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z', 'X')",
        "insert into due_runs (schedule_id, due_at, created_at) values (1, '2030-01-01T00:00:00.000Z', '2029-01-01T00:00:00.000Z')",
        "update due_runs set run_ids = '[]'",
        "update due_runs set outcome_code = 'X'",
        "update due_runs set due_at = '2030-01-01T00:00:00.000Z'",
        "update due_runs set status = 'pending', finished_at = null, claimed_at = null, claimed_by = null, run_ids = '[]'",
    ];
    for sql in attempts {
        let r = engine.with_connection(|c| c.execute(sql, []).map_err(Error::from));
        assert!(r.is_err(), "{sql} was accepted");
        assert_eq!(dump(&engine), before, "{sql}");
    }
    // A claimed slot cannot be deleted, nor its schedule; run ids must be an array.
    engine
        .with_connection(|c| {
            c.execute(
                "insert into due_runs (schedule_id, due_at, created_at) values (1, '2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z')",
                [],
            )?;
            c.execute(
                "update due_runs set status = 'claimed', claimed_at = '2030-01-01T00:00:00.000Z', claimed_by = 'x' where status = 'pending'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    let before = dump(&engine);
    for sql in [
        "delete from due_runs where status = 'claimed'",
        "delete from schedules",
        "update due_runs set status = 'fired', finished_at = '2030-01-01T00:00:00.000Z', run_ids = '{\"a\":1}' where status = 'claimed'",
        "update due_runs set status = 'fired', finished_at = '2030-01-01T00:00:00.000Z', run_ids = 'not json' where status = 'claimed'",
        "update due_runs set status = 'failed', finished_at = '2030-01-01T00:00:00.000Z' where status = 'claimed'",
    ] {
        let r = engine.with_connection(|c| c.execute(sql, []).map_err(Error::from));
        assert!(r.is_err(), "{sql} was accepted");
        assert_eq!(dump(&engine), before, "{sql}");
    }
    let e = engine.schedules().delete("r").unwrap_err();
    assert_eq!(e.code(), "ILLEGAL_TRANSITION", "{e}");
}

#[test]
fn deleting_a_schedule_removes_its_history() {
    let (engine, clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("d", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    tick_at(&engine, &clock, t0() + days(1), &Recorder::default());
    engine.schedules().delete("d").unwrap();
    assert!(engine.schedules().list().unwrap().is_empty());
    assert!(history(&engine).is_empty());
}

/// Puts a fresh slot of schedule 1 into `state` through raw SQL along the machine's own
/// path, and returns its id.
fn raw_slot_in(c: &rusqlite::Connection, n: i64, state: SlotStatus) -> rusqlite::Result<i64> {
    let due = format!("2030-01-01T00:{:02}:{:02}.000Z", n / 60, n % 60);
    c.execute(
        "insert into due_runs (schedule_id, due_at, created_at) values (1, ?1, ?1)",
        [&due],
    )?;
    let id = c.last_insert_rowid();
    let claim = "update due_runs set status = 'claimed', claimed_at = created_at, claimed_by = 't' where id = ?1";
    match state {
        SlotStatus::Pending => {}
        SlotStatus::Claimed => {
            c.execute(claim, [id])?;
        }
        SlotStatus::Fired => {
            c.execute(claim, [id])?;
            c.execute("update due_runs set status = 'fired', finished_at = created_at, run_ids = '[1]' where id = ?1", [id])?;
        }
        SlotStatus::Failed => {
            c.execute(claim, [id])?;
            c.execute("update due_runs set status = 'failed', finished_at = created_at, outcome_code = 'X' where id = ?1", [id])?;
        }
        SlotStatus::Skipped => {
            c.execute("update due_runs set status = 'skipped', finished_at = created_at, outcome_code = 'X' where id = ?1", [id])?;
        }
    }
    Ok(id)
}

/// Moves slot `id` to `to`, setting every other column to what `to` requires, so that only
/// the state machine can refuse it.
fn raw_move(c: &rusqlite::Connection, id: i64, to: SlotStatus) -> rusqlite::Result<usize> {
    let sql = match to {
        SlotStatus::Pending => "update due_runs set status = 'pending', claimed_at = null, claimed_by = null, finished_at = null, run_ids = '[]', outcome_code = null, outcome_message = null where id = ?1",
        SlotStatus::Claimed => "update due_runs set status = 'claimed', claimed_at = created_at, claimed_by = 't', finished_at = null, run_ids = '[]', outcome_code = null, outcome_message = null where id = ?1",
        SlotStatus::Fired => "update due_runs set status = 'fired', claimed_at = created_at, claimed_by = 't', finished_at = created_at, run_ids = '[1]', outcome_code = null, outcome_message = null where id = ?1",
        SlotStatus::Skipped => "update due_runs set status = 'skipped', finished_at = created_at, run_ids = '[]', outcome_code = 'X' where id = ?1",
        SlotStatus::Failed => "update due_runs set status = 'failed', claimed_at = created_at, claimed_by = 't', finished_at = created_at, run_ids = '[]', outcome_code = 'X' where id = ?1",
    };
    c.execute(sql, [id])
}

#[test]
fn due_run_state_machine_agrees_with_sql() {
    let (engine, _clock) = mem_engine();
    engine
        .schedules()
        .create(&daily("m", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    let mut n = 0;
    let table = machine_equals_sql(
        &SlotStatus::ALL,
        SlotStatus::can_transition_to,
        |from| {
            n += 1;
            let id = engine
                .with_connection(|c| Ok(raw_slot_in(c, n, from)?))
                .unwrap();
            (engine.clone(), id)
        },
        |engine, id, to| engine.with_connection(|c| Ok(raw_move(c, id, to).map(|_| ())?)),
        |engine, id| {
            engine
                .with_connection(|c| {
                    Ok(
                        c.query_row("select status from due_runs where id = ?1", [id], |r| {
                            r.get(0)
                        })?,
                    )
                })
                .unwrap()
        },
    );
    assert_eq!(
        table.iter().filter(|l| l.ends_with("allowed")).count(),
        TRANSITIONS.len()
    );
    snap_json!("due_run_transitions", &table);
}

#[test]
fn misfire_and_rule_text_are_stored_canonically() {
    let (engine, _clock) = mem_engine();
    let s = engine
        .schedules()
        .create(
            &NewSchedule::new(
                "c",
                "ingest",
                "both",
                "daily 19:30 fri-mon",
                "America/New_York",
            )
            .misfire(Misfire::Skip),
        )
        .unwrap();
    assert_eq!(s.rule.to_string(), "daily 19:30 mon,fri-sun");
    let row: (String, String, String) = engine
        .with_connection(|c| {
            Ok(
                c.query_row("select rule, zone, misfire from schedules", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?,
            )
        })
        .unwrap();
    assert_eq!(
        row,
        (
            "daily 19:30 mon,fri-sun".into(),
            "America/New_York".into(),
            "skip".into()
        )
    );
    assert_eq!(engine.schedules().get("c").unwrap(), s);
    assert_eq!(DEFAULT_SCHEDULE_NAME, "daily-ingest");
}

/// `(name, when-to-use, sql)` of the scheduler's queries in runbook.sql.
fn runbook_queries() -> Vec<(String, String, String)> {
    runledger::runbook::queries()
        .iter()
        .filter(|q| q.name.starts_with("schedule_"))
        .map(|q| (q.name.clone(), q.comment.clone(), q.sql.clone()))
        .collect()
}

#[test]
fn runbook_queries_run_and_show_the_scenario() {
    let (engine, clock) = mem_engine();
    engine.schedules().ensure_default().unwrap();
    engine
        .schedules()
        .create(&daily("busy", "daily 19:30", "Asia/Shanghai"))
        .unwrap();
    engine
        .schedules()
        .create(&NewSchedule::new(
            "never",
            "ingest",
            "universe",
            "daily 08:00 mon-fri",
            "America/New_York",
        ))
        .unwrap();
    engine.schedules().disable("never").unwrap();
    let fire = |s: &Schedule, _slot: Timestamp| match s.name.as_str() {
        "busy" => FireOutcome::TurnedAway {
            run_ids: vec![100],
            code: "RUN_ALREADY_ACTIVE".into(),
        },
        _ => FireOutcome::Fired {
            run_ids: vec![1, 2],
        },
    };
    tick_at(&engine, &clock, t0() + days(1), &fire);
    tick_at(&engine, &clock, t0() + days(4) + hours(2), &fire);
    let queries = runbook_queries();
    let names: Vec<&str> = queries.iter().map(|q| q.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "schedule_upcoming",
            "schedule_missed_slots",
            "schedule_in_flight_slots",
            "schedule_last_fire",
            "schedule_slot_counts"
        ]
    );
    let mut out = String::new();
    for (name, _, sql) in &queries {
        out.push_str(&format!("-- {name}\n"));
        engine
            .with_connection(|c| {
                let mut stmt = c.prepare(sql)?;
                let n = stmt.column_count();
                let cols: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
                out.push_str(&cols.join(" | "));
                out.push('\n');
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let vals: Vec<String> = (0..n)
                        .map(|i| match row.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Null => "NULL".to_string(),
                            rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                            other => format!("{other:?}"),
                        })
                        .collect();
                    out.push_str(&vals.join(" | "));
                    out.push('\n');
                }
                Ok(())
            })
            .unwrap();
    }
    crate::snap_text!("runbook_schedule", out);
}
