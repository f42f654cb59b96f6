//! The event API of an [`Engine`]: resync after a reconnect, in-process subscriptions, and a
//! cheap cross-process change check. The types are in [`crate::events`].

use std::sync::mpsc::Receiver;

use crate::engine::Engine;
use crate::error::Result;
use crate::events::{Event, FeedFilter, FeedPage};
use crate::storage::job_events::{after, feed, since};

/// The event API of an [`Engine`]; get it with [`Engine::events`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'e> {
    engine: &'e Engine,
}

impl Engine {
    /// The event API.
    pub fn events(&self) -> Events<'_> {
        Events { engine: self }
    }
}

impl Events<'_> {
    /// Events of one job after `seq` (0: from its first event), oldest first, at most
    /// `limit`. If events after `seq` were pruned (0 included, once the backlog dropped the
    /// first), returns [`Error::EventsPruned`](crate::Error::EventsPruned) with the oldest
    /// seq kept instead of a partial history: reload the job and continue from there.
    pub fn since(&self, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>> {
        if let Some(b) = self.engine.backend() {
            return b.events_since(job_id, seq, limit);
        }
        self.engine.read(|c| since(c, job_id, seq, limit))
    }

    /// Events of all jobs after the global `cursor` (0 for the start), oldest first. On
    /// PostgreSQL, where cursors are drawn at insert and committed in another order, only
    /// events below a horizon no transaction in flight can commit under are handed out
    /// (docs/postgres.md, "Global event cursor"): a follower never skips one.
    pub fn after(&self, cursor: i64, limit: u32) -> Result<Vec<Event>> {
        if let Some(b) = self.engine.backend() {
            return b.events_after(cursor, limit);
        }
        self.engine.read(|c| after(c, cursor, limit))
    }

    /// A page of the global feed after `cursor` for `filter`, with each job's user, in one
    /// snapshot. With `check_gaps`, also names the jobs whose events after `cursor` were
    /// partly pruned (a follower at `cursor` must reload those jobs): a live stream's resume.
    /// `head` is the newest cursor a follower may move to (on PostgreSQL, below the horizon
    /// of [`Events::after`]).
    pub fn feed(
        &self,
        filter: &FeedFilter,
        cursor: i64,
        limit: u32,
        check_gaps: bool,
    ) -> Result<FeedPage> {
        if let Some(b) = self.engine.backend() {
            return b.events_feed(filter, cursor, limit, check_gaps);
        }
        self.engine
            .read(|c| feed(c, filter, cursor, limit, check_gaps))
    }

    /// The feed's head ([`FeedPage::head`]): the newest cursor a follower may start after
    /// (0 for an empty log; on PostgreSQL below the horizon).
    pub(crate) fn head(&self) -> Result<i64> {
        if let Some(b) = self.engine.backend() {
            return Ok(b.events_feed(&FeedFilter::All, i64::MAX, 1, false)?.head);
        }
        self.engine.read(crate::storage::job_events::head)
    }

    /// A channel receiving every event this engine (and its clones) commits from now on.
    /// On SQLite, events committed by other processes are not sent: poll
    /// [`Events::data_version`]. On PostgreSQL a thread of the engine follows the global
    /// feed ([`Events::feed`]) while anyone subscribes, woken by NOTIFY (and reading at
    /// least every second): it sends every event committed from now on by anyone (this
    /// process, other processes, other nodes), in cursor order, once its transaction has
    /// committed; events a job's 200-event backlog pruned before the thread read them are
    /// not sent (reload with [`Events::since`]). The thread ends once no receiver is left.
    pub fn subscribe(&self) -> Receiver<Event> {
        let rx = self.engine.bus().subscribe();
        if self.engine.backend().is_some() {
            follow::start(self.engine);
        }
        rx
    }

    /// SQLite's `PRAGMA data_version` for this engine's connection: it changes when another
    /// connection (another process, or another engine on the same file) commits. Compare it
    /// between polls and call [`Events::after`] only when it changed.
    pub fn data_version(&self) -> Result<i64> {
        self.engine.sqlite_only("events.data_version")?;
        self.engine.writer_data_version()
    }
}

/// The thread that follows a backend's feed into the engine's bus while it has subscribers.
mod follow {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::backend::EventWait;
    use crate::engine::{Engine, WeakEngine};
    use crate::events::FeedFilter;

    /// The longest a follower sleeps without reading the feed: the bound on how late an
    /// event is sent when no NOTIFY woke it (a writer that held the horizon back and ended
    /// without notifying, or a lost notification while the server was away).
    const POLL: Duration = Duration::from_secs(1);
    /// Events read per page of the feed.
    const PAGE: u32 = 1000;

    /// Starts the follower unless one runs: its wait first, then the head it follows
    /// after, so that every event committed once `subscribe` returns is sent.
    pub(super) fn start(engine: &Engine) {
        if engine.following().swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(backend) = engine.backend() else {
            return;
        };
        let waiter = backend.event_wait().ok();
        let head = engine.events().head().ok();
        let weak = engine.downgrade();
        let spawned = std::thread::Builder::new()
            .name("runledger-event-follower".into())
            .spawn(move || run(&weak, waiter, head));
        if spawned.is_err() {
            engine.following().store(false, Ordering::SeqCst);
        }
    }

    fn run(weak: &WeakEngine, mut waiter: Option<Box<dyn EventWait>>, mut head: Option<i64>) {
        loop {
            match waiter.as_mut() {
                Some(w) => {
                    if w.wait(POLL).is_err() {
                        // the database is away: the waiter reconnects at its next wait
                        std::thread::sleep(POLL);
                    }
                }
                None => std::thread::sleep(POLL),
            }
            let Some(engine) = weak.upgrade() else {
                return;
            };
            let Some(backend) = engine.backend() else {
                return;
            };
            if waiter.is_none() {
                waiter = backend.event_wait().ok();
            }
            match head {
                Some(after) => head = Some(drain(&engine, after)),
                None => head = engine.events().head().ok(),
            }
            if engine.bus().is_empty() {
                engine.following().store(false, Ordering::SeqCst);
                // a subscriber that came after the check found the flag still set: carry on
                // for it, unless another follower started meanwhile
                if engine.bus().is_empty() || engine.following().swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        }
    }

    /// Sends every event after `after` to the bus; the last cursor sent.
    fn drain(engine: &Engine, mut after: i64) -> i64 {
        loop {
            let Ok(page) = engine.events().feed(&FeedFilter::All, after, PAGE, false) else {
                return after;
            };
            let Some(last) = page.events.last() else {
                return after;
            };
            after = last.event.cursor;
            let full = page.events.len() == PAGE as usize;
            let events: Vec<_> = page.events.into_iter().map(|e| e.event).collect();
            engine.bus().publish(&events);
            if !full {
                return after;
            }
        }
    }
}
