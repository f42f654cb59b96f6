//! Opening the database: pragmas, embedded refinery migrations, read connections, and the
//! busy back-off the engine's writer uses.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How hard SQLite works to make a commit survive power loss. The host chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `PRAGMA synchronous = FULL`: a committed transaction survives power loss. The default.
    #[default]
    Full,
    /// `PRAGMA synchronous = NORMAL`: in WAL mode a commit survives a crash of the process,
    /// but the last commits may be lost on power loss. Faster; the database never corrupts.
    Normal,
}

/// How a database is opened.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Commit durability (see [`Durability`]).
    pub durability: Durability,
    /// How long one statement waits for another connection's lock before SQLite reports
    /// busy (`PRAGMA busy_timeout`). Default 5 s.
    pub busy_timeout: Duration,
    /// How many times a write transaction that still met a busy database is retried (with a
    /// growing pause) before [`Error::Busy`] reaches the caller. Default 20.
    pub busy_retries: u32,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            busy_retries: 20,
        }
    }
}

/// The newest schema version this build knows (the highest embedded migration).
pub fn known_schema_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// The schema version recorded in the database (0 for a fresh file).
pub fn schema_version(conn: &Connection) -> Result<i64> {
    let has_history: bool = conn.query_row(
        "select exists(select 1 from sqlite_master where type = 'table' and name = 'refinery_schema_history')",
        [],
        |r| r.get(0),
    )?;
    if !has_history {
        return Ok(0);
    }
    Ok(conn.query_row(
        "select coalesce(max(version), 0) from refinery_schema_history",
        [],
        |r| r.get(0),
    )?)
}

const HISTORY: &str =
    "select version, name, checksum from refinery_schema_history order by version";

