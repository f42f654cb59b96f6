//! SQL for `raw_payloads` (immutable bytes stored once per SHA-256) and `raw_records` (which
//! run downloaded which payload, from where).

use rusqlite::{named_params, Connection, OptionalExtension, Row};

use super::check::{err, Check};
use super::col;
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

/// What [`Runs::prune`](crate::Runs::prune) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PruneReport {
    /// Terminal runs deleted.
    pub runs: usize,
    /// Raw records of those runs deleted.
    pub records: usize,
    /// Payloads no record referenced any more, deleted.
    pub payloads: usize,
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
    /// Set when the statement failed validation or its check: why it was rejected (its run
    /// failed with this code). A rejection is final (V8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejection>,
}

/// Why a stored payload was rejected: the failure's stable code and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The stable code (`FLEX_MALFORMED_XML`, `MISSING_REQUIRED_SECTION`...).
    pub code: String,
    /// The failure's message.
    pub reason: String,
}

/// Which raw records [`Runs::raw_list`](crate::Runs::raw_list) returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFilter {
    /// Only the records of this run.
    pub run_id: Option<i64>,
    /// Only rejected records.
    pub rejected_only: bool,
    /// At most this many (1..=1000).
    pub limit: u32,
}

impl Default for RawFilter {
    fn default() -> Self {
        RawFilter {
            run_id: None,
            rejected_only: false,
            limit: 100,
        }
    }
}

/// Every column of a [`RawRecord`], the one list [`record_from_row`] reads by name.
macro_rules! record_columns {
    () => {
        "id, run_id, source, upstream_ref, content_type, size, sha256, created_at, rejected_code, rejected_reason"
    };
}

/// [`record_columns!`] as a constant, for [`col!`].
pub(super) const RECORD_COLUMNS: &str = record_columns!();

const INSERT_PAYLOAD: &str =
    "insert into raw_payloads (sha256, size, payload) values (:sha, :size, :payload)
     on conflict (sha256) do nothing";

const INSERT_RECORD: &str = concat!(
    "insert into raw_records (run_id, source, upstream_ref, content_type, size, sha256, created_at,
                              rejected_code, rejected_reason)
     values (:run_id, :source, :upstream_ref, :content_type, :size, :sha, :now,
             :rejected_code, :rejected_reason)
     returning ",
    record_columns!()
);

const RECORD_BY_ID: &str = concat!(
    "select ",
    record_columns!(),
    " from raw_records where id = :id"
);

const LIST_RECORDS: &str = concat!(
    "select ",
    record_columns!(),
    " from raw_records
     where (:run_id is null or run_id = :run_id)
       and (:rejected_only = 0 or rejected_code is not null)
     order by id desc limit :limit"
);

pub(super) const RECORDS_OF_RUN: &str = concat!(
    "select ",
    record_columns!(),
    " from raw_records where run_id = :run_id order by id"
);

const PAYLOAD: &str = "select payload from raw_payloads where sha256 = :sha";

const REJECTION_OF_RUN: &str = "select rejected_code, rejected_reason from raw_records
     where run_id = :run_id and rejected_code is not null order by id limit 1";

// Retention (after the runs were deleted, in the same transaction; the triggers allow each
// step only after the previous one): the records of the deleted runs, then payloads that no
// record references.
const DELETE_RECORDS_OF_RUNS: &str =
    "delete from raw_records where run_id in (select value from json_each(:run_ids))";
const DELETE_UNREFERENCED_PAYLOADS: &str = "delete from raw_payloads
     where not exists (select 1 from raw_records r where r.sha256 = raw_payloads.sha256)";

/// Reads one row selected with [`record_columns!`], by column name.
fn record_from_row(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        id: r.get(col!(RECORD_COLUMNS, "id"))?,
        run_id: r.get(col!(RECORD_COLUMNS, "run_id"))?,
        source: r.get(col!(RECORD_COLUMNS, "source"))?,
        upstream_ref: r.get(col!(RECORD_COLUMNS, "upstream_ref"))?,
        content_type: r.get(col!(RECORD_COLUMNS, "content_type"))?,
        size: r.get(col!(RECORD_COLUMNS, "size"))?,
        sha256: r.get("sha256")?,
        created_at: r.get(col!(RECORD_COLUMNS, "created_at"))?,
        rejected: match r.get::<_, Option<String>>(col!(RECORD_COLUMNS, "rejected_code"))? {
            None => None,
            Some(code) => Some(Rejection {
                code,
                reason: r
                    .get::<_, Option<String>>(col!(RECORD_COLUMNS, "rejected_reason"))?
                    .unwrap_or_default(),
            }),
        },
    })
}

/// A validated payload to store: its key and the row values of its record.
pub(crate) struct NewRaw<'a> {
    pub run_id: i64,
    pub source: &'a str,
    pub upstream_ref: Option<&'a str>,
    pub content_type: &'a str,
    pub sha256: &'a str,
    pub bytes: &'a [u8],
    pub rejected: Option<&'a Rejection>,
}

