//! Raw downloaded payloads: stored once per SHA-256, immutable, referenced by the records of
//! the runs that downloaded them; and the retention prune.

use rusqlite::{named_params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// A payload a stage downloaded, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct RawInput<'a> {
    /// Where it came from (`ib_flex`...).
    pub source: &'a str,
    /// The upstream's reference (a Flex reference code, a URL path); never a secret.
    pub upstream_ref: Option<&'a str>,
    /// MIME type (`application/xml`).
    pub content_type: &'a str,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// A stored raw record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RawRecord {
    /// Row id.
    pub id: i64,
    /// The run that downloaded it.
    pub run_id: i64,
    /// Where it came from.
    pub source: String,
    /// The upstream's reference.
    pub upstream_ref: Option<String>,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// Lower-case hex SHA-256 of the bytes (the payload's key).
    pub sha256: String,
    /// When it was stored.
    pub created_at: Timestamp,
}

/// What [`Runs::prune`](super::Runs::prune) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PruneReport {
    /// Terminal runs deleted.
    pub runs: usize,
    /// Raw records of those runs deleted.
    pub records: usize,
    /// Payloads no record referenced any more, deleted.
    pub payloads: usize,
}

/// Largest payload accepted: 256 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 256 << 20;

const INSERT_PAYLOAD: &str =
    "INSERT INTO raw_payloads (sha256, size, payload) VALUES (:sha, :size, :payload)
    ON CONFLICT (sha256) DO NOTHING";

const INSERT_RECORD: &str = "INSERT INTO raw_records
    (run_id, source, upstream_ref, content_type, size, sha256, created_at)
    VALUES (:run_id, :source, :upstream_ref, :content_type, :size, :sha, :now)";

const RUN_IS_STARTED: &str = "SELECT status = 'started' FROM ingest_runs WHERE id = :id";

const RECORDS_OF_RUN: &str =
    "SELECT id, run_id, source, upstream_ref, content_type, size, sha256, created_at
    FROM raw_records WHERE run_id = :run_id ORDER BY id";

const PAYLOAD: &str = "SELECT payload FROM raw_payloads WHERE sha256 = :sha";

// Retention, in this order inside one transaction (the triggers allow each step only
// after the previous one): terminal runs, then records whose run is gone, then payloads
// that no record references.
const PRUNE_RUNS: &str = "DELETE FROM ingest_runs
    WHERE started_at < :cutoff AND status <> 'started' AND finished_at < :cutoff";
const PRUNE_RECORDS: &str =
    "DELETE FROM raw_records WHERE NOT EXISTS (SELECT 1 FROM ingest_runs r WHERE r.id = raw_records.run_id)";
const PRUNE_PAYLOADS: &str =
    "DELETE FROM raw_payloads WHERE NOT EXISTS (SELECT 1 FROM raw_records r WHERE r.sha256 = raw_payloads.sha256)";

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
    size: i64,
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
        size: i64::try_from(input.bytes.len()).expect("bounded by MAX_PAYLOAD_BYTES"),
    })
}

/// Stores `input` (checked as `checked`) for started run `run_id`: the payload once per
/// SHA-256, a record each time.
pub(crate) fn store(
    tx: &Connection,
    run_id: i64,
    input: &RawInput<'_>,
    checked: &Checked,
    now: Timestamp,
) -> Result<RawRecord> {
    let Checked { sha, size } = checked;
    let (sha, size) = (sha.clone(), *size);
    let started: Option<bool> = tx
        .prepare_cached(RUN_IS_STARTED)?
        .query_row(named_params! {":id": run_id}, |r| r.get(0))
        .optional()?;
    match started {
        None => return Err(Error::not_found("run", run_id)),
        Some(false) => {
            return Err(Error::invalid(
                "run_id",
                format!("run {run_id} has ended; only a started run stores payloads"),
            ))
        }
        Some(true) => {}
    }
    tx.prepare_cached(INSERT_PAYLOAD)?.execute(named_params! {
        ":sha": sha,
        ":size": size,
        ":payload": input.bytes,
    })?;
    tx.prepare_cached(INSERT_RECORD)?.execute(named_params! {
        ":run_id": run_id,
        ":source": input.source,
        ":upstream_ref": input.upstream_ref,
        ":content_type": input.content_type,
        ":size": size,
        ":sha": sha,
        ":now": now,
    })?;
    Ok(RawRecord {
        id: tx.last_insert_rowid(),
        run_id,
        source: input.source.to_string(),
        upstream_ref: input.upstream_ref.map(str::to_string),
        content_type: input.content_type.to_string(),
        size,
        sha256: sha,
        created_at: now,
    })
}

/// The records of one run, oldest first.
pub(crate) fn records_of_run(conn: &Connection, run_id: i64) -> Result<Vec<RawRecord>> {
    Ok(conn
        .prepare_cached(RECORDS_OF_RUN)?
        .query_map(named_params! {":run_id": run_id}, |r| {
            Ok(RawRecord {
                id: r.get(0)?,
                run_id: r.get(1)?,
                source: r.get(2)?,
                upstream_ref: r.get(3)?,
                content_type: r.get(4)?,
                size: r.get(5)?,
                sha256: r.get(6)?,
                created_at: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// The bytes of the payload with this SHA-256.
pub(crate) fn payload(conn: &Connection, sha256: &str) -> Result<Vec<u8>> {
    conn.prepare_cached(PAYLOAD)?
        .query_row(named_params! {":sha": sha256}, |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::not_found("payload", sha256))
}

/// Deletes terminal runs that finished before `cutoff`, their records, and payloads no
/// record references any more. Never touches a started run.
pub(crate) fn prune(tx: &Connection, cutoff: Timestamp) -> Result<PruneReport> {
    let runs = tx
        .prepare_cached(PRUNE_RUNS)?
        .execute(named_params! {":cutoff": cutoff})?;
    let records = tx.prepare_cached(PRUNE_RECORDS)?.execute([])?;
    let payloads = tx.prepare_cached(PRUNE_PAYLOADS)?.execute([])?;
    Ok(PruneReport {
        runs,
        records,
        payloads,
    })
}
