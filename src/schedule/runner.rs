//! The tick loop: claim the due slots, hand them to a bounded pool of firing threads,
//! sleep until the next due instant (at most a poll interval, woken early when a firing
//! thread becomes free), repeat, until the [`LoopHandle`] is stopped. Built on the crate's
//! shared background-loop helper.
//!
//! The loop's own thread never fires: a slow pipeline (a five-minute Flex poll) occupies
//! one pool thread and delays no other due slot. The loop claims at most as many slots as
//! it has free threads, so a slot is never claimed by a process that cannot fire it now;
//! the rest stay pending for the next wake or another ticker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::state::TickOptions;
use super::tick::{claim_due, finish_report, fire_one, Claimed, TickReport};
use super::Fire;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::looping::{spawn_wakeable_loop, LoopHandle, Waker};

/// How the loop of [`Schedules::spawn`](super::Schedules::spawn) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopOptions {
    /// Options of every tick.
    pub tick: TickOptions,
    /// The longest sleep between two ticks, so that schedules created or edited by other
    /// processes are noticed, and the retry interval after a failed tick. Default 30 s.
    pub poll: Duration,
    /// How many slots may be fired at once, each on its own thread (at least 1). Default 4.
    pub fire_threads: usize,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            tick: TickOptions::default(),
            poll: Duration::from_secs(30),
            fire_threads: 4,
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

/// The firing threads: claimed slots in through a channel, `busy` counts those taken.
struct Pool {
    jobs: Option<Sender<Claimed>>,
    threads: Vec<JoinHandle<()>>,
    busy: Arc<AtomicUsize>,
    size: usize,
}

impl Pool {
    fn start(
        engine: &Engine,
        fire: &Arc<dyn Fire + Send + Sync>,
        opts: &TickOptions,
        size: usize,
        waker: &Waker,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = channel::<Claimed>();
        let rx = Arc::new(Mutex::new(rx));
        let busy = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::with_capacity(size);
        for i in 0..size {
            let (engine, fire, opts) = (engine.clone(), fire.clone(), opts.clone());
            let (rx, busy, waker): (Arc<Mutex<Receiver<Claimed>>>, _, _) =
                (rx.clone(), busy.clone(), waker.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("runledger-fire-{i}"))
                    .spawn(move || loop {
                        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(claimed) = next else { break };
                        // A failed record (busy file...) leaves the slot claimed: the claim
                        // timeout finishes it from its runs, or gives it back.
                        let _ = fire_one(&engine, &opts, claimed, &*fire);
                        busy.fetch_sub(1, Ordering::SeqCst);
                        waker.wake();
                    })?,
            );
        }
        Ok(Pool {
            jobs: Some(tx),
            threads,
            busy,
            size,
        })
    }

    fn free(&self) -> usize {
        self.size.saturating_sub(self.busy.load(Ordering::SeqCst))
    }

    fn submit(&self, claimed: Claimed) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = &self.jobs {
            let _ = tx.send(claimed);
        }
    }
}

impl Drop for Pool {
    /// Lets the slots being fired finish (their runs end terminal and are recorded).
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub(crate) fn spawn(
    engine: &Engine,
    fire: Arc<dyn Fire + Send + Sync>,
    opts: LoopOptions,
) -> Result<LoopHandle> {
    let engine = engine.clone();
    let size = opts.fire_threads.max(1);
    let mut pool: Option<Pool> = None;
    spawn_wakeable_loop("runledger-scheduler", move |waker| {
        let pool = match &mut pool {
            Some(p) => p,
            None => match Pool::start(&engine, &fire, &opts.tick, size, waker) {
                Ok(p) => pool.insert(p),
                Err(_) => return opts.poll,
            },
        };
        let now = engine.now();
        let report = claim_due(&engine, &opts.tick, now, &*fire, pool.free()).and_then(|step| {
            let materialized = step.materialized;
            for c in step.claimed {
                pool.submit(c);
            }
            finish_report(&engine, now, materialized, step.slots)
        });
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
