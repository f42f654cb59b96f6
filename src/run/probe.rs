//! The module catalog, persisted probe results, readiness snapshots and preflight.

use std::time::Duration;

use rusqlite::Connection;

use super::state::Scope;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::modules as store;

pub use crate::storage::modules::{Module, ProbeRecord, ProbeStatus};

pub use crate::storage::modules::{
    ModuleReadiness, PreflightConfig, PreflightPolicy, ProbeError, ProbeFn, ProbeSet,
    ReadinessSnapshot,
};

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
    if let Some(b) = engine.backend() {
        return b.preflight(scope, probes, config);
    }
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
