//! The one error type of the crate, with a stable [`Error::code`] per kind.
//!
//! [`Error::from_sqlite`] is the single place where SQLite failures (constraint and trigger
//! aborts, busy, full, read-only, not-a-database) become typed errors. Triggers raise
//! messages of the form `CODE: table[: detail]` so that this function can recognise them.

use rusqlite::ffi;

use crate::job::state::JobState;
use crate::job::types::StopReason;

/// The result type of every fallible runledger call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One field of a value that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON-pointer-like path of the field (`/tags/2`, `input`).
    pub field: String,
    /// What is wrong with it, in lower case.
    pub reason: String,
}

/// Everything that can go wrong in runledger. Match on [`Error::code`] for a stable string.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The row asked for does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// Which kind of row (`job`, `run`, `schedule`...).
        entity: &'static str,
        /// Its id as text.
        id: String,
    },

    /// The state machine does not allow this transition.
    #[error("{entity} {id} cannot go from {from} to {to}")]
    IllegalTransition {
        /// Which machine (`job`, `run`, `due_run`).
        entity: &'static str,
        /// Row id as text (`?` when only the database saw the attempt).
        id: String,
        /// Current state.
        from: String,
        /// Requested state.
        to: String,
    },

    /// A worker wrote with an attempt number that no longer owns the job (fencing).
    #[error("job {job_id}: attempt {attempt} is stale (current attempt {current}, state {state})")]
    StaleAttempt {
        /// The job.
        job_id: i64,
        /// The attempt the writer holds.
        attempt: i64,
        /// The attempt the job is on now.
        current: i64,
        /// The job's current state.
        state: String,
    },

    /// `JOB_NOT_RUNNING`: a fenced write (heartbeat, progress, checkpoint, complete, fail)
    /// carries the job's current attempt, but the job is no longer running: it was
    /// cancelled or paused by an operator, failed by an operator or by its timeout, put
    /// back to `created` (resumed after a pause, or recovered by the supervisor), or it has
    /// already completed or failed through this same attempt (a second `complete` or
    /// `fail` gets it). The worker should stop; nothing was written.
    #[error("job {job_id} is {state}, not running")]
    JobNotRunning {
        /// The job.
        job_id: i64,
        /// Its current state.
        state: JobState,
    },

    /// A [`Worker`](crate::Worker)'s handler wrote after its job was stopped (cancelled,
    /// paused, lost, timed out, or the worker shutting down): refused without a write.
    #[error("job {job_id} was stopped ({reason}); nothing written")]
    JobStopped {
        /// The job.
        job_id: i64,
        /// Why the handler was told to stop.
        reason: StopReason,
    },

    /// A write that needs a started run met one that has already ended (finished, or swept
    /// when its lease expired).
    #[error("run {run_id} has ended; only a started run takes this write")]
    RunEnded {
        /// The run.
        run_id: i64,
    },

    /// A stored row could not be decoded: a value this build wrote as JSON no longer
    /// parses, or a value of the wrong type or shape reached the file around the rules
    /// (edited by hand, or damaged). Readers report it instead of failing opaquely, so one
    /// bad row never turns a listing into an opaque `DATABASE` error.
    #[error("{table} row {id}: column {column} is corrupt: {reason}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's key as text.
        id: String,
        /// The column.
        column: String,
        /// What the parser said.
        reason: String,
    },

    /// The operating system refused to start a thread (a worker slot, a heartbeat, a
    /// background loop).
    #[error("cannot start thread {thread}: {source}")]
    ThreadSpawn {
        /// The thread's name.
        thread: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// An argument was rejected before anything was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending argument or field.
        field: String,
        /// Why, in lower case.
        reason: String,
    },

    /// A value exceeds a configured size limit.
    #[error("{field} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large (`checkpoint`, `payload`...).
        field: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// A versioned JSON document failed validation, field by field.
    #[error("invalid {what}: {}", summarize(.errors))]
    InvalidRecord {
        /// Which document (`job record`).
        what: &'static str,
        /// Every field that failed.
        errors: Vec<FieldError>,
    },

    /// A versioned document or database declares a version this build does not know.
    #[error("{what} version {found} is not supported (this build knows up to {known})")]
    UnsupportedVersion {
        /// Which document or schema.
        what: &'static str,
        /// The version found.
        found: i64,
        /// The newest version this build understands.
        known: i64,
    },

    /// A client asked for job events that were pruned from the bounded backlog: reload the
    /// job and continue from `newest`.
    #[error("events of job {job_id} after seq {requested} were pruned (oldest kept {oldest_kept}, newest {newest})")]
    EventsPruned {
        /// The job.
        job_id: i64,
        /// The seq asked after.
        requested: i64,
        /// The oldest seq still kept.
        oldest_kept: i64,
        /// The newest seq.
        newest: i64,
    },

    /// Another run holds the lock key.
    #[error("a run is already active for lock {lock_key}{}", holder_text(*active_run_id, *lease_expires_at))]
    RunAlreadyActive {
        /// The contested lock key.
        lock_key: String,
        /// The id of the run holding it, when known.
        active_run_id: Option<i64>,
        /// When the holder's lease expires (then the next trigger or a sweep ends it
        /// `ABANDONED`), when known.
        lease_expires_at: Option<crate::clock::Timestamp>,
        /// The failed run that records this refusal (`blockedStage: "lock"`), when recorded.
        recorded_run_id: Option<i64>,
    },

    /// A row that may never change was about to be updated or deleted.
    #[error("{table} rows are immutable")]
    Immutable {
        /// The protected table.
        table: String,
    },

    /// The database refused a write by one of its triggers. Trigger messages are
    /// `CODE: table: rule`; `code` is that stable code (`ILLEGAL_TRANSITION`, `IMMUTABLE`,
    /// `STALE_ATTEMPT`, `EVENT_SEQ`, `EVENT_CURSOR`, `CLAIM_FENCE`, `MISSING_REFERENCE`,
    /// `INVALID_SHAPE`, `DUPLICATE`, `INTEGRITY`, `RUN_ALREADY_ACTIVE`) and is what
    /// [`Error::code`] returns.
    #[error("{table}: {rule} ({code})")]
    Refused {
        /// The rule's stable code.
        code: &'static str,
        /// The table whose rule refused the write.
        table: String,
        /// Which rule, in words, as the trigger says it.
        rule: String,
        /// The row the message names (`row 7`), or `None` when the database did not say.
        row: Option<String>,
    },

    /// A row written under an older schema breaks a rule of a newer migration, which
    /// therefore did not apply (nothing was dropped or changed).
    #[error("migration refused: {table} row {row} breaks a rule of the new schema")]
    MigrationRefused {
        /// The table of the offending row.
        table: String,
        /// Its id (or key) as SQL text.
        row: String,
    },

    /// The file's migration history differs from the migrations of this build (a row of
    /// `refinery_schema_history` was edited, added or removed).
    #[error("migration history differs at version {version}: {detail}")]
    MigrationHistory {
        /// The first version that differs.
        version: i64,
        /// What differs.
        detail: String,
    },

    /// The database refused a write that breaks one of its rules (CHECK, trigger, UNIQUE)
    /// in a way no more specific error describes.
    #[error("database rule violated: {message}")]
    ConstraintViolation {
        /// SQLite's message.
        message: String,
    },

    /// The database stayed locked by other writers beyond the retry budget.
    #[error("database is busy beyond the retry budget")]
    Busy,

    /// The disk or the configured page limit is full; nothing was written.
    #[error("database or disk is full")]
    DatabaseFull,

    /// The database file cannot be written (`SQLITE_READONLY*`, or an i/o error on a file
    /// or volume that no longer accepts writes: a read-only remount, a revoked permission).
    /// Reads go on; make the file writable again and retry.
    #[error("database is read-only: {detail} (sqlite extended code {extended_code})")]
    ReadOnly {
        /// SQLite's extended result code (`SQLITE_READONLY`, `SQLITE_READONLY_DBMOVED`,
        /// or the `SQLITE_IOERR_*` the write met).
        extended_code: i32,
        /// What was refused.
        detail: String,
    },

    /// The file is not a SQLite database (or is encrypted or corrupted beyond reading).
    #[error("file is not a database")]
    NotADatabase,

    /// The file is a SQLite database but damaged (`SQLITE_CORRUPT*`): a page overwritten or
    /// the file truncated. Run `runledger doctor`; restore from a backup.
    #[error("database file is damaged: {detail} (sqlite extended code {extended_code})")]
    Corrupt {
        /// SQLite's extended result code (`SQLITE_CORRUPT`, `SQLITE_CORRUPT_INDEX`...).
        extended_code: i32,
        /// SQLite's message.
        detail: String,
    },

    /// Reading or writing the file failed in the operating system (`SQLITE_IOERR*`): a
    /// failing disk, a vanished mount, a file truncated under the process.
    #[error("disk i/o error: {detail} (sqlite extended code {extended_code})")]
    DiskIo {
        /// SQLite's extended result code (`SQLITE_IOERR_WRITE`, `SQLITE_IOERR_FSYNC`...).
        extended_code: i32,
        /// SQLite's message.
        detail: String,
    },

    /// The database file was renamed, deleted or replaced under this process: writing on
    /// would go to a file nobody can open again. Stop, and reopen the path (or restore it).
    #[error("{}: {detail}; reopen the database", path.display())]
    FileReplaced {
        /// The path the engine opened.
        path: std::path::PathBuf,
        /// What changed.
        detail: String,
    },

    /// The database's `-wal` file is gone while its `-shm` index still records frames of it:
    /// a crash left commits in the WAL and the WAL was then deleted, so up to `frames` pages
    /// of the most recent commits are lost. The engine refuses to open the file (opening
    /// would erase the evidence); restore the `-wal` from wherever it went, or accept the
    /// loss by removing the `-shm` file as well, then run `runledger doctor`.
    #[error("{}: the -wal file is missing but the -shm index records {frames} WAL frames: the latest commits are lost; restore the -wal, or remove the -shm to accept the loss, then run doctor", path.display())]
    WalMissing {
        /// The database file.
        path: std::path::PathBuf,
        /// Frames (pages) the index records in the missing WAL.
        frames: u32,
    },

    /// A file operation outside SQLite failed (writing a backup).
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done (`sync`, `rename`, `remove`, `stat`).
        op: &'static str,
        /// The file concerned.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Applying the embedded migrations failed.
    #[error("migration failed: {message}")]
    Migration {
        /// refinery's description of the failure.
        message: String,
    },

    /// Any other SQLite failure.
    #[error("database error")]
    Database(#[source] rusqlite::Error),

    /// The database server could not be reached (refused, closed, timed out). Nothing of the
    /// call is half-written: it committed whole or not at all. When the connection was lost
    /// after the server took the call (a restart while it ran), it may have committed and
    /// only its answer is lost: read before retrying; a retried worker write meets its fence
    /// (`JOB_NOT_RUNNING`, `STALE_ATTEMPT`) rather than applying twice. [feature `postgres`]
    /// `runledger::pg` reconnects on its next call.
    #[error("database server unreachable: {detail}")]
    Unreachable {
        /// The client's description (no password: URLs are never included).
        detail: String,
    },

    /// The engine's backend does not serve this call: an [`Engine`](crate::Engine) opened
    /// on a `postgres://` URL serves the calls docs/postgres.md lists, and refuses the rest
    /// with this error before touching the database. Nothing was written.
    #[error("{operation} is not available on the {backend} backend")]
    Unsupported {
        /// The backend (`postgres`).
        backend: &'static str,
        /// The call refused (`jobs.create_many`).
        operation: &'static str,
    },

    /// [feature `postgres`] `copy` refused a target ledger that already holds rows: a copy
    /// only fills an empty ledger. Nothing was written.
    #[error("the target ledger is not empty: {tables:?} hold rows")]
    CopyTargetNotEmpty {
        /// The tables that hold rows.
        tables: Vec<String>,
    },

    /// [feature `postgres`] `copy` refused its source: SQLite's doctor found errors in it,
    /// or it holds rows the PostgreSQL schema has no table for. Nothing was written.
    #[error("the source ledger cannot be copied: {reason}")]
    CopySourceRefused {
        /// The failing doctor checks, or the tables whose rows have no PostgreSQL twin.
        names: Vec<String>,
        /// What is wrong, in words.
        reason: String,
    },

    /// [feature `postgres`] `copy` could not set `session_replication_role = replica` (the
    /// server refused it to this role): it needs a superuser, or a role granted that
    /// setting (`GRANT SET ON PARAMETER session_replication_role`, PostgreSQL 15+).
    #[error("copy needs session_replication_role = replica: {detail}")]
    CopyPrivilege {
        /// The server's message.
        detail: String,
    },

    /// [feature `postgres`] the copied ledger failed doctor before its commit: the copy was
    /// rolled back and the target is as empty as before.
    #[error("the copied ledger is not clean ({checks:?}): rolled back")]
    CopyVerifyFailed {
        /// The failing doctor checks.
        checks: Vec<String>,
    },

    /// A PostgreSQL failure no more specific error describes ([feature `postgres`]).
    #[error("postgres error {sqlstate}: {message}")]
    Postgres {
        /// The five-character SQLSTATE (empty when the client failed before the server said).
        sqlstate: String,
        /// The server's (or client's) message.
        message: String,
    },
}

