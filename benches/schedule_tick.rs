//! tick() cost with 10,000 schedules, with 1,000,000 historical slots vs. an empty history,
//! and a plain-SQLite baseline (select the due rows of a bare table + update them).
//!
//! Run: `cargo bench --bench schedule_tick`. Prints a Markdown table.

use std::time::{Duration, Instant};

use runledger::{DbOptions, Durability};
use runledger::{
    Engine, EngineOptions, Fire, FireOutcome, ManualClock, NewSchedule, Schedule, TickOptions,
    Timestamp,
};

const SCHEDULES: usize = 10_000;
const HISTORY_DAYS: i64 = 100; // x 10,000 schedules = 1,000,000 slots
const DAY_MS: i64 = 86_400_000;
const MIN_MS: i64 = 60_000;

/// Day D, 00:00 UTC: the history covers the 100 days before it.
fn day_d() -> Timestamp {
    Timestamp::parse("2026-12-01T00:00:00.000Z").unwrap()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms).unwrap()
}

/// Schedule i fires daily at minute (i mod 1440) UTC, so about 7 schedules share a minute.
fn minute_of(i: usize) -> i64 {
    (i % 1440) as i64
}

struct NoopFire;
impl Fire for NoopFire {
    fn fire(&self, _: &Schedule, _: Timestamp) -> FireOutcome {
        FireOutcome::Fired { run_ids: vec![1] }
    }
}

fn open(dir: &std::path::Path, name: &str, clock: &ManualClock) -> Engine {
    let opts = EngineOptions {
        db: DbOptions {
            durability: Durability::Normal,
            ..DbOptions::default()
        },
        ..EngineOptions::default().with_clock(clock.clone())
    };
    Engine::open_with(dir.join(name), opts).unwrap()
}

/// 10,000 schedules created through the API, cursor at day D; with `history`, 100 fired
/// slots each (bulk-inserted through the machine's own path in one transaction).
fn setup(dir: &std::path::Path, name: &str, history: bool) -> (Engine, ManualClock, Duration) {
    let start = Instant::now();
    let clock = ManualClock::new(at(day_d().unix_ms() - HISTORY_DAYS * DAY_MS - DAY_MS));
    let engine = open(dir, name, &clock);
    for i in 0..SCHEDULES {
        let m = minute_of(i);
        let rule = format!("daily {:02}:{:02}", m / 60, m % 60);
        engine
            .schedules()
            .create(&NewSchedule::new(
                &format!("s{i:05}"),
                "ingest",
                "both",
                &rule,
                "UTC",
            ))
            .unwrap();
    }
    engine
        .with_connection(|c| {
            c.execute_batch("begin")?;
            {
                let mut ins = c.prepare(
                    "insert into due_runs (schedule_id, due_at, created_at) values (?1, ?2, ?2)",
                )?;
                let mut cur = c.prepare(
                    "update schedules set last_due_at = ?2, next_due_at = ?3 where id = ?1",
                )?;
                for i in 0..SCHEDULES {
                    let id = i as i64 + 1;
                    let slot = |day: i64| at(day_d().unix_ms() + day * DAY_MS + minute_of(i) * MIN_MS);
                    if history {
                        for day in -HISTORY_DAYS..0 {
                            ins.execute(rusqlite::params![id, slot(day)])?;
                        }
                        cur.execute(rusqlite::params![id, slot(-1), slot(0)])?;
                    } else {
                        // Same cursor, no rows: the next slot is on day D.
                        c.execute(
                            "update schedules set next_due_at = ?2 where id = ?1",
                            rusqlite::params![id, slot(0)],
                        )?;
                    }
                }
            }
            c.execute_batch(
                "update due_runs set status = 'claimed', claimed_at = created_at, claimed_by = 'bench';
                 update due_runs set status = 'fired', finished_at = claimed_at, run_ids = '[1,2]';
                 commit;",
            )?;
            Ok(())
        })
        .unwrap();
    (engine, clock, start.elapsed())
}

