//! Hash chains over the append-only logs (`audit_log`, `job_events`).
//!
//! SQLite cannot forbid DDL: a shell may drop a trigger, write, and recreate the trigger
//! word for word. The chains make such writes visible to `doctor` afterwards. Each audit row
//! carries `hash = SHA-256(domain, previous row's hash, its own content)`; each event carries
//! `prev_hash` (the hash of the same job's previous event, seq - 1) and its own `hash` over
//! `prev_hash` and its content. A row rewritten, re-inserted or removed from the middle of a
//! chain no longer matches. Rows written before migration V5 carry no hash and are listed in
//! `integrity_legacy`; a chain starts (at [`GENESIS`]) after them.
//!
//! Rust computes every hash at insert (the stock shell has no SHA-256), so a row typed by
//! hand cannot carry a valid one.

use rusqlite::{named_params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::doctor::{Anomaly, Severity};
use crate::error::Result;

/// The `prev_hash` of the first chained row of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of one audit row, chained on `prev` (the previous row's hash, or [`GENESIS`]).
/// `detail` is the JSON text exactly as stored.
pub fn audit_hash(
    prev: &str,
    entity: &str,
    entity_id: &str,
    action: &str,
    actor: &str,
    at: &str,
    detail: &str,
) -> String {
    digest(&[
        b"runledger-audit-v1",
        prev.as_bytes(),
        entity.as_bytes(),
        entity_id.as_bytes(),
        action.as_bytes(),
        actor.as_bytes(),
        at.as_bytes(),
        detail.as_bytes(),
    ])
}

/// The hash of one job event, chained on `prev` (the job's previous event's hash, or
/// [`GENESIS`]). `payload` is the JSON text exactly as stored.
pub fn event_hash(
    prev: &str,
    job_id: i64,
    seq: i64,
    kind: &str,
    at: &str,
    payload: &str,
) -> String {
    digest(&[
        b"runledger-event-v1",
        prev.as_bytes(),
        job_id.to_string().as_bytes(),
        seq.to_string().as_bytes(),
        kind.as_bytes(),
        at.as_bytes(),
        payload.as_bytes(),
    ])
}

/// The checks `doctor` runs for what SQL cannot forbid (DDL traces): the two hash chains,
/// `sqlite_sequence` against the largest ids, and the migration history.
pub(crate) const CHECK_NAMES: &[&str] = &[
    "audit_chain",
    "event_chain",
    "sequence",
    "migration_history",
];

fn anomaly(check: &'static str, table: &str, row: Option<String>, detail: String) -> Anomaly {
    Anomaly {
        check,
        severity: Severity::Error,
        table: table.into(),
        row_id: row,
        detail,
    }
}

const LEGACY: &str = "SELECT through_id FROM integrity_legacy WHERE tbl = :tbl";
const AUDIT_ROWS: &str =
    "SELECT id, entity, entity_id, action, actor, at, detail, hash FROM audit_log ORDER BY id";
const EVENT_ROWS: &str =
    "SELECT cursor, job_id, seq, kind, at, payload, prev_hash, hash FROM job_events ORDER BY job_id, seq";
const SEQUENCES: &str = "SELECT t.name, s.seq, t.max_id FROM (
        SELECT 'jobs' AS name, (SELECT max(id) FROM jobs) AS max_id
        UNION ALL SELECT 'audit_log', (SELECT max(id) FROM audit_log)
        UNION ALL SELECT 'job_events', (SELECT max(cursor) FROM job_events)
        UNION ALL SELECT 'ingest_runs', (SELECT max(id) FROM ingest_runs)
        UNION ALL SELECT 'ingest_probes', (SELECT max(id) FROM ingest_probes)
        UNION ALL SELECT 'raw_records', (SELECT max(id) FROM raw_records)
        UNION ALL SELECT 'schedules', (SELECT max(id) FROM schedules)
        UNION ALL SELECT 'due_runs', (SELECT max(id) FROM due_runs)) t
     LEFT JOIN sqlite_sequence s ON s.name = t.name";

/// Runs the checks of [`CHECK_NAMES`] on `conn`, adding what it finds to `found`. A check
/// that cannot run (a dropped table or column) is itself reported.
pub(crate) fn doctor_checks(conn: &Connection, found: &mut Vec<Anomaly>) {
    let mut run = |name: &'static str, table: &str, r: Result<()>| {
        if let Err(e) = r {
            found.push(anomaly(
                name,
                table,
                None,
                format!("check could not run: {e}"),
            ));
        }
    };
    let mut local = Vec::new();
    run("audit_chain", "audit_log", audit_chain(conn, &mut local));
    run("event_chain", "job_events", event_chain(conn, &mut local));
    run("sequence", "sqlite_sequence", sequences(conn, &mut local));
    if let Err(e) = crate::db::verify_history(conn) {
        local.push(anomaly(
            "migration_history",
            "refinery_schema_history",
            None,
            e.to_string(),
        ));
    }
    found.extend(local);
}

/// Column `i` of `r` as the text that was hashed (a non-text value, which the CHECKs refuse,
/// is spelled out so that it cannot match).
fn text_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => format!("{other:?}"),
    })
}

