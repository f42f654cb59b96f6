//! [`Engine`]: one SQLite file, one clock, shared by every thread of the host.
//!
//! # Writes: one writer connection, commits shared by many callers
//!
//! Every write of the process goes through one writer connection behind a mutex. A caller
//! takes the mutex, opens the group transaction (`BEGIN IMMEDIATE`) unless one is open,
//! runs its own operation inside its own `SAVEPOINT`, and then either commits the group or,
//! when other writers are already queued for the mutex, leaves the transaction open for them
//! and waits until a later member commits it. So concurrent callers share one commit (one
//! fsync at `synchronous = FULL`), each caller still runs its closure on its own thread
//! (no closure crosses a thread, no lifetime is erased), and:
//! - a failing operation rolls back only its own savepoint and returns its own error;
//! - a panicking operation is caught, rolled back to its savepoint, and re-raised in its own
//!   caller only, after the group's commit;
//! - events reach subscribers only after the commit that holds them, in commit order;
//! - a group holds at most [`MAX_GROUP`] operations, so a steady stream of writers cannot
//!   postpone a commit for ever.
//!
//! Groups form at `Durability::Full`, where a commit waits for an fsync. At
//! `Durability::Normal` a commit costs less than waking another thread, so each operation
//! commits on its own (no savepoint; a failure rolls its transaction back).
//!
//! Across processes, `BEGIN IMMEDIATE` meeting another process's write lock fails at once
//! (the writer's busy timeout is zero): the caller releases the mutex, sleeps, and retries,
//! so no thread ever sleeps holding a lock other callers need. A group whose commit fails
//! reports the failure to each of its members (busy: each re-runs its operation).
//!
//! # Reads: a pool of read connections, each read one snapshot
//!
//! File engines read on a small pool of `query_only` connections; each read API runs inside
//! one deferred read transaction, so a multi-statement read sees one snapshot, and in WAL
//! mode it never waits for the writer. In-memory engines have no second connection to the
//! same database: they read on the writer connection, after committing any open group (a
//! read never sees another caller's uncommitted work).

use std::collections::VecDeque;
use std::ops::Deref;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use crate::backend::Backend;
use crate::clock::{Clock, Deadline, SystemClock, Timestamp};
use crate::db::{self, DbOptions};
use crate::error::{Error, Result};
use crate::events::{Bus, Event};
use crate::file_identity::FileIdentity;
use crate::run::pending::PendingEndings;
use crate::storage::ingest_runs;

/// The most operations one shared commit holds.
pub(crate) const MAX_GROUP: usize = 256;

/// How many idle read connections a file engine keeps.
const IDLE_READERS: usize = 4;

/// How many failed groups are remembered for their waiting members.
const FAILED_KEPT: usize = 1024;

const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";
const SAVEPOINT: &str = "SAVEPOINT rl_op";
const RELEASE: &str = "RELEASE rl_op";
const ROLLBACK_TO: &str = "ROLLBACK TO rl_op";
const BEGIN_READ: &str = "BEGIN DEFERRED";

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

/// A handle on one runledger database. Cheap to clone; clones share one writer connection
/// (concurrent writes of the process share commits) and one pool of read connections
/// (reads never wait for a write). Several processes may open the same file: their writes
/// are serialised by SQLite's write lock, taken with `BEGIN IMMEDIATE` and busy retries.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// An [`Engine`] that does not keep it open: [`WeakEngine::upgrade`] gives it while some
/// clone still exists.
pub(crate) struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    /// The engine, unless every clone was dropped.
    pub(crate) fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

