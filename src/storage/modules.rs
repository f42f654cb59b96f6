//! SQL for the module catalog (`ingest_modules`) and its probe results (`ingest_probes`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};

use super::check::{err, Check};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::run::state::Scope;

/// One module (a data source or service a pipeline depends on) in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Module {
    /// Unique name (`ib_flex`, `quotes`...).
    pub module: String,
    /// The domain it belongs to (`broker`, `market_data`...).
    pub domain: String,
    /// The scopes it serves.
    pub scopes: Vec<Scope>,
    /// Whether readiness and preflight consider it.
    pub enabled: bool,
}

/// Whether a probe reached its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeStatus {
    /// Reached and answered.
    Ok,
    /// Did not.
    Failed,
}

text_enum!(ProbeStatus, "probe status", [Ok => "ok", Failed => "failed"]);

/// A persisted probe result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbeRecord {
    /// Row id.
    pub id: i64,
    /// The probed module.
    pub module: String,
    /// Ok or failed.
    pub status: ProbeStatus,
    /// Failure code (none when ok).
    pub code: Option<String>,
    /// Failure message or note.
    pub message: Option<String>,
    /// How long the probe took by the engine's clock.
    pub latency_ms: i64,
    /// When it ended.
    pub tested_at: Timestamp,
}

/// Every column of a [`Module`], the one list [`module_from_row`] reads by name.
macro_rules! module_columns {
    () => {
        "module, domain, scopes, enabled"
    };
}

/// Every column of a [`ProbeRecord`], the one list [`probe_from_row`] reads by name.
macro_rules! probe_columns {
    () => {
        "id, module, status, code, message, latency_ms, tested_at"
    };
}

const UPSERT_MODULE: &str =
    "insert into ingest_modules (module, domain, scopes, enabled, updated_at)
     values (:module, :domain, :scopes, :enabled, :now)
     on conflict (module) do update set domain = excluded.domain, scopes = excluded.scopes,
        enabled = excluded.enabled, updated_at = excluded.updated_at";

const SET_ENABLED: &str =
    "update ingest_modules set enabled = :enabled, updated_at = :now where module = :module";

const DELETE_MODULE: &str = "delete from ingest_modules where module = :module";

const LIST_MODULES: &str = concat!(
    "select ",
    module_columns!(),
    " from ingest_modules order by module"
);

const INSERT_PROBE: &str =
    "insert into ingest_probes (module, status, code, message, latency_ms, tested_at)
     values (:module, :status, :code, :message, :latency, :now)";

const LAST_PROBE: &str = concat!(
    "select ",
    probe_columns!(),
    " from ingest_probes where module = :module order by tested_at desc, id desc limit 1"
);

/// Reads one row selected with [`module_columns!`], by column name; `scopes` stays JSON
/// text until [`list`] parses it into a typed error.
fn module_from_row(r: &Row<'_>) -> rusqlite::Result<(Module, String)> {
    Ok((
        Module {
            module: r.get("module")?,
            domain: r.get("domain")?,
            scopes: Vec::new(),
            enabled: r.get("enabled")?,
        },
        r.get("scopes")?,
    ))
}

/// Reads one row selected with [`probe_columns!`], by column name.
fn probe_from_row(r: &Row<'_>) -> rusqlite::Result<ProbeRecord> {
    Ok(ProbeRecord {
        id: r.get("id")?,
        module: r.get("module")?,
        status: r.get("status")?,
        code: r.get("code")?,
        message: r.get("message")?,
        latency_ms: r.get("latency_ms")?,
        tested_at: r.get("tested_at")?,
    })
}

/// Adds or replaces a (validated) module in the catalog.
pub(crate) fn upsert(tx: &Connection, m: &Module, now: Timestamp) -> Result<()> {
    tx.prepare_cached(UPSERT_MODULE)?.execute(named_params! {
        ":module": m.module,
        ":domain": m.domain,
        ":scopes": serde_json::to_string(&m.scopes).expect("scopes serialize"),
        ":enabled": m.enabled,
        ":now": now,
    })?;
    Ok(())
}

/// Enables or disables a module; `false` if there is no such module.
pub(crate) fn set_enabled(
    tx: &Connection,
    module: &str,
    enabled: bool,
    now: Timestamp,
) -> Result<bool> {
    let n = tx
        .prepare_cached(SET_ENABLED)?
        .execute(named_params! {":module": module, ":enabled": enabled, ":now": now})?;
    Ok(n == 1)
}

/// Removes a module and (by cascade) its probe history; `false` if there is no such module.
pub(crate) fn delete(tx: &Connection, module: &str) -> Result<bool> {
    let n = tx
        .prepare_cached(DELETE_MODULE)?
        .execute(named_params! {":module": module})?;
    Ok(n == 1)
}

/// The whole catalog, by name.
pub(crate) fn list(conn: &Connection) -> Result<Vec<Module>> {
    let rows: Vec<(Module, String)> = conn
        .prepare_cached(LIST_MODULES)?
        .query_map([], module_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|(mut m, scopes)| {
            m.scopes = serde_json::from_str(&scopes).map_err(|e| Error::CorruptRow {
                table: "ingest_modules",
                id: m.module.clone(),
                column: "scopes".into(),
                reason: e.to_string(),
            })?;
            Ok(m)
        })
        .collect()
}

