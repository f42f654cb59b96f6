//! One tick: materialize due slots, claim them, fire them outside the transaction, record
//! the outcomes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::rule::next_due;
use super::state::SlotStatus;
use super::state::{SlotReport, TickOptions};
use super::{Fire, FireOutcome, Misfire, Schedule, SlotClaim};
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::storage::schedules::{self as store, Finish};
pub(crate) use crate::storage::schedules::{ClaimStep, Claimed};

/// The result of one tick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TickReport {
    /// The instant the tick ran at.
    pub now: Timestamp,
    /// How many slots were materialized.
    pub materialized: usize,
    /// Every slot this tick finished or claimed, in due order.
    pub slots: Vec<SlotReport>,
    /// The earliest next slot of any enabled schedule after the tick.
    pub next_due: Option<Timestamp>,
}

impl TickReport {
    /// How many slots ended with `status`.
    pub fn count(&self, status: SlotStatus) -> usize {
        self.slots.iter().filter(|s| s.status == status).count()
    }
}

const MAX_CODE: usize = 64;
const MAX_MESSAGE: usize = 4096;

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The code of a due slot a ticker left pending because it has no pipeline of that name.
pub const PIPELINE_NOT_HERE: &str = "PIPELINE_NOT_HERE";

pub(crate) fn tick(
    engine: &Engine,
    opts: &TickOptions,
    now: Timestamp,
    fire: &dyn Fire,
) -> Result<TickReport> {
    let step = claim_due(engine, opts, now, fire, usize::MAX)?;
    let mut slots = step.slots;
    // Fire outside the transaction; record each outcome in its own.
    for c in step.claimed {
        slots.push(fire_one(engine, opts, c, fire)?);
    }
    finish_report(engine, now, step.materialized, slots)
}

/// The tick's report: `slots` in due order and the next due instant.
pub(crate) fn finish_report(
    engine: &Engine,
    now: Timestamp,
    materialized: usize,
    mut slots: Vec<SlotReport>,
) -> Result<TickReport> {
    slots.sort_by_key(|s| (s.due_at, s.slot_id));
    let next_due = match engine.backend() {
        Some(b) => b.next_due()?,
        None => engine.read(store::next_due)?,
    };
    engine.note_scheduler_tick(now);
    Ok(TickReport {
        now,
        materialized,
        slots,
        next_due,
    })
}

/// Checks a tick's options before anything is touched.
fn check_options(opts: &TickOptions) -> Result<()> {
    if opts.ticker.is_empty() || opts.ticker.len() > 256 {
        return Err(Error::invalid("ticker", "must be 1 to 256 bytes"));
    }
    Ok(())
}

/// The instants of schedule `s` due by `now`, from its cursor on, and the cursor's next
/// instant after them (step 2's rule, on every backend).
pub(crate) fn due_instants(s: &Schedule, now: Timestamp) -> (Vec<Timestamp>, Option<Timestamp>) {
    let mut due = Vec::new();
    let mut next = s.next_due_at;
    while let Some(at) = next.filter(|&at| at <= now) {
        due.push(at);
        next = next_due(&s.rule, &s.zone, at);
    }
    (due, next)
}

/// The misfire policy's decision for a slot due at `at`, materialized at `now` among slots
/// whose latest is `last`: `None` to fire it, else the skip code and message.
pub(crate) fn misfire_skip(
    policy: Misfire,
    at: Timestamp,
    last: Timestamp,
    now: Timestamp,
    grace: Duration,
) -> Option<(&'static str, String)> {
    let is_latest = at == last;
    let late = now.millis_since(at) > grace.as_millis() as i64;
    match policy {
        Misfire::All => None,
        Misfire::LatestOnly if !is_latest => Some((
            "MISFIRE_SUPERSEDED",
            format!("a later slot ({last}) was due at the same tick"),
        )),
        Misfire::LatestOnly => None,
        Misfire::Skip if late => Some((
            "MISFIRE_SKIPPED",
            format!("{} ms late, over the misfire grace", now.millis_since(at)),
        )),
        Misfire::Skip => None,
    }
}

/// How a timed-out claim named by `runs` (`(run id, was a lock refusal)`, never empty) is
/// finished: fired when one of them started, else skipped as turned away.
pub(crate) struct TimedOut {
    pub(crate) status: SlotStatus,
    pub(crate) run_ids: Vec<i64>,
    pub(crate) code: Option<&'static str>,
    pub(crate) message: Option<String>,
}

impl TimedOut {
    /// Step 1's rule for a claim older than `cutoff` that `runs` name.
    pub(crate) fn from_runs(runs: &[(i64, bool)], cutoff: Timestamp) -> TimedOut {
        let started = runs.iter().any(|r| !r.1);
        TimedOut {
            status: if started {
                SlotStatus::Fired
            } else {
                SlotStatus::Skipped
            },
            run_ids: runs.iter().map(|r| r.0).collect(),
            code: (!started).then_some("RUN_ALREADY_ACTIVE"),
            message: (!started)
                .then(|| format!("claimed before {cutoff}; finished from the runs that name it")),
        }
    }

