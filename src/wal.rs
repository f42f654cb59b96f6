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
//! - empties the WAL when the engine goes quiet
//!   ([`Engine::checkpoint_when_idle`](crate::Engine::checkpoint_when_idle), called by the
//!   worker, supervisor and scheduler loops), without waiting for readers;
//! - offers [`Engine::checkpoint`](crate::Engine::checkpoint) for hosts that want to
//!   checkpoint at a moment of their choosing.

use std::time::Duration;

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

/// [`truncate`] with the busy handler off: a reader still on the WAL makes it report
/// `busy` at once instead of waiting (and holding the writer) up to the busy timeout.
/// `restore` is the connection's busy timeout, set back afterwards.
pub(crate) fn truncate_without_waiting(conn: &Connection, restore: Duration) -> Result<Checkpoint> {
    let waited = conn.busy_timeout(Duration::ZERO);
    let out = waited.map_err(Into::into).and_then(|()| truncate(conn));
    conn.busy_timeout(restore)?;
    match out {
        Err(crate::error::Error::Busy) => Ok(Checkpoint {
            busy: true,
            wal_pages: -1,
            checkpointed_pages: -1,
        }),
        other => other,
    }
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

/// Frames the `-shm` index of the database at `path` records in a WAL that no longer
/// exists (issue 13, item 6): `Some(n)` when `path-wal` is missing, `path-shm` is present
/// and its header (valid, initialised) counts `n > 0` frames. SQLite deletes both files when
/// the last connection closes cleanly, so this is what a crash followed by a deleted `-wal`
/// leaves. Read before any connection opens the file: the first connection rebuilds the
/// index and the evidence is gone.
pub(crate) fn missing_wal_frames(path: &std::path::Path) -> Option<u32> {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    if with("-wal").exists() {
        return None;
    }
    let shm = std::fs::read(with("-shm")).ok()?;
    missing_frames_in_index(&shm)
}

/// The frame count of a WAL index header (the first 48 bytes of `-shm`, native byte order:
/// version 3007000 at 0, `isInit` at 12, `mxFrame` at 16), when it is valid and non-zero.
fn missing_frames_in_index(shm: &[u8]) -> Option<u32> {
    let word = |at: usize| Some(u32::from_ne_bytes(shm.get(at..at + 4)?.try_into().ok()?));
    let (version, init, frames) = (word(0)?, *shm.get(12)?, word(16)?);
    (version == 3_007_000 && init == 1 && frames > 0).then_some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_header_names_its_frames_only_when_valid() {
        let mut hdr = vec![0u8; 48];
        hdr[0..4].copy_from_slice(&3_007_000u32.to_ne_bytes());
        hdr[12] = 1;
        hdr[16..20].copy_from_slice(&37u32.to_ne_bytes());
        assert_eq!(missing_frames_in_index(&hdr), Some(37));
        hdr[12] = 0;
        assert_eq!(missing_frames_in_index(&hdr), None, "not initialised");
        hdr[12] = 1;
        hdr[0] = 9;
        assert_eq!(missing_frames_in_index(&hdr), None, "another version");
        assert_eq!(missing_frames_in_index(&hdr[..10]), None, "short");
    }
}