fn summarize(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// ` (held by run N, lease expires T)` for [`Error::RunAlreadyActive`]'s message.
fn holder_text(run: Option<i64>, lease: Option<crate::clock::Timestamp>) -> String {
    match (run, lease) {
        (Some(id), Some(at)) => format!(" (held by run {id}, lease expires {at})"),
        (Some(id), None) => format!(" (held by run {id})"),
        (None, _) => String::new(),
    }
}

impl Error {
    /// A stable, upper-case code for this kind of error; safe to store and match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "NOT_FOUND",
            Error::IllegalTransition { .. } => "ILLEGAL_TRANSITION",
            Error::StaleAttempt { .. } => "STALE_ATTEMPT",
            Error::JobNotRunning { .. } => "JOB_NOT_RUNNING",
            Error::JobStopped { .. } => "JOB_STOPPED",
            Error::RunEnded { .. } => "RUN_ENDED",
            Error::CorruptRow { .. } => "CORRUPT_ROW",
            Error::ThreadSpawn { .. } => "THREAD_SPAWN_FAILED",
            Error::InvalidInput { .. } => "INVALID_INPUT",
            Error::TooLarge { .. } => "TOO_LARGE",
            Error::InvalidRecord { .. } => "INVALID_RECORD",
            Error::UnsupportedVersion { .. } => "UNSUPPORTED_VERSION",
            Error::EventsPruned { .. } => "EVENTS_PRUNED",
            Error::RunAlreadyActive { .. } => "RUN_ALREADY_ACTIVE",
            Error::Immutable { .. } => "IMMUTABLE",
            Error::Refused { code, .. } => code,
            Error::MigrationRefused { .. } => "MIGRATION_REFUSED",
            Error::MigrationHistory { .. } => "MIGRATION_HISTORY",
            Error::ConstraintViolation { .. } => "CONSTRAINT_VIOLATION",
            Error::Busy => "BUSY",
            Error::DatabaseFull => "DATABASE_FULL",
            Error::ReadOnly { .. } => "READ_ONLY",
            Error::NotADatabase => "NOT_A_DATABASE",
            Error::Corrupt { .. } => "CORRUPT",
            Error::DiskIo { .. } => "IO_ERROR",
            Error::Migration { .. } => "MIGRATION_FAILED",
            Error::Io { .. } => "IO",
            Error::FileReplaced { .. } => "FILE_REPLACED",
            Error::WalMissing { .. } => "WAL_MISSING",
            Error::Database(_) => "DATABASE",
            Error::Unreachable { .. } => "UNREACHABLE",
            Error::Unsupported { .. } => "UNSUPPORTED_BACKEND",
            Error::Postgres { .. } => "DATABASE",
            Error::CopyTargetNotEmpty { .. } => "COPY_TARGET_NOT_EMPTY",
            Error::CopySourceRefused { .. } => "COPY_SOURCE_REFUSED",
            Error::CopyPrivilege { .. } => "COPY_PRIVILEGE",
            Error::CopyVerifyFailed { .. } => "COPY_VERIFY_FAILED",
        }
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::ThreadSpawn`].
    pub(crate) fn thread_spawn(thread: impl Into<String>, source: std::io::Error) -> Self {
        Error::ThreadSpawn {
            thread: thread.into(),
            source,
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    /// Whether retrying the same call later may succeed (contention, full disk).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Busy | Error::DatabaseFull)
    }

    /// The single mapping from SQLite failures to typed errors.
    ///
    /// Trigger messages are `CODE: table[: detail]`; a UNIQUE failure on the active-run
    /// lock index is [`Error::RunAlreadyActive`].
    pub fn from_sqlite(err: rusqlite::Error) -> Self {
        if let rusqlite::Error::FromSqlConversionFailure(_, _, inner) = &err {
            if let Some(d) = inner.downcast_ref::<CorruptRowDetail>() {
                return Error::CorruptRow {
                    table: d.table,
                    id: d.id.clone(),
                    column: d.column.clone(),
                    reason: d.reason.clone(),
                };
            }
        }
        let (code, message) = match &err {
            rusqlite::Error::SqliteFailure(f, msg) => (f, msg.clone().unwrap_or_default()),
            _ => return Error::Database(err),
        };
        if let Some(typed) = from_file_fault(code, &message) {
            return typed;
        }
        match code.code {
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                return Error::Busy
            }
            rusqlite::ErrorCode::ConstraintViolation => {}
            _ => return Error::Database(err),
        }
        if code.extended_code == ffi::SQLITE_CONSTRAINT_TRIGGER {
            if let Some(e) = Error::from_trigger_message(&message) {
                return e;
            }
        }
        if message.starts_with("UNIQUE constraint failed: ingest_runs.lock_key") {
            return Error::Refused {
                code: "RUN_ALREADY_ACTIVE",
                table: "ingest_runs".into(),
                rule: "a started run holds this lock key".into(),
                row: None,
            };
        }
        Error::ConstraintViolation { message }
    }
}

/// What [`decode_row`] found wrong with a row, carried through rusqlite's error type to
/// [`Error::from_sqlite`].
#[derive(Debug)]
struct CorruptRowDetail {
    table: &'static str,
    id: String,
    column: String,
    reason: String,
}

impl std::fmt::Display for CorruptRowDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {}: column {}: {}",
            self.table, self.id, self.column, self.reason
        )
    }
}

impl std::error::Error for CorruptRowDetail {}

/// Runs the row decoder `f` on `row` (of `table`, id in column 0); a value that cannot be
/// decoded becomes [`Error::CorruptRow`] naming the table, the row's id and the column, so
/// one bad row never turns a listing into an opaque `DATABASE` error.
pub(crate) fn decode_row<T>(
    table: &'static str,
    row: &rusqlite::Row<'_>,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    use rusqlite::Error as E;
    f(row).map_err(|e| {
        let (col, ty, reason) = match &e {
            E::FromSqlConversionFailure(i, ty, err) => (*i, *ty, format!("{err} (stored as {ty})")),
            E::InvalidColumnType(i, _, ty) => (*i, *ty, format!("holds a value of type {ty}")),
            E::IntegralValueOutOfRange(i, v) => (
                *i,
                rusqlite::types::Type::Integer,
                format!("{v} is out of range"),
            ),
            _ => return e,
        };
        let id = match row.get_ref(0) {
            Ok(rusqlite::types::ValueRef::Integer(i)) => i.to_string(),
            Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            Ok(other) => format!("{other:?}"),
            Err(_) => "(unreadable)".into(),
        };
        let column = row
            .as_ref()
            .column_name(col)
            .map(str::to_string)
            .unwrap_or_else(|_| format!("#{col}"));
        E::FromSqlConversionFailure(
            col,
            ty,
            Box::new(CorruptRowDetail {
                table,
                id,
                column,
                reason,
            }),
        )
    })
}

/// Every code a trigger may raise (see migrations/V5).
const TRIGGER_CODES: &[&str] = &[
    "ILLEGAL_TRANSITION",
    "IMMUTABLE",
    "STALE_ATTEMPT",
    "EVENT_SEQ",
    "EVENT_CURSOR",
    "CLAIM_FENCE",
    "MISSING_REFERENCE",
    "INVALID_SHAPE",
    "DUPLICATE",
    "INTEGRITY",
    "RUN_ALREADY_ACTIVE",
];

impl Error {
    /// Parses a trigger message `CODE: table[: rule][ row ID]` into [`Error::Refused`];
    /// `None` when the message is not of that form or the code is unknown.
    pub fn from_trigger_message(message: &str) -> Option<Self> {
        let mut parts = message.splitn(3, ':').map(str::trim);
        let kind = parts.next()?;
        let code = TRIGGER_CODES.iter().copied().find(|c| *c == kind)?;
        let table = parts.next().filter(|t| !t.is_empty())?.to_string();
        let rule = parts.next().unwrap_or_default();
        let (rule, row) = match rule.rsplit_once(" row ") {
            Some((r, id)) if !id.is_empty() && !id.contains(' ') => (r, Some(id.to_string())),
            _ => (rule, None),
        };
        Some(Error::Refused {
            code,
            table,
            rule: rule.to_string(),
            row,
        })
    }
}

/// SQLite failures that describe the file rather than the statement, by extended result
/// code (issue 13, item 5): every `SQLITE_CORRUPT*`, `SQLITE_IOERR*`, `SQLITE_READONLY*`
/// and `SQLITE_FULL`, whichever call met them. `SQLITE_FULL` has no extended codes.
pub fn from_file_fault(code: &ffi::Error, message: &str) -> Option<Error> {
    let detail = || {
        if message.is_empty() {
            code.to_string()
        } else {
            message.to_string()
        }
    };
    let extended_code = code.extended_code;
    Some(match code.code {
        rusqlite::ErrorCode::DatabaseCorrupt => Error::Corrupt {
            extended_code,
            detail: detail(),
        },
        rusqlite::ErrorCode::SystemIoFailure => Error::DiskIo {
            extended_code,
            detail: detail(),
        },
        rusqlite::ErrorCode::DiskFull => Error::DatabaseFull,
        rusqlite::ErrorCode::ReadOnly => Error::ReadOnly {
            extended_code,
            detail: detail(),
        },
        rusqlite::ErrorCode::NotADatabase => Error::NotADatabase,
        _ => return None,
    })
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::from_sqlite(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_upper_snake() {
        let samples = [
            Error::not_found("job", 1),
            Error::invalid("kind", "must not be empty"),
            Error::Busy,
            Error::RunAlreadyActive {
                lock_key: "k".into(),
                active_run_id: Some(1),
                lease_expires_at: None,
                recorded_run_id: Some(2),
            },
        ];
        let codes: Vec<_> = samples.iter().map(Error::code).collect();
        assert_eq!(
            codes,
            ["NOT_FOUND", "INVALID_INPUT", "BUSY", "RUN_ALREADY_ACTIVE"]
        );
        let spawn = Error::thread_spawn("runledger-worker-0", std::io::Error::other("no threads"));
        assert_eq!(spawn.code(), "THREAD_SPAWN_FAILED");
        assert_eq!(
            spawn.to_string(),
            "cannot start thread runledger-worker-0: no threads"
        );
        assert!(std::error::Error::source(&spawn).is_some());
    }

    #[test]
    fn trigger_messages_map_to_typed_errors() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "create table t(x);
             create trigger t_ins before insert on t begin
               select raise(abort, 'ILLEGAL_TRANSITION: jobs: created->completed');
             end;
             create table u(x);
             create trigger u_del before delete on u begin
               select raise(abort, 'IMMUTABLE: audit_log');
             end;
             insert into u values (1);",
        )
        .unwrap();
        let e = Error::from(conn.execute("insert into t values (1)", []).unwrap_err());
        match e {
            Error::Refused {
                code,
                table,
                rule,
                row,
            } => {
                assert_eq!(
                    (code, table.as_str(), rule.as_str(), row),
                    ("ILLEGAL_TRANSITION", "jobs", "created->completed", None)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = Error::from_trigger_message(
            "MISSING_REFERENCE: due_runs: schedule_id names no schedule row 7",
        )
        .unwrap();
        assert!(
            matches!(&e, Error::Refused { code: "MISSING_REFERENCE", row: Some(r), .. } if r == "7"),
            "{e:?}"
        );
        assert!(Error::from_trigger_message("NOPE: jobs").is_none());
        assert!(Error::from_trigger_message("IMMUTABLE").is_none());
        let e = Error::from(conn.execute("delete from u", []).unwrap_err());
        assert_eq!(e.code(), "IMMUTABLE");
        let e = Error::from(conn.execute("select * from missing", []).unwrap_err());
        assert_eq!(e.code(), "DATABASE");
    }
}
