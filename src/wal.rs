//! Owning the write-ahead log (issue 13, item 1).
//!
//! SQLite's automatic checkpoint runs once the WAL holds 1,000 pages (4 MiB), and it never
//! shrinks the file. On a volume with less free space than that, a full disk never clears:
//! every write, pruning included, needs the WAL to grow, and the checkpoint that would make
//! room never comes. The engine therefore:
//! - checkpoints when the WAL grows past [`AUTOCHECKPOINT_PAGES`] (`wal_autocheckpoint`),
//!   and truncates it back to at most [`JOURNAL_SIZE_LIMIT`] bytes when it restarts
//!   (`journal_size_limit`);
//! - after a write fails with `DATABASE_FULL`, runs `wal_checkpoint(TRUNCATE)` (the WAL's
//!   pages move into the database file and the WAL file drops to zero bytes) and retries
//!   the transaction once; if the disk is still full, the next write does the same;
//! - offers [`Engine::checkpoint`](crate::Engine::checkpoint) for hosts that want to checkpoint when idle.

use rusqlite::Connection;
use serde::Serialize;

use crate::error::Result;

/// The WAL is checkpointed once it holds this many pages (1 MiB at the default 4 KiB page).
pub const AUTOCHECKPOINT_PAGES: i64 = 256;

/// A WAL larger than this is truncated to it when a checkpoint lets it restart.
pub const JOURNAL_SIZE_LIMIT: i64 = 1 << 20;

/// What one `wal_checkpoint(TRUNCATE)` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// Whether another connection's reader or writer kept it from completing.
    pub busy: bool,
    /// Pages in the WAL before it (-1 when not in WAL mode).
    pub wal_pages: i64,
    /// Pages moved into the database file.
    pub checkpointed_pages: i64,
}

/// Sets the checkpoint bound and the WAL size limit on a file connection.
pub(crate) fn configure(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
    // Compared with the constant by db's unit test `wal_pragmas_take_the_documented_values`.
    let _: i64 = conn.query_row("pragma journal_size_limit = 1048576", [], |r| r.get(0))?;
    Ok(())
}

/// `wal_checkpoint(TRUNCATE)`: moves the WAL into the database file and empties it.
pub(crate) fn truncate(conn: &Connection) -> Result<Checkpoint> {
    Ok(conn.query_row("pragma wal_checkpoint(truncate)", [], |r| {
        Ok(Checkpoint {
            busy: r.get::<_, i64>(0)? != 0,
            wal_pages: r.get(1)?,
            checkpointed_pages: r.get(2)?,
        })
    })?)
}