    /// As the row's outcome.
    pub(crate) fn finish(&self) -> Finish<'_> {
        Finish {
            status: self.status,
            run_ids: &self.run_ids,
            code: self.code,
            message: self.message.as_deref(),
        }
    }
}

/// The storage calls of a tick's claiming half, made by each backend inside its own write
/// transaction: the SQLite file here ([`FileTick`]), PostgreSQL in `pg::schedules`.
/// [`claim_steps`] sequences them by the same rules for both.
pub(crate) trait TickStore {
    /// Claimed slots whose claim is older than `cutoff`.
    fn abandoned(&mut self, cutoff: Timestamp) -> Result<Vec<i64>>;
    /// The runs that name slot `id`: `(run id, whether it started)`.
    fn slot_runs(&mut self, id: i64) -> Result<Vec<(i64, bool)>>;
    /// Gives an abandoned claim back (pending again).
    fn give_back_slot(&mut self, id: i64, cutoff: Timestamp) -> Result<bool>;
    /// Finishes an abandoned claim from its runs.
    fn finish_timed_out_slot(
        &mut self,
        id: i64,
        cutoff: Timestamp,
        finish: &Finish<'_>,
        now: Timestamp,
    ) -> Result<bool>;
    /// Slot `id` as a tick reports it.
    fn report(&mut self, id: i64) -> Result<SlotReport>;
    /// The enabled schedules due at `now` (locked where the backend locks).
    fn due_schedules(&mut self, now: Timestamp) -> Result<Vec<Schedule>>;
    /// A pending slot of `schedule_id` due at `at`.
    fn insert_slot(&mut self, schedule_id: i64, at: Timestamp, now: Timestamp) -> Result<i64>;
    /// Moves a schedule's high-water mark to `last` and its next slot to `next`.
    fn update_cursor(
        &mut self,
        schedule_id: i64,
        last: Timestamp,
        next: Option<Timestamp>,
    ) -> Result<()>;
    /// Skips a pending slot with `code`.
    fn skip_pending_slot(
        &mut self,
        id: i64,
        code: &str,
        message: Option<&str>,
        now: Timestamp,
    ) -> Result<bool>;
    /// The pending due slots: `(slot id, schedule id, due at)`, in due order.
    fn claimable(&mut self, now: Timestamp) -> Result<Vec<(i64, i64, Timestamp)>>;
    /// The schedule `id`, if it still exists.
    fn schedule_by_id(&mut self, id: i64) -> Result<Option<Schedule>>;
    /// Claims slot `id` for `ticker`: the claim's time, or `None` when another ticker has it.
    fn claim_slot(&mut self, id: i64, ticker: &str, now: Timestamp) -> Result<Option<Timestamp>>;
}

/// Steps 1 to 3 of a tick, inside one write transaction of `store`: sweep abandoned claims,
/// materialize due slots, claim at most `limit` pending due slots whose pipeline `handles`
/// (the others stay pending for a ticker that has it, reported with [`PIPELINE_NOT_HERE`]).
/// The one sequence of both backends.
pub(crate) fn claim_steps(
    store: &mut impl TickStore,
    opts: &TickOptions,
    now: Timestamp,
    handles: &dyn Fn(&Schedule) -> bool,
    limit: usize,
) -> Result<ClaimStep> {
    let mut slots = Vec::new();
    let mut materialized = 0;

    // 1. Claims whose ticker vanished: finished from the runs that name the slot, or given
    //    back (no run started) to be claimed again in step 3.
    let cutoff = now - opts.claim_timeout;
    for id in store.abandoned(cutoff)? {
        let runs = store.slot_runs(id)?;
        if runs.is_empty() {
            store.give_back_slot(id, cutoff)?;
            continue;
        }
        let timed_out = TimedOut::from_runs(&runs, cutoff);
        if store.finish_timed_out_slot(id, cutoff, &timed_out.finish(), now)? {
            slots.push(store.report(id)?);
        }
    }

    // 2. Materialize the due slots of each due schedule, after its high-water mark.
    for s in store.due_schedules(now)? {
        let (due, next) = due_instants(&s, now);
        let Some(&last) = due.last() else { continue };
        let mut ids = Vec::with_capacity(due.len());
        for &at in &due {
            ids.push(store.insert_slot(s.id, at, now)?);
        }
        store.update_cursor(s.id, last, next)?;
        materialized += due.len();
        for (&id, &at) in ids.iter().zip(&due) {
            if let Some((code, msg)) = misfire_skip(s.misfire, at, last, now, opts.misfire_grace) {
                if store.skip_pending_slot(id, code, Some(&msg), now)? {
                    slots.push(store.report(id)?);
                }
            }
        }
    }

    // 3. Claim pending due slots (guarded: one ticker per slot), at most `limit`, and only
    //    those this ticker can fire.
    let mut claimed = Vec::new();
    for (id, schedule_id, due_at) in store.claimable(now)? {
        let Some(schedule) = store.schedule_by_id(schedule_id)? else {
            continue;
        };
        if !schedule.enabled {
            if store.skip_pending_slot(id, super::SCHEDULE_DISABLED, None, now)? {
                slots.push(store.report(id)?);
            }
            continue;
        }
        if !handles(&schedule) {
            slots.push(not_here(store.report(id)?));
            continue;
        }
        if claimed.len() >= limit {
            continue;
        }
        if let Some(claimed_at) = store.claim_slot(id, &opts.ticker, now)? {
            claimed.push(Claimed {
                slot_id: id,
                schedule,
                due_at,
                claimed_at,
            });
        }
    }
    Ok(ClaimStep {
        slots,
        materialized,
        claimed,
    })
}

