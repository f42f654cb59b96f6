//! The tick loop: tick, sleep until the next due instant (at most a poll interval), repeat,
//! until the [`LoopHandle`] is stopped. Built on the crate's shared background-loop helper.

use std::sync::Arc;
use std::time::Duration;

use super::tick::{tick, TickOptions, TickReport};
use super::Fire;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::looping::{spawn_loop, LoopHandle};

/// How the loop of [`Schedules::spawn`](super::Schedules::spawn) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopOptions {
    /// Options of every tick.
    pub tick: TickOptions,
    /// The longest sleep between two ticks, so that schedules created or edited by other
    /// processes are noticed, and the retry interval after a failed tick. Default 30 s.
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

/// How long to sleep after a tick: until the next due slot, at most `poll`.
pub(crate) fn wait_after(report: &Result<TickReport>, now: Timestamp, poll: Duration) -> Duration {
    match report {
        Ok(TickReport {
            next_due: Some(next),
            ..
        }) => {
            let ms = u64::try_from(next.millis_since(now)).unwrap_or(0);
            Duration::from_millis(ms).min(poll)
        }
        _ => poll,
    }
}

pub(crate) fn spawn(
    engine: &Engine,
    fire: Arc<dyn Fire + Send + Sync>,
    opts: LoopOptions,
) -> Result<LoopHandle> {
    let engine = engine.clone();
    spawn_loop("runledger-scheduler", move || {
        let report = tick(&engine, &opts.tick, engine.now(), &*fire);
        let _ = engine.checkpoint_when_idle();
        // A failed tick (busy database, full disk...) is retried at the next poll; its
        // slots stay pending or claimed and are picked up or swept then.
        wait_after(&report, engine.now(), opts.poll)
    })
    .map_err(|e| Error::invalid("thread", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(next: Option<&str>) -> Result<TickReport> {
        let now = Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap();
        Ok(TickReport {
            now,
            materialized: 0,
            slots: vec![],
            next_due: next.map(|t| Timestamp::parse(t).unwrap()),
        })
    }

    #[test]
    fn the_loop_sleeps_until_the_next_slot_at_most_a_poll() {
        let now = Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap();
        let poll = Duration::from_secs(30);
        let w = |next| wait_after(&report(next), now, poll);
        assert_eq!(w(Some("2026-11-22T11:30:05.000Z")), Duration::from_secs(5));
        assert_eq!(w(Some("2026-11-22T12:30:00.000Z")), poll);
        assert_eq!(
            w(Some("2026-11-22T11:29:00.000Z")),
            Duration::ZERO,
            "overdue"
        );
        assert_eq!(w(None), poll);
        assert_eq!(wait_after(&Err(Error::Busy), now, poll), poll);
    }
}
