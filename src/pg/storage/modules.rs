//! SQL for the module catalog (`ingest_modules`) and its probe results (`ingest_probes`)
//! on PostgreSQL, the twin of the SQLite module.

use serde_json::Value;

use super::{corrupt, get, parsed, ts};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::pg::engine::Tx;
use crate::storage::modules::{Module, ProbeRecord, ProbeStatus};

/// Every column of a [`Module`], as [`module_from_row`] reads them by name.
macro_rules! module_columns {
    () => {
        "module, domain, scopes, enabled"
    };
}

/// Every column of a [`ProbeRecord`], as [`probe_from_row`] reads them by name.
macro_rules! probe_columns {
    () => {
        "id, module, status, code, message, latency_ms, tested_at"
    };
}

/// $1 module, $2 domain, $3 scopes, $4 enabled, $5 now
const UPSERT_MODULE: &str =
    "insert into ingest_modules (module, domain, scopes, enabled, updated_at)
     values ($1, $2, $3, $4, $5)
     on conflict (module) do update set domain = excluded.domain, scopes = excluded.scopes,
        enabled = excluded.enabled, updated_at = excluded.updated_at";

/// $1 module, $2 enabled, $3 now
const SET_ENABLED: &str =
    "update ingest_modules set enabled = $2, updated_at = $3 where module = $1";

/// $1 module
const DELETE_MODULE: &str = "delete from ingest_modules where module = $1";

/// $1 module
const MODULE_EXISTS: &str = "select exists (select 1 from ingest_modules where module = $1)";

// `collate "C"`: by bytes, as SQLite orders text, whatever the database's collation.
const LIST_MODULES: &str = concat!(
    "select ",
    module_columns!(),
    " from ingest_modules order by module collate \"C\""
);

/// $1 module, $2 status, $3 code, $4 message, $5 latency_ms, $6 now
const INSERT_PROBE: &str =
    "insert into ingest_probes (module, status, code, message, latency_ms, tested_at)
     values ($1, $2, $3, $4, $5, $6)
     returning id";

/// $1 module
const LAST_PROBE: &str = concat!(
    "select ",
    probe_columns!(),
    " from ingest_probes where module = $1 order by tested_at desc, id desc limit 1"
);

/// Reads one row selected with [`module_columns!`], by column name.
fn module_from_row(r: &postgres::Row) -> Result<Module> {
    let module: String = get(r, "ingest_modules", "?", "module")?;
    let k = module.as_str();
    let scopes: Value = get(r, "ingest_modules", k, "scopes")?;
    Ok(Module {
        domain: get(r, "ingest_modules", k, "domain")?,
        scopes: serde_json::from_value(scopes)
            .map_err(|e| corrupt("ingest_modules", k, "scopes", e.to_string()))?,
        enabled: get(r, "ingest_modules", k, "enabled")?,
        module,
    })
}

/// Reads one row selected with [`probe_columns!`], by column name.
fn probe_from_row(r: &postgres::Row) -> Result<ProbeRecord> {
    let id: i64 = get(r, "ingest_probes", "?", "id")?;
    let key = id.to_string();
    let k = key.as_str();
    Ok(ProbeRecord {
        id,
        module: get(r, "ingest_probes", k, "module")?,
        status: parsed(r, "ingest_probes", k, "status")?,
        code: get(r, "ingest_probes", k, "code")?,
        message: get(r, "ingest_probes", k, "message")?,
        latency_ms: get(r, "ingest_probes", k, "latency_ms")?,
        tested_at: ts(r, "ingest_probes", k, "tested_at")?,
    })
}

/// Adds or replaces a (validated) module in the catalog.
pub(crate) fn upsert(tx: &mut Tx<'_>, m: &Module, now: Timestamp) -> Result<()> {
    let scopes = serde_json::to_value(&m.scopes).expect("scopes serialize");
    tx.execute(
        UPSERT_MODULE,
        &[&m.module, &m.domain, &scopes, &m.enabled, &now.to_string()],
    )?;
    Ok(())
}

/// Enables or disables a module; `false` if there is no such module.
pub(crate) fn set_enabled(
    tx: &mut Tx<'_>,
    module: &str,
    enabled: bool,
    now: Timestamp,
) -> Result<bool> {
    Ok(tx.execute(SET_ENABLED, &[&module, &enabled, &now.to_string()])? == 1)
}

