//! [`PgSchedules`]: schedules and their due slots on a [`PgEngine`]. A slot is
//! materialized once (under the schedule's row lock, after its high-water mark), claimed
//! by one ticker (`SKIP LOCKED`), and its outcome recorded behind that claim's fence: each
//! slot fires once however many nodes tick.
//!
//! The [`Schedules`](crate::Schedules) facade of an [`Engine`](crate::Engine) opened on
//! PostgreSQL runs whole ticks here (the crate-internal twins at the end of this file:
//! materialize by rule, misfire policy, claim, renew, record, with the SQLite tick's own
//! rules); the public methods below are the single steps a tick is made of
//! (docs/postgres.md).

use serde_json::json;

use super::engine::{PgEngine, Tx};
use super::storage::ingest_runs as runs_store;
use super::storage::jobs as jobs_store;
use super::storage::schedules as store;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::job::validate;
use crate::run::state::ScopeSelector;
use crate::schedule::rule::{next_due, Rule, Zone};
use crate::schedule::state::{SlotClaim, SlotReport, SlotStatus, TickOptions};
use crate::schedule::tick::{claim_steps, slot_report, TickStore};
use crate::schedule::{self, EditPlan};
use crate::storage::schedules::{ClaimStep, Finish, Schedule, ScheduleChange, ScheduleRow, Slot};

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

