//! [`Engine::open`]: a file path opens SQLite, a `postgres://` URL the PostgreSQL backend.
//!
//! Here, above both backends, so that neither the SQLite engine nor the facades name the
//! PostgreSQL module: they see it only through [`crate::backend::Backend`].

use std::path::Path;

use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};

/// Whether `path` is a PostgreSQL connection URL rather than a file.
fn is_postgres_url(path: &Path) -> bool {
    let text = path.to_string_lossy();
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

impl Engine {
    /// Opens (creating and migrating if needed) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, EngineOptions::default())
    }

    /// Opens the database at `path` with `opts`: a SQLite file, created and migrated if
    /// needed; or, with the cargo feature `postgres`, a `postgres://` / `postgresql://`
    /// URL: the PostgreSQL ledger there, migrated if needed (docs/postgres.md). A
    /// PostgreSQL engine serves the calls docs/postgres.md lists with the same types,
    /// rules and error codes, and refuses the others with
    /// [`Error::Unsupported`] (`UNSUPPORTED_BACKEND`); `opts.db` (SQLite's durability,
    /// busy handling) does not apply to it, the clock and the document limits do. Built
    /// without the feature, a URL is refused with `INVALID_INPUT` rather than taken for a
    /// file name.
    pub fn open_with(path: impl AsRef<Path>, opts: EngineOptions) -> Result<Self> {
        let path = path.as_ref();
        if is_postgres_url(path) {
            return open_postgres(path, opts);
        }
        Self::open_file(path, opts)
    }
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &Path, opts: EngineOptions) -> Result<Engine> {
    let Some(url) = url.to_str() else {
        return Err(Error::invalid("path", "a PostgreSQL URL must be UTF-8"));
    };
    crate::pg::backend::open(url, opts)
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &Path, _opts: EngineOptions) -> Result<Engine> {
    Err(Error::invalid(
        "path",
        "a PostgreSQL URL, and this build has no PostgreSQL backend (cargo feature \"postgres\")",
    ))
}
