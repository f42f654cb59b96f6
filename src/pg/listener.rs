//! [`PgListener`]: waits for PostgreSQL notifications (migrations/postgres/P2__notify.sql)
//! on a connection of its own, so a worker wakes when work arrives instead of polling.
//!
//! The listener subscribes when it is opened; notifications that arrive while its owner is
//! busy are kept and end the next wait at once. NOTIFY is delivered at the writer's COMMIT,
//! never for a rolled-back transaction. A wake is a hint, not a claim: the worker claims
//! next and may find nothing (another node was first). When the wait finds the connection
//! lost the listener reconnects at once and reports a wake, since notifications sent while
//! it was away are gone: the caller then looks for work as after any wake. While the server
//! is away the wait fails `UNREACHABLE` and the next wait tries again.
//!
//! Job events notify only while an event listener is registered (schema version 4: a
//! NOTIFY serializes the commits of the writers that send it). [`PgListener::open`]
//! registers its session for events; [`PgListener::open_for_work`], a worker's, does not,
//! so the claims and completes of a ledger that nobody follows send no NOTIFY.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::db;
use super::error::from_pg;
use super::storage::listeners;
use crate::clock::Deadline;
use crate::error::{Error, Result};

/// The channel of claimable jobs; payload `<schema>/<kind>`.
const WORK: &str = "runledger_work";
/// The channel of appended job events; payload `<schema>/<job_id>/<seq>`.
const EVENTS: &str = "runledger_events";

const SUBSCRIBE_WORK: &str = "LISTEN runledger_work";
const SUBSCRIBE_EVENTS: &str = "LISTEN runledger_events";
const SCHEMA: &str = "select current_schema()::text";

/// What ended a [`PgListener`] wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A job of this kind became claimable (created, or requeued by a supervisor).
    Work {
        /// Its kind.
        kind: String,
    },
    /// An event was appended to a job's timeline.
    Event {
        /// The job.
        job_id: i64,
        /// The event's `seq`.
        seq: i64,
    },
    /// The connection was lost and is open again: notifications may have been missed.
    Reconnected,
}

/// A connection that waits for the ledger's notifications; see docs/postgres.md.
pub struct PgListener {
    url: String,
    schema: String,
    /// Whether it hears job events (registered in `runledger_event_listeners`).
    events: bool,
    client: Option<Client>,
}

impl std::fmt::Debug for PgListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the URL may carry a password: never printed
        f.debug_struct("PgListener")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn subscribe(url: &str, events: bool) -> Result<(Client, String)> {
    let mut client = db::connect(url)?;
    client.batch_execute(SUBSCRIBE_WORK).map_err(from_pg)?;
    if events {
        // listening before registering: every event committed after the registration wakes
        client.batch_execute(SUBSCRIBE_EVENTS).map_err(from_pg)?;
        listeners::register(&mut client)?;
    }
    let schema: Option<String> = client.query_one(SCHEMA, &[]).map_err(from_pg)?.get(0);
    let schema = schema
        .ok_or_else(|| Error::invalid("url", "no schema on the search_path holds the ledger"))?;
    Ok((client, schema))
}

/// Parses one notification of `schema`'s ledger; `None` for another ledger's or a foreign
/// one.
fn parse(schema: &str, channel: &str, payload: &str) -> Option<Wake> {
    match channel {
        WORK => {
            let (s, kind) = payload.rsplit_once('/')?;
            (s == schema).then(|| Wake::Work { kind: kind.into() })
        }
        EVENTS => {
            let (rest, seq) = payload.rsplit_once('/')?;
            let (s, job) = rest.rsplit_once('/')?;
            (s == schema).then_some(Wake::Event {
                job_id: job.parse().ok()?,
                seq: seq.parse().ok()?,
            })
        }
        _ => None,
    }
}

impl PgListener {
    /// Connects to `url` (the engine's URL: the same server, database and `search_path`)
    /// and subscribes to the ledger's channels, claimable jobs and job events (registering
    /// the session as an event listener, so that events notify while it is open).
    /// `UNREACHABLE` when the server is away.
    pub fn open(url: &str) -> Result<Self> {
        Self::connect(url, true)
    }

    /// [`PgListener::open`] for claimable jobs only (a worker's): the session is not
    /// registered for events, and [`PgListener::wait_for_event`] is refused.
    pub fn open_for_work(url: &str) -> Result<Self> {
        Self::connect(url, false)
    }

    fn connect(url: &str, events: bool) -> Result<Self> {
        let (client, schema) = subscribe(url, events)?;
        Ok(Self {
            url: url.to_string(),
            schema,
            events,
            client: Some(client),
        })
    }