/// The twins of the [`Schedules`](crate::Schedules) facade for an [`Engine`](crate::Engine)
/// opened on PostgreSQL (`src/pg/backend.rs`): the checks are the facade's (done before the
/// call), the rules (`schedule::EditPlan`, `schedule::tick`'s misfire and sweep decisions)
/// the very functions the SQLite path runs; only the SQL differs, with row locks and
/// `SKIP LOCKED` where SQLite has its one writer.
impl PgSchedules<'_> {
    /// `Schedules::create` of a validated row, audited as `actor`.
    pub(crate) fn create_row(&self, row: &ScheduleRow<'_>, actor: &str) -> Result<Schedule> {
        self.engine.write(|tx, now| {
            let next = next_due(row.rule, row.zone, now);
            let Some(id) = store::insert_schedule_row(tx, row, next, now)? else {
                return Err(schedule::duplicate_name(row.name));
            };
            audit_schedule(tx, id, "create", actor, &schedule::create_detail(row), now)?;
            store::schedule_by_id(tx, id)?.ok_or_else(|| Error::not_found("schedule", id))
        })
    }

    /// `Schedules::get`.
    pub(crate) fn by_name(&self, name: &str) -> Result<Option<Schedule>> {
        self.engine
            .read(|tx| store::schedule_by_name(tx, name, false))
    }

    /// `Schedules::list`.
    pub(crate) fn list(&self) -> Result<Vec<Schedule>> {
        self.engine.read(store::list_schedules)
    }

    /// `Schedules::slots` of the schedule with this id.
    pub(crate) fn slots_of(&self, schedule_id: i64) -> Result<Vec<Slot>> {
        self.engine
            .read(|tx| store::slots_of_schedule(tx, schedule_id))
    }

    /// `Schedules::all_slots`.
    pub(crate) fn all_slots(&self) -> Result<Vec<Slot>> {
        self.engine.read(store::all_slots)
    }

    /// `Schedules::last_claimed_at`.
    pub(crate) fn last_claimed_at(&self) -> Result<Option<Timestamp>> {
        self.engine.read(store::last_claimed_at)
    }

    /// `Schedules::next_due`.
    pub(crate) fn next_due(&self) -> Result<Option<Timestamp>> {
        self.engine.read(store::next_due)
    }

    /// The schedule `name`, locked, or `NOT_FOUND`.
    fn locked(tx: &mut Tx<'_>, name: &str) -> Result<Schedule> {
        store::schedule_by_name(tx, name, true)?.ok_or_else(|| Error::not_found("schedule", name))
    }

    /// `Schedules::edit` with a validated change, audited as `actor`.
    pub(crate) fn edit(
        &self,
        name: &str,
        change: &ScheduleChange<'_>,
        actor: &str,
    ) -> Result<Schedule> {
        self.engine.write(|tx, now| {
            let cur = Self::locked(tx, name)?;
            let plan = EditPlan::new(&cur, change, now);
            if plan.timing_changed {
                for id in store::pending_of_schedule(tx, cur.id)? {
                    store::skip_pending_slot(tx, id, schedule::SCHEDULE_EDITED, None, now)?;
                }
            }
            store::update_config(tx, cur.id, &plan.row(&cur, change), plan.next, now)?;
            let detail = schedule::edit_detail(name, change);
            audit_schedule(tx, cur.id, "edit", actor, &detail, now)?;
            store::schedule_by_id(tx, cur.id)?.ok_or_else(|| Error::not_found("schedule", name))
        })
    }

    /// `Schedules::enable` / `disable`, audited as `actor`.
    pub(crate) fn set_enabled(&self, name: &str, enabled: bool, actor: &str) -> Result<Schedule> {
        self.engine.write(|tx, now| {
            let cur = Self::locked(tx, name)?;
            if cur.enabled == enabled {
                return Ok(cur);
            }
            if !enabled {
                for id in store::pending_of_schedule(tx, cur.id)? {
                    store::skip_pending_slot(tx, id, schedule::SCHEDULE_DISABLED, None, now)?;
                }
            }
            let next = schedule::enabled_next(&cur, enabled, now);
            store::update_enabled(tx, cur.id, enabled, next, now)?;
            let action = schedule::enabled_action(enabled);
            audit_schedule(tx, cur.id, action, actor, &json!({ "name": name }), now)?;
            store::schedule_by_id(tx, cur.id)?.ok_or_else(|| Error::not_found("schedule", name))
        })
    }

    /// `Schedules::delete`, audited as `actor`.
    pub(crate) fn delete(&self, name: &str, actor: &str) -> Result<()> {
        self.engine.write(|tx, now| {
            let cur = Self::locked(tx, name)?;
            store::delete_schedule(tx, cur.id)?;
            audit_schedule(tx, cur.id, "delete", actor, &json!({ "name": name }), now)
        })
    }

    /// The claiming half of a tick at `now`, in one transaction: `schedule::tick::claim_steps`
    /// over this backend's store, where (1) claims older than the claim timeout are finished
    /// from the runs that name their slot, or given back; (2) each enabled due schedule
    /// (locked; one another node is materializing is left to it) gets its due slots after
    /// its high-water mark, the misfire policy skipping some; (3) the pending due slots
    /// (locked; those another node is claiming are skipped) are claimed, at most `limit`,
    /// those of a disabled schedule skipped and those `handles` refuses left pending.
    pub(crate) fn claim_step(
        &self,
        opts: &TickOptions,
        now: Timestamp,
        handles: &dyn Fn(&Schedule) -> bool,
        limit: usize,
    ) -> Result<ClaimStep> {
        self.engine
            .write(|tx, _| claim_steps(&mut PgTick(tx), opts, now, handles, limit))
    }

    /// The keep-alive of `ticker`'s claim on slot `slot_id`, at the clock's time.
    pub(crate) fn renew(&self, slot_id: i64, ticker: &str) -> Result<bool> {
        self.engine
            .write(|tx, now| store::renew_claim(tx, slot_id, ticker, now))
    }

    /// Records the outcome of a slot claimed by `ticker` at `claimed_at`, at the clock's
    /// time after the fire (never before the claim); the slot as it is then.
    pub(crate) fn finish(
        &self,
        slot_id: i64,
        ticker: &str,
        finish: &Finish<'_>,
        claimed_at: Timestamp,
    ) -> Result<SlotReport> {
        self.engine.write(|tx, now| {
            store::finish_claimed_slot(tx, slot_id, ticker, finish, now.max(claimed_at))?;
            PgTick(tx).report(slot_id)
        })
    }
}

/// Appends the audit row of a schedule change.
fn audit_schedule(
    tx: &mut Tx<'_>,
    id: i64,
    action: &str,
    actor: &str,
    detail: &serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    jobs_store::audit_entity(tx, "schedule", id, action, actor, detail, now)
}

/// Slot `id` as a tick reports it.
/// [`TickStore`] over a PostgreSQL write transaction (due schedules and claimable slots
/// locked `FOR UPDATE SKIP LOCKED` by their statements).
struct PgTick<'a, 'b>(&'a mut Tx<'b>);

crate::schedule::tick::tick_store!(PgTick<'_, '_>, super::storage::schedules, runs_store, {
    fn report(&mut self, id: i64) -> Result<SlotReport> {
        store::get_slot(self.0, id).map(slot_report)
    }
    fn claim_slot(&mut self, id: i64, ticker: &str, now: Timestamp) -> Result<Option<Timestamp>> {
        store::claim_slot(self.0, id, ticker, now)
    }
});
