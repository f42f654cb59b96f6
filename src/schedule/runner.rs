//! The tick loop: tick, sleep until the next due instant (at most a poll interval), repeat,
//! until stopped.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::state::SlotStatus;
use super::tick::{tick, TickOptions};
use super::Fire;
use crate::engine::Engine;
use crate::error::Result;

/// How the loop of [`Schedules::run`](super::Schedules::run) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopOptions {
    /// Options of every tick.
    pub tick: TickOptions,
    /// The longest sleep between two ticks, so that schedules created or edited by other
    /// processes are noticed. Default 30 s.
    pub poll: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            tick: TickOptions::default(),
            poll: Duration::from_secs(30),
        }
    }
}

/// What a loop did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoopSummary {
    /// Ticks run (including ones that met a transient error).
    pub ticks: u64,
    /// Slots fired.
    pub fired: u64,
    /// Slots skipped.
    pub skipped: u64,
    /// Slots failed.
    pub failed: u64,
    /// Ticks that met a transient error (busy, full disk) and were retried.
    pub transient_errors: u64,
}

/// Stops a running loop; clones share the signal. Raising it wakes the loop's sleep at once.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<(Mutex<bool>, Condvar)>);

impl StopSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the signal: the loop finishes its current tick, if any, and returns.
    pub fn stop(&self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
    }

    /// Whether the signal was raised.
    pub fn is_stopped(&self) -> bool {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps up to `timeout`, waking early when the signal is raised; returns whether it
    /// was raised.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cvar) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

pub(crate) fn run(
    engine: &Engine,
    fire: &dyn Fire,
    opts: &LoopOptions,
    stop: &StopSignal,
) -> Result<LoopSummary> {
    let mut sum = LoopSummary::default();
    while !stop.is_stopped() {
        sum.ticks += 1;
        let wait = match tick(engine, &opts.tick, engine.now(), fire) {
            Ok(report) => {
                sum.fired += report.count(SlotStatus::Fired) as u64;
                sum.skipped += report.count(SlotStatus::Skipped) as u64;
                sum.failed += report.count(SlotStatus::Failed) as u64;
                match report.next_due {
                    Some(next) => {
                        let ms = next.millis_since(engine.now()).max(0);
                        Duration::from_millis(ms as u64).min(opts.poll)
                    }
                    None => opts.poll,
                }
            }
            Err(e) if e.is_transient() => {
                sum.transient_errors += 1;
                opts.poll
            }
            Err(e) => return Err(e),
        };
        stop.wait(wait);
    }
    Ok(sum)
}