    /// The schema whose ledger this listener hears.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Waits at most `timeout` for the first notification `keep` accepts; `None` at the
    /// timeout. A lost connection is reopened at once and reported as
    /// [`Wake::Reconnected`] (whatever `keep` says); while the server is away the wait fails
    /// `UNREACHABLE` and the next one tries again.
    pub fn wait(
        &mut self,
        timeout: Duration,
        keep: impl Fn(&Wake) -> bool,
    ) -> Result<Option<Wake>> {
        let deadline = Deadline::after(timeout);
        if self.client.as_ref().is_none_or(Client::is_closed) {
            return self.reconnect();
        }
        let client = self.client.as_mut().expect("connected above");
        let outcome = loop {
            let left = deadline.remaining();
            // a zero timeout still drains what already arrived
            let next = client.notifications().timeout_iter(left).next();
            match next {
                Ok(Some(n)) => {
                    if let Some(wake) = parse(&self.schema, n.channel(), n.payload()) {
                        if keep(&wake) {
                            break Ok(Some(wake));
                        }
                    }
                }
                // the connection ended without a word (its end of stream): lost
                Ok(None) if client.is_closed() => {
                    break Err(Error::Unreachable {
                        detail: "the server closed the listener's connection".into(),
                    })
                }
                Ok(None) if deadline.passed() => break Ok(None),
                Ok(None) => {}
                Err(e) => break Err(from_pg(e)),
            }
        };
        match outcome {
            // Lost (the server restarted, failed over or ended the session, perhaps while the
            // owner was busy): reconnect now, so a server that is back costs no failed wait.
            Err(err) if client.is_closed() || matches!(err, Error::Unreachable { .. }) => {
                self.reconnect()
            }
            other => other,
        }
    }

    /// Opens a new connection and subscribes again: [`Wake::Reconnected`], since what was
    /// sent while the listener was away is gone; `UNREACHABLE` (the next wait tries again)
    /// while the server is away.
    fn reconnect(&mut self) -> Result<Option<Wake>> {
        self.client = None;
        let (client, schema) = subscribe(&self.url, self.events)?;
        self.schema = schema;
        self.client = Some(client);
        Ok(Some(Wake::Reconnected))
    }

    /// Waits at most `timeout` for a job of one of `kinds` (any kind if empty) to become
    /// claimable: `true` when woken (or reconnected: look for work), `false` at the timeout.
    pub fn wait_for_work(&mut self, kinds: &[&str], timeout: Duration) -> Result<bool> {
        let woke = self.wait(timeout, |w| match w {
            Wake::Work { kind } => kinds.is_empty() || kinds.contains(&kind.as_str()),
            Wake::Reconnected => true,
            Wake::Event { .. } => false,
        })?;
        Ok(woke.is_some())
    }

    /// Waits at most `timeout` for an event of job `job_id` (of any job if `None`): its
    /// `(job_id, seq)`, `None` at the timeout or after a reconnect (read the events since
    /// the last seq seen).
    pub fn wait_for_event(
        &mut self,
        job_id: Option<i64>,
        timeout: Duration,
    ) -> Result<Option<(i64, i64)>> {
        if !self.events {
            return Err(Error::invalid(
                "listener",
                "opened for work only (PgListener::open_for_work): it hears no job events",
            ));
        }
        let woke = self.wait(timeout, |w| match w {
            Wake::Event { job_id: j, .. } => job_id.is_none_or(|id| id == *j),
            Wake::Reconnected => true,
            Wake::Work { .. } => false,
        })?;
        Ok(match woke {
            Some(Wake::Event { job_id, seq }) => Some((job_id, seq)),
            _ => None,
        })
    }
}

impl Drop for PgListener {
    fn drop(&mut self) {
        if let (true, Some(client)) = (self.events, self.client.as_mut()) {
            if !client.is_closed() {
                // best effort: a registration left behind only costs NOTIFYs until the next
                // listener registers and removes it
                let _ = listeners::unregister(client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_other_ledgers_and_bad_payloads_are_ignored() {
        assert_eq!(
            parse("a", WORK, "a/report"),
            Some(Wake::Work {
                kind: "report".into()
            })
        );
        assert_eq!(parse("b", WORK, "a/report"), None);
        assert_eq!(
            parse("s/x", EVENTS, "s/x/12/3"),
            Some(Wake::Event { job_id: 12, seq: 3 })
        );
        assert_eq!(parse("s", EVENTS, "s/x/3"), None);
        assert_eq!(parse("s", "other", "s/k"), None);
        assert_eq!(parse("s", WORK, "no-slash"), None);
    }
}
