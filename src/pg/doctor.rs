//! [feature `postgres`] `doctor` for a PostgreSQL ledger: every invariant re-checked from
//! SQL, reported in the same [`DoctorReport`] as SQLite's [`crate::doctor::check`], without
//! changing anything.
//!
//! PostgreSQL enforces the rules itself (CHECKs, PL/pgSQL triggers, unique indexes), so a
//! healthy ledger has no anomaly. Doctor is for the ledgers that were touched anyway: a
//! trigger disabled or dropped by a superuser, a constraint dropped or added `NOT VALID`,
//! rows written with `session_replication_role = replica` (which skips every trigger and
//! foreign key), a crashed node that left an expired lease.
//!
//! Checks (each [`Anomaly::check`] is one of these names):
//! - `schema_version`, `migration_history`: the recorded version and refinery's history
//!   against this build's embedded migrations (names and checksums);
//! - `schema_object`: every table, column, index, constraint, trigger, function and sequence the
//!   migrations create is present and unchanged, compared through the catalog with a
//!   reference schema migrated in a savepoint that is rolled back; no index, constraint,
//!   column or trigger was added to runledger's tables; no trigger is disabled (or set to
//!   fire only, or also, in replica mode: `pg_trigger.tgenabled`); no constraint is
//!   `NOT VALID`; no index is invalid. `immutable_guard` is the same check for the
//!   triggers that make `audit_log` and `job_events` immutable. A host's own tables and
//!   functions in the schema are not reported;
//! - the row checks SQLite's doctor runs, restated for PostgreSQL: `state`, `timestamps`,
//!   `outcome`, `json`, `run_lock`, `event_seq`, `event_backlog`, `foreign_key` (a parent
//!   job, a slot's schedule), `event_orphan`: cheap re-checks of what the constraints
//!   enforce, which still catch rows written while a constraint was dropped, `NOT VALID` or
//!   skipped;
//! - `audit_chain`, `event_chain`: the hash chains of [`crate::integrity`] (the same hashes
//!   as SQLite); `sequence`: each identity sequence is past its table's largest id;
//! - warnings (work for the sweepers, not damage): `abandoned_run`, `stale_job`,
//!   `stuck_slot`, as on SQLite.
//!
//! ```no_run
//! use runledger::doctor::DoctorOptions;
//! use runledger::pg::{doctor, PgEngine};
//!
//! let engine = PgEngine::open("postgres://runledger@db.internal/ledger")?;
//! let report = doctor::check(&engine, &DoctorOptions::default())?;
//! for a in &report.anomalies {
//!     println!("{} {} {:?}: {}", a.check, a.table, a.row_id, a.detail);
//! }
//! # Ok::<(), runledger::Error>(())
//! ```
//!
//! Building the reference schema needs `CREATE` on the database (the savepoint is always
//! rolled back); without it `schema_object` reports a warning that the objects were not
//! compared.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use postgres::types::ToSql;
use postgres::Transaction;

use super::db;
use super::engine::PgEngine;
use super::storage::{self, ingest_runs, job_events, jobs, raw, Bind, PgCheck};
use crate::clock::Timestamp;
use crate::doctor::{Anomaly, DoctorOptions, DoctorReport, Severity};
use crate::error::Result;
use crate::events;
use crate::integrity::{audit_hash, event_hash, GENESIS};
use crate::job::JobState;
use crate::run::{RunStatus, Scope, TriggerKind};
use crate::schedule::{tzdb, Misfire, SlotStatus};

/// The triggers that make `audit_log` and `job_events` immutable; their absence (or
/// disabling) is `immutable_guard`.
pub const IMMUTABILITY_TRIGGERS: &[&str] = &[
    "audit_log_no_update",
    "audit_log_no_delete",
    "audit_log_no_truncate",
    "job_events_no_update",
    "job_events_no_delete",
    "job_events_no_truncate",
];

/// Checks `engine`'s ledger. Changes nothing: it runs in one transaction that is rolled
/// back (the reference schema it builds goes with it).
pub fn check(engine: &PgEngine, opts: &DoctorOptions) -> Result<DoctorReport> {
    let now = opts.now.unwrap_or_else(|| engine.now());
    engine.scratch(|tx| check_transaction(tx.raw(), now, opts))
}

