//! The single mapping from PostgreSQL failures to the crate's typed errors, the twin of
//! `Error::from_sqlite`: trigger messages `CODE: table: rule` (SQLSTATE P0001) become the
//! same [`Error::Refused`] codes; the active-run index is `RUN_ALREADY_ACTIVE`; other
//! constraint and data failures are `CONSTRAINT_VIOLATION`; lock conflicts are `BUSY`; a
//! lost or refused connection is `UNREACHABLE`.

use crate::error::Error;

/// The unique index that is the run lock (migrations/postgres/P1__core.sql).
const RUN_LOCK_INDEX: &str = "ingest_runs_one_active";

/// Maps a `postgres` client error to a typed [`Error`].
pub(crate) fn from_pg(err: postgres::Error) -> Error {
    let Some(db) = err.as_db_error() else {
        if err.is_closed()
            || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>())
        {
            return Error::Unreachable {
                detail: err.to_string(),
            };
        }
        return Error::Postgres {
            sqlstate: String::new(),
            message: err.to_string(),
        };
    };
    let sqlstate = db.code().code();
    let message = db.message().to_string();
    match sqlstate {
        "P0001" => {
            Error::from_trigger_message(&message).unwrap_or(Error::ConstraintViolation { message })
        }
        "23505" if db.constraint() == Some(RUN_LOCK_INDEX) => Error::Refused {
            code: "RUN_ALREADY_ACTIVE",
            table: "ingest_runs".into(),
            rule: "a started run holds this lock key".into(),
            row: None,
        },
        // integrity constraints (CHECK, UNIQUE, NOT NULL, foreign keys) and bad data
        // (malformed JSON or timestamps, NUL in text)
        s if s.starts_with("23") || s.starts_with("22") => Error::ConstraintViolation { message },
        // serialization failure, deadlock, lock not available
        "40001" | "40P01" | "55P03" => Error::Busy,
        "53100" => Error::DatabaseFull,
        // connection exceptions and the server shutting down
        s if s.starts_with("08") || s.starts_with("57P") => Error::Unreachable { detail: message },
        _ => Error::Postgres {
            sqlstate: sqlstate.to_string(),
            message,
        },
    }
}

impl From<postgres::Error> for Error {
    fn from(err: postgres::Error) -> Self {
        from_pg(err)
    }
}
