//! Raw downloaded payloads: stored once per SHA-256, immutable, referenced by the records of
//! the runs that downloaded them; and the retention prune.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::storage::{ingest_runs, raw};

pub use crate::storage::raw::{PruneReport, RawFilter, RawInput, RawRecord, Rejection};

/// Largest payload accepted: 256 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 256 << 20;

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A payload checked and hashed before its write starts.
pub(crate) struct Checked {
    sha: String,
}

impl Checked {
    /// The lower-case hex SHA-256 of the payload (its key).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn sha256(&self) -> &str {
        &self.sha
    }
}

/// Checks `input`'s fields and size and hashes its bytes: the slow part of storing a
/// payload, done before the write transaction (nothing waits for it).
pub(crate) fn check(input: &RawInput<'_>) -> Result<Checked> {
    for (field, value, max) in [
        ("source", input.source, 64),
        ("content_type", input.content_type, 128),
    ] {
        if value.is_empty() || value.len() > max {
            return Err(Error::invalid(
                field,
                format!("must be 1..={max} characters"),
            ));
        }
    }
    if input
        .upstream_ref
        .is_some_and(|r| r.is_empty() || r.len() > 512)
    {
        return Err(Error::invalid("upstream_ref", "must be 1..=512 characters"));
    }
    if input.bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::TooLarge {
            field: "payload".into(),
            size: input.bytes.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(Checked {
        sha: sha256_hex(input.bytes),
    })
}

/// Stores `input` (checked as `checked`) for started run `run_id`: the payload once per
/// SHA-256, a record each time.
pub(crate) fn store(
    tx: &Connection,
    run_id: i64,
    input: &RawInput<'_>,
    checked: &Checked,
    rejected: Option<&Rejection>,
    now: Timestamp,
) -> Result<RawRecord> {
    storing_run(run_id, ingest_runs::is_started(tx, run_id)?)?;
    raw::insert(
        tx,
        &raw::NewRaw {
            run_id,
            source: input.source,
            upstream_ref: input.upstream_ref,
            content_type: input.content_type,
            sha256: &checked.sha,
            bytes: input.bytes,
            rejected,
        },
        now,
    )
}

/// Whether run `run_id` may store payloads, from whether it is started (`None`: no such
/// run): `NOT_FOUND`, or `INVALID_INPUT` for a run that has ended (shared by both backends).
pub(crate) fn storing_run(run_id: i64, started: Option<bool>) -> Result<()> {
    match started {
        None => Err(Error::not_found("run", run_id)),
        Some(false) => Err(Error::invalid(
            "run_id",
            format!("run {run_id} has ended; only a started run stores payloads"),
        )),
        Some(true) => Ok(()),
    }
}

/// The records of one run, oldest first.
pub(crate) fn records_of_run(conn: &Connection, run_id: i64) -> Result<Vec<RawRecord>> {
    raw::records_of_run(conn, run_id)
}

/// The record `id`.
pub(crate) fn record(conn: &Connection, id: i64) -> Result<RawRecord> {
    raw::record(conn, id)
}

/// The first rejection among the records of run `run_id`: a run holding one ends failed
/// with its code, never success (V8 refuses that in SQL too).
pub(crate) fn rejection_of_run(conn: &Connection, run_id: i64) -> Result<Option<Rejection>> {
    raw::rejection_of_run(conn, run_id)
}

/// The records `filter` selects, newest first (`limit` checked: 1..=1000).
pub(crate) fn list(conn: &Connection, filter: &RawFilter) -> Result<Vec<RawRecord>> {
    check_filter(filter)?;
    raw::list(conn, filter)
}

/// A filter's `limit` is 1..=1000 (shared by both backends).
pub(crate) fn check_filter(filter: &RawFilter) -> Result<()> {
    if !(1..=1000).contains(&filter.limit) {
        return Err(Error::invalid("limit", "must be 1..=1000"));
    }
    Ok(())
}

/// Checks a rejection's code and reason (the V8 CHECKs, restated): a code of 1..=64
/// upper-case letters, digits and `_`; the reason cut to 2000 bytes on a character
/// boundary, NULs removed, never empty.
pub(crate) fn rejection(code: &str, reason: &str) -> Result<Rejection> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::invalid(
            "rejected_code",
            "must be 1..=64 upper-case letters, digits or _",
        ));
    }
    let mut reason: String = reason.chars().filter(|&c| c != '\0').collect();
    if reason.is_empty() {
        reason = code.to_string();
    }
    while reason.len() > 2000 {
        reason.pop();
    }
    Ok(Rejection {
        code: code.to_string(),
        reason,
    })
}

/// The bytes of the payload with this SHA-256.
pub(crate) fn payload(conn: &Connection, sha256: &str) -> Result<Vec<u8>> {
    raw::payload(conn, sha256)
}

/// Deletes terminal runs that finished before `cutoff`, their records, and payloads no
/// record references any more. Never touches a started run.
pub(crate) fn prune(tx: &Connection, cutoff: Timestamp) -> Result<PruneReport> {
    let run_ids = ingest_runs::prune(tx, cutoff)?;
    let (records, payloads) = raw::prune(tx, &run_ids)?;
    Ok(PruneReport {
        runs: run_ids.len(),
        records,
        payloads,
    })
}
