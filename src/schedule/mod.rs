//! Schedules: calendar rules in the database, and a tick that fires each due slot once.
//!
//! A [`Schedule`] names a pipeline, a scope, a [`Rule`] read in a [`Zone`], and a
//! [`Misfire`] policy. Every instant at which it is due becomes one row of `due_runs` — a
//! [`Slot`] — whose status machine ([`SlotStatus`]) is enforced in Rust and in SQL:
//! `pending -> claimed -> fired | skipped | failed`, plus `pending -> skipped`.
//!
//! [`Schedules::tick`] does the work, in three steps:
//! 1. in one write transaction: fail claims abandoned longer than
//!    [`TickOptions::claim_timeout`], materialize the slots of every enabled schedule that
//!    are due by `now` (applying its misfire policy), and claim every pending due slot
//!    with a guarded update — so two processes ticking the same file fire each slot once;
//! 2. outside any transaction: call [`Fire::fire`] for each claimed slot;
//! 3. record each outcome on its slot (fired with run ids, skipped with the code of a
//!    run that was turned away, failed with a code and message).
//!
//! Each schedule keeps a cursor beside its rule: `last_due_at`, the last materialized slot
//! (a high-water mark that only moves forward, enforced by a trigger), and `next_due_at`,
//! the next slot to materialize. Slots are only materialized after the high-water mark, so
//! a clock that jumps backwards never fires a slot twice, and a tick reads only the
//! schedules that are due (`schedules_due` index) and the pending slots (`due_runs_claim`
//! index): its cost grows with the due slots, not with history.
//!
//! Disabling a schedule or editing its rule or zone restarts its cursor from the moment of
//! the change (slots that fell while it was disabled, and slots of the old rule, are never
//! materialized); editing only its scope, pipeline or misfire policy keeps the cursor.
//!
//! [`Schedules::spawn`] runs a background loop that ticks, then sleeps until the next due
//! instant (at most a poll interval), until its [`LoopHandle`] is stopped.

pub mod rule;
mod runner;
pub mod state;
pub(crate) mod tick;

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::looping::LoopHandle;
use crate::run::state::check_pipeline_name;

pub use rule::{next_due, tzdb, Rule, TimeOfDay, Tzdb, TzdbSource, Weekdays, Zone};
pub use runner::LoopOptions;
pub use state::{SlotClaim, SlotReport, SlotStatus, TickOptions};
pub use tick::{TickReport, PIPELINE_NOT_HERE};

use crate::storage::schedules::{self as store, ScheduleChange, ScheduleRow};

/// Name of the schedule [`Schedules::ensure_default`] creates.
pub const DEFAULT_SCHEDULE_NAME: &str = "daily-ingest";

pub use crate::storage::schedules::{Misfire, Schedule, Slot};

/// What firing one slot did. Returned by [`Fire::fire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireOutcome {
    /// The pipeline's runs were started. The slot is recorded `fired` with their ids (at
    /// least one is required; none is recorded as failed with code `NO_RUN_IDS`).
    Fired {
        /// The runs started (several for a `both` scope).
        run_ids: Vec<i64>,
    },
    /// The pipeline refused to start (for instance a run was already active, code
    /// `RUN_ALREADY_ACTIVE`). The slot is recorded `skipped` with `code` and is not retried.
    TurnedAway {
        /// Runs recorded for the refusal, if the pipeline records blocked runs.
        run_ids: Vec<i64>,
        /// Why, upper-case (`RUN_ALREADY_ACTIVE`).
        code: String,
    },
    /// Starting failed. The slot is recorded `failed` with `code` and `message`.
    Failed {
        /// Runs recorded for the failure, if any.
        run_ids: Vec<i64>,
        /// Why, upper-case.
        code: String,
        /// Details (no secrets).
        message: String,
    },
}

/// Starts the pipeline runs of one due slot. The host wires this to its run orchestrator.
///
/// Called outside any database transaction, once per claim. A panic is caught and recorded
/// as a failure (`FIRE_PANICKED`).
///
/// Exactly once across a crash: a claim older than [`TickOptions::claim_timeout`] is
/// finished from the runs that name its slot, or, when none does, given back and fired by
/// the next tick. Runs name their slot when started through
/// [`Runs::trigger_for_slot`](crate::Runs::trigger_for_slot) with the claim passed to
/// [`Fire::fire_claimed`] ([`ScheduledRuns`](crate::ScheduledRuns) does). A `Fire` that
/// starts work any other way is fired again if its ticker dies before recording the
/// outcome (at least once).
pub trait Fire {
    /// Fires `schedule`'s slot due at `slot`.
    fn fire(&self, schedule: &Schedule, slot: Timestamp) -> FireOutcome;

