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

    /// A channel receiving every event this engine (and its clones) commits from now on.
    /// Events committed by other processes are not sent: poll [`Events::data_version`].
    /// On PostgreSQL nothing is sent (the backend's writes do not pass through this
    /// process's bus): wait with `runledger::pg::PgListener::wait_for_event` instead.
    pub fn subscribe(&self) -> Receiver<Event> {
        self.engine.bus().subscribe()
    }

    /// SQLite's `PRAGMA data_version` for this engine's connection: it changes when another
    /// connection (another process, or another engine on the same file) commits. Compare it
    /// between polls and call [`Events::after`] only when it changed.
    pub fn data_version(&self) -> Result<i64> {
        self.engine.sqlite_only("events.data_version")?;
        self.engine.writer_data_version()
    }
}