#[derive(Debug)]
struct Inner {
    /// The SQLite writer (`None` when a [`Backend`] serves the engine).
    writer: Option<Mutex<Writer>>,
    /// The backend serving the engine instead of SQLite (an engine opened on a
    /// `postgres://` URL); `None` for a SQLite engine.
    backend: Option<BackendBox>,
    /// Writers between "I want the writer" and "I hold it": a member that sees some leaves
    /// the group open for them instead of committing.
    queued: AtomicUsize,
    outcomes: Mutex<Outcomes>,
    settled: Condvar,
    /// Idle read connections (`None` in memory: reads use the writer).
    readers: Option<Mutex<Vec<Connection>>>,
    bus: Bus,
    opts: EngineOptions,
    path: Option<PathBuf>,
    /// The latest time a write of this engine stamped (Unix ms): write times never go back.
    last_write: AtomicI64,
    /// Commits of groups (crate-internal: tests count shared commits with it).
    commits: AtomicU64,
    /// The writer's `total_changes()` after its latest commit: rows written, so that a
    /// commit that changed nothing (an empty claim) does not count as activity.
    changed: AtomicU64,
    /// When a scheduler tick of this process last completed (Unix ms; 0: never), for
    /// `GET /health`.
    scheduler_ticked: AtomicI64,
    /// `changed` when [`Engine::checkpoint_when_idle`] was last called, and when it last
    /// emptied the WAL: an idle interval is one between two calls that saw no change.
    idle_seen: AtomicU64,
    /// Whether a thread follows the backend's feed into [`Inner::bus`] (an engine a backend
    /// serves, while it has subscribers: `Events::subscribe`).
    following: AtomicBool,
    idle_checkpointed: AtomicU64,
    /// Whether callers share commits (`Durability::Full`); see [`Engine::write`].
    share: bool,
    /// Run endings a full disk kept from being written (written before the next write).
    pending: PendingEndings,
    /// The device and inode of the file, re-checked before writes (`None` in memory).
    identity: Option<FileIdentity>,
}

/// A [`Backend`] in [`Inner`] (the trait has no `Debug`).
struct BackendBox(Box<dyn Backend>);

impl std::fmt::Debug for BackendBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // a backend may hold a URL with a password: only its name is printed
        f.debug_tuple("Backend").field(&self.0.name()).finish()
    }
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    open: Option<Group>,
    next_group: u64,
}

/// The open transaction and what its members left in it.
#[derive(Debug)]
struct Group {
    id: u64,
    ops: usize,
    events: Vec<Event>,
    /// Set when the transaction can no longer commit (a savepoint could not be ended, or
    /// SQLite rolled the whole transaction back).
    broken: Option<Error>,
    /// Roll back instead of committing: the group's only operation failed.
    undo: bool,
}

/// Which groups are settled (committed or failed): groups settle in id order.
#[derive(Debug, Default)]
struct Outcomes {
    settled: u64,
    failed: VecDeque<(u64, Error)>,
}

/// What a write closure works with: the writer connection inside the open transaction (by
/// `Deref`) and the write's time.
pub(crate) struct WriteCtx<'a> {
    conn: &'a Connection,
    now: Timestamp,
}

impl WriteCtx<'_> {
    /// The time of this write: the engine's clock read once the write lock was held, never
    /// earlier than the time of a write committed before it by this engine.
    pub(crate) fn now(&self) -> Timestamp {
        self.now
    }
}

impl Deref for WriteCtx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Operations run under catch_unwind, and a panic elsewhere while a lock was held left no
    // state half-changed, so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The same failure again, for each member of a group that failed to commit.
fn share(e: &Error) -> Error {
    match e {
        Error::Busy => Error::Busy,
        Error::DatabaseFull => Error::DatabaseFull,
        Error::ReadOnly {
            extended_code,
            detail,
        } => Error::ReadOnly {
            extended_code: *extended_code,
            detail: detail.clone(),
        },
        Error::Corrupt {
            extended_code,
            detail,
        } => Error::Corrupt {
            extended_code: *extended_code,
            detail: detail.clone(),
        },
        Error::DiskIo {
            extended_code,
            detail,
        } => Error::DiskIo {
            extended_code: *extended_code,
            detail: detail.clone(),
        },
        Error::NotADatabase => Error::NotADatabase,
        Error::Database(rusqlite::Error::SqliteFailure(f, msg)) => {
            Error::Database(rusqlite::Error::SqliteFailure(*f, msg.clone()))
        }
        other => Error::Database(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("the shared commit failed: {other}")),
        )),
    }
}

impl Engine {
    /// [`Engine::open_with`] for a file path (`src/engine_open.rs` dispatches URLs to a backend).
    pub(crate) fn open_file(path: &Path, opts: EngineOptions) -> Result<Self> {
        if let Some(frames) = crate::wal::missing_wal_frames(path) {
            return Err(Error::WalMissing {
                path: path.to_path_buf(),
                frames,
            });
        }
        let conn = db::open(path, &opts.db)?;
        // The writer never waits inside SQLite: a busy BEGIN returns at once and is retried
        // with the writer mutex released.
        conn.busy_timeout(Duration::ZERO)?;
        let readers = Some(Mutex::new(Vec::new()));
        Ok(Self::from_parts(
            conn,
            readers,
            opts,
            Some(path.to_path_buf()),
        ))
    }

