//! Shared pieces of the reliability suite (`reliability_*` modules): a seeded RNG, the long
//! mode switch, and counts printed for RELIABILITY.md.
#![allow(dead_code)]

use runledger::{DbOptions, Durability, Engine, EngineOptions, ManualClock};

/// The durability a child process is told to use (`normal` or anything else for `Full`).
pub fn durability_of(text: &str) -> Durability {
    if text == "normal" {
        Durability::Normal
    } else {
        Durability::Full
    }
}

/// A file engine on `clock` with `durability`.
pub fn engine_on(path: &str, clock: &ManualClock, durability: Durability) -> Engine {
    let opts = EngineOptions {
        db: DbOptions {
            durability,
            ..Default::default()
        },
        ..Default::default()
    }
    .with_clock(clock.clone());
    Engine::open_with(path, opts).unwrap()
}

/// `RUNLEDGER_LONG=1` selects the release-check counts.
pub fn long_mode() -> bool {
    std::env::var("RUNLEDGER_LONG").is_ok_and(|v| v == "1")
}

/// `ci` normally, `long` with `RUNLEDGER_LONG=1`.
pub fn count(ci: usize, long: usize) -> usize {
    if long_mode() {
        long
    } else {
        ci
    }
}

/// The seed: `RUNLEDGER_SEED` if set, else `default` (printed by every test that uses it).
pub fn seed(default: u64) -> u64 {
    std::env::var("RUNLEDGER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: small, deterministic, good enough to pick operations and delays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
