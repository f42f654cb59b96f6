//! [`PgEngine`]: connections to a PostgreSQL ledger, the clock, and the transaction
//! helper every facade writes through.
//!
//! Each call runs in its own transaction (READ COMMITTED; the rules that need more are
//! enforced by row locks, `SKIP LOCKED` claims and unique indexes). Statements are prepared
//! once per connection and cached by their text. A transaction that meets a deadlock or a
//! serialization failure is retried (at most [`RETRIES`] times); a connection found closed
//! is reopened at the next call (a call whose BEGIN finds the server ended the idle session
//! goes once more on a new connection), so a server restart costs the calls in flight or
//! made while it was down (`UNREACHABLE`) and nothing half-written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row, Statement, Transaction};

use super::db;
use super::error::from_pg;
use crate::clock::{Clock, Stopwatch, SystemClock, Timestamp};
use crate::error::{Error, Result};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many times a transaction that met a deadlock or serialization failure is retried.
const RETRIES: usize = 5;

/// A PostgreSQL ledger; see the [module docs](crate::pg). Cheap to clone; clones share a
/// few idle connections, and each call runs on a connection of its own, so threads sharing
/// one engine work in parallel (each concurrent call holds one connection).
#[derive(Clone)]
pub struct PgEngine {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    clock: Arc<dyn Clock>,
    /// How long a statement waits for another session's lock before it fails `BUSY`
    /// (PostgreSQL's `lock_timeout`, set on each connection).
    lock_timeout: Duration,
    /// Open connections not in use; a call takes one (or connects) and gives it back.
    idle: Mutex<Vec<Session>>,
}

/// The default [`Inner::lock_timeout`]: SQLite's default busy timeout.
pub(crate) const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the session's `lock_timeout` ($1: milliseconds, as text).
const SET_LOCK_TIMEOUT: &str = "select set_config('lock_timeout', $1, false)";

/// How many idle connections an engine (and its clones) keeps; more callers at once open
/// more, closed again when they are done.
const IDLE_SESSIONS: usize = 8;

/// A live connection and its prepared statements.
struct Session {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// Since when it has sat in the idle list.
    idle_since: Stopwatch,
}

/// A connection idle at least this long is checked with one round trip before a call uses
/// it: the server may have ended it meanwhile (a restart, a failover, an idle timeout), and
/// a one-statement call ([`PgEngine::write_one`], run in autocommit) cannot be retried
/// safely once sent. Busy connections (reused within this) skip the check.
const PROBE_IDLE: Duration = Duration::from_millis(100);

/// How long the check may take before the connection is given up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the URL may carry a password: never printed
        f.debug_struct("PgEngine").finish_non_exhaustive()
    }
}

/// One transaction of a [`PgEngine`] call, with the connection's statement cache.
pub(crate) struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl<'a> Tx<'a> {
    /// The transaction itself, for work outside the statement cache (doctor's catalog
    /// reads, `COPY`).
    pub(crate) fn raw(&mut self) -> &mut Transaction<'a> {
        &mut self.tx
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        cached(&mut self.tx, self.statements, sql)
    }

    /// Every row of `sql`.
    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let s = self.statement(sql)?;
        self.tx.query(&s, params).map_err(from_pg)
    }

    /// The row of `sql`, if any.
    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let s = self.statement(sql)?;
        self.tx.query_opt(&s, params).map_err(from_pg)
    }

    /// The one row of `sql`.
    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row> {
        let s = self.statement(sql)?;
        self.tx.query_one(&s, params).map_err(from_pg)
    }

    /// Runs `sql`; the number of rows it changed.
    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let s = self.statement(sql)?;
        self.tx.execute(&s, params).map_err(from_pg)
    }
}

/// The statements a job change runs whether it is inside a [`Tx`] or a single statement in
/// autocommit ([`Auto`]): the guarded write and its diagnosis.
pub(crate) trait Exec {
    /// The row of `sql`, if any.
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>>;
}

impl Exec for Tx<'_> {
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        Tx::query_opt(self, sql, params)
    }
}

