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
    c.busy_timeout(Duration::from_secs(5)).unwrap();
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