    /// A private in-memory database (for tests and demos) with default options.
    pub fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with(EngineOptions::default())
    }

    /// A private in-memory database with `opts`. Reads use the writer connection.
    pub fn open_in_memory_with(opts: EngineOptions) -> Result<Self> {
        let conn = db::open_in_memory(&opts.db)?;
        Ok(Self::from_parts(conn, None, opts, None))
    }

    fn from_parts(
        conn: Connection,
        readers: Option<Mutex<Vec<Connection>>>,
        opts: EngineOptions,
        path: Option<PathBuf>,
    ) -> Self {
        let identity = path.as_deref().and_then(FileIdentity::of);
        let share = opts.db.durability == db::Durability::Full;
        let writer = Writer {
            conn,
            open: None,
            next_group: 1,
        };
        Self::assemble(Some(writer), None, readers, share, opts, path, identity)
    }

    /// An engine served by `backend` instead of a SQLite file (an engine opened on a
    /// `postgres://` URL): the facades hand the calls it serves to it and refuse the rest
    /// with [`Error::Unsupported`].
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn with_backend(backend: Box<dyn Backend>, opts: EngineOptions) -> Self {
        Self::assemble(None, Some(backend), None, false, opts, None, None)
    }

    /// An engine of either kind: the SQLite writer (with its readers and file identity), or
    /// the backend serving it; the rest starts empty.
    fn assemble(
        writer: Option<Writer>,
        backend: Option<Box<dyn Backend>>,
        readers: Option<Mutex<Vec<Connection>>>,
        share: bool,
        opts: EngineOptions,
        path: Option<PathBuf>,
        identity: Option<FileIdentity>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                writer: writer.map(Mutex::new),
                backend: backend.map(BackendBox),
                queued: AtomicUsize::new(0),
                outcomes: Mutex::new(Outcomes::default()),
                settled: Condvar::new(),
                readers,
                bus: Bus::default(),
                share,
                opts,
                path,
                last_write: AtomicI64::new(i64::MIN),
                commits: AtomicU64::new(0),
                changed: AtomicU64::new(0),
                scheduler_ticked: AtomicI64::new(0),
                idle_seen: AtomicU64::new(0),
                following: AtomicBool::new(false),
                idle_checkpointed: AtomicU64::new(0),
                pending: PendingEndings::default(),
                identity,
            }),
        }
    }

    /// The backend serving this engine instead of SQLite, if any: a facade method hands
    /// its call to it when there is one.
    pub(crate) fn backend(&self) -> Option<&dyn Backend> {
        self.inner.backend.as_ref().map(|b| &*b.0)
    }

    /// [`Error::Unsupported`] for `operation` when a backend serves this engine: the first
    /// line of a facade method the backend does not serve.
    pub(crate) fn sqlite_only(&self, operation: &'static str) -> Result<()> {
        match self.backend() {
            Some(b) => Err(Error::Unsupported {
                backend: b.name(),
                operation,
            }),
            None => Ok(()),
        }
    }

    /// The SQLite writer; [`Error::Unsupported`] on an engine a backend serves (a facade
    /// method that forgot its [`Engine::sqlite_only`] line still touches nothing).
    fn writer(&self) -> Result<&Mutex<Writer>> {
        match (&self.inner.writer, self.backend()) {
            (Some(w), _) => Ok(w),
            (None, b) => Err(Error::Unsupported {
                backend: b.map_or("unknown", |b| b.name()),
                operation: "a SQLite-only call",
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

    /// The schema version of the open database (on PostgreSQL, its own numbering:
    /// `migrations/postgres/`).
    pub fn schema_version(&self) -> Result<i64> {
        if let Some(b) = self.backend() {
            return b.schema_version();
        }
        self.read(db::schema_version)
    }

    /// The time for a write that holds the write lock: the clock, clamped so that it never
    /// goes back behind an earlier write of this engine (a clock stepping back).
    fn write_time(&self) -> Timestamp {
        let now = self.now().unix_ms();
        let prev = self.inner.last_write.fetch_max(now, Ordering::SeqCst);
        Timestamp::from_unix_ms(now.max(prev)).expect("both come from valid timestamps")
    }

    /// How many transactions the writer committed (each holding one or more operations).
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::SeqCst)
    }

    /// Records that a scheduler tick of this process completed at `at`.
    pub(crate) fn note_scheduler_tick(&self, at: Timestamp) {
        self.inner
            .scheduler_ticked
            .fetch_max(at.unix_ms(), Ordering::SeqCst);
    }

    /// When a scheduler tick of this process (any clone of this engine) last completed.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn last_scheduler_tick(&self) -> Option<Timestamp> {
        match self.inner.scheduler_ticked.load(Ordering::SeqCst) {
            0 => None,
            ms => Timestamp::from_unix_ms(ms),
        }
    }

    /// Run endings to write before the next write ([`crate::run::pending`]).
    pub(crate) fn pending_endings(&self) -> &PendingEndings {
        &self.inner.pending
    }

    /// Runs `f` as one operation of a shared write transaction. `f` reads the write's time
    /// from its context ([`WriteCtx::now`]), taken while it holds the writer, so stored
    /// times follow commit order. `f` may run more than once (a busy database or a failed
    /// shared commit re-runs it), so it must be repeatable.
    pub(crate) fn write<T>(&self, mut f: impl FnMut(&WriteCtx<'_>) -> Result<T>) -> Result<T> {
        self.write_op(&mut |ctx, _| f(ctx))
    }

    /// Like [`Engine::write`] for an operation that appends job events; they go to
    /// in-process subscribers once the commit holding them is done.
    pub(crate) fn write_events<T>(
        &self,
        mut f: impl FnMut(&WriteCtx<'_>, &mut Vec<Event>) -> Result<T>,
    ) -> Result<T> {
        self.write_op(&mut f)
    }

    /// One write as the engine's callers see it: the file's identity checked first
    /// ([`crate::file_identity`]), run endings a full disk kept written first
    /// ([`crate::run::pending`]), and, after a failure, the identity checked again so that a
    /// replaced file is reported as such.
    fn write_op<T>(
        &self,
        f: &mut dyn FnMut(&WriteCtx<'_>, &mut Vec<Event>) -> Result<T>,
    ) -> Result<T> {
        let identity = self.inner.identity.as_ref();
        if let Some(i) = identity {
            i.check(false)?;
        }
        self.inner.pending.flush(|run_id, end| {
            self.write_unflushed(&mut |tx, _| ingest_runs::finish(tx, run_id, end, tx.now()))
        });
        let out = self.write_unflushed(f);
        if out.is_err() {
            if let Some(i) = identity {
                i.check(true)?;
                if let Err(Error::DiskIo {
                    extended_code,
                    detail,
                }) = &out
                {
                    // An i/o error on a file that no longer takes writes (a volume remounted
                    // read-only under the process) is READ_ONLY, as a fresh open would say.
                    if let Some(why) = i.refuses_writes() {
                        return Err(Error::ReadOnly {
                            extended_code: *extended_code,
                            detail: format!("{detail}: {why}"),
                        });
                    }
                }
            }
        }
        out
    }

    /// [`Engine::write_op`] without the identity check and the pending endings (it writes
    /// them). A write that meets a full disk empties the WAL into the database file
    /// ([`crate::wal`]) and is retried once.
    fn write_unflushed<T>(
        &self,
        f: &mut dyn FnMut(&WriteCtx<'_>, &mut Vec<Event>) -> Result<T>,
    ) -> Result<T> {
        match self.write_in_group(f) {
            Err(Error::DatabaseFull) => {
                if self.checkpoint().is_err() {
                    return Err(Error::DatabaseFull);
                }
                self.write_in_group(f)
            }
            other => other,
        }
    }

    /// Checkpoints the WAL into the database file and truncates it to zero bytes (hosts call
    /// it when idle; the engine does it itself past a bound and after a full disk). It runs
    /// on the writer connection, after committing any open group. A reader in another
    /// process may keep it from completing (`busy`); it is then retried by the next call.
    pub fn checkpoint(&self) -> Result<crate::wal::Checkpoint> {
        self.on_writer(crate::wal::truncate)
    }

    /// Empties the WAL once this engine has gone quiet (issue 13, item 1): when no commit
    /// changed a row since the previous call and some did since the last time it emptied
    /// the WAL, runs `wal_checkpoint(TRUNCATE)` without waiting: a reader still on the WAL
    /// makes it give up at once (`busy`) rather than hold the writer, and the next call
    /// tries again. Returns what it did, `None` when it did not run. The engine's own
    /// loops call it: a [`Worker`](crate::Worker) that finds no job, and the supervisor and
    /// scheduler loops after each tick; a host with its own idle moments may call it too.
    pub fn checkpoint_when_idle(&self) -> Result<Option<crate::wal::Checkpoint>> {
        let inner = &*self.inner;
        if inner.path.is_none() {
            return Ok(None);
        }
        let now = inner.changed.load(Ordering::SeqCst);
        let seen = inner.idle_seen.swap(now, Ordering::SeqCst);
        if seen != now || inner.idle_checkpointed.load(Ordering::SeqCst) == now {
            return Ok(None);
        }
        let wait = inner.opts.db.busy_timeout;
        let done = self.on_writer(|c| crate::wal::truncate_without_waiting(c, wait))?;
        if !done.busy {
            inner.idle_checkpointed.store(now, Ordering::SeqCst);
        }
        Ok(Some(done))
    }

    fn write_in_group<T>(
        &self,
        f: &mut dyn FnMut(&WriteCtx<'_>, &mut Vec<Event>) -> Result<T>,
    ) -> Result<T> {
        let inner = &*self.inner;
        let db = &inner.opts.db;
        let budget = db
            .busy_timeout
            .saturating_mul(db.busy_retries.saturating_add(1));
        let deadline = Deadline::after(budget);
        let mut tries = 0u32;
        let writer = self.writer()?;
        loop {
            inner.queued.fetch_add(1, Ordering::SeqCst);
            let mut w = lock(writer);
            inner.queued.fetch_sub(1, Ordering::SeqCst);
            if w.open.is_none() {
                match exec(&w.conn, BEGIN_WRITE) {
                    Ok(()) => {
                        let id = w.next_group;
                        w.next_group += 1;
                        w.open = Some(Group {
                            id,
                            ops: 0,
                            events: Vec::new(),
                            broken: None,
                            undo: false,
                        });
                    }
                    Err(Error::Busy) if !deadline.remaining().is_zero() => {
                        drop(w);
                        tries += 1;
                        std::thread::sleep(db::backoff(tries));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let now = self.write_time();
            let mut events = Vec::new();
            let (ran, end) = if inner.share {
                run_in_savepoint(&w.conn, now, &mut events, f)
            } else {
                let ctx = WriteCtx { conn: &w.conn, now };
                let ran = catch_unwind(AssertUnwindSafe(|| f(&ctx, &mut events)));
                (ran, Ok(()))
            };
            let lost = w.conn.is_autocommit();
            let group = w
                .open
                .as_mut()
                .expect("a group is open while a member runs");
            let gid = group.id;
            group.ops += 1;
            if let Err(e) = end {
                group.broken.get_or_insert(e);
            }
            if lost && group.broken.is_none() {
                // SQLite itself rolled the whole transaction back (disk full, I/O error).
                group.broken = Some(match &ran {
                    Ok(Err(e)) => share(e),
                    _ => Error::Busy,
                });
            }
            if matches!(ran, Ok(Ok(_))) {
                group.events.append(&mut events);
            } else if !inner.share {
                // Alone in its transaction: undo it whole.
                group.undo = true;
            }
            let commit_now = !inner.share
                || group.ops >= MAX_GROUP
                || group.broken.is_some()
                || inner.queued.load(Ordering::SeqCst) == 0;
            let committed = if commit_now {
                let r = self.settle(&mut w);
                drop(w);
                r
            } else {
                drop(w);
                self.wait_settled(gid)
            };
            match (ran, committed) {
                (Err(panic), _) => resume_unwind(panic),
                (Ok(Err(e)), _) => return Err(e),
                (Ok(Ok(out)), Ok(())) => return Ok(out),
                (Ok(Ok(_)), Err(Error::Busy)) if !deadline.remaining().is_zero() => {
                    tries += 1;
                    std::thread::sleep(db::backoff(tries));
                }
                (Ok(Ok(_)), Err(e)) => return Err(e),
            }
        }
    }

    /// Ends the open group (commit, or roll back a broken one), publishes its events, and
    /// wakes its waiting members. Called with the writer held.
    fn settle(&self, w: &mut Writer) -> Result<()> {
        let Some(mut group) = w.open.take() else {
            return Ok(());
        };
        let undo = group.undo && group.broken.is_none();
        let res = match group.broken.take() {
            _ if undo => Ok(()),
            None => exec(&w.conn, COMMIT),
            Some(e) => Err(e),
        };
        if (undo || res.is_err()) && !w.conn.is_autocommit() {
            let _ = exec(&w.conn, ROLLBACK);
        }
        if res.is_ok() && !undo {
            self.inner.commits.fetch_add(1, Ordering::SeqCst);
            self.inner
                .changed
                .store(w.conn.total_changes(), Ordering::SeqCst);
            self.inner.bus.publish(&group.events);
        }
        let mut o = lock(&self.inner.outcomes);
        o.settled = group.id;
        if let Err(e) = &res {
            if o.failed.len() == FAILED_KEPT {
                o.failed.pop_front();
            }
            o.failed.push_back((group.id, share(e)));
        }
        drop(o);
        self.inner.settled.notify_all();
        res
    }

    /// Waits until group `gid` is settled; its failure, if it failed.
    fn wait_settled(&self, gid: u64) -> Result<()> {
        let o = lock(&self.inner.outcomes);
        let o = self
            .inner
            .settled
            .wait_while(o, |o| o.settled < gid)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match o.failed.iter().find(|(id, _)| *id == gid) {
            Some((_, e)) => Err(share(e)),
            None => Ok(()),
        }
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Whether a thread follows the backend's feed into the bus (see `Events::subscribe`).
    pub(crate) fn following(&self) -> &AtomicBool {
        &self.inner.following
    }

    /// A handle that does not keep the engine open (a background thread's).
    pub(crate) fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    /// Runs `f` on the writer connection with no transaction open (an open group is
    /// committed first).
    fn on_writer<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut w = lock(self.writer()?);
        if w.open.is_some() {
            // Its members learn the outcome; this caller only needs the group closed.
            let _ = self.settle(&mut w);
        }
        f(&w.conn)
    }

    /// Runs `f` in one read snapshot: a deferred read transaction on a pooled read
    /// connection (file engines: it never waits for a writer), or on the writer in memory.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let Some(pool) = &self.inner.readers else {
            return self.on_writer(|c| in_snapshot(c, f));
        };
        let idle = lock(pool).pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let path = self
                    .inner
                    .path
                    .as_deref()
                    .expect("file engines have a path");
                db::open_reader(path, &self.inner.opts.db)?
            }
        };
        let out = in_snapshot(&conn, f);
        if conn.is_autocommit() {
            let mut idle = lock(pool);
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        out
    }

    /// `PRAGMA data_version` of the writer connection: it changes when another connection
    /// (another process, another engine) commits.
    pub(crate) fn writer_data_version(&self) -> Result<i64> {
        self.on_writer(|c| Ok(c.query_row("pragma data_version", [], |r| r.get(0))?))
    }

    /// Runs `f` with the writer connection, outside any transaction: for operators' SQL
    /// (runbook) and tests. Writes made here bypass the Rust state machines but not the
    /// database's own rules.
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.on_writer(f)
    }
}

/// Runs `f` in a deferred read transaction on `conn`.
fn in_snapshot<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    exec(conn, BEGIN_READ)?;
    let out = f(conn);
    if !conn.is_autocommit() {
        let end = exec(conn, COMMIT);
        if end.is_err() && !conn.is_autocommit() {
            let _ = exec(conn, ROLLBACK);
        }
        if out.is_ok() {
            end?;
        }
    }
    out
}

type Ran<T> = std::thread::Result<Result<T>>;

/// Runs one operation in its own savepoint; returns its outcome (a panic caught) and how
/// ending the savepoint went. A failed or panicking operation is rolled back to the
/// savepoint; the rest of the group stays.
fn run_in_savepoint<T>(
    conn: &Connection,
    now: Timestamp,
    events: &mut Vec<Event>,
    f: &mut dyn FnMut(&WriteCtx<'_>, &mut Vec<Event>) -> Result<T>,
) -> (Ran<T>, Result<()>) {
    if let Err(e) = exec(conn, SAVEPOINT) {
        return (Ok(Err(e)), Ok(()));
    }
    let ctx = WriteCtx { conn, now };
    let ran = catch_unwind(AssertUnwindSafe(|| f(&ctx, events)));
    if conn.is_autocommit() {
        // The transaction (and the savepoint) is already gone.
        return (ran, Ok(()));
    }
    let end = if matches!(ran, Ok(Ok(_))) {
        exec(conn, RELEASE)
    } else {
        exec(conn, ROLLBACK_TO).and_then(|()| exec(conn, RELEASE))
    };
    (ran, end)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use rusqlite::named_params;

    use super::*;

    const INSERT: &str = "insert into supervisor_state (name) values (:name)";
    const NAMES: &str = "select name from supervisor_state order by name";

    fn names(engine: &Engine) -> Vec<String> {
        engine
            .read(|c| {
                let mut stmt = c.prepare_cached(NAMES)?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .unwrap()
    }

    fn insert(tx: &Connection, name: &str) -> Result<()> {
        tx.prepare_cached(INSERT)?
            .execute(named_params! {":name": name})?;
        Ok(())
    }

    /// Starts a write that inserts `holder` and keeps the writer (its group open) until the
    /// returned sender is used.
    fn hold_writer(engine: &Engine) -> (mpsc::Sender<()>, thread::JoinHandle<Result<()>>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let e = engine.clone();
        let holder = thread::spawn(move || {
            e.write(|tx| {
                insert(tx, "holder")?;
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            })
        });
        started_rx.recv().unwrap();
        (release_tx, holder)
    }

    fn wait_queued(engine: &Engine, n: usize) {
        let deadline = Deadline::after(Duration::from_secs(20));
        while engine.inner.queued.load(Ordering::SeqCst) < n {
            assert!(!deadline.remaining().is_zero(), "writers never queued");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_reader_never_waits_for_a_writer_holding_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path().join("r.db")).unwrap();
        let (release, holder) = hold_writer(&engine);
        let (done_tx, done_rx) = mpsc::channel();
        let e = engine.clone();
        thread::spawn(move || done_tx.send(names(&e)).unwrap());
        let seen = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the read waited for the writer's commit");
        assert!(seen.is_empty(), "a read saw uncommitted work: {seen:?}");
        release.send(()).unwrap();
        holder.join().unwrap().unwrap();
        assert_eq!(names(&engine), ["holder"]);
    }

    #[test]
    fn queued_writes_share_one_commit_and_each_gets_its_own_error() {
        let engine = Engine::open_in_memory().unwrap();
        let (release, holder) = hold_writer(&engine);
        let before = engine.commits();
        let ops: Vec<_> = (0..8)
            .map(|k| {
                let e = engine.clone();
                thread::spawn(move || {
                    e.write(|tx| {
                        insert(tx, &format!("op{k}"))?;
                        if k % 2 == 1 {
                            return Err(Error::invalid("op", format!("op {k} refused")));
                        }
                        Ok(k)
                    })
                })
            })
            .collect();
        wait_queued(&engine, 8);
        release.send(()).unwrap();
        holder.join().unwrap().unwrap();
        for (k, op) in ops.into_iter().enumerate() {
            match (k % 2, op.join().unwrap()) {
                (0, Ok(got)) => assert_eq!(got, k),
                (1, Err(Error::InvalidInput { field, reason })) => {
                    assert_eq!(field, "op");
                    assert_eq!(reason, format!("op {k} refused"));
                }
                (_, other) => panic!("op {k}: {other:?}"),
            }
        }
        assert_eq!(engine.commits() - before, 1, "nine writes, one commit");
        assert_eq!(names(&engine), ["holder", "op0", "op2", "op4", "op6"]);
    }

    #[test]
    fn a_panicking_write_fails_only_its_own_caller() {
        let engine = Engine::open_in_memory().unwrap();
        let (release, holder) = hold_writer(&engine);
        let before = engine.commits();
        let ops: Vec<_> = (0..4)
            .map(|k| {
                let e = engine.clone();
                thread::spawn(move || {
                    e.write(|tx| {
                        insert(tx, &format!("op{k}"))?;
                        assert_ne!(k, 2, "op 2 panics");
                        Ok(())
                    })
                })
            })
            .collect();
        wait_queued(&engine, 4);
        release.send(()).unwrap();
        holder.join().unwrap().unwrap();
        for (k, op) in ops.into_iter().enumerate() {
            let res = op.join();
            if k == 2 {
                assert!(res.is_err(), "op 2's caller sees its panic");
            } else {
                res.unwrap().unwrap();
            }
        }
        assert_eq!(engine.commits() - before, 1);
        assert_eq!(names(&engine), ["holder", "op0", "op1", "op3"]);
        // The writer is sound afterwards.
        engine.write(|tx| insert(tx, "after")).unwrap();
        assert_eq!(names(&engine).len(), 5);
    }

    #[test]
    fn a_lone_writer_commits_at_once() {
        let engine = Engine::open_in_memory().unwrap();
        let before = engine.commits();
        for k in 0..3 {
            engine.write(|tx| insert(tx, &format!("n{k}"))).unwrap();
        }
        assert_eq!(engine.commits() - before, 3);
        let err = engine.write(|tx| insert(tx, "n0")).unwrap_err();
        // V5's trigger refuses an insert of an existing supervisor name (no REPLACE/upsert).
        assert_eq!(err.code(), "IMMUTABLE", "{err}");
        assert_eq!(names(&engine), ["n0", "n1", "n2"]);
    }

    #[test]
    fn at_normal_each_write_commits_alone_and_a_failure_undoes_only_itself() {
        let mut opts = EngineOptions::default();
        opts.db.durability = db::Durability::Normal;
        let engine = Engine::open_in_memory_with(opts).unwrap();
        let before = engine.commits();
        engine.write(|tx| insert(tx, "a")).unwrap();
        let err = engine
            .write(|tx| {
                insert(tx, "b")?;
                Err::<(), _>(Error::invalid("op", "refused"))
            })
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_INPUT");
        let e = engine.clone();
        let panicked = thread::spawn(move || {
            e.write(|tx| {
                insert(tx, "c")?;
                panic!("op c panics");
                #[allow(unreachable_code)]
                Ok(())
            })
        })
        .join();
        assert!(panicked.is_err());
        engine.write(|tx| insert(tx, "d")).unwrap();
        assert_eq!(engine.commits() - before, 2);
        assert_eq!(names(&engine), ["a", "d"]);
    }

    #[test]
    fn write_times_never_go_back_when_the_clock_does() {
        let clock = crate::ManualClock::new(Timestamp::from_unix_ms(1_000_000).unwrap());
        let engine =
            Engine::open_in_memory_with(EngineOptions::default().with_clock(clock.clone()))
                .unwrap();
        let first = engine.write(|tx| Ok(tx.now())).unwrap();
        clock.rewind(Duration::from_secs(60));
        let second = engine.write(|tx| Ok(tx.now())).unwrap();
        assert_eq!(second, first);
        clock.advance(Duration::from_secs(120));
        let third = engine.write(|tx| Ok(tx.now())).unwrap();
        assert_eq!(third.millis_since(first), 60_000);
    }
}

#[cfg(test)]
mod reprepare_tests {
    use rusqlite::ffi;
    use serde_json::json;

    use super::*;
    use crate::job::types::NewJob;

    /// The statements of `conn` (its statement cache) that SQLite re-prepared, with how often.
    fn reprepared(conn: &Connection) -> Vec<(String, i32)> {
        let mut found = Vec::new();
        // SAFETY: the handle is used on this thread while `conn` is borrowed; the statements
        // are only inspected (SQL text and a counter), never stepped or finalized.
        unsafe {
            let db = conn.handle();
            let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                let n = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
                if n > 0 {
                    let sql = std::ffi::CStr::from_ptr(ffi::sqlite3_sql(stmt));
                    found.push((sql.to_string_lossy().into_owned(), n));
                }
                stmt = ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        found
    }

    /// Regression: with SQLite 3.54, a statement whose plan a bound value could steer
    /// (`job_id = :job_id` in the event append's read of the previous event, `limit :limit`
    /// in `claim_many`) was re-prepared on every use, because rusqlite clears the bindings of
    /// a statement it returns to its cache.
    #[test]
    fn hot_statements_are_not_reprepared_on_every_use() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path().join("p.db")).unwrap();
        let jobs = engine.jobs();
        let batch: Vec<NewJob> = (0..20)
            .map(|i| NewJob::new("u", "k", json!({ "i": i })))
            .collect();
        jobs.create_many(&batch).unwrap();
        for i in 0..10 {
            jobs.create(&NewJob::new("u", "k", json!({ "i": i })))
                .unwrap();
        }
        for _ in 0..5 {
            let c = jobs.claim("w", &["k"]).unwrap().unwrap();
            jobs.heartbeat(&c).unwrap();
            jobs.progress(&c, 50, Some("half")).unwrap();
            jobs.complete(&c, &json!({"ok": true})).unwrap();
        }
        for _ in 0..3 {
            for c in jobs.claim_many("w", &["k"], 4).unwrap() {
                jobs.fail(&c, "TIMEOUT", "failed on purpose").unwrap();
            }
        }
        for id in 1..5 {
            engine.events().since(id, 0, 10).unwrap();
            jobs.get(id).unwrap();
        }
        let writer = engine.with_connection(|c| Ok(reprepared(c))).unwrap();
        assert_eq!(writer, Vec::<(String, i32)>::new());
        // A read connection may re-prepare a statement once: one prepared before the
        // connection had read the schema (its first `BEGIN`).
        let readers = lock(engine.inner.readers.as_ref().unwrap());
        for r in readers.iter() {
            let again: Vec<_> = reprepared(r).into_iter().filter(|(_, n)| *n > 1).collect();
            assert_eq!(again, Vec::<(String, i32)>::new());
        }
    }
}
