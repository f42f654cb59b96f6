//! Doctor's checks for what SQL cannot forbid (DDL traces): the hash chains of `audit_log`
//! and `job_events` (see [`crate::integrity`]), `sqlite_sequence` against the largest ids,
//! and the migration history. Their SQL lives in the tables' storage modules.

use crate::db;
use crate::doctor::{Anomaly, Severity};
use crate::error::Result;
use crate::integrity::{audit_hash, event_hash, GENESIS};
use crate::storage::{integrity::legacy_through, job_events, jobs};

/// The checks [`doctor_checks`] runs.
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

/// Runs the checks of [`CHECK_NAMES`] on `conn`, adding what it finds to `found`. A check
/// that cannot run (a dropped table or column) is itself reported.
pub(crate) fn doctor_checks(conn: &rusqlite::Connection, found: &mut Vec<Anomaly>) {
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
    if let Err(e) = db::verify_history(conn) {
        local.push(anomaly(
            "migration_history",
            "refinery_schema_history",
            None,
            e.to_string(),
        ));
    }
    found.extend(local);
}

fn audit_chain(conn: &rusqlite::Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let legacy = legacy_through(conn, "audit_log")?;
    let mut prev = GENESIS.to_string();
    jobs::for_each_audit_row(conn, |row| {
        let Some(hash) = row.hash else {
            if row.id > legacy {
                found.push(anomaly(
                    "audit_chain",
                    "audit_log",
                    Some(row.id.to_string()),
                    "a row written without its chain hash (not by runledger)".into(),
                ));
            }
            prev = GENESIS.to_string();
            return Ok(());
        };
        let [entity, entity_id, action, actor, at, detail] = &row.fields;
        let expected = audit_hash(&prev, entity, entity_id, action, actor, at, detail);
        if expected != hash {
            found.push(anomaly(
                "audit_chain",
                "audit_log",
                Some(row.id.to_string()),
                "the hash chain breaks here: this row or the one before it was rewritten, inserted or deleted".into(),
            ));
        }
        prev = hash;
        Ok(())
    })
}

fn event_chain(conn: &rusqlite::Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    let legacy = legacy_through(conn, "job_events")?;
    // (job_id, seq, hash) of the previous row read
    let mut last: Option<(i64, i64, Option<String>)> = None;
    // per job: the first broken event (cursor, seq) and how many break
    let mut broken: std::collections::BTreeMap<i64, (i64, i64, usize)> = Default::default();
    let mut mark = |job_id: i64, cursor: i64, seq: i64| {
        broken.entry(job_id).or_insert((cursor, seq, 0)).2 += 1;
    };
    job_events::for_each_chain_row(conn, |row| {
        let (cursor, job_id, seq) = (row.cursor, row.job_id, row.seq);
        let same_job = last.take().filter(|(j, _, _)| *j == job_id);
        // an event missing between two kept ones breaks the chain (pruning only removes
        // the oldest)
        if matches!(&same_job, Some((_, s, _)) if *s != seq - 1) {
            mark(job_id, cursor, seq);
        }
        let before = same_job.filter(|(_, s, _)| *s == seq - 1);
        last = Some((job_id, seq, row.hash.clone()));
        let (Some(prev_hash), Some(hash)) = (row.prev_hash, row.hash) else {
            if cursor > legacy {
                mark(job_id, cursor, seq);
            }
            return Ok(());
        };
        let [kind, at, payload] = &row.fields;
        let own = event_hash(&prev_hash, job_id, seq, kind, at, payload);
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
        Ok(())
    })?;
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

fn sequences(conn: &rusqlite::Connection, found: &mut Vec<Anomaly>) -> Result<()> {
    for (table, seq, max_id) in crate::storage::integrity::sequences(conn)? {
        // V5 gives every AUTOINCREMENT table an entry; only DROP TABLE removes it.
        let Some(seq) = seq else {
            found.push(anomaly(
                "sequence",
                table,
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
                    table,
                    None,
                    format!(
                        "sqlite_sequence is {seq} but the table is empty: audit rows were deleted"
                    ),
                ));
            }
            continue;
        };
        if seq < max_id {
            found.push(anomaly(
                "sequence",
                table,
                None,
                format!("sqlite_sequence is {seq}, below the largest id {max_id}: it was rewound, ids may be reused"),
            ));
        } else if table == "audit_log" && seq > max_id {
            found.push(anomaly(
                "sequence",
                table,
                None,
                format!("sqlite_sequence is {seq} but the newest row is {max_id}: audit rows were deleted"),
            ));
        }
    }
    Ok(())
}
