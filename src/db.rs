//! Opening the database: pragmas, embedded refinery migrations, read connections, and the
//! busy back-off the engine's writer uses.

use std::path::Path;
use std::time::Duration;

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

/// Opens (creating if needed) the file at `path`, applies pragmas and migrations.
pub fn open(path: &Path, opts: &DbOptions) -> Result<Connection> {
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
    conn.set_prepared_statement_cache_capacity(256);
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
            return Err(Error::ReadOnly);
        }
        crate::wal::configure(conn)?;
    }
    let sync = match opts.durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    // Every named SQL constant of the crate fits, so hot statements are never re-prepared.
    conn.set_prepared_statement_cache_capacity(256);
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
            return Ok(());
        }
        // Another process may be migrating the same file at this moment: its transaction
        // makes ours fail, after which the loop sees its result.
        match embedded::migrations::runner().set_grouped(true).run(conn) {
            Ok(_) => return Ok(()),
            Err(e) if tries < opts.busy_retries => {
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
                            Some(rusqlite::Error::SqliteFailure(f, _))
                                if f.code == rusqlite::ErrorCode::ReadOnly =>
                            {
                                Error::ReadOnly
                            }
                            _ => Error::Migration {
                                message: e.to_string(),
                            },
                        }
                    }
                    _ => Error::Migration {
                        message: e.to_string(),
                    },
                })
            }
        }
    }
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
