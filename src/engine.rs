//! [`Engine`]: one SQLite file, one clock, shared by every thread of the host.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::db::{self, DbOptions};
use crate::error::Result;
use crate::events::{Bus, Event};
use crate::file_identity::FileIdentity;
use crate::run::pending::PendingEndings;

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
    /// Run endings a full disk kept from being written (written before the next write).
    pending: PendingEndings,
    /// The device and inode of the file, re-checked before writes (`None` in memory).
    identity: Option<FileIdentity>,
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
        let identity = path.as_deref().and_then(FileIdentity::of);
        Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                bus: Bus::default(),
                opts,
                path,
                pending: PendingEndings::default(),
                identity,
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

    /// Runs `f` in an immediate write transaction (retried whole on a busy database).
    pub(crate) fn write<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let identity = self.inner.identity.as_ref();
        identity.map_or(Ok(()), |i| i.check(false))?;
        let mut conn = self.lock();
        self.inner.pending.flush(&mut conn, &self.inner.opts.db);
        let out = db::write(&mut conn, &self.inner.opts.db, f);
        if out.is_err() {
            identity.map_or(Ok(()), |i| i.check(true))?;
        }
        out
    }

    /// Run endings to write before the next write ([`crate::run::pending`]).
    pub(crate) fn pending_endings(&self) -> &PendingEndings {
        &self.inner.pending
    }

    /// Runs `f` in an immediate write transaction that may append job events; once it
    /// commits, the events go to in-process subscribers.
    pub(crate) fn write_events<T>(
        &self,
        mut f: impl FnMut(&Transaction<'_>, &mut Vec<Event>) -> Result<T>,
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