/// The bare baseline: one table, 1,000,000 done rows + one pending row per schedule at the
/// same instants; "tick" = select the due pending rows and update them, in one transaction.
fn setup_baseline(dir: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(dir.join("baseline.db")).unwrap();
    c.execute_batch(
        "pragma journal_mode = wal; pragma synchronous = normal;
         create table slots (id integer primary key, due_at text not null, status text not null);
         create index slots_pending on slots (due_at) where status = 'pending';
         begin;",
    )
    .unwrap();
    {
        let mut ins = c
            .prepare("insert into slots (due_at, status) values (?1, ?2)")
            .unwrap();
        for i in 0..SCHEDULES {
            for day in -HISTORY_DAYS..=0 {
                let t = at(day_d().unix_ms() + day * DAY_MS + minute_of(i) * MIN_MS);
                let status = if day == 0 { "pending" } else { "done" };
                ins.execute(rusqlite::params![t, status]).unwrap();
            }
        }
    }
    c.execute_batch("commit").unwrap();
    c
}

fn baseline_tick(c: &mut rusqlite::Connection, now: Timestamp) -> usize {
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let ids: Vec<i64> = {
        let mut sel = tx
            .prepare_cached("select id from slots where status = 'pending' and due_at <= ?1")
            .unwrap();
        let rows = sel.query_map([now], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    {
        let mut upd = tx
            .prepare_cached("update slots set status = 'done' where id = ?1 and status = 'pending'")
            .unwrap();
        for id in &ids {
            upd.execute([id]).unwrap();
        }
    }
    tx.commit().unwrap();
    ids.len()
}

/// Offsets (minutes after day D 00:00) of successive ticks: each fires the schedules whose
/// minute fell since the previous tick, so the due count grows ~7, ~7, ~70, ~700, ~7000.
const STEPS: [i64; 5] = [0, 1, 11, 111, 1111];

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TickOptions {
        ticker: "bench".into(),
        ..TickOptions::default()
    };
    let mut rows: Vec<(String, usize, Duration)> = vec![];

    for (label, history) in [
        ("empty history", false),
        ("1,000,000 slots of history", true),
    ] {
        let (engine, clock, setup_time) = setup(dir.path(), &format!("{history}.db"), history);
        eprintln!("setup {label}: {setup_time:.1?}");
        // Idle ticks: nothing due (just before day D).
        let idle_now = at(day_d().unix_ms() - 1);
        clock.set(idle_now);
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            let r = engine
                .schedules()
                .tick_with(&opts, idle_now, &NoopFire)
                .unwrap();
            assert!(r.slots.is_empty());
        }
        rows.push((format!("runledger tick, {label}"), 0, t.elapsed() / n));
        for m in STEPS {
            let now = at(day_d().unix_ms() + m * MIN_MS);
            clock.set(now);
            let t = Instant::now();
            let r = engine.schedules().tick_with(&opts, now, &NoopFire).unwrap();
            let took = t.elapsed();
            assert_eq!(r.materialized, r.slots.len());
            rows.push((format!("runledger tick, {label}"), r.slots.len(), took));
        }
    }

    let mut base = setup_baseline(dir.path());
    let idle_now = at(day_d().unix_ms() - 1);
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(baseline_tick(&mut base, idle_now), 0);
    }
    rows.push((
        "bare SQLite select + update, 1,010,000 rows".into(),
        0,
        t.elapsed() / n,
    ));
    for m in STEPS {
        let now = at(day_d().unix_ms() + m * MIN_MS);
        let t = Instant::now();
        let k = baseline_tick(&mut base, now);
        rows.push((
            "bare SQLite select + update, 1,010,000 rows".into(),
            k,
            t.elapsed(),
        ));
    }

    println!("| what | due slots | time | per due slot |");
    println!("|---|---:|---:|---:|");
    for (what, k, d) in rows {
        let per = if k == 0 {
            "-".to_string()
        } else {
            format!("{:.1} µs", d.as_secs_f64() * 1e6 / k as f64)
        };
        println!("| {what} | {k} | {:.3} ms | {per} |", d.as_secs_f64() * 1e3);
    }
}
