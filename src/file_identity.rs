//! Noticing that the database file was renamed, deleted or replaced under a running
//! process (issue 13, item 6).
//!
//! SQLite keeps writing to the file it opened, even after the path names another file or
//! none: every later commit goes to an unlinked inode and is lost when the process exits.
//! The engine records the device and inode of its path at open and compares them with the
//! path's current ones before a write, at most every [`CHECK_INTERVAL`], and after any
//! failed write; a mismatch stops the write with [`Error::FileReplaced`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Deadline;
use crate::error::{Error, Result};

/// How often (at most) a write re-checks the path.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The identity of the file an engine opened, and when it is next due for a check.
#[derive(Debug)]
pub(crate) struct FileIdentity {
    path: PathBuf,
    id: (u64, u64),
    next_check: Mutex<Deadline>,
}

fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        // No inode numbers here: only a deleted path is noticed.
        let _ = meta;
        Ok((0, 0))
    }
}

impl FileIdentity {
    /// The identity of `path` now (just opened).
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let id = identity(path).ok()?;
        Some(Self {
            path: path.to_path_buf(),
            id,
            next_check: Mutex::new(Deadline::after(CHECK_INTERVAL)),
        })
    }

    /// Why the file no longer takes writes (its volume is read-only, or its permissions
    /// refuse this process), or `None` when it does. Opens it for writing without
    /// writing anything.
    pub(crate) fn refuses_writes(&self) -> Option<String> {
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(_) => None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                Some(format!("the file cannot be opened for writing: {e}"))
            }
            Err(_) => None,
        }
    }

    /// Checks the path if the last check is older than [`CHECK_INTERVAL`] (or `force`).
    pub(crate) fn check(&self, force: bool) -> Result<()> {
        let mut next_check = self.next_check.lock().unwrap_or_else(|p| p.into_inner());
        if !force && !next_check.remaining().is_zero() {
            return Ok(());
        }
        let detail = match identity(&self.path) {
            Ok(id) if id == self.id => {
                *next_check = Deadline::after(CHECK_INTERVAL);
                return Ok(());
            }
            Ok(_) => "the path now names another file".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "the file was renamed or deleted".to_string()
            }
            Err(e) => format!("the path cannot be checked: {e}"),
        };
        Err(Error::FileReplaced {
            path: self.path.clone(),
            detail,
        })
    }
}