    /// Whether this `Fire` can run `schedule`'s pipeline. A tick claims only the slots of
    /// schedules it handles: the others stay pending for a process that has the pipeline
    /// (reported with code [`PIPELINE_NOT_HERE`]), instead of being used up here. The
    /// default handles every schedule.
    fn handles(&self, schedule: &Schedule) -> bool {
        let _ = schedule;
        true
    }

    /// Fires the slot under `claim`; what the tick calls. The default calls [`Fire::fire`].
    fn fire_claimed(&self, claim: &SlotClaim, schedule: &Schedule, slot: Timestamp) -> FireOutcome {
        let _ = claim;
        self.fire(schedule, slot)
    }
}

impl<F> Fire for F
where
    F: Fn(&Schedule, Timestamp) -> FireOutcome,
{
    fn fire(&self, schedule: &Schedule, slot: Timestamp) -> FireOutcome {
        self(schedule, slot)
    }
}

/// A schedule to create. Text fields are validated by [`Schedules::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    /// Unique name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Pipeline: 1 to 64 of `A-Z a-z 0-9 _ . -` ([`check_pipeline_name`], the SQL CHECK's set).
    pub pipeline: String,
    /// Scope: `targets`, `universe` or `both` (a [`ScopeSelector`](crate::run::ScopeSelector)'s text).
    pub scope: String,
    /// Rule text (`daily 19:30`, `daily 19:30 mon-fri`, `every 15m`).
    pub rule: String,
    /// IANA zone name.
    pub zone: String,
    /// Misfire policy (default latest_only).
    pub misfire: Misfire,
    /// Whether it starts enabled (default true).
    pub enabled: bool,
}

impl NewSchedule {
    /// An enabled schedule with the default misfire policy.
    pub fn new(name: &str, pipeline: &str, scope: &str, rule: &str, zone: &str) -> Self {
        Self {
            name: name.into(),
            pipeline: pipeline.into(),
            scope: scope.into(),
            rule: rule.into(),
            zone: zone.into(),
            misfire: Misfire::default(),
            enabled: true,
        }
    }

    /// The same schedule with `misfire`.
    pub fn misfire(mut self, misfire: Misfire) -> Self {
        self.misfire = misfire;
        self
    }
}

/// Changes to a schedule's configuration; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleEdit {
    /// New pipeline.
    pub pipeline: Option<String>,
    /// New scope.
    pub scope: Option<String>,
    /// New rule text (restarts the cursor from now).
    pub rule: Option<String>,
    /// New zone (restarts the cursor from now).
    pub zone: Option<String>,
    /// New misfire policy.
    pub misfire: Option<Misfire>,
}

/// The schedules of one engine: `engine.schedules()`.
///
/// Create, edit, enable, disable and delete are audited (`audit_log`, entity `schedule`,
/// the schedule's id) with the facade's actor: `host` unless set with [`Schedules::by`].
#[derive(Debug, Clone, Copy)]
pub struct Schedules<'e> {
    engine: &'e Engine,
    actor: &'e str,
}

/// The actor of the audit rows of schedule changes when none is given.
pub const DEFAULT_ACTOR: &str = "host";

impl Engine {
    /// The schedules facade: create, edit, list, and tick.
    pub fn schedules(&self) -> Schedules<'_> {
        Schedules {
            engine: self,
            actor: DEFAULT_ACTOR,
        }
    }
}

fn audit(
    tx: &rusqlite::Connection,
    id: i64,
    action: &str,
    actor: &str,
    detail: serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    crate::storage::jobs::audit_entity(tx, "schedule", id, action, actor, &detail, now)
}

fn check_actor(actor: &str) -> Result<()> {
    if actor.is_empty() || actor.len() > 256 || actor.chars().any(char::is_control) {
        return Err(Error::invalid(
            "actor",
            "must be 1 to 256 bytes without control characters",
        ));
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<()> {
    scope
        .parse::<crate::run::state::ScopeSelector>()
        .map(|_| ())
}

fn check_word(field: &str, value: &str, extra: &[u8]) -> Result<()> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b);
    if value.is_empty() || value.len() > 64 || !value.bytes().all(ok_char) {
        let allowed = if extra.contains(&b'A') {
            "letters, digits, '.', '_' and '-'"
        } else {
            "lower-case letters, digits, '_' and '-'"
        };
        return Err(Error::invalid(
            field,
            format!("{value:?} must be 1 to 64 of {allowed}"),
        ));
    }
    Ok(())
}