/// Checks the ledger `tx` sees (its `search_path`), as of `now`: what [`check`] runs, and
/// what `copy` runs before it commits.
pub(crate) fn check_transaction(
    tx: &mut Transaction<'_>,
    now: Timestamp,
    opts: &DoctorOptions,
) -> Result<DoctorReport> {
    let mut found = Vec::new();
    let mut checks = vec![
        "schema_version",
        "migration_history",
        "schema_object",
        "immutable_guard",
    ];
    let schema_version = db::applied_version(tx)?;
    let known = db::known_schema_version();
    if schema_version != known {
        found.push(anomaly(
            "schema_version",
            "refinery_schema_history",
            None,
            format!("schema version {schema_version}, this build knows {known}"),
        ));
    }
    for problem in db::history_problems(tx)? {
        found.push(anomaly(
            "migration_history",
            "refinery_schema_history",
            None,
            problem,
        ));
    }
    schema_objects(tx, &mut found)?;
    let values = Values::new(now, opts);
    for c in storage::checks() {
        if !checks.contains(&c.name) {
            checks.push(c.name);
        }
        run_check(tx, c, &values, &mut found)?;
    }
    for (name, table, result) in [
        ("event_orphan", "job_events", guarded(tx, event_orphans)),
        ("audit_chain", "audit_log", guarded(tx, audit_chain)),
        ("event_chain", "job_events", guarded(tx, event_chain)),
        ("sequence", "", guarded(tx, sequences)),
        ("foreign_key", "raw_records", guarded(tx, raw_record_runs)),
        ("raw_rejection", "ingest_runs", guarded(tx, rejecting_runs)),
    ] {
        if !checks.contains(&name) {
            checks.push(name);
        }
        match result {
            Ok(mut list) => found.append(&mut list),
            Err(e) => found.push(anomaly(
                name,
                table,
                None,
                format!("check could not run: {e}"),
            )),
        }
    }
    found.sort();
    found.dedup();
    Ok(DoctorReport {
        checked_at: now,
        schema_version,
        tzdb: tzdb(),
        checks,
        anomalies: found,
        damage: None,
    })
}

fn anomaly(check: &'static str, table: &str, row: Option<String>, detail: String) -> Anomaly {
    Anomaly {
        check,
        severity: Severity::Error,
        table: table.into(),
        row_id: row,
        detail,
    }
}

/// Runs `f` in a savepoint: a failed statement (a dropped table or column) rolls back to
/// it instead of aborting the whole transaction.
fn guarded<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let mut sp = tx.transaction()?;
    match f(&mut sp) {
        Ok(v) => {
            sp.commit()?;
            Ok(v)
        }
        Err(e) => {
            sp.rollback()?;
            Err(e)
        }
    }
}

// ---- schema objects

/// Every object of the current schema as the catalog describes it, keyed by
/// `(kind, name)`: `(table, definition, flag)`, the schema's name taken out of the
/// definitions (`pg_get_indexdef` and `pg_get_triggerdef` always qualify the table). Names
/// and definitions only; nothing of a runledger table's rows is read.
const CATALOG: &str = "
select kind, name, tbl, replace(def, quote_ident(current_schema()) || '.', '') as def, flag from (
select 'table' as kind, c.relname::text as name, c.relname::text as tbl,
       c.relkind::text || ' ' || c.relpersistence::text
       || case when c.relrowsecurity then ' row security' else '' end as def, '' as flag
  from pg_class c where c.relnamespace = current_schema()::regnamespace and c.relkind in ('r', 'p')
union all
select 'column', c.relname || '.' || a.attname, c.relname::text,
       format_type(a.atttypid, a.atttypmod) || case when a.attnotnull then ' not null' else '' end
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || case when a.attidentity <> '' then ' identity ' || a.attidentity::text else '' end
       || case when a.attgenerated <> '' then ' generated' else '' end, ''
  from pg_attribute a join pg_class c on c.oid = a.attrelid
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
 where c.relnamespace = current_schema()::regnamespace and c.relkind in ('r', 'p')
   and a.attnum > 0 and not a.attisdropped
union all
select 'index', i.relname::text, c.relname::text, pg_get_indexdef(i.oid),
       case when x.indisvalid and x.indisready then '' else 'invalid' end
  from pg_index x join pg_class i on i.oid = x.indexrelid join pg_class c on c.oid = x.indrelid
 where c.relnamespace = current_schema()::regnamespace
union all
select 'constraint', c.relname || '.' || k.conname, c.relname::text,
       k.contype::text || ' ' || pg_get_constraintdef(k.oid),
       case when k.convalidated then '' else 'not valid' end
  from pg_constraint k join pg_class c on c.oid = k.conrelid
 where c.relnamespace = current_schema()::regnamespace
union all
select 'trigger', t.tgname::text, c.relname::text, pg_get_triggerdef(t.oid), t.tgenabled::text
  from pg_trigger t join pg_class c on c.oid = t.tgrelid
 where c.relnamespace = current_schema()::regnamespace and not t.tgisinternal
union all
select 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', '',
       pg_get_function_result(p.oid) || ' ' || p.provolatile::text || ' ' || l.lanname::text
       || ' ' || md5(p.prosrc), ''
  from pg_proc p join pg_language l on l.oid = p.prolang
 where p.pronamespace = current_schema()::regnamespace
union all
select 'sequence', c.relname::text, '',
       format_type(s.seqtypid, null) || ' increment ' || s.seqincrement || ' from ' || s.seqmin
       || ' to ' || s.seqmax || ' cache ' || s.seqcache
       || case when s.seqcycle then ' cycle' else '' end, ''
  from pg_sequence s join pg_class c on c.oid = s.seqrelid
 where c.relnamespace = current_schema()::regnamespace) o";