/// Removes a module and (by cascade) its probe history; `false` if there is no such module.
pub(crate) fn delete(tx: &mut Tx<'_>, module: &str) -> Result<bool> {
    Ok(tx.execute(DELETE_MODULE, &[&module])? == 1)
}

/// Whether the catalog has `module`.
pub(crate) fn exists(tx: &mut Tx<'_>, module: &str) -> Result<bool> {
    Ok(tx.query_one(MODULE_EXISTS, &[&module])?.get(0))
}

/// The whole catalog, by name.
pub(crate) fn list(tx: &mut Tx<'_>) -> Result<Vec<Module>> {
    tx.query(LIST_MODULES, &[])?
        .iter()
        .map(module_from_row)
        .collect()
}

/// Stores one probe result; returns its id.
pub(crate) fn insert_probe(
    tx: &mut Tx<'_>,
    module: &str,
    status: ProbeStatus,
    code: Option<&str>,
    message: Option<&str>,
    latency_ms: i64,
    now: Timestamp,
) -> Result<i64> {
    Ok(tx
        .query_one(
            INSERT_PROBE,
            &[
                &module,
                &status.as_str(),
                &code,
                &message,
                &latency_ms,
                &now.to_string(),
            ],
        )?
        .get(0))
}

/// The newest probe of `module`.
pub(crate) fn last_probe(tx: &mut Tx<'_>, module: &str) -> Result<Option<ProbeRecord>> {
    tx.query_opt(LAST_PROBE, &[&module])?
        .map(|r| probe_from_row(&r))
        .transpose()
}

// ---- doctor checks and copy

use super::{err, Bind, PgCheck, TableSql, NO_IDENTITY, NO_IDENTITY_SET};

const MODULES_JSON: &str = "select module, d from (select module, case
       when scopes is null or jsonb_typeof(scopes) <> 'array' then 'scopes is not a json array'
       when exists (select 1 from jsonb_array_elements(scopes) s
                    where jsonb_typeof(s) <> 'string' or not (s #>> '{}') = any($1::text[]))
         then 'scopes ' || scopes::text || ' are not among the scopes'
     end as d from ingest_modules) t where d is not null";

const MODULES_TIMESTAMPS: &str = "select module, 'updated_at is not fixed-width utc text'
     from ingest_modules where updated_at is null or updated_at !~ $1::text";

const PROBES_ROWS: &str = "select id::text, d from (select id, case
       when status is null or status not in ('ok', 'failed') then 'status ' || quote_nullable(status) || ' is not a probe status'
       when (status = 'failed') <> (code is not null) then 'code disagrees with status ' || status
       when tested_at is null or tested_at !~ $1::text then 'tested_at is not fixed-width utc text'
     end as d from ingest_probes) t where d is not null";

const PROBES_MODULE: &str = "select p.id::text, 'module ' || quote_literal(p.module) || ' names no module'
     from ingest_probes p where not exists (select 1 from ingest_modules m where m.module = p.module)";

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[
    err("json", "ingest_modules", MODULES_JSON, &[Bind::Scopes]),
    err(
        "timestamps",
        "ingest_modules",
        MODULES_TIMESTAMPS,
        &[Bind::Ts],
    ),
    err("state", "ingest_probes", PROBES_ROWS, &[Bind::Ts]),
    err("foreign_key", "ingest_probes", PROBES_MODULE, &[]),
];

/// This module's tables, for copy and doctor (modules before their probes).
pub(crate) const TABLES: &[TableSql] = &[
    TableSql {
        table: "ingest_modules",
        any_row: "select exists (select 1 from ingest_modules)",
        lock: "lock table ingest_modules in exclusive mode",
        copy_in: "copy ingest_modules (module, domain, scopes, enabled, updated_at) from stdin",
        sequence: NO_IDENTITY,
        set_sequence: NO_IDENTITY_SET,
    },
    TableSql {
        table: "ingest_probes",
        any_row: "select exists (select 1 from ingest_probes)",
        lock: "lock table ingest_probes in exclusive mode",
        copy_in: "copy ingest_probes (id, module, status, code, message, latency_ms, tested_at) from stdin",
        sequence: "select coalesce(max(id), 0)::bigint,
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('ingest_probes', 'id')), 0)::bigint from ingest_probes",
        set_sequence: "select setval(pg_get_serial_sequence('ingest_probes', 'id'), $1::bigint)",
    },
];