/// `impl TickStore for $store` where each call is the function of the same name in the
/// backend's storage modules `$slots` (due_runs and schedules) and `$runs` (ingest_runs),
/// called with `self.0` (the backend's transaction); `report` and `claim_slot`, which differ,
/// follow as `$extra`.
macro_rules! tick_store {
    ($store:ty, $slots:path, $runs:path, { $($extra:tt)* }) => {
        impl $crate::schedule::tick::TickStore for $store {
            fn abandoned(&mut self, cutoff: $crate::clock::Timestamp) -> $crate::error::Result<Vec<i64>> {
                { use $slots as s; s::abandoned(self.0, cutoff) }
            }
            fn slot_runs(&mut self, id: i64) -> $crate::error::Result<Vec<(i64, bool)>> {
                { use $runs as r; r::slot_runs(self.0, id) }
            }
            fn give_back_slot(&mut self, id: i64, cutoff: $crate::clock::Timestamp) -> $crate::error::Result<bool> {
                { use $slots as s; s::give_back_slot(self.0, id, cutoff) }
            }
            fn finish_timed_out_slot(
                &mut self,
                id: i64,
                cutoff: $crate::clock::Timestamp,
                finish: &$crate::storage::schedules::Finish<'_>,
                now: $crate::clock::Timestamp,
            ) -> $crate::error::Result<bool> {
                { use $slots as s; s::finish_timed_out_slot(self.0, id, cutoff, finish, now) }
            }
            fn due_schedules(&mut self, now: $crate::clock::Timestamp) -> $crate::error::Result<Vec<$crate::storage::schedules::Schedule>> {
                { use $slots as s; s::due_schedules(self.0, now) }
            }
            fn insert_slot(&mut self, schedule_id: i64, at: $crate::clock::Timestamp, now: $crate::clock::Timestamp) -> $crate::error::Result<i64> {
                { use $slots as s; s::insert_slot(self.0, schedule_id, at, now) }
            }
            fn update_cursor(
                &mut self,
                schedule_id: i64,
                last: $crate::clock::Timestamp,
                next: Option<$crate::clock::Timestamp>,
            ) -> $crate::error::Result<()> {
                { use $slots as s; s::update_cursor(self.0, schedule_id, last, next) }
            }
            fn skip_pending_slot(
                &mut self,
                id: i64,
                code: &str,
                message: Option<&str>,
                now: $crate::clock::Timestamp,
            ) -> $crate::error::Result<bool> {
                { use $slots as s; s::skip_pending_slot(self.0, id, code, message, now) }
            }
            fn claimable(&mut self, now: $crate::clock::Timestamp) -> $crate::error::Result<Vec<(i64, i64, $crate::clock::Timestamp)>> {
                { use $slots as s; s::claimable(self.0, now) }
            }
            fn schedule_by_id(&mut self, id: i64) -> $crate::error::Result<Option<$crate::storage::schedules::Schedule>> {
                { use $slots as s; s::schedule_by_id(self.0, id) }
            }
            $($extra)*
        }
    };
}
#[cfg_attr(not(feature = "postgres"), allow(unused_imports))]
pub(crate) use tick_store;

/// [`TickStore`] over the SQLite file's write transaction.
struct FileTick<'c>(&'c rusqlite::Connection);

tick_store!(
    FileTick<'_>,
    crate::storage::schedules,
    crate::storage::ingest_runs,
    {
        fn report(&mut self, id: i64) -> Result<SlotReport> {
            report(self.0, id)
        }
        fn claim_slot(
            &mut self,
            id: i64,
            ticker: &str,
            now: Timestamp,
        ) -> Result<Option<Timestamp>> {
            Ok(store::claim_slot(self.0, id, ticker, now)?.then_some(now))
        }
    }
);