/// The schema the reference is migrated into, inside a savepoint always rolled back.
const REFERENCE_SCHEMA: &str =
    "create schema runledger_doctor_reference; set local search_path = runledger_doctor_reference";

/// refinery's own table: not an object of the migrations' text.
const HISTORY_TABLE: &str = "refinery_schema_history";

type Catalog = BTreeMap<(String, String), (String, String, String)>;

fn catalog(client: &mut impl postgres::GenericClient) -> Result<Catalog> {
    Ok(client
        .query(CATALOG, &[])?
        .iter()
        .map(|r| {
            (
                (r.get::<_, String>(0), r.get::<_, String>(1)),
                (r.get(2), r.get(3), r.get(4)),
            )
        })
        .filter(|(_, (table, _, _)): &(_, (String, String, String))| table != HISTORY_TABLE)
        .collect())
}

/// The catalog of a schema freshly migrated by this build (built once per process: the
/// migrations are embedded).
fn reference(tx: &mut Transaction<'_>) -> Result<&'static Catalog> {
    static REFERENCE: OnceLock<Catalog> = OnceLock::new();
    if let Some(c) = REFERENCE.get() {
        return Ok(c);
    }
    let mut sp = tx.transaction()?;
    let built = (|| {
        sp.batch_execute(REFERENCE_SCHEMA)?;
        for sql in db::migration_sql() {
            sp.batch_execute(sql)?;
        }
        catalog(&mut sp)
    })();
    sp.rollback()?;
    let built = built?;
    Ok(REFERENCE.get_or_init(|| built))
}

fn schema_objects(tx: &mut Transaction<'_>, found: &mut Vec<Anomaly>) -> Result<()> {
    let reference = match reference(tx) {
        Ok(r) => r,
        Err(e) => {
            found.push(Anomaly {
                check: "schema_object",
                severity: Severity::Warning,
                table: String::new(),
                row_id: None,
                detail: format!(
                    "objects not compared: the reference schema could not be built (needs CREATE on the database): {e}"
                ),
            });
            return Ok(());
        }
    };
    let actual = catalog(tx)?;
    let check_of = |kind: &str, name: &str| {
        if kind == "trigger" && IMMUTABILITY_TRIGGERS.contains(&name) {
            "immutable_guard"
        } else {
            "schema_object"
        }
    };
    for ((kind, name), (table, def, flag)) in reference {
        let check = check_of(kind, name);
        let row = Some(name.clone());
        let Some((_, actual_def, actual_flag)) = actual.get(&(kind.clone(), name.clone())) else {
            found.push(anomaly(
                check,
                table,
                row,
                format!("{kind} {name} is missing"),
            ));
            continue;
        };
        if actual_def != def {
            found.push(anomaly(
                check,
                table,
                row.clone(),
                format!("{kind} {name} differs from the migrations"),
            ));
        }
        if actual_flag != flag {
            let detail = match (kind.as_str(), actual_flag.as_str()) {
                ("trigger", "D") => format!("trigger {name} is disabled"),
                ("trigger", "R") => {
                    format!("trigger {name} fires only when session_replication_role is replica")
                }
                ("trigger", "A") => format!("trigger {name} is set to fire always"),
                ("constraint", "not valid") => {
                    format!("constraint {name} is NOT VALID: existing rows were never checked")
                }
                ("index", "invalid") => format!("index {name} is invalid"),
                (_, f) => format!("{kind} {name} is marked {f:?}"),
            };
            found.push(anomaly(check, table, row, detail));
        }
    }
    let ours: BTreeSet<&str> = reference
        .iter()
        .filter(|((kind, _), _)| kind == "table")
        .map(|((_, name), _)| name.as_str())
        .collect();
    for ((kind, name), (table, _, _)) in &actual {
        if reference.contains_key(&(kind.clone(), name.clone())) {
            continue;
        }
        // A host's own tables, functions and their objects are expected; anything added to
        // runledger's tables changes what the rules mean.
        if kind == "function" || !ours.contains(table.as_str()) {
            continue;
        }
        found.push(anomaly(
            check_of(kind, name),
            table,
            Some(name.clone()),
            format!("{kind} {name} is not created by the migrations"),
        ));
    }
    Ok(())
}

// ---- row checks

/// The values a check may bind.
struct Values {
    now: String,
    stale_before: String,
    claim_before: String,
    ts: String,
    job_states: Vec<String>,
    run_statuses: Vec<String>,
    scopes: Vec<String>,
    triggers: Vec<String>,
    slot_statuses: Vec<String>,
    misfires: Vec<String>,
}

/// The canonical timestamp shape (as SQLite's doctor's GLOB).
const TS_REGEX: &str =
    r"^[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$";

fn names<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    items.into_iter().map(str::to_string).collect()
}

