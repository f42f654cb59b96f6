//! [`PgSchedules`]: schedules and their due slots on a [`PgEngine`]. A slot is
//! materialized once (under the schedule's row lock, after its high-water mark), claimed
//! by one ticker (`SKIP LOCKED`), and its outcome recorded behind that claim's fence: each
//! slot fires once however many nodes tick.
//!
//! The SQLite [`Schedules`](crate::Schedules) facade runs whole ticks (`schedule::tick`:
//! materialize by rule, misfire policy, fire, record); on PostgreSQL this slice exposes the
//! steps a tick is made of (docs/postgres.md).

use super::engine::PgEngine;
use super::storage::schedules as store;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::job::validate;
use crate::run::state::ScopeSelector;
use crate::schedule::rule::{Rule, Zone};
use crate::schedule::state::{SlotClaim, SlotStatus};
use crate::storage::schedules::Slot;

/// The schedule API of a [`PgEngine`]; get it with [`PgEngine::schedules`].
#[derive(Debug, Clone, Copy)]
pub struct PgSchedules<'e> {
    engine: &'e PgEngine,
}

impl PgEngine {
    /// The schedule API.
    pub fn schedules(&self) -> PgSchedules<'_> {
        PgSchedules { engine: self }
    }
}

impl PgSchedules<'_> {
    /// Creates schedule `name` firing `pipeline` in `scope` by `rule` in `zone`; its id.
    pub fn create(
        &self,
        name: &str,
        pipeline: &str,
        scope: ScopeSelector,
        rule: &Rule,
        zone: &Zone,
    ) -> Result<i64> {
        validate::name("name", name)?;
        if name.len() > 64 {
            return Err(Error::invalid("name", "must be 1..=64 bytes"));
        }
        validate::identifier("pipeline", pipeline)?;
        let (rule, zone) = (rule.to_string(), zone.name().to_string());
        self.engine.write(|tx, now| {
            store::insert_schedule(tx, name, pipeline, scope.as_str(), &rule, &zone, now)
        })
    }

    /// Creates the slot of schedule `schedule_id` at `due_at`, unless the schedule already
    /// has a slot at or after it (another node was first): the new slot's id, or `None`.
    pub fn materialize(&self, schedule_id: i64, due_at: Timestamp) -> Result<Option<i64>> {
        self.engine
            .write(|tx, now| store::materialize(tx, schedule_id, due_at, now))
    }

    /// Claims up to `max` (1..=1000) due pending slots for `ticker`, oldest first. Tickers on
    /// other connections and machines skip the slots being claimed here.
    pub fn claim_due(&self, ticker: &str, max: u32) -> Result<Vec<SlotClaim>> {
        validate::name("ticker", ticker)?;
        if !(1..=1000).contains(&max) {
            return Err(Error::invalid("max", "must be 1..=1000"));
        }
        self.engine
            .write(|tx, now| store::claim_due(tx, ticker, max, now))
    }

    /// claimed -> fired with the runs the fire started; `ILLEGAL_TRANSITION` when the claim
    /// no longer holds.
    pub fn fired(&self, claim: &SlotClaim, run_ids: &[i64]) -> Result<()> {
        self.engine
            .write(|tx, now| store::fired(tx, claim, run_ids, now))
    }

    /// claimed -> skipped (the fire was turned away) with an outcome code.
    pub fn skipped(&self, claim: &SlotClaim, code: &str, message: Option<&str>) -> Result<()> {
        validate::identifier("code", code)?;
        self.engine
            .write(|tx, now| store::ended(tx, claim, SlotStatus::Skipped, code, message, now))
    }

    /// claimed -> failed (the fire failed) with an outcome code.
    pub fn failed(&self, claim: &SlotClaim, code: &str, message: Option<&str>) -> Result<()> {
        validate::identifier("code", code)?;
        self.engine
            .write(|tx, now| store::ended(tx, claim, SlotStatus::Failed, code, message, now))
    }

    /// The slot with this id.
    pub fn slot(&self, id: i64) -> Result<Slot> {
        self.engine.read(|tx| store::get_slot(tx, id))
    }
}
