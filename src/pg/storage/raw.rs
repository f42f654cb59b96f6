//! SQL for `raw_payloads` (immutable bytes stored once per SHA-256, the key checked against
//! the bytes by the table) and `raw_records` (which run downloaded which payload, from
//! where) on PostgreSQL, the twin of the SQLite module.

use super::{get, ts};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::pg::engine::Tx;
use crate::storage::raw::{RawFilter, RawRecord, Rejection};

/// Every column of a [`RawRecord`], as [`record_from_row`] reads them by name.
macro_rules! record_columns {
    () => {
        "id, run_id, source, upstream_ref, content_type, size, sha256, created_at, rejected_code, rejected_reason"
    };
}

/// $1 sha256, $2 size, $3 payload
const INSERT_PAYLOAD: &str = "insert into raw_payloads (sha256, size, payload) values ($1, $2, $3)
     on conflict (sha256) do nothing";

/// $1 run_id, $2 source, $3 upstream_ref, $4 content_type, $5 size, $6 sha256, $7 now,
/// $8 rejected_code, $9 rejected_reason
const INSERT_RECORD: &str = concat!(
    "insert into raw_records (run_id, source, upstream_ref, content_type, size, sha256, created_at,
                              rejected_code, rejected_reason)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     returning ",
    record_columns!()
);

/// $1 id
const RECORD_BY_ID: &str = concat!(
    "select ",
    record_columns!(),
    " from raw_records where id = $1"
);

/// $1 run_id (null: every run), $2 rejected only, $3 limit
const LIST_RECORDS: &str = concat!(
    "select ",
    record_columns!(),
    " from raw_records
     where ($1::bigint is null or run_id = $1) and (not $2 or rejected_code is not null)
     order by id desc limit $3"
);

/// $1 run_id
const RECORDS_OF_RUN: &str = concat!(
    "select ",
    record_columns!(),
    " from raw_records where run_id = $1 order by id"
);

/// $1 sha256
const PAYLOAD: &str = "select payload from raw_payloads where sha256 = $1";

// Retention (after the runs were deleted, in the same transaction; the triggers allow each
// step only after the previous one): the records of the deleted runs, then payloads that no
// record references.
/// $1 run ids
const DELETE_RECORDS_OF_RUNS: &str = "delete from raw_records where run_id = any($1::bigint[])";
const DELETE_UNREFERENCED_PAYLOADS: &str = "delete from raw_payloads
     where not exists (select 1 from raw_records r where r.sha256 = raw_payloads.sha256)";

/// Reads one row selected with [`record_columns!`], by column name.
fn record_from_row(r: &postgres::Row) -> Result<RawRecord> {
    let id: i64 = get(r, "raw_records", "?", "id")?;
    let key = id.to_string();
    let k = key.as_str();
    let code: Option<String> = get(r, "raw_records", k, "rejected_code")?;
    let reason: Option<String> = get(r, "raw_records", k, "rejected_reason")?;
    Ok(RawRecord {
        id,
        run_id: get(r, "raw_records", k, "run_id")?,
        source: get(r, "raw_records", k, "source")?,
        upstream_ref: get(r, "raw_records", k, "upstream_ref")?,
        content_type: get(r, "raw_records", k, "content_type")?,
        size: get(r, "raw_records", k, "size")?,
        sha256: get(r, "raw_records", k, "sha256")?,
        created_at: ts(r, "raw_records", k, "created_at")?,
        rejected: code.map(|code| Rejection {
            code,
            reason: reason.unwrap_or_default(),
        }),
    })
}

/// A checked payload to store: its key and the row values of its record.
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
pub(crate) fn insert(tx: &mut Tx<'_>, new: &NewRaw<'_>, now: Timestamp) -> Result<RawRecord> {
    let size = i64::try_from(new.bytes.len()).expect("a slice's length fits i64");
    tx.execute(INSERT_PAYLOAD, &[&new.sha256, &size, &new.bytes])?;
    let row = tx.query_one(
        INSERT_RECORD,
        &[
            &new.run_id,
            &new.source,
            &new.upstream_ref,
            &new.content_type,
            &size,
            &new.sha256,
            &now.to_string(),
            &new.rejected.map(|r| r.code.as_str()),
            &new.rejected.map(|r| r.reason.as_str()),
        ],
    )?;
    record_from_row(&row)
}

/// The records of one run, oldest first.
pub(crate) fn records_of_run(tx: &mut Tx<'_>, run_id: i64) -> Result<Vec<RawRecord>> {
    tx.query(RECORDS_OF_RUN, &[&run_id])?
        .iter()
        .map(record_from_row)
        .collect()
}

/// The record `id`.
pub(crate) fn record(tx: &mut Tx<'_>, id: i64) -> Result<RawRecord> {
    match tx.query_opt(RECORD_BY_ID, &[&id])? {
        Some(row) => record_from_row(&row),
        None => Err(Error::not_found("raw record", id)),
    }
}