/// Stores the payload once per SHA-256 and a record each time.
pub(crate) fn insert(tx: &Connection, new: &NewRaw<'_>, now: Timestamp) -> Result<RawRecord> {
    let size = i64::try_from(new.bytes.len()).expect("a slice's length fits i64");
    tx.prepare_cached(INSERT_PAYLOAD)?.execute(named_params! {
        ":sha": new.sha256,
        ":size": size,
        ":payload": new.bytes,
    })?;
    Ok(tx.prepare_cached(INSERT_RECORD)?.query_row(
        named_params! {
            ":run_id": new.run_id,
            ":source": new.source,
            ":upstream_ref": new.upstream_ref,
            ":content_type": new.content_type,
            ":size": size,
            ":sha": new.sha256,
            ":now": now,
            ":rejected_code": new.rejected.map(|r| r.code.as_str()),
            ":rejected_reason": new.rejected.map(|r| r.reason.as_str()),
        },
        record_from_row,
    )?)
}

/// The records of one run, oldest first.
pub(crate) fn records_of_run(conn: &Connection, run_id: i64) -> Result<Vec<RawRecord>> {
    Ok(conn
        .prepare_cached(RECORDS_OF_RUN)?
        .query_map(named_params! {":run_id": run_id}, record_from_row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// The record `id`.
pub(crate) fn record(conn: &Connection, id: i64) -> Result<RawRecord> {
    conn.prepare_cached(RECORD_BY_ID)?
        .query_row(named_params! {":id": id}, record_from_row)
        .optional()?
        .ok_or_else(|| Error::not_found("raw record", id))
}

/// The first rejection among the records of run `run_id`, if any.
pub(crate) fn rejection_of_run(conn: &Connection, run_id: i64) -> Result<Option<Rejection>> {
    Ok(conn
        .prepare_cached(REJECTION_OF_RUN)?
        .query_row(named_params! {":run_id": run_id}, |r| {
            Ok(Rejection {
                code: r.get("rejected_code")?,
                reason: r
                    .get::<_, Option<String>>("rejected_reason")?
                    .unwrap_or_default(),
            })
        })
        .optional()?)
}

/// The records `filter` selects, newest first.
pub(crate) fn list(conn: &Connection, filter: &RawFilter) -> Result<Vec<RawRecord>> {
    Ok(conn
        .prepare_cached(LIST_RECORDS)?
        .query_map(
            named_params! {
                ":run_id": filter.run_id,
                ":rejected_only": filter.rejected_only,
                ":limit": filter.limit,
            },
            record_from_row,
        )?
        .collect::<rusqlite::Result<_>>()?)
}

/// The bytes of the payload with this SHA-256.
pub(crate) fn payload(conn: &Connection, sha256: &str) -> Result<Vec<u8>> {
    conn.prepare_cached(PAYLOAD)?
        .query_row(named_params! {":sha": sha256}, |r| r.get("payload"))
        .optional()?
        .ok_or_else(|| Error::not_found("payload", sha256))
}

/// Deletes the records of the (already deleted) runs `run_ids`, then every payload no
/// record references any more; returns `(records, payloads)` deleted.
pub(crate) fn prune(tx: &Connection, run_ids: &[i64]) -> Result<(usize, usize)> {
    let ids = serde_json::to_string(run_ids).expect("integers serialize");
    let records = tx
        .prepare_cached(DELETE_RECORDS_OF_RUNS)?
        .execute(named_params! {":run_ids": ids})?;
    let payloads = tx
        .prepare_cached(DELETE_UNREFERENCED_PAYLOADS)?
        .execute([])?;
    Ok((records, payloads))
}

const BLOB_PAYLOADS: &str =
    "select sha256, payload from raw_payloads where typeof(payload) = 'blob'";

/// Calls `f(sha256, bytes)` for every stored payload, one row in memory at a time; `false`
/// when the table cannot be read as expected (a dropped table or column, which doctor's
/// schema check reports).
pub(crate) fn for_each_payload(conn: &Connection, mut f: impl FnMut(&str, &[u8])) -> Result<bool> {
    let Ok(mut stmt) = conn.prepare_cached(BLOB_PAYLOADS) else {
        return Ok(false);
    };
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get("sha256")?;
        let payload: Vec<u8> = row.get("payload")?;
        f(&key, &payload);
    }
    Ok(true)
}

/// The largest id of each AUTOINCREMENT table here, for doctor's `sequence` check.
pub(super) const MAX_IDS: &[(&str, &str)] = &[("raw_records", "select max(id) from raw_records")];

// ---- doctor checks: the rows' rules (migrations) restated as queries that list offenders

const RAW_SIZE: &str =
    "select sha256, 'size ' || size || ' but the payload has ' || length(payload) || ' bytes'
     from raw_payloads where typeof(payload) <> 'blob' or length(payload) is not size";

const RAW_RECORD_SIZE: &str =
    "select r.id, 'size ' || r.size || ' but its payload has ' || p.size || ' bytes'
     from raw_records r join raw_payloads p on p.sha256 = r.sha256 where r.size is not p.size";

const RAW_REJECTION: &str = "select id, 'rejected_code and rejected_reason must be set together'
     from raw_records where (rejected_code is null) <> (rejected_reason is null)";

/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[
    ("raw_payloads", "select * from raw_payloads"),
    ("raw_records", "select * from raw_records"),
];

/// This module's doctor checks (collected by `doctor`).
pub(crate) const CHECKS: &[Check] = &[
    err("raw_payload", "raw_payloads", RAW_SIZE),
    err("raw_record", "raw_records", RAW_RECORD_SIZE),
    err("raw_rejection", "raw_records", RAW_REJECTION),
];
