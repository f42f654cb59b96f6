//! [`Engine`]: one SQLite file, one clock, shared by every thread of the host.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::db::{self, DbOptions};
use crate::error::Result;
use crate::events::{Bus, Event};

/// How an [`Engine`] is opened: database options and the clock.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Durability, busy timeout and retries.
    pub db: DbOptions,
    /// The clock every timestamp comes from. Default: [`SystemClock`].
    pub clock: Arc<dyn Clock>,
    /// Largest checkpoint a job may save, in bytes of JSON text. Default 1 MiB.
    pub max_checkpoint_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            db: DbOptions::default(),
            clock: Arc::new(SystemClock),
            max_checkpoint_bytes: 1 << 20,
        }
    }
}

impl EngineOptions {
    /// These options with `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// A handle on one runledger database. Cheap to clone; clones share one connection, so
/// writes from the threads of one process never contend inside SQLite, and several
/// processes may open the same file (writes use `BEGIN IMMEDIATE` with busy retries).
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Mutex<Connection>,
    bus: Bus,
    opts: EngineOptions,
    path: Option<PathBuf>,
    /// The latest time a write of this engine stamped (Unix ms): write times never go back.
    last_write: AtomicI64,
}

/// What a write closure works with: the open transaction (by `Deref`) and the write's time.
pub(crate) struct WriteCtx<'a> {
    tx: &'a Transaction<'a>,
    now: Timestamp,
}

impl WriteCtx<'_> {
    /// The time of this write: the engine's clock read once the write lock was held, never
    /// earlier than the time of a write committed before it by this engine.
    pub(crate) fn now(&self) -> Timestamp {
        self.now
    }
}

impl<'a> Deref for WriteCtx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        self.tx
    }
}

impl Engine {
    /// Opens (creating and migrating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, EngineOptions::default())
    }

    /// Opens the database at `path` with `opts`.
    pub fn open_with(path: impl AsRef<Path>, opts: EngineOptions) -> Result<Self> {
        let path = path.as_ref();
        let conn = db::open(path, &opts.db)?;
        Ok(Self::from_parts(conn, opts, Some(path.to_path_buf())))
    }

    /// A private in-memory database (for tests and demos) with default options.
    pub fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with(EngineOptions::default())
    }

    /// A private in-memory database with `opts`.
    pub fn open_in_memory_with(opts: EngineOptions) -> Result<Self> {
        let conn = db::open_in_memory(&opts.db)?;
        Ok(Self::from_parts(conn, opts, None))
    }

    fn from_parts(conn: Connection, opts: EngineOptions, path: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                bus: Bus::default(),
                opts,
                path,
                last_write: AtomicI64::new(i64::MIN),
            }),
        }
    }

    /// The file this engine works on (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// The current time by the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.opts.clock.now()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        self.read(db::schema_version)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held left no transaction open (it rolled back on
        // unwind), so the connection is still sound.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The time for a write that holds the write lock: the clock, clamped so that it never
    /// goes back behind an earlier write of this engine (a clock stepping back).
    fn write_time(&self) -> Timestamp {
        let now = self.now().unix_ms();
        let prev = self.inner.last_write.fetch_max(now, Ordering::SeqCst);
        Timestamp::from_unix_ms(now.max(prev)).expect("both come from valid timestamps")
    }

    /// Runs `f` in an immediate write transaction (retried whole on a busy database). `f`
    /// reads the write's time from its context ([`WriteCtx::now`]), taken after `BEGIN
    /// IMMEDIATE` succeeded, so stored times follow commit order.
    pub(crate) fn write<T>(&self, mut f: impl FnMut(&WriteCtx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        db::write(&mut conn, &self.inner.opts.db, |tx| {
            let now = self.write_time();
            f(&WriteCtx { tx, now })
        })
    }

    /// Runs `f` in an immediate write transaction that may append job events; once it
    /// commits, the events go to in-process subscribers.
    pub(crate) fn write_events<T>(
        &self,
        mut f: impl FnMut(&WriteCtx<'_>, &mut Vec<Event>) -> Result<T>,
    ) -> Result<T> {
        let mut events = Vec::new();
        let out = self.write(|tx| {
            events.clear();
            f(tx, &mut events)
        })?;
        self.inner.bus.publish(&events);
        Ok(out)
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Runs `f` on the connection for reads.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.lock();
        f(&conn)
    }

    /// Runs `f` with the raw connection: for operators' SQL (runbook, doctor) and tests.
    /// Writes made here bypass the Rust state machines but not the database's own rules.
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.read(f)
    }
}