/// The records `filter` selects, newest first.
pub(crate) fn list(tx: &mut Tx<'_>, filter: &RawFilter) -> Result<Vec<RawRecord>> {
    let limit = i64::from(filter.limit);
    tx.query(
        LIST_RECORDS,
        &[&filter.run_id, &filter.rejected_only, &limit],
    )?
    .iter()
    .map(record_from_row)
    .collect()
}

/// The bytes of the payload with this SHA-256.
pub(crate) fn payload(tx: &mut Tx<'_>, sha256: &str) -> Result<Vec<u8>> {
    match tx.query_opt(PAYLOAD, &[&sha256])? {
        Some(row) => get(&row, "raw_payloads", sha256, "payload"),
        None => Err(Error::not_found("payload", sha256)),
    }
}

/// Deletes the records of the (already deleted) runs `run_ids`, then every payload no
/// record references any more; returns `(records, payloads)` deleted.
pub(crate) fn prune(tx: &mut Tx<'_>, run_ids: &[i64]) -> Result<(usize, usize)> {
    let records = tx.execute(DELETE_RECORDS_OF_RUNS, &[&run_ids])?;
    let payloads = tx.execute(DELETE_UNREFERENCED_PAYLOADS, &[])?;
    Ok((records as usize, payloads as usize))
}

// ---- doctor checks and copy

use super::{err, Bind, PgCheck, TableSql, NO_IDENTITY, NO_IDENTITY_SET};

// The key is the SHA-256 of the bytes (SQLite's doctor hashes them in Rust; here the
// server's sha256() does, one row at a time).
const RAW_PAYLOAD: &str = "select sha256, d from (select sha256, case
       when octet_length(payload) is distinct from size
         then 'size ' || size || ' but the payload has ' || octet_length(payload) || ' bytes'
       when sha256 is distinct from encode(sha256(payload), 'hex')
         then 'the payload''s sha-256 is ' || encode(sha256(payload), 'hex')
     end as d from raw_payloads) t where d is not null";

const RAW_RECORD_SIZE: &str =
    "select r.id::text, 'size ' || r.size || ' but its payload has ' || p.size || ' bytes'
     from raw_records r join raw_payloads p on p.sha256 = r.sha256 where r.size is distinct from p.size";

const RAW_REJECTION: &str =
    "select id::text, 'rejected_code and rejected_reason must be set together'
     from raw_records where (rejected_code is null) <> (rejected_reason is null)";

const RAW_TIMESTAMPS: &str = "select id::text, 'created_at is not fixed-width utc text'
     from raw_records where created_at is null or created_at !~ $1::text";

const RAW_PAYLOAD_REFERENCE: &str =
    "select id::text, 'sha256 ' || sha256 || ' names no payload' from raw_records r
     where not exists (select 1 from raw_payloads p where p.sha256 = r.sha256)";

const RUNS_OF_RECORDS: &str =
    "select run_id, count(*)::bigint, count(rejected_code)::bigint from raw_records group by run_id";

/// Per run with raw records: `(records, rejected records)` (doctor compares them with the
/// runs, whose table is another module's).
pub(crate) fn count_per_run(
    client: &mut impl postgres::GenericClient,
) -> Result<std::collections::BTreeMap<i64, (i64, i64)>> {
    Ok(client
        .query(RUNS_OF_RECORDS, &[])?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[
    err("raw_payload", "raw_payloads", RAW_PAYLOAD, &[]),
    err("raw_record", "raw_records", RAW_RECORD_SIZE, &[]),
    err("raw_rejection", "raw_records", RAW_REJECTION, &[]),
    err("timestamps", "raw_records", RAW_TIMESTAMPS, &[Bind::Ts]),
    err("foreign_key", "raw_records", RAW_PAYLOAD_REFERENCE, &[]),
];

/// This module's tables, for copy and doctor (payloads before their records).
pub(crate) const TABLES: &[TableSql] = &[
    TableSql {
        table: "raw_payloads",
        any_row: "select exists (select 1 from raw_payloads)",
        lock: "lock table raw_payloads in exclusive mode",
        copy_in: "copy raw_payloads (sha256, size, payload) from stdin",
        sequence: NO_IDENTITY,
        set_sequence: NO_IDENTITY_SET,
    },
    TableSql {
        table: "raw_records",
        any_row: "select exists (select 1 from raw_records)",
        lock: "lock table raw_records in exclusive mode",
        copy_in: "copy raw_records (id, run_id, source, upstream_ref, content_type, size, sha256, created_at, rejected_code, rejected_reason) from stdin",
        sequence: "select coalesce(max(id), 0)::bigint,
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('raw_records', 'id')), 0)::bigint from raw_records",
        set_sequence: "select setval(pg_get_serial_sequence('raw_records', 'id'), $1::bigint)",
    },
];
