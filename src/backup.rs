//! Online backups: [`Engine::backup`] writes a consistent copy of a live database.
//!
//! A `cp` of the `.db` file alone is not a backup: commits that are still in the `-wal`
//! file are missing from it, and a copy taken while a checkpoint writes pages can be torn.
//! `Engine::backup` runs `VACUUM INTO` on a connection of its own: SQLite reads one
//! snapshot (a read transaction, so writers in this and other processes go on committing)
//! and writes it as a fresh, compact file with no `-wal`. The copy is written beside the
//! destination under a `.partial` name, verified by [`doctor`] and `fsync`ed,
//! and only then renamed to the destination, so a destination path never holds a half
//! written file.
//!
//! ```
//! use runledger::{Engine, NewJob};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(dir.path().join("live.db"))?;
//! engine.jobs().create(&NewJob::new("alice", "research", json!({})))?;
//! let report = engine.backup(dir.path().join("copy.db"))?;
//! assert!(report.doctor.is_clean(), "{:?}", report.doctor);
//! assert_eq!(Engine::open(&report.path)?.jobs().list(None, None, None, 10)?.len(), 1);
//! # Ok::<(), runledger::Error>(())
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{named_params, Connection, OpenFlags};
use serde::Serialize;

use crate::doctor::{self, DoctorOptions, DoctorReport};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// `VACUUM INTO` a named file: one read snapshot, written compact, without a `-wal`.
const VACUUM_INTO: &str = "VACUUM INTO :dest";

/// What [`Engine::backup`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The doctor report of the copy (its errors are the live file's: the copy is faithful).
    pub doctor: DoctorReport,
}

impl Engine {
    /// Writes a consistent copy of the database to `dest` (which must not exist) while
    /// other threads and processes keep writing, verifies it with doctor, and returns what
    /// was written. See the [module docs](crate::backup).
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<BackupReport> {
        let dest = dest.as_ref();
        if dest.as_os_str().is_empty() {
            return Err(Error::invalid("dest", "must not be empty"));
        }
        if fs::symlink_metadata(dest).is_ok() {
            return Err(Error::invalid(
                "dest",
                format!(
                    "{} already exists; a backup never overwrites",
                    dest.display()
                ),
            ));
        }
        let mut partial = dest.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        // A leftover of an interrupted backup is ours to replace.
        remove_if_present(&partial)?;
        let dest_text = partial
            .to_str()
            .ok_or_else(|| Error::invalid("dest", "must be valid UTF-8"))?;
        let vacuum = |conn: &Connection| -> Result<()> {
            conn.execute(VACUUM_INTO, named_params! {":dest": dest_text})?;
            Ok(())
        };
        let written = match self.path() {
            // A connection of its own: the snapshot read does not hold the engine's lock.
            Some(path) => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )?;
                conn.busy_timeout(self.options().db.busy_timeout)?;
                vacuum(&conn)
            }
            // In memory: the writer connection, outside any transaction (VACUUM refuses one).
            None => self.with_connection(vacuum),
        };
        let verified = written.and_then(|()| self.verify(&partial));
        let doctor = match verified {
            Ok(report) => report,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(e);
            }
        };
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        crate::db::restrict_mode(&partial)?;
        fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io("sync", &partial))?;
        let bytes = fs::metadata(&partial).map_err(io("stat", &partial))?.len();
        fs::rename(&partial, dest).map_err(io("rename", dest))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is synced (best effort: not every
            // platform lets a directory be opened).
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(BackupReport {
            path: dest.to_path_buf(),
            bytes,
            doctor,
        })
    }

    /// Doctor on the written copy, through a connection of its own.
    fn verify(&self, copy: &Path) -> Result<DoctorReport> {
        let conn = Connection::open_with_flags(
            copy,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let report = doctor::check_connection(&conn, self.now(), &DoctorOptions::default())?;
        conn.close().map_err(|(_, e)| Error::from(e))?;
        Ok(report)
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}
