//! The module catalog, persisted probe results, readiness snapshots and preflight.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{json, Value};

use super::state::Scope;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::modules as store;

pub use crate::storage::modules::{Module, ProbeRecord, ProbeStatus};

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
    probes: BTreeMap<String, ProbeFn>,
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

/// The longest latency a probe records (one day; the table refuses more).
const MAX_LATENCY_MS: i64 = 86_400_000;

fn check_name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 64 {
        return Err(Error::invalid(field, "must be 1..=64 characters"));
    }
    Ok(())
}

/// A module as the catalog stores it: names checked, scopes sorted without duplicates
/// (shared by both backends).
pub(crate) fn normalized(m: &Module) -> Result<Module> {
    check_name("module", &m.module)?;
    check_name("domain", &m.domain)?;
    let mut scopes = m.scopes.clone();
    scopes.sort();
    scopes.dedup();
    Ok(Module {
        scopes,
        ..m.clone()
    })
}

/// Adds or replaces a module in the catalog.
pub(crate) fn upsert_module(tx: &Connection, m: &Module, now: Timestamp) -> Result<()> {
    store::upsert(tx, &normalized(m)?, now)
}

/// Enables or disables a module.
pub(crate) fn set_enabled(
    tx: &Connection,
    module: &str,
    enabled: bool,
    now: Timestamp,
) -> Result<()> {
    found(store::set_enabled(tx, module, enabled, now)?, module)
}

/// Removes a module and its probe history.
pub(crate) fn delete_module(tx: &Connection, module: &str) -> Result<()> {
    found(store::delete(tx, module)?, module)
}

/// `NOT_FOUND` naming `module` unless a write found it (shared by both backends).
pub(crate) fn found(found: bool, module: &str) -> Result<()> {
    if found {
        Ok(())
    } else {
        Err(Error::not_found("module", module))
    }
}

/// The whole catalog, by name.
pub(crate) fn modules(conn: &Connection) -> Result<Vec<Module>> {
    store::list(conn)
}

/// The row a probe outcome is stored as (shared by both backends).
pub(crate) struct ProbeRow<'a> {
    pub status: ProbeStatus,
    pub code: Option<&'a str>,
    pub message: Option<&'a str>,
    /// Clamped to 0..=one day (the table refuses more).
    pub latency_ms: i64,
}

/// Checks a probe outcome and shapes its row.
pub(crate) fn probe_row(outcome: &Result<(), ProbeError>, latency_ms: i64) -> Result<ProbeRow<'_>> {
    let (status, code, message) = match outcome {
        Ok(()) => (ProbeStatus::Ok, None, None),
        Err(e) => (
            ProbeStatus::Failed,
            Some(e.code.as_str()),
            Some(e.message.as_str()),
        ),
    };
    if let Some(code) = code {
        check_name("probe code", code)?;
    }
    Ok(ProbeRow {
        status,
        code,
        message,
        latency_ms: latency_ms.clamp(0, MAX_LATENCY_MS),
    })
}

/// Persists one probe result ending at `now`.
pub(crate) fn record_probe(
    tx: &Connection,
    module: &str,
    outcome: &Result<(), ProbeError>,
    latency_ms: i64,
    now: Timestamp,
) -> Result<i64> {
    let row = probe_row(outcome, latency_ms)?;
    let exists = modules(tx)?.iter().any(|m| m.module == module);
    found(exists, module)?;
    store::insert_probe(
        tx,
        module,
        row.status,
        row.code,
        row.message,
        row.latency_ms,
        now,
    )
}

fn fresh_for_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The readiness of `scope` at `now`: pure over the stored catalog and probes.
pub(crate) fn readiness(
    conn: &Connection,
    scope: Scope,
    fresh_for: Duration,
    now: Timestamp,
) -> Result<ReadinessSnapshot> {
    snapshot(scope, fresh_for, now, modules(conn)?, |m| {
        store::last_probe(conn, m)
    })
}

/// The readiness of `scope` at `now` over `catalog` (every module, by name) and each
/// module's newest probe, read by `last_probe` (shared by both backends).
pub(crate) fn snapshot(
    scope: Scope,
    fresh_for: Duration,
    now: Timestamp,
    catalog: Vec<Module>,
    mut last_probe: impl FnMut(&str) -> Result<Option<ProbeRecord>>,
) -> Result<ReadinessSnapshot> {
    let limit = fresh_for_ms(fresh_for);
    let mut out = Vec::new();
    for m in catalog
        .into_iter()
        .filter(|m| m.enabled && m.scopes.contains(&scope))
    {
        let last = last_probe(&m.module)?;
        let fresh = last
            .as_ref()
            .is_some_and(|p| now.millis_since(p.tested_at) < limit);
        let reason = match &last {
            None => Some("UNTESTED".to_string()),
            Some(p) if p.status == ProbeStatus::Failed => Some(format!(
                "PROBE_FAILED {} ({})",
                p.code.as_deref().unwrap_or("?"),
                p.message.as_deref().unwrap_or("")
            )),
            Some(p) if !fresh => Some(format!("STALE since {}", p.tested_at)),
            Some(_) => None,
        };
        out.push(ModuleReadiness {
            module: m.module,
            domain: m.domain,
            last_probe: last,
            fresh,
            ready: reason.is_none(),
            reason,
        });
    }
    Ok(ReadinessSnapshot {
        scope,
        checked_at: now,
        fresh_for_ms: limit,
        ready: out.iter().all(|m| m.ready),
        probed: Vec::new(),
        modules: out,
    })
}

/// Preflight: under `ProbeThenCheck`, probes every enabled module of `scope` whose last
/// probe is missing or stale (sequentially, with the host's probe functions), persists each
/// result, then returns the readiness snapshot. A module without a probe function stays as it
/// is. Under `CheckOnly` and `Off` nothing is probed.
pub(crate) fn preflight(
    engine: &Engine,
    scope: Scope,
    probes: &ProbeSet,
    config: &PreflightConfig,
) -> Result<ReadinessSnapshot> {
    engine.sqlite_only("runs.preflight")?;
    preflight_with(
        config,
        probes,
        || engine.now(),
        |now| engine.read(|c| readiness(c, scope, config.fresh_for, now)),
        |module, outcome, latency| {
            engine.write(|tx| record_probe(tx, module, outcome, latency, tx.now()))
        },
    )
}

/// [`preflight`] over a backend's clock, readiness read and probe write (shared by both
/// backends): the snapshot before, each stale module probed and recorded, the snapshot
/// after with the modules probed.
pub(crate) fn preflight_with(
    config: &PreflightConfig,
    probes: &ProbeSet,
    now: impl Fn() -> Timestamp,
    mut readiness_at: impl FnMut(Timestamp) -> Result<ReadinessSnapshot>,
    mut record: impl FnMut(&str, &Result<(), ProbeError>, i64) -> Result<i64>,
) -> Result<ReadinessSnapshot> {
    let before = readiness_at(now())?;
    let mut probed = Vec::new();
    if config.policy == PreflightPolicy::ProbeThenCheck {
        for m in before.modules.iter().filter(|m| !m.fresh) {
            let Some(probe) = probes.probes.get(&m.module) else {
                continue;
            };
            let start = now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe))
                .unwrap_or_else(|_| Err(ProbeError::new("PROBE_PANIC", "probe panicked")));
            let end = now();
            let latency = end.millis_since(start);
            record(&m.module, &outcome, latency)?;
            probed.push(m.module.clone());
        }
    }
    let mut snap = readiness_at(now())?;
    snap.probed = probed;
    Ok(snap)
}
