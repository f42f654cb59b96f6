//! Shared bits of the bench binaries: timing and a plain-rusqlite baseline connection.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `f` once and returns (ops/s, elapsed).
pub fn rate(ops: usize, f: impl FnOnce()) -> (f64, Duration) {
    let start = Instant::now();
    f();
    let elapsed = start.elapsed();
    (ops as f64 / elapsed.as_secs_f64(), elapsed)
}

/// Times `f` `reps` times and returns the median.
pub fn median(reps: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// A plain rusqlite connection with the same pragmas as the engine.
pub fn baseline_conn(path: &Path, synchronous: &str) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    // Generous: with 8 threads at FULL on a loaded machine a plain writer can lose the lock
    // for over 5 s (SQLite's busy handler polls).
    c.busy_timeout(Duration::from_secs(120)).unwrap();
    c.query_row("pragma journal_mode = wal", [], |_| Ok(()))
        .unwrap();
    c.pragma_update(None, "synchronous", synchronous).unwrap();
    c
}

/// One result line: name, runledger figure, baseline figure, ratio.
pub fn report(name: &str, unit: &str, ours: f64, base: f64) {
    println!(
        "| {name} | {ours:.0} {unit} | {base:.0} {unit} | {:.2}x |",
        ours / base
    );
}

/// The baseline's bare jobs table: no CHECKs, no triggers, one partial claim index.
pub const PLAIN_SCHEMA: &str = "create table if not exists jobs (id integer primary key, user_id text, kind text,
    state text, input text, attempt integer default 0, worker_id text, progress integer default 0,
    result text, heartbeat_at text, created_at text, finished_at text);
  create index if not exists jobs_claim on jobs(id) where state = 'created';
  create table if not exists events (id integer primary key, job_id integer, kind text, payload text, at text);";

/// A runledger engine on `path` with `durability`, other options default.
pub fn engine(path: &Path, durability: runledger::Durability) -> runledger::Engine {
    let db = runledger::DbOptions {
        durability,
        ..runledger::DbOptions::default()
    };
    runledger::Engine::open_with(
        path,
        runledger::EngineOptions {
            db,
            ..runledger::EngineOptions::default()
        },
    )
    .unwrap()
}

/// The baseline's `synchronous` pragma value for `d`.
pub fn sync_name(d: runledger::Durability) -> &'static str {
    match d {
        runledger::Durability::Full => "full",
        runledger::Durability::Normal => "normal",
    }
}