/// Steps 1 to 3 of a tick ([`claim_steps`]) in one write transaction of `engine`'s backend.
pub(crate) fn claim_due(
    engine: &Engine,
    opts: &TickOptions,
    now: Timestamp,
    fire: &dyn Fire,
    limit: usize,
) -> Result<ClaimStep> {
    check_options(opts)?;
    let handles = |s: &Schedule| fire.handles(s);
    if let Some(b) = engine.backend() {
        return b.claim_due_slots(opts, now, &handles, limit);
    }
    engine.write(|tx| claim_steps(&mut FileTick(tx), opts, now, &handles, limit))
}

/// The report of a due slot left pending because this ticker has no pipeline for it.
pub(crate) fn not_here(report: SlotReport) -> SlotReport {
    SlotReport {
        code: Some(PIPELINE_NOT_HERE.into()),
        ..report
    }
}

/// Step 4 for one claimed slot: fire it (outside any transaction) while a keep-alive thread
/// moves the claim's `claimed_at` forward every quarter of the claim timeout, so that a long
/// run is never taken for an abandoned claim; then record its outcome.
pub(crate) fn fire_one(
    engine: &Engine,
    opts: &TickOptions,
    c: Claimed,
    fire: &dyn Fire,
) -> Result<SlotReport> {
    let claim = SlotClaim {
        slot_id: c.slot_id,
        ticker: opts.ticker.clone(),
        claimed_at: c.claimed_at,
    };
    let every = (opts.claim_timeout / 4).max(Duration::from_millis(10));
    let outcome = std::thread::scope(|scope| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let claim_ref = &claim;
        let keep_alive = scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                // A failed renewal (busy file...) is retried at the next beat; a claim that
                // is no longer this ticker's is simply not renewed.
                let _ = match engine.backend() {
                    Some(b) => b.renew_slot_claim(claim_ref.slot_id, &claim_ref.ticker),
                    None => engine.write(|tx| {
                        let now = tx.now();
                        store::renew_claim(tx, claim_ref.slot_id, &claim_ref.ticker, now)
                    }),
                };
            }
        });
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            fire.fire_claimed(&claim, &c.schedule, c.due_at)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the fire call panicked".into());
            FireOutcome::Failed {
                run_ids: vec![],
                code: "FIRE_PANICKED".into(),
                message,
            }
        });
        drop(stop);
        let _ = keep_alive.join();
        outcome
    });
    let finish = outcome_finish(&outcome);
    if let Some(b) = engine.backend() {
        return b.finish_claimed_slot(c.slot_id, &opts.ticker, &finish, c.claimed_at);
    }
    // The outcome is recorded at the clock's time after the fire, not at the claim's.
    engine.write(|tx| {
        let done = tx.now().max(c.claimed_at);
        store::finish_claimed_slot(tx, c.slot_id, &opts.ticker, &finish, done)?;
        report(tx, c.slot_id)
    })
}

/// How a fire's outcome is recorded on its slot.
fn outcome_finish(outcome: &FireOutcome) -> Finish<'_> {
    let (status, run_ids, code, message) = match outcome {
        FireOutcome::Fired { run_ids } if run_ids.is_empty() => (
            SlotStatus::Failed,
            &run_ids[..],
            "NO_RUN_IDS",
            Some("the fire call reported success without a run id"),
        ),
        FireOutcome::Fired { run_ids } => (SlotStatus::Fired, &run_ids[..], "", None),
        FireOutcome::TurnedAway { run_ids, code } => {
            (SlotStatus::Skipped, &run_ids[..], code.as_str(), None)
        }
        FireOutcome::Failed {
            run_ids,
            code,
            message,
        } => (
            SlotStatus::Failed,
            &run_ids[..],
            code.as_str(),
            Some(message.as_str()),
        ),
    };
    let code = match (status, clip(code, MAX_CODE)) {
        (SlotStatus::Fired, _) => None,
        (SlotStatus::Skipped, "") => Some("TURNED_AWAY"),
        (_, "") => Some("FIRE_FAILED"),
        (_, c) => Some(c),
    };
    Finish {
        status,
        run_ids,
        code,
        message: message.map(|m| clip(m, MAX_MESSAGE)),
    }
}

fn report(conn: &rusqlite::Connection, id: i64) -> Result<SlotReport> {
    let s = store::slot(conn, id)?.ok_or_else(|| Error::not_found("due_run", id))?;
    Ok(slot_report(s))
}

/// A slot as a tick reports it.
pub(crate) fn slot_report(s: super::Slot) -> SlotReport {
    SlotReport {
        slot_id: s.id,
        schedule: s.schedule,
        due_at: s.due_at,
        status: s.status,
        run_ids: s.run_ids,
        code: s.outcome_code,
    }
}