/// Sets a new connection's `lock_timeout` (whole milliseconds, at least 1: PostgreSQL's 0
/// would mean no limit).
fn set_lock_timeout(client: &mut Client, timeout: Duration) -> Result<()> {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
    client.execute(SET_LOCK_TIMEOUT, &[&ms]).map_err(from_pg)?;
    Ok(())
}

/// `sql` prepared on `client` once per connection: from `cache`, or prepared and kept there.
fn cached(
    client: &mut impl postgres::GenericClient,
    cache: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql).map_err(from_pg)?;
    cache.insert(sql, s.clone());
    Ok(s)
}

/// A [`PgEngine::write_one`] call: statements run without BEGIN/COMMIT, each its own implicit
/// transaction, with the connection's statement cache.
pub(crate) struct Auto<'a> {
    client: &'a mut Client,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Exec for Auto<'_> {
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let s = cached(self.client, self.statements, sql)?;
        self.client.query_opt(&s, params).map_err(from_pg)
    }
}

impl PgEngine {
    /// Connects to `url` (`postgres://user@host/db`, or libpq's `key=value` form), applies
    /// the missing PostgreSQL migrations, and uses the system clock. A refused connection
    /// is `UNREACHABLE`; a database migrated by a newer build is `UNSUPPORTED_VERSION`.
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with_clock(url, Arc::new(SystemClock))
    }

    /// [`PgEngine::open`] with an injected clock (tests, simulations).
    pub fn open_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::open_with(url, clock, LOCK_TIMEOUT)
    }

    /// [`PgEngine::open_with_clock`] whose statements wait at most `lock_timeout` for another
    /// session's lock (a row an operator's open transaction holds, say) before the call
    /// fails `BUSY` (after the retries of a write): `EngineOptions::db.busy_timeout` through
    /// `Engine::open_with`.
    pub(crate) fn open_with(
        url: &str,
        clock: Arc<dyn Clock>,
        lock_timeout: Duration,
    ) -> Result<Self> {
        let mut client = db::connect(url)?;
        // migrating first: another node's migration may hold its lock for longer
        db::migrate(&mut client)?;
        set_lock_timeout(&mut client, lock_timeout)?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_string(),
                clock,
                lock_timeout,
                idle: Mutex::new(vec![Session {
                    client,
                    statements: HashMap::new(),
                    idle_since: Stopwatch::start(),
                }]),
            }),
        })
    }

    /// The URL it connects to (may hold a password: never print it).
    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// The engine clock's current time.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<i64> {
        self.with_session(|s| db::applied_version(&mut s.client))
    }

    /// Runs `f` on a connection of its own: an idle one of this engine's (a closed one is
    /// dropped), else a new one. It goes back to the idle list unless it was lost (closed,
    /// or the server ended the session): the next call then connects again.
    fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        let mut session = loop {
            let taken = lock(&self.inner.idle).pop();
            match taken {
                Some(s) if s.client.is_closed() => continue,
                Some(mut s) if s.idle_since.elapsed() >= PROBE_IDLE => {
                    if s.client.is_valid(PROBE_TIMEOUT).is_ok() {
                        break s;
                    }
                    // ended by the server: the others, as old, likely were too
                    lock(&self.inner.idle).clear();
                }
                Some(s) => break s,
                None => {
                    let mut client = db::connect(&self.inner.url)?;
                    set_lock_timeout(&mut client, self.inner.lock_timeout)?;
                    break Session {
                        client,
                        statements: HashMap::new(),
                        idle_since: Stopwatch::start(),
                    };
                }
            }
        };
        let result = f(&mut session);
        let lost = session.client.is_closed() || matches!(result, Err(Error::Unreachable { .. }));
        if !lost {
            session.idle_since = Stopwatch::start();
            let mut idle = lock(&self.inner.idle);
            if idle.len() < IDLE_SESSIONS {
                idle.push(session);
            }
        }
        result
    }

    /// Runs `body` on the session (see `with_session`); `body` sets its flag once its BEGIN
    /// went through. A session the server ended while it sat idle (a restart, a failover, an
    /// idle timeout) is only found dead by the next call's BEGIN: nothing of that call was
    /// applied, so it runs once more, on a new connection (the engine's other idle connections
    /// are dropped with it), instead of failing `UNREACHABLE`
    /// although the server is back. A call that fails after its BEGIN is never repeated.
    fn with_live_session<T>(
        &self,
        mut body: impl FnMut(&mut Session, &mut bool) -> Result<T>,
    ) -> Result<T> {
        let (mut connected, mut begun) = (false, false);
        let result = self.with_session(|s| {
            connected = true;
            body(s, &mut begun)
        });
        if connected && !begun && matches!(result, Err(Error::Unreachable { .. })) {
            // the other idle connections are as old as the one that died (a restart ends
            // them all): drop them, so the second try connects anew
            lock(&self.inner.idle).clear();
            return self.with_session(|s| body(s, &mut begun));
        }
        result
    }

    /// Runs `f` in one transaction at the time `now` read before it began; commits when `f`
    /// succeeds, rolls back otherwise. Retried on deadlock and serialization failure.
    pub(crate) fn write<T>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let result = self.with_live_session(|s, begun| {
                let now = self.now();
                let tx = s.client.transaction().map_err(from_pg)?;
                *begun = true;
                let mut tx = Tx {
                    tx,
                    statements: &mut s.statements,
                };
                let value = f(&mut tx, now)?;
                tx.tx.commit().map_err(from_pg)?;
                Ok(value)
            });
            match result {
                Err(Error::Busy) if attempt < RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    /// Runs `f` at the time `now` without BEGIN and COMMIT: every statement `f` runs is its
    /// own implicit transaction, atomic by itself. Only for a change that is ONE statement
    /// (a job update with its event in a data-modifying `WITH`), which then costs one round
    /// trip instead of three; whatever `f` runs after it (diagnosing a guarded write that
    /// matched nothing) only reads. Retried on deadlock and serialization failure.
    pub(crate) fn write_one<T>(
        &self,
        mut f: impl FnMut(&mut Auto<'_>, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let result = self.with_session(|s| {
                let now = self.now();
                let mut auto = Auto {
                    client: &mut s.client,
                    statements: &mut s.statements,
                };
                f(&mut auto, now)
            });
            match result {
                Err(Error::Busy) if attempt < RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    /// Runs `f` in a transaction that is always rolled back, whatever `f` does (doctor:
    /// reads, and a scratch schema built and thrown away).
    pub(crate) fn scratch<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        self.with_live_session(|s, begun| {
            let tx = s.client.transaction().map_err(from_pg)?;
            *begun = true;
            let f = f.take().expect("run once, after BEGIN");
            let mut tx = Tx {
                tx,
                statements: &mut s.statements,
            };
            let value = f(&mut tx);
            let rolled_back = tx.tx.rollback().map_err(from_pg);
            let value = value?;
            rolled_back?;
            Ok(value)
        })
    }

    /// Runs `f` in a read-only transaction (one snapshot per statement, READ COMMITTED).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.read_at(None, f)
    }

    /// Runs `f` in a read-only transaction whose statements all see one snapshot
    /// (REPEATABLE READ): a read of several statements that must agree with each other.
    pub(crate) fn read_snapshot<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.read_at(Some(IsolationLevel::RepeatableRead), f)
    }

    fn read_at<T>(
        &self,
        isolation: Option<IsolationLevel>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut f = Some(f);
        self.with_live_session(|s, begun| {
            let mut builder = s.client.build_transaction().read_only(true);
            if let Some(level) = isolation {
                builder = builder.isolation_level(level);
            }
            let tx = builder.start().map_err(from_pg)?;
            *begun = true;
            let f = f.take().expect("run once, after BEGIN");
            let mut tx = Tx {
                tx,
                statements: &mut s.statements,
            };
            let value = f(&mut tx)?;
            tx.tx.commit().map_err(from_pg)?;
            Ok(value)
        })
    }
}