impl Values {
    fn new(now: Timestamp, opts: &DoctorOptions) -> Self {
        Self {
            now: now.to_string(),
            stale_before: (now - opts.stale_after).to_string(),
            claim_before: (now - opts.claim_timeout).to_string(),
            ts: TS_REGEX.to_string(),
            job_states: names(JobState::ALL.iter().map(|s| s.as_str())),
            run_statuses: names(RunStatus::ALL.iter().map(|s| s.as_str())),
            scopes: names(Scope::ALL.iter().map(|s| s.as_str())),
            triggers: names(TriggerKind::ALL.iter().map(|s| s.as_str())),
            slot_statuses: names(SlotStatus::ALL.iter().map(|s| s.as_str())),
            misfires: names(Misfire::ALL.iter().map(|s| s.as_str())),
        }
    }

    fn get(&self, b: Bind) -> &(dyn ToSql + Sync) {
        const BACKLOG: i64 = events::BACKLOG;
        match b {
            Bind::Now => &self.now,
            Bind::StaleBefore => &self.stale_before,
            Bind::ClaimBefore => &self.claim_before,
            Bind::Backlog => &BACKLOG,
            Bind::Ts => &self.ts,
            Bind::JobStates => &self.job_states,
            Bind::RunStatuses => &self.run_statuses,
            Bind::Scopes => &self.scopes,
            Bind::Triggers => &self.triggers,
            Bind::SlotStatuses => &self.slot_statuses,
            Bind::Misfires => &self.misfires,
        }
    }
}

fn run_check(
    tx: &mut Transaction<'_>,
    c: &PgCheck,
    values: &Values,
    found: &mut Vec<Anomaly>,
) -> Result<()> {
    let params: Vec<&(dyn ToSql + Sync)> = c.binds.iter().map(|b| values.get(*b)).collect();
    match guarded(tx, |sp| Ok(sp.query(c.sql, &params)?)) {
        Ok(rows) => {
            for r in rows {
                found.push(Anomaly {
                    check: c.name,
                    severity: c.severity,
                    table: c.table.into(),
                    row_id: r.get(0),
                    detail: r.get::<_, Option<String>>(1).unwrap_or_default(),
                });
            }
        }
        // A dropped table or column: the schema check reports it; say this check could
        // not run instead of failing the whole report.
        Err(e) => found.push(Anomaly {
            check: c.name,
            severity: Severity::Error,
            table: c.table.into(),
            row_id: None,
            detail: format!("check could not run: {e}"),
        }),
    }
    Ok(())
}

/// `event_orphan`: events whose job does not exist (the foreign key does not hold for
/// rows written in replica mode).
fn event_orphans(tx: &mut Transaction<'_>) -> Result<Vec<Anomaly>> {
    let counts = job_events::count_per_job(tx)?;
    let ids: Vec<i64> = counts.keys().copied().collect();
    Ok(jobs::missing(tx, &ids)?
        .into_iter()
        .map(|id| {
            anomaly(
                "event_orphan",
                "job_events",
                Some(id.to_string()),
                format!("{} events of a job that does not exist", counts[&id]),
            )
        })
        .collect())
}