fn legacy_through(conn: &Connection, tbl: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(LEGACY)?
        .query_row(named_params! {":tbl": tbl}, |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn audit_chain(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let legacy = legacy_through(conn, "audit_log")?;
    let mut stmt = conn.prepare_cached(AUDIT_ROWS)?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_string();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let hash: Option<String> = r.get(7)?;
        let Some(hash) = hash else {
            if id > legacy {
                found.push(anomaly(
                    "audit_chain",
                    "audit_log",
                    Some(id.to_string()),
                    "a row written without its chain hash (not by runledger)".into(),
                ));
            }
            prev = GENESIS.to_string();
            continue;
        };
        let text = |i: usize| text_at(r, i);
        let expected = audit_hash(
            &prev,
            &text(1)?,
            &text(2)?,
            &text(3)?,
            &text(4)?,
            &text(5)?,
            &text(6)?,
        );
        if expected != hash {
            found.push(anomaly(
                "audit_chain",
                "audit_log",
                Some(id.to_string()),
                "the hash chain breaks here: this row or the one before it was rewritten, inserted or deleted".into(),
            ));
        }
        prev = hash;
    }
    Ok(())
}

fn event_chain(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let legacy = legacy_through(conn, "job_events")?;
    let mut stmt = conn.prepare_cached(EVENT_ROWS)?;
    let mut rows = stmt.query([])?;
    // (job_id, seq, hash) of the previous row read
    let mut last: Option<(i64, i64, Option<String>)> = None;
    // per job: the first broken event (cursor, seq) and how many break
    let mut broken: std::collections::BTreeMap<i64, (i64, i64, usize)> = Default::default();
    let mut mark = |job_id: i64, cursor: i64, seq: i64| {
        broken.entry(job_id).or_insert((cursor, seq, 0)).2 += 1;
    };
    while let Some(r) = rows.next()? {
        let cursor: i64 = r.get(0)?;
        let job_id: i64 = r.get(1)?;
        let seq: i64 = r.get(2)?;
        let prev_hash: Option<String> = r.get(6)?;
        let hash: Option<String> = r.get(7)?;
        let same_job = last.take().filter(|(j, _, _)| *j == job_id);
        // an event missing between two kept ones breaks the chain (pruning only removes
        // the oldest)
        if matches!(&same_job, Some((_, s, _)) if *s != seq - 1) {
            mark(job_id, cursor, seq);
        }
        let before = same_job.filter(|(_, s, _)| *s == seq - 1);
        last = Some((job_id, seq, hash.clone()));
        let (Some(prev_hash), Some(hash)) = (prev_hash, hash) else {
            if cursor > legacy {
                mark(job_id, cursor, seq);
            }
            continue;
        };
        let text = |i: usize| text_at(r, i);
        let own = event_hash(&prev_hash, job_id, seq, &text(3)?, &text(4)?, &text(5)?);
        let link_ok = match &before {
            // the previous event is kept: it is the one this event was chained on
            Some((_, _, Some(h))) => *h == prev_hash,
            Some((_, _, None)) => prev_hash == GENESIS,
            // the first event of a job follows nothing; an earlier one may have been pruned
            None => seq > 1 || prev_hash == GENESIS,
        };
        if own != hash || !link_ok {
            mark(job_id, cursor, seq);
        }
    }
    for (job_id, (cursor, seq, n)) in broken {
        found.push(anomaly(
            "event_chain",
            "job_events",
            Some(cursor.to_string()),
            format!(
                "the hash chain of job {job_id} breaks at event {seq} ({n} event(s) do not match): \
                 events were rewritten, inserted or deleted without runledger"
            ),
        ));
    }
    Ok(())
}

fn sequences(conn: &Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let mut stmt = conn.prepare_cached(SEQUENCES)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (table, seq, max_id) = row?;
        // V5 gives every AUTOINCREMENT table an entry; only DROP TABLE removes it.
        let Some(seq) = seq else {
            found.push(anomaly(
                "sequence",
                &table,
                None,
                "no sqlite_sequence entry: the table was dropped and recreated (ids may be reused)"
                    .into(),
            ));
            continue;
        };
        let Some(max_id) = max_id else {
            if table == "audit_log" && seq > legacy_through(conn, "audit_log")? {
                found.push(anomaly(
                    "sequence",
                    &table,
                    None,
                    format!(
                        "sqlite_sequence is {seq} but the table is empty: audit rows were deleted"
                    ),
                ));
            }
            continue;
        };
        match Some(seq) {
            None => {}
            Some(seq) if seq < max_id => found.push(anomaly(
                "sequence",
                &table,
                None,
                format!("sqlite_sequence is {seq}, below the largest id {max_id}: it was rewound, ids may be reused"),
            )),
            Some(seq) if table == "audit_log" && seq > max_id => found.push(anomaly(
                "sequence",
                &table,
                None,
                format!("sqlite_sequence is {seq} but the newest row is {max_id}: audit rows were deleted"),
            )),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let base = event_hash(GENESIS, 1, 1, "created", "2026-11-22T11:30:00.000Z", "{}");
        assert_eq!(base.len(), 64);
        assert_ne!(
            base,
            event_hash(&base, 1, 1, "created", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 2, 1, "created", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 1, 2, "created", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 1, 1, "claimed", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 1, 1, "created", "2026-11-22T11:30:00.001Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(
                GENESIS,
                1,
                1,
                "created",
                "2026-11-22T11:30:00.000Z",
                "{\"a\":1}"
            )
        );
        let a = audit_hash(
            GENESIS,
            "job",
            "1",
            "cancel",
            "cli",
            "2026-11-22T11:30:00.000Z",
            "{}",
        );
        assert_ne!(
            a,
            audit_hash(
                GENESIS,
                "job",
                "1",
                "cancel",
                "cli2",
                "2026-11-22T11:30:00.000Z",
                "{}"
            )
        );
        // field boundaries are unambiguous
        assert_ne!(
            audit_hash(GENESIS, "job", "1", "ab", "c", "t", "{}"),
            audit_hash(GENESIS, "job", "1", "a", "bc", "t", "{}")
        );
    }
}
