//! [`PgRuns`]: ingestion runs on a [`PgEngine`]: start under the single-active-run lock,
//! lease renewal, finish, the sweep of expired leases, get.
//!
//! The [`Runs`](crate::Runs) facade starts and ends runs inside
//! [`Runs::trigger`](crate::Runs::trigger), around a [`Pipeline`](crate::Pipeline), on both
//! backends (an [`Engine`](crate::Engine) opened on the URL); this facade exposes the run's
//! storage steps themselves (docs/postgres.md). Their rules are the same: one started run per lock key, a refusal
//! recorded as a failed run (`blockedStage: "lock"`), an expired holder finalized as
//! `ABANDONED` before the next start.

use std::time::Duration;

use serde_json::Value;

use super::engine::PgEngine;
use super::storage::ingest_runs::{self as store, NewRun, Started};
use crate::error::{Error, Result};
use crate::job::validate;
use crate::run::state::{RunStatus, Scope, TriggerKind};
use crate::storage::ingest_runs::Run;

/// The run API of a [`PgEngine`]; get it with [`PgEngine::runs`].
#[derive(Debug, Clone, Copy)]
pub struct PgRuns<'e> {
    pub(super) engine: &'e PgEngine,
}

impl PgEngine {
    /// The ingestion run API.
    pub fn runs(&self) -> PgRuns<'_> {
        PgRuns { engine: self }
    }
}

impl PgRuns<'_> {
    /// Starts a run of `pipeline` in `scope` (for `account`, if any) holding its lock key
    /// `pipeline:scope[:account]` for `lease`; its id. When another started run holds the
    /// key, the attempt is recorded as a failed run and the call returns
    /// [`Error::RunAlreadyActive`] naming both. Across connections and machines at most one
    /// run per key is started (the database's unique index decides).
    pub fn start(
        &self,
        pipeline: &str,
        scope: Scope,
        trigger: TriggerKind,
        account: Option<&str>,
        lease: Duration,
    ) -> Result<i64> {
        self.start_for_slot(pipeline, scope, trigger, account, lease, None)
    }

    /// [`PgRuns::start`] for a claimed schedule slot: the run names it (`meta_json.slotId`).
    pub fn start_for_slot(
        &self,
        pipeline: &str,
        scope: Scope,
        trigger: TriggerKind,
        account: Option<&str>,
        lease: Duration,
        slot_id: Option<i64>,
    ) -> Result<i64> {
        validate::identifier("pipeline", pipeline)?;
        if let Some(account) = account {
            validate::name("account", account)?;
        }
        if lease.is_zero() {
            return Err(Error::invalid("lease", "must be positive"));
        }
        let new = NewRun {
            pipeline,
            scope,
            trigger,
            account_id: account,
            lease,
            slot_id,
            claim: None,
        };
        self.start_new(&new)
    }

    /// Starts `new` under its lock: its id, or `RUN_ALREADY_ACTIVE` naming the holder and
    /// the failed run that records the refusal.
    pub(crate) fn start_new(&self, new: &NewRun<'_>) -> Result<i64> {
        match self.engine.write(|tx, now| store::start(tx, new, now))? {
            Started::Run(id) => Ok(id),
            Started::Rejected {
                rejection_id,
                active_run_id,
                lease_expires_at,
            } => Err(Error::RunAlreadyActive {
                lock_key: new.lock_key(),
                active_run_id,
                recorded_run_id: Some(rejection_id),
                lease_expires_at,
            }),
        }
    }

    /// Moves a started run's lease to now + `lease`; [`Error::RunEnded`] when it has ended
    /// (finished, or swept because its lease expired).
    pub fn renew_lease(&self, id: i64, lease: Duration) -> Result<()> {
        let renewed = self
            .engine
            .write(|tx, now| store::renew_lease(tx, id, now + lease))?;
        if renewed {
            Ok(())
        } else {
            Err(Error::RunEnded { run_id: id })
        }
    }

    /// Ends a started run: `success` (no error) or `failed` with `(code, message)`; `meta`
    /// (a JSON object) is merged into its `meta_json`. [`Error::RunEnded`] when it had
    /// already ended.
    pub fn finish(
        &self,
        id: i64,
        status: RunStatus,
        error: Option<(&str, &str)>,
        meta: &Value,
    ) -> Result<()> {
        if !meta.is_object() {
            return Err(Error::invalid("meta", "must be a JSON object"));
        }
        if let Some((code, _)) = error {
            validate::identifier("error_code", code)?;
        }
        let done = self
            .engine
            .write(|tx, now| store::finish(tx, id, status, error, meta, now))?;
        if done {
            Ok(())
        } else {
            Err(Error::RunEnded { run_id: id })
        }
    }

    /// Finalizes every started run whose lease expired (failed `ABANDONED`); their ids.
    /// Safe to call from every node at once: each expired run is finalized by one of them.
    pub fn sweep(&self) -> Result<Vec<i64>> {
        self.engine.write(store::sweep)
    }

    /// The run with this id.
    pub fn get(&self, id: i64) -> Result<Run> {
        self.engine.read(|tx| store::get_run(tx, id))
    }
}
