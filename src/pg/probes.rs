//! The module catalog, probe results, readiness and preflight on a [`PgEngine`]: the
//! SQLite [`Runs`](crate::Runs) methods of the same names, from the same pure functions
//! (`run::probe`: the module's shape, the probe row, the snapshot, the preflight loop).

use super::runs::PgRuns;
use super::storage::modules as store;
use crate::error::Result;
use crate::run::probe::{self, Module, PreflightConfig, ProbeError, ProbeSet, ReadinessSnapshot};
use crate::run::state::Scope;

impl PgRuns<'_> {
    /// Adds or replaces a module in the catalog.
    pub fn upsert_module(&self, module: &Module) -> Result<()> {
        let module = probe::normalized(module)?;
        self.engine.write(|tx, now| store::upsert(tx, &module, now))
    }

    /// Enables or disables a module (`NOT_FOUND` when there is none).
    pub fn set_module_enabled(&self, module: &str, enabled: bool) -> Result<()> {
        let found = self
            .engine
            .write(|tx, now| store::set_enabled(tx, module, enabled, now))?;
        probe::found(found, module)
    }

    /// Removes a module and its probe history (`NOT_FOUND` when there is none).
    pub fn delete_module(&self, module: &str) -> Result<()> {
        let found = self.engine.write(|tx, _| store::delete(tx, module))?;
        probe::found(found, module)
    }

    /// The module catalog, by name.
    pub fn modules(&self) -> Result<Vec<Module>> {
        self.engine.read(store::list)
    }

    /// Persists a probe result the host obtained itself, ending now; returns its id.
    pub fn record_probe(
        &self,
        module: &str,
        outcome: &Result<(), ProbeError>,
        latency_ms: i64,
    ) -> Result<i64> {
        let row = probe::probe_row(outcome, latency_ms)?;
        self.engine.write(|tx, now| {
            probe::found(store::exists(tx, module)?, module)?;
            store::insert_probe(
                tx,
                module,
                row.status,
                row.code,
                row.message,
                row.latency_ms,
                now,
            )
        })
    }

    /// The readiness of `scope` now, from stored probes only (nothing is probed).
    pub fn readiness(&self, scope: Scope, config: &PreflightConfig) -> Result<ReadinessSnapshot> {
        self.readiness_at(scope, config, self.engine.now())
    }

    fn readiness_at(
        &self,
        scope: Scope,
        config: &PreflightConfig,
        now: crate::clock::Timestamp,
    ) -> Result<ReadinessSnapshot> {
        self.engine.read(|tx| {
            let catalog = store::list(tx)?;
            probe::snapshot(scope, config.fresh_for, now, catalog, |m| {
                store::last_probe(tx, m)
            })
        })
    }

    /// A manual preflight: probes stale or untested modules of `scope` per
    /// `config.policy` (with the host's probe functions, one after the other), persists the
    /// results, returns the snapshot. Starts no run.
    pub fn preflight(
        &self,
        scope: Scope,
        probes: &ProbeSet,
        config: &PreflightConfig,
    ) -> Result<ReadinessSnapshot> {
        probe::preflight_with(
            config,
            probes,
            || self.engine.now(),
            |now| self.readiness_at(scope, config, now),
            |module, outcome, latency| self.record_probe(module, outcome, latency),
        )
    }
}