/// Stores one probe result; returns its id.
pub(crate) fn insert_probe(
    tx: &Connection,
    module: &str,
    status: ProbeStatus,
    code: Option<&str>,
    message: Option<&str>,
    latency_ms: i64,
    now: Timestamp,
) -> Result<i64> {
    tx.prepare_cached(INSERT_PROBE)?.execute(named_params! {
        ":module": module,
        ":status": status,
        ":code": code,
        ":message": message,
        ":latency": latency_ms,
        ":now": now,
    })?;
    Ok(tx.last_insert_rowid())
}

/// The newest probe of `module`.
pub(crate) fn last_probe(conn: &Connection, module: &str) -> Result<Option<ProbeRecord>> {
    Ok(conn
        .prepare_cached(LAST_PROBE)?
        .query_row(named_params! {":module": module}, probe_from_row)
        .optional()?)
}

/// The largest id of each AUTOINCREMENT table here, for doctor's `sequence` check.
pub(super) const MAX_IDS: &[(&str, &str)] =
    &[("ingest_probes", "select max(id) from ingest_probes")];

// ---- doctor checks: the rows' rules (migrations) restated as queries that list offenders

const MODULES_JSON: &str = "select module, 'scopes is not a json array' from ingest_modules
     where not json_valid(scopes) or json_type(scopes) <> 'array'";

/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[
    ("ingest_modules", "select * from ingest_modules"),
    ("ingest_probes", "select * from ingest_probes"),
];

/// This module's doctor checks (collected by `doctor`).
pub(crate) const CHECKS: &[Check] = &[err("json", "ingest_modules", MODULES_JSON)];

// The preflight model: what a scope's readiness is made of, shared by both backends
// (here, below the seam that hands preflight to PostgreSQL).

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    /// Stable code (`TIMEOUT`, `HTTP_503`...).
    pub code: String,
    /// Message (no secrets).
    pub message: String,
}

impl ProbeError {
    /// A probe failure.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A host probe: tests connectivity to the module it is registered for.
pub type ProbeFn = Box<dyn Fn() -> Result<(), ProbeError> + Send + Sync>;

/// The host's probe functions by module name.
#[derive(Default)]
pub struct ProbeSet {
    pub(crate) probes: BTreeMap<String, ProbeFn>,
}

impl fmt::Debug for ProbeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.probes.keys()).finish()
    }
}

impl ProbeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// This set with `probe` for `module`.
    pub fn with(
        mut self,
        module: impl Into<String>,
        probe: impl Fn() -> Result<(), ProbeError> + Send + Sync + 'static,
    ) -> Self {
        self.probes.insert(module.into(), Box::new(probe));
        self
    }
}

/// What the preflight gate does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreflightPolicy {
    /// Probe stale or untested modules, then check readiness. The default.
    #[default]
    ProbeThenCheck,
    /// Only check readiness from the probes already stored.
    CheckOnly,
    /// Do nothing (the gate is recorded as skipped).
    Off,
}

serde_display!(PreflightPolicy);

/// Preflight policy and freshness threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreflightConfig {
    /// What the gate does.
    pub policy: PreflightPolicy,
    /// A probe older than this is stale. Default 15 minutes.
    pub fresh_for: Duration,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        Self {
            policy: PreflightPolicy::default(),
            fresh_for: Duration::from_secs(15 * 60),
        }
    }
}

/// One enabled module's readiness.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModuleReadiness {
    /// The module.
    pub module: String,
    /// Its domain.
    pub domain: String,
    /// Its newest probe.
    pub last_probe: Option<ProbeRecord>,
    /// Whether that probe is younger than the threshold.
    pub fresh: bool,
    /// Fresh and ok.
    pub ready: bool,
    /// Why not ready: `UNTESTED`, `STALE` or `PROBE_FAILED`.
    pub reason: Option<String>,
}

/// Readiness of one scope: every enabled module serving it, with its last probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessSnapshot {
    /// The scope.
    pub scope: Scope,
    /// When the snapshot was taken.
    pub checked_at: Timestamp,
    /// The freshness threshold used, in milliseconds.
    pub fresh_for_ms: i64,
    /// Every module is ready (true when the scope has no enabled module).
    pub ready: bool,
    /// Modules probed while taking this snapshot (preflight), in order.
    pub probed: Vec<String>,
    /// Each enabled module of the scope, by name.
    pub modules: Vec<ModuleReadiness>,
}

impl ReadinessSnapshot {
    /// `module: REASON` for every module that is not ready, joined by `; `.
    pub fn why_not(&self) -> String {
        let reasons: Vec<String> = self
            .modules
            .iter()
            .filter(|m| !m.ready)
            .map(|m| format!("{}: {}", m.module, m.reason.as_deref().unwrap_or("?")))
            .collect();
        if reasons.is_empty() {
            "ready".into()
        } else {
            format!("not ready: {}", reasons.join("; "))
        }
    }

    /// A compact JSON form for a timeline entry.
    pub fn summary(&self) -> Value {
        json!({
            "ready": self.ready,
            "probed": self.probed,
            "modules": self.modules.iter().map(|m| json!({
                "module": m.module,
                "ready": m.ready,
                "reason": m.reason,
                "testedAt": m.last_probe.as_ref().map(|p| p.tested_at.to_string()),
            })).collect::<Vec<_>>(),
        })
    }
}