/// Compares the file's migration history with this build's migrations: every recorded
/// version must be one of ours with the same name and checksum, and none of ours below the
/// newest recorded one may be missing. [`Error::MigrationHistory`] names the first
/// difference. A file without history (fresh) passes.
pub fn verify_history(conn: &Connection) -> Result<()> {
    if schema_version(conn)? == 0 {
        return Ok(());
    }
    let mut stmt = conn.prepare(HISTORY)?;
    let recorded: Vec<(i64, String, String)> = stmt
        .query_map([], |r| {
            let checksum: rusqlite::types::Value = r.get(2)?;
            let checksum = match checksum {
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Integer(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            Ok((r.get(0)?, r.get(1)?, checksum))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let ours = embedded::migrations::runner().get_migrations().clone();
    let newest = recorded.iter().map(|r| r.0).max().unwrap_or(0);
    for m in &ours {
        let v = i64::from(m.version());
        if v > newest {
            continue;
        }
        match recorded.iter().find(|r| r.0 == v) {
            None => {
                return Err(Error::MigrationHistory {
                    version: v,
                    detail: format!("migration V{v}__{} is not recorded", m.name()),
                })
            }
            Some((_, name, checksum)) if name != m.name() || *checksum != m.checksum().to_string() => {
                return Err(Error::MigrationHistory {
                    version: v,
                    detail: format!(
                        "recorded as {name:?} with checksum {checksum}, this build has {:?} with checksum {}",
                        m.name(),
                        m.checksum()
                    ),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = recorded.iter().find(|r| {
        r.0 <= known_schema_version() && !ours.iter().any(|m| i64::from(m.version()) == r.0)
    }) {
        return Err(Error::MigrationHistory {
            version: extra.0,
            detail: format!(
                "version {} ({:?}) is not a migration of this build",
                extra.0, extra.1
            ),
        });
    }
    let duplicates = recorded.windows(2).find(|w| w[0].0 == w[1].0);
    if let Some(w) = duplicates {
        return Err(Error::MigrationHistory {
            version: w[0].0,
            detail: "recorded twice".into(),
        });
    }
    Ok(())
}

/// Opens `path` read-only, without applying migrations or checking the history: what
/// `doctor` uses on a file that [`open`] refuses.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.query_row("select count(*) from sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

/// The mode a database file is created with: it holds account statements and tokens'
/// fingerprints, so only its owner reads it. SQLite gives the `-wal` and `-shm` files the
/// database file's mode.
pub const FILE_MODE: u32 = 0o600;

/// Creates an empty file at `path` readable by its owner only ([`FILE_MODE`]) when there is
/// none (SQLite takes an empty file as a new database). A `file:` URI is left to SQLite.
fn create_private(path: &Path) -> Result<()> {
    if path.to_str().is_some_and(|p| p.starts_with("file:")) || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, FILE_MODE);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // A missing directory and the like: SQLite's own open reports it.
        Err(_) => Ok(()),
    }
}

/// Restricts the file at `path` to its owner ([`FILE_MODE`]): for files SQLite creates
/// itself (a backup's `VACUUM INTO`).
pub(crate) fn restrict_mode(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE)).map_err(
            |source| Error::Io {
                op: "chmod",
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The permission bits of `path` when they let anyone but its owner in (`None` when the
/// file is private, absent, or the platform has no such bits).
pub fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Opens (creating if needed, with mode [`FILE_MODE`]) the file at `path`, applies pragmas
/// and migrations.
pub fn open(path: &Path, opts: &DbOptions) -> Result<Connection> {
    create_private(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut conn = Connection::open_with_flags(path, flags)?;
    configure(&conn, opts, true)?;
    migrate(&mut conn, opts)?;
    Ok(conn)
}

/// Opens a read connection on the (already opened and migrated) file at `path`: it refuses
/// writes (`query_only`) and keeps the same statement cache.
pub(crate) fn open_reader(path: &Path, opts: &DbOptions) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(opts.busy_timeout)?;
    conn.pragma_update(None, "query_only", "on")?;
    keep_cached_statements(&conn)?;
    Ok(conn)
}

/// Opens a private in-memory database with the same schema.
pub fn open_in_memory(opts: &DbOptions) -> Result<Connection> {
    let mut conn = Connection::open_in_memory()?;
    configure(&conn, opts, false)?;
    migrate(&mut conn, opts)?;
    Ok(conn)
}

fn configure(conn: &Connection, opts: &DbOptions, wal: bool) -> Result<()> {
    conn.busy_timeout(opts.busy_timeout)?;
    // Reading the header first turns "not a database" into a clear error before any pragma
    // tries to write.
    conn.query_row("select count(*) from sqlite_master", [], |_| Ok(()))?;
    if wal {
        let mode: String = conn.query_row("pragma journal_mode = wal", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::ReadOnly {
                extended_code: rusqlite::ffi::SQLITE_READONLY,
                detail: format!("the journal cannot be switched to WAL (it stays {mode})"),
            });
        }
        crate::wal::configure(conn)?;
    }
    let sync = match opts.durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    keep_cached_statements(conn)
}

/// Makes cached statements stay prepared between uses.
///
/// The cache holds every named SQL constant of the crate. And SQLite's query planner
/// stability guarantee (QPSG) is on: without it, SQLite 3.54 marks a statement to be
/// re-prepared on rebinding when a bound value could steer its plan (an `x = :param` term the
/// index does not use, a `limit :n`, a `glob :pattern`), and rusqlite clears the bindings of
/// every statement it returns to its cache, which expires such a statement at once: the
/// event append's read of the previous event was re-prepared on every event (about 38,000
/// instructions each; BENCHMARKS.md, "Engine core"). QPSG changes which plan may be chosen,
/// never what a statement does.
fn keep_cached_statements(conn: &Connection) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(256);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn migrate(conn: &mut Connection, opts: &DbOptions) -> Result<()> {
    let known = known_schema_version();
    let mut tries = 0;
    loop {
        let found = schema_version(conn)?;
        if found > known {
            return Err(Error::UnsupportedVersion {
                what: "schema",
                found,
                known,
            });
        }
        if found == known {
            return verify_history(conn);
        }
        // An edited history is refused before anything is applied on top of it.
        verify_history(conn)?;
        // Another process may be migrating the same file at this moment: its transaction
        // makes ours fail, after which the loop sees its result.
        match embedded::migrations::runner().set_grouped(true).run(conn) {
            Ok(_) => return Ok(()),
            Err(e) if tries < opts.busy_retries && !e.to_string().contains("MIGRATION_REFUSED") => {
                tries += 1;
                let _ = e;
                std::thread::sleep(backoff(tries));
            }
            Err(e) => {
                return Err(match e.kind() {
                    refinery::error::Kind::Connection(_, source) => {
                        match source.downcast_ref::<rusqlite::Error>() {
                            Some(rusqlite::Error::SqliteFailure(f, _))
                                if f.code == rusqlite::ErrorCode::DiskFull =>
                            {
                                Error::DatabaseFull
                            }
                            Some(rusqlite::Error::SqliteFailure(f, msg))
                                if f.code == rusqlite::ErrorCode::ReadOnly =>
                            {
                                Error::ReadOnly {
                                    extended_code: f.extended_code,
                                    detail: msg.clone().unwrap_or_else(|| f.to_string()),
                                }
                            }
                            _ => migration_error(e.to_string()),
                        }
                    }
                    _ => migration_error(e.to_string()),
                })
            }
        }
    }
}

/// A failed migration; a row that a new rule refuses (`MIGRATION_REFUSED: <table> row
/// <id>`, raised by the migration itself) becomes [`Error::MigrationRefused`].
fn migration_error(message: String) -> Error {
    if let Some(rest) = message.split("MIGRATION_REFUSED: ").nth(1) {
        let mut words = rest.split_whitespace();
        if let (Some(table), Some("row"), Some(row)) = (words.next(), words.next(), words.next()) {
            return Error::MigrationRefused {
                table: table.to_string(),
                row: row.to_string(),
            };
        }
    }
    Error::Migration { message }
}

/// The pause before busy retry `try_no` (1-based): 6 ms growing to 51 ms.
pub(crate) fn backoff(try_no: u32) -> Duration {
    Duration::from_millis(u64::from(try_no.min(10)) * 5 + 1)
}

#[cfg(test)]
mod tests {
    use crate::wal::{AUTOCHECKPOINT_PAGES, JOURNAL_SIZE_LIMIT};

    #[test]
    fn wal_pragmas_take_the_documented_values() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open(&dir.path().join("w.db"), &Default::default()).unwrap();
        let pages: i64 = conn
            .query_row("pragma wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        let limit: i64 = conn
            .query_row("pragma journal_size_limit", [], |r| r.get(0))
            .unwrap();
        assert_eq!((pages, limit), (AUTOCHECKPOINT_PAGES, JOURNAL_SIZE_LIMIT));
    }
}