const NAME_EXTRA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ._-";

fn later(a: Timestamp, b: Option<Timestamp>) -> Timestamp {
    b.map_or(a, |b| a.max(b))
}

/// The code of a pending slot skipped because its schedule's rule or zone was edited.
pub(crate) const SCHEDULE_EDITED: &str = "SCHEDULE_EDITED";
/// The code of a pending slot skipped because its schedule was disabled.
pub(crate) const SCHEDULE_DISABLED: &str = "SCHEDULE_DISABLED";

/// The refusal of a new schedule whose name is taken.
pub(crate) fn duplicate_name(name: &str) -> Error {
    Error::invalid("name", format!("a schedule named {name:?} already exists"))
}

/// The audit detail of a created schedule.
pub(crate) fn create_detail(row: &ScheduleRow<'_>) -> serde_json::Value {
    serde_json::json!({
        "name": row.name, "pipeline": row.pipeline, "scope": row.scope,
        "rule": row.rule.to_string(), "zone": row.zone.to_string(),
        "misfire": row.misfire.as_str(), "enabled": row.enabled,
    })
}

/// The audit detail of an edit.
pub(crate) fn edit_detail(name: &str, change: &ScheduleChange<'_>) -> serde_json::Value {
    serde_json::json!({
        "name": name, "pipeline": change.pipeline, "scope": change.scope,
        "rule": change.rule.as_ref().map(|r| r.to_string()),
        "zone": change.zone.as_ref().map(Zone::to_string),
        "misfire": change.misfire.map(|m| m.as_str()),
    })
}

/// What an edit does to schedule `cur` at `now`: its rule and zone after it, whether its
/// timing changed (its pending slots are then skipped with [`SCHEDULE_EDITED`]), and its
/// cursor's next slot.
pub(crate) struct EditPlan {
    pub(crate) rule: Rule,
    pub(crate) zone: Zone,
    pub(crate) timing_changed: bool,
    pub(crate) next: Option<Timestamp>,
}

impl EditPlan {
    /// The plan of `change` on `cur` at `now` (the rules of [`Schedules::edit`]).
    pub(crate) fn new(cur: &Schedule, change: &ScheduleChange<'_>, now: Timestamp) -> EditPlan {
        let rule = change.rule.unwrap_or(cur.rule);
        let zone = change.zone.clone().unwrap_or_else(|| cur.zone.clone());
        let timing_changed = rule != cur.rule || zone != cur.zone;
        let next = if timing_changed {
            next_due(&rule, &zone, later(now, cur.last_due_at))
        } else {
            cur.next_due_at
        };
        EditPlan {
            rule,
            zone,
            timing_changed,
            next,
        }
    }

    /// The schedule's stored configuration after the edit.
    pub(crate) fn row<'a>(
        &'a self,
        cur: &'a Schedule,
        change: &'a ScheduleChange<'_>,
    ) -> ScheduleRow<'a> {
        ScheduleRow {
            name: &cur.name,
            pipeline: change.pipeline.unwrap_or(&cur.pipeline),
            scope: change.scope.unwrap_or(&cur.scope),
            rule: &self.rule,
            zone: &self.zone,
            enabled: cur.enabled,
            misfire: change.misfire.unwrap_or(cur.misfire),
        }
    }
}

/// The cursor's next slot when schedule `cur` is enabled (`true`) or disabled at `now`:
/// enabling restarts it from now, disabling keeps it.
pub(crate) fn enabled_next(cur: &Schedule, enabled: bool, now: Timestamp) -> Option<Timestamp> {
    if enabled {
        next_due(&cur.rule, &cur.zone, later(now, cur.last_due_at))
    } else {
        cur.next_due_at
    }
}

/// The action audited when a schedule is enabled or disabled.
pub(crate) fn enabled_action(enabled: bool) -> &'static str {
    if enabled {
        "enable"
    } else {
        "disable"
    }
}

