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
mod tick;

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::looping::LoopHandle;
use crate::run::state::check_pipeline_name;

pub use rule::{next_due, tzdb, Rule, TimeOfDay, Tzdb, TzdbSource, Weekdays, Zone};
pub use runner::LoopOptions;
pub use state::{SlotClaim, SlotStatus};
pub use tick::{SlotReport, TickOptions, TickReport, PIPELINE_NOT_HERE};

use crate::storage::schedules::{self as store, ScheduleRow};

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
        self.engine.sqlite_only("schedules.create")?;
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
        self.engine.write(|tx| {
            let now = tx.now();
            let next = next_due(&rule, &zone, now);
            if store::schedule_by_name(tx, &new.name)?.is_some() {
                return Err(Error::invalid(
                    "name",
                    format!("a schedule named {:?} already exists", new.name),
                ));
            }
            let id = store::insert_schedule(tx, &row, next, now)?;
            let detail = serde_json::json!({
                "name": new.name, "pipeline": new.pipeline, "scope": new.scope,
                "rule": rule.to_string(), "zone": zone.to_string(),
                "misfire": new.misfire.as_str(), "enabled": new.enabled,
            });
            audit(tx, id, "create", self.actor, detail, now)?;
            store::schedule_by_id(tx, id)?.ok_or_else(|| Error::not_found("schedule", id))
        })
    }

    /// Creates the default schedule — [`DEFAULT_SCHEDULE_NAME`], pipeline `ingest`, scope
    /// `both`, `daily 19:30` in Asia/Shanghai — unless a schedule of that name exists, and
    /// returns it. Hosts that want the default call this once after opening.
    pub fn ensure_default(&self) -> Result<Schedule> {
        self.engine.sqlite_only("schedules.ensure_default")?;
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
        self.engine.sqlite_only("schedules.get")?;
        self.engine
            .read(|c| store::schedule_by_name(c, name))?
            .ok_or_else(|| Error::not_found("schedule", name))
    }

    /// Every schedule, by name.
    pub fn list(&self) -> Result<Vec<Schedule>> {
        self.engine.sqlite_only("schedules.list")?;
        self.engine.read(store::list_schedules)
    }

    /// Every slot of the schedule called `name`, oldest first.
    pub fn slots(&self, name: &str) -> Result<Vec<Slot>> {
        self.engine.sqlite_only("schedules.slots")?;
        let s = self.get(name)?;
        self.engine.read(|c| store::slots_of_schedule(c, s.id))
    }

    /// Every slot of every schedule, by due time.
    pub fn all_slots(&self) -> Result<Vec<Slot>> {
        self.engine.sqlite_only("schedules.all_slots")?;
        self.engine.read(store::all_slots)
    }

    /// When a ticker last claimed a due slot (`None` before the first): when the scheduler
    /// last fired something.
    pub fn last_claimed_at(&self) -> Result<Option<Timestamp>> {
        self.engine.sqlite_only("schedules.last_claimed_at")?;
        self.engine.read(store::last_claimed_at)
    }

    /// The earliest next slot of any enabled schedule (when a loop should tick next).
    pub fn next_due(&self) -> Result<Option<Timestamp>> {
        self.engine.sqlite_only("schedules.next_due")?;
        self.engine.read(store::next_due)
    }

    /// Changes a schedule's configuration (validated like [`Schedules::create`]).
    ///
    /// A new rule or zone restarts the cursor from now (or from the last materialized slot
    /// if that is later): slots of the old rule are never materialized after the edit, and
    /// any pending slot is skipped with code `SCHEDULE_EDITED`.
    pub fn edit(&self, name: &str, edit: &ScheduleEdit) -> Result<Schedule> {
        self.engine.sqlite_only("schedules.edit")?;
        check_actor(self.actor)?;
        if let Some(p) = &edit.pipeline {
            check_pipeline_name(p)?;
        }
        if let Some(s) = &edit.scope {
            check_scope(s)?;
        }
        let new_rule: Option<Rule> = edit.rule.as_deref().map(str::parse).transpose()?;
        let new_zone = edit.zone.as_deref().map(Zone::new).transpose()?;
        self.engine.write(|tx| {
            let now = tx.now();
            let cur = store::schedule_by_name(tx, name)?
                .ok_or_else(|| Error::not_found("schedule", name))?;
            let rule = new_rule.unwrap_or(cur.rule);
            let zone = new_zone.clone().unwrap_or_else(|| cur.zone.clone());
            let timing_changed = rule != cur.rule || zone != cur.zone;
            let next = if timing_changed {
                for id in store::pending_of_schedule(tx, cur.id)? {
                    store::skip_pending_slot(tx, id, "SCHEDULE_EDITED", None, now)?;
                }
                next_due(&rule, &zone, later(now, cur.last_due_at))
            } else {
                cur.next_due_at
            };
            let row = ScheduleRow {
                name,
                pipeline: edit.pipeline.as_deref().unwrap_or(&cur.pipeline),
                scope: edit.scope.as_deref().unwrap_or(&cur.scope),
                rule: &rule,
                zone: &zone,
                enabled: cur.enabled,
                misfire: edit.misfire.unwrap_or(cur.misfire),
            };
            store::update_config(tx, cur.id, &row, next, now)?;
            let detail = serde_json::json!({
                "name": name, "pipeline": edit.pipeline, "scope": edit.scope,
                "rule": new_rule.map(|r| r.to_string()), "zone": new_zone.as_ref().map(Zone::to_string),
                "misfire": edit.misfire.map(|m| m.as_str()),
            });
            audit(tx, cur.id, "edit", self.actor, detail, now)?;
            store::schedule_by_id(tx, cur.id)?.ok_or_else(|| Error::not_found("schedule", name))
        })
    }

    /// Enables a schedule. If it was disabled, its cursor restarts from now: slots that fell
    /// while it was disabled are not fired. Enabling an enabled schedule changes nothing.
    pub fn enable(&self, name: &str) -> Result<Schedule> {
        self.engine.sqlite_only("schedules.enable")?;
        self.set_enabled(name, true)
    }

    /// Disables a schedule: ticks stop materializing its slots; a pending slot is skipped
    /// with code `SCHEDULE_DISABLED`. Disabling a disabled schedule changes nothing.
    pub fn disable(&self, name: &str) -> Result<Schedule> {
        self.engine.sqlite_only("schedules.disable")?;
        self.set_enabled(name, false)
    }

    fn set_enabled(&self, name: &str, enabled: bool) -> Result<Schedule> {
        check_actor(self.actor)?;
        self.engine.write(|tx| {
            let now = tx.now();
            let cur = store::schedule_by_name(tx, name)?
                .ok_or_else(|| Error::not_found("schedule", name))?;
            if cur.enabled == enabled {
                return Ok(cur);
            }
            let next = if enabled {
                next_due(&cur.rule, &cur.zone, later(now, cur.last_due_at))
            } else {
                for id in store::pending_of_schedule(tx, cur.id)? {
                    store::skip_pending_slot(tx, id, "SCHEDULE_DISABLED", None, now)?;
                }
                cur.next_due_at
            };
            store::update_enabled(tx, cur.id, enabled, next, now)?;
            let action = if enabled { "enable" } else { "disable" };
            audit(
                tx,
                cur.id,
                action,
                self.actor,
                serde_json::json!({"name": name}),
                now,
            )?;
            store::schedule_by_id(tx, cur.id)?.ok_or_else(|| Error::not_found("schedule", name))
        })
    }

    /// Deletes a schedule and its slot history. Refused with
    /// [`Error::IllegalTransition`] while one of its slots is being fired.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.engine.sqlite_only("schedules.delete")?;
        check_actor(self.actor)?;
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
        self.engine.sqlite_only("schedules.tick_with")?;
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
        self.engine.sqlite_only("schedules.spawn")?;
        runner::spawn(self.engine, fire, opts)
    }
}