/// `foreign_key` of `raw_records.run_id` (the run table is another module's): records of a
/// run that does not exist.
fn raw_record_runs(tx: &mut Transaction<'_>) -> Result<Vec<Anomaly>> {
    let counts = raw::count_per_run(tx)?;
    let ids: Vec<i64> = counts.keys().copied().collect();
    Ok(ingest_runs::missing(tx, &ids)?
        .into_iter()
        .map(|id| {
            anomaly(
                "foreign_key",
                "raw_records",
                Some(id.to_string()),
                format!(
                    "{} raw records of run {id}, which does not exist",
                    counts[&id].0
                ),
            )
        })
        .collect())
}

/// `raw_rejection` of the runs: a run holding a rejected record never ends success (V8).
fn rejecting_runs(tx: &mut Transaction<'_>) -> Result<Vec<Anomaly>> {
    let rejecting: Vec<i64> = raw::count_per_run(tx)?
        .into_iter()
        .filter(|(_, (_, rejected))| *rejected > 0)
        .map(|(id, _)| id)
        .collect();
    Ok(ingest_runs::succeeded(tx, &rejecting)?
        .into_iter()
        .map(|id| {
            anomaly(
                "raw_rejection",
                "ingest_runs",
                Some(id.to_string()),
                "a run that rejected its statement ended success".into(),
            )
        })
        .collect())
}

fn audit_chain(tx: &mut Transaction<'_>) -> Result<Vec<Anomaly>> {
    let mut found = Vec::new();
    let mut prev = GENESIS.to_string();
    jobs::for_each_audit_row(tx, |row| {
        let [entity, entity_id, action, actor, at, detail] = &row.fields;
        let expected = audit_hash(&prev, entity, entity_id, action, actor, at, detail);
        let hash = row.hash.unwrap_or_default();
        if expected != hash {
            found.push(anomaly(
                "audit_chain",
                "audit_log",
                Some(row.id.to_string()),
                "the hash chain breaks here: this row or the one before it was rewritten, inserted or deleted".into(),
            ));
        }
        prev = hash;
    })?;
    Ok(found)
}

fn event_chain(tx: &mut Transaction<'_>) -> Result<Vec<Anomaly>> {
    // (job_id, seq, hash) of the previous row read
    let mut last: Option<(i64, i64, String)> = None;
    // per job: the first broken event (cursor, seq) and how many break
    let mut broken: BTreeMap<i64, (i64, i64, usize)> = BTreeMap::new();
    job_events::for_each_chain_row(tx, |row| {
        let (cursor, job_id, seq) = (row.cursor, row.job_id, row.seq);
        let hash = row.hash.unwrap_or_default();
        let prev_hash = row.prev_hash.unwrap_or_default();
        let before = last
            .take()
            .filter(|(j, _, _)| *j == job_id)
            .map(|(_, s, h)| (s, h));
        let [kind, at, payload] = &row.fields;
        let own_ok = event_hash(&prev_hash, job_id, seq, kind, at, payload) == hash;
        let link_ok = match &before {
            // the previous kept event is the one this event was chained on
            Some((s, h)) => *s == seq - 1 && *h == prev_hash,
            // the first kept event: the first of all follows nothing; an earlier one may
            // have been pruned
            None => seq > 1 || prev_hash == GENESIS,
        };
        if !(own_ok && link_ok) {
            broken.entry(job_id).or_insert((cursor, seq, 0)).2 += 1;
        }
        last = Some((job_id, seq, hash));
    })?;
    Ok(broken
        .into_iter()
        .map(|(job_id, (cursor, seq, n))| {
            anomaly(
                "event_chain",
                "job_events",
                Some(cursor.to_string()),
                format!(
                    "the hash chain of job {job_id} breaks at seq {seq} ({n} events do not chain): rewritten, inserted or deleted"
                ),
            )
        })
        .collect())
}

/// `sequence`: an identity sequence behind its table's largest id hands out an id that
/// exists (or, for a deleted row, reuses it).
fn sequences(tx: &mut Transaction<'_>) -> Result<Vec<Anomaly>> {
    let mut found = Vec::new();
    for t in storage::tables() {
        let r = tx.query_one(t.sequence, &[])?;
        let (max, last): (i64, i64) = (r.get(0), r.get(1));
        if last < max {
            found.push(anomaly(
                "sequence",
                t.table,
                None,
                format!("the identity sequence is at {last}, behind the largest id {max}"),
            ));
        }
    }
    Ok(found)
}