impl<'e> Schedules<'e> {
    /// The same facade, auditing its changes as `actor` (1 to 256 bytes, no control
    /// characters; checked by each change).
    pub fn by(self, actor: &'e str) -> Schedules<'e> {
        Schedules { actor, ..self }
    }

    /// Creates a schedule; its first slot is the rule's first instant after now.
    ///
    /// Bad input (name, pipeline, scope, rule, zone) or a name already taken is
    /// [`Error::InvalidInput`] naming the field; nothing is stored.
    pub fn create(&self, new: &NewSchedule) -> Result<Schedule> {
        check_actor(self.actor)?;
        check_word("name", &new.name, NAME_EXTRA)?;
        check_pipeline_name(&new.pipeline)?;
        check_scope(&new.scope)?;
        let rule: Rule = new.rule.parse()?;
        let zone = Zone::new(&new.zone)?;
        let row = ScheduleRow {
            name: &new.name,
            pipeline: &new.pipeline,
            scope: &new.scope,
            rule: &rule,
            zone: &zone,
            enabled: new.enabled,
            misfire: new.misfire,
        };
        if let Some(b) = self.engine.backend() {
            return b.create_schedule(&row, self.actor);
        }
        self.engine.write(|tx| {
            let now = tx.now();
            let next = next_due(&rule, &zone, now);
            if store::schedule_by_name(tx, &new.name)?.is_some() {
                return Err(duplicate_name(&new.name));
            }
            let id = store::insert_schedule(tx, &row, next, now)?;
            audit(tx, id, "create", self.actor, create_detail(&row), now)?;
            store::schedule_by_id(tx, id)?.ok_or_else(|| Error::not_found("schedule", id))
        })
    }

    /// Creates the default schedule — [`DEFAULT_SCHEDULE_NAME`], pipeline `ingest`, scope
    /// `both`, `daily 19:30` in Asia/Shanghai — unless a schedule of that name exists, and
    /// returns it. Hosts that want the default call this once after opening.
    pub fn ensure_default(&self) -> Result<Schedule> {
        let new = NewSchedule::new(
            DEFAULT_SCHEDULE_NAME,
            "ingest",
            "both",
            "daily 19:30",
            "Asia/Shanghai",
        );
        match self.create(&new) {
            Err(Error::InvalidInput { field, .. }) if field == "name" => {
                self.get(DEFAULT_SCHEDULE_NAME)
            }
            other => other,
        }
    }

    /// The schedule called `name`, or [`Error::NotFound`].
    pub fn get(&self, name: &str) -> Result<Schedule> {
        let found = match self.engine.backend() {
            Some(b) => b.get_schedule(name)?,
            None => self.engine.read(|c| store::schedule_by_name(c, name))?,
        };
        found.ok_or_else(|| Error::not_found("schedule", name))
    }

    /// Every schedule, by name.
    pub fn list(&self) -> Result<Vec<Schedule>> {
        if let Some(b) = self.engine.backend() {
            return b.list_schedules();
        }
        self.engine.read(store::list_schedules)
    }

    /// Every slot of the schedule called `name`, oldest first.
    pub fn slots(&self, name: &str) -> Result<Vec<Slot>> {
        let s = self.get(name)?;
        if let Some(b) = self.engine.backend() {
            return b.schedule_slots(s.id);
        }
        self.engine.read(|c| store::slots_of_schedule(c, s.id))
    }

    /// Every slot of every schedule, by due time.
    pub fn all_slots(&self) -> Result<Vec<Slot>> {
        if let Some(b) = self.engine.backend() {
            return b.all_slots();
        }
        self.engine.read(store::all_slots)
    }

    /// When a ticker last claimed a due slot (`None` before the first): when the scheduler
    /// last fired something.
    pub fn last_claimed_at(&self) -> Result<Option<Timestamp>> {
        if let Some(b) = self.engine.backend() {
            return b.last_claimed_at();
        }
        self.engine.read(store::last_claimed_at)
    }

    /// The earliest next slot of any enabled schedule (when a loop should tick next).
    pub fn next_due(&self) -> Result<Option<Timestamp>> {
        if let Some(b) = self.engine.backend() {
            return b.next_due();
        }
        self.engine.read(store::next_due)
    }

    /// Changes a schedule's configuration (validated like [`Schedules::create`]).
    ///
    /// A new rule or zone restarts the cursor from now (or from the last materialized slot
    /// if that is later): slots of the old rule are never materialized after the edit, and
    /// any pending slot is skipped with code `SCHEDULE_EDITED`.
    pub fn edit(&self, name: &str, edit: &ScheduleEdit) -> Result<Schedule> {
        check_actor(self.actor)?;
        if let Some(p) = &edit.pipeline {
            check_pipeline_name(p)?;
        }
        if let Some(s) = &edit.scope {
            check_scope(s)?;
        }
        let change = ScheduleChange {
            pipeline: edit.pipeline.as_deref(),
            scope: edit.scope.as_deref(),
            rule: edit.rule.as_deref().map(str::parse).transpose()?,
            zone: edit.zone.as_deref().map(Zone::new).transpose()?,
            misfire: edit.misfire,
        };
        if let Some(b) = self.engine.backend() {
            return b.edit_schedule(name, &change, self.actor);
        }
        self.engine.write(|tx| {
            let now = tx.now();
            let cur = store::schedule_by_name(tx, name)?
                .ok_or_else(|| Error::not_found("schedule", name))?;
            let plan = EditPlan::new(&cur, &change, now);
            if plan.timing_changed {
                for id in store::pending_of_schedule(tx, cur.id)? {
                    store::skip_pending_slot(tx, id, SCHEDULE_EDITED, None, now)?;
                }
            }
            store::update_config(tx, cur.id, &plan.row(&cur, &change), plan.next, now)?;
            audit(
                tx,
                cur.id,
                "edit",
                self.actor,
                edit_detail(name, &change),
                now,
            )?;
            store::schedule_by_id(tx, cur.id)?.ok_or_else(|| Error::not_found("schedule", name))
        })
    }

    /// Enables a schedule. If it was disabled, its cursor restarts from now: slots that fell
    /// while it was disabled are not fired. Enabling an enabled schedule changes nothing.
    pub fn enable(&self, name: &str) -> Result<Schedule> {
        self.set_enabled(name, true)
    }

    /// Disables a schedule: ticks stop materializing its slots; a pending slot is skipped
    /// with code `SCHEDULE_DISABLED`. Disabling a disabled schedule changes nothing.
    pub fn disable(&self, name: &str) -> Result<Schedule> {
        self.set_enabled(name, false)
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> Result<Schedule> {
        check_actor(self.actor)?;
        if let Some(b) = self.engine.backend() {
            return b.set_schedule_enabled(name, enabled, self.actor);
        }
        self.engine.write(|tx| {
            let now = tx.now();
            let cur = store::schedule_by_name(tx, name)?
                .ok_or_else(|| Error::not_found("schedule", name))?;
            if cur.enabled == enabled {
                return Ok(cur);
            }
            if !enabled {
                for id in store::pending_of_schedule(tx, cur.id)? {
                    store::skip_pending_slot(tx, id, SCHEDULE_DISABLED, None, now)?;
                }
            }
            let next = enabled_next(&cur, enabled, now);
            store::update_enabled(tx, cur.id, enabled, next, now)?;
            let detail = serde_json::json!({"name": name});
            audit(tx, cur.id, enabled_action(enabled), self.actor, detail, now)?;
            store::schedule_by_id(tx, cur.id)?.ok_or_else(|| Error::not_found("schedule", name))
        })
    }

    /// Deletes a schedule and its slot history. Refused with
    /// [`Error::IllegalTransition`] while one of its slots is being fired.
    pub fn delete(&self, name: &str) -> Result<()> {
        check_actor(self.actor)?;
        if let Some(b) = self.engine.backend() {
            return b.delete_schedule(name, self.actor);
        }
        self.engine.write(|tx| {
            let cur = store::schedule_by_name(tx, name)?
                .ok_or_else(|| Error::not_found("schedule", name))?;
            store::delete_schedule(tx, cur.id)?;
            let now = tx.now();
            audit(
                tx,
                cur.id,
                "delete",
                self.actor,
                serde_json::json!({"name": name}),
                now,
            )
        })
    }

    /// Ticks once at `now` with default [`TickOptions`]: see the module docs.
    pub fn tick(&self, now: Timestamp, fire: &dyn Fire) -> Result<TickReport> {
        self.tick_with(&TickOptions::default(), now, fire)
    }

    /// Ticks once at `now` with `opts`.
    pub fn tick_with(
        &self,
        opts: &TickOptions,
        now: Timestamp,
        fire: &dyn Fire,
    ) -> Result<TickReport> {
        tick::tick(self.engine, opts, now, fire)
    }

    /// Starts a background thread that ticks, sleeps until the next due instant (at most
    /// [`LoopOptions::poll`]), and ticks again, until the returned handle is stopped; the
    /// sleep wakes up at once on stop. "Now" always comes from the engine's clock. A failed
    /// tick is retried at the next poll.
    pub fn spawn(
        &self,
        fire: Arc<dyn Fire + Send + Sync>,
        opts: LoopOptions,
    ) -> Result<LoopHandle> {
        runner::spawn(self.engine, fire, opts)
    }
}
