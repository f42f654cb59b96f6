//! SQL for `ingest_runs` on PostgreSQL: start under the lock (the partial unique index
//! `ingest_runs_one_active`, with `ON CONFLICT DO NOTHING` so a refusal is recorded in the
//! same transaction), lease renewal, finish, and the sweep of expired leases (`SKIP
//! LOCKED`, so supervisors on several nodes never finalize a run twice).

use serde_json::{json, Value};

use super::{get, opt_ts, parsed, ts};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::pg::engine::Tx;
use crate::run::state::{RunStatus, Scope, TriggerKind};
use crate::run::timeline::{self, StageKind, StageStatus, TimelineEntry};
use crate::schedule::state::SlotClaim;
use crate::storage::ingest_runs::{Run, RunFilter};

/// Every column of a [`Run`], as [`run_from_row`] reads them by name.
macro_rules! columns {
    () => {
        "id, pipeline, scope, trigger, status, lock_key, account_id, started_at, \
         lease_expires_at, finished_at, duration_ms, error_code, error_message, timeline, meta_json"
    };
}

/// $1 pipeline, $2 scope, $3 trigger, $4 lock_key, $5 account_id, $6 now, $7 lease, $8 meta
const INSERT_STARTED: &str = "insert into ingest_runs
    (pipeline, scope, trigger, status, lock_key, account_id, started_at, lease_expires_at, meta_json)
    values ($1, $2, $3, 'started', $4, $5, $6, $7, $8)
    on conflict (lock_key) where status = 'started' do nothing
    returning id";

/// $1 pipeline, $2 scope, $3 trigger, $4 lock_key, $5 account_id, $6 now, $7 code,
/// $8 message, $9 timeline, $10 meta
const INSERT_REJECTED: &str = "insert into ingest_runs
    (pipeline, scope, trigger, status, lock_key, account_id, started_at, finished_at, duration_ms,
     error_code, error_message, timeline, meta_json)
    values ($1, $2, $3, 'failed', $4, $5, $6, $6, 0, $7, $8, $9, $10)
    returning id";

/// $1 lock_key: the started run holding it, locked (an expired one is finalized first).
const ACTIVE_HOLDER: &str = "select id, lease_expires_at from ingest_runs
    where lock_key = $1 and status = 'started' for update";
/// $1 lock_key: the holder, without waiting for it.
const ACTIVE_HOLDER_ID: &str =
    "select id, lease_expires_at from ingest_runs where lock_key = $1 and status = 'started'";

/// $1 id, $2 lease
const RENEW_LEASE: &str =
    "update ingest_runs set lease_expires_at = $2 where id = $1 and status = 'started'";

/// $1 id, $2 status, $3 now, $4 code, $5 message, $6 meta patch: finished_at never precedes
/// started_at; duration_ms is computed by the very function of the CHECK.
const FINISH: &str = "update ingest_runs
    set status = $2,
        finished_at = greatest($3, started_at),
        duration_ms = runledger_ts_ms(greatest($3, started_at)) - runledger_ts_ms(started_at),
        error_code = $4,
        error_message = $5,
        meta_json = meta_json || $6
    where id = $1 and status = 'started'";

/// $1 id, $2 entry: replaces the last (open) timeline entry with its closed form.
const REPLACE_LAST_ENTRY: &str = "update ingest_runs
    set timeline = jsonb_set(timeline, '{-1}', $2)
    where id = $1 and status = 'started' and jsonb_array_length(timeline) > 0";

/// $1 now: started runs whose lease expired, skipping the ones another sweeper holds.
const EXPIRED: &str = "select id, timeline, lease_expires_at from ingest_runs
    where status = 'started' and lease_expires_at <= $1
    order by lease_expires_at, id
    for update skip locked";

/// $1 id, $2 entry: appends an entry to a started run's timeline.
const APPEND_ENTRY: &str = "update ingest_runs
    set timeline = timeline || jsonb_build_array($2::jsonb)
    where id = $1 and status = 'started'";

/// $1 id, $2 message, $3 detail: the open (last) entry of a started run, annotated in place
/// (still open, same stage, attempt and start: what the append-only rule allows).
const ANNOTATE_OPEN_ENTRY: &str = "update ingest_runs
    set timeline = jsonb_set(
            jsonb_set(timeline, '{-1,message}', coalesce(to_jsonb($2::text), 'null'::jsonb)),
            '{-1,detail}', $3::jsonb)
    where id = $1 and status = 'started' and jsonb_array_length(timeline) > 0
      and timeline -> -1 ->> 'status' = 'started'";

/// $1 id: the meta of a started run, locked until the caller's merge commits.
const META_FOR_UPDATE: &str =
    "select meta_json from ingest_runs where id = $1 and status = 'started' for update";

/// $1 id, $2 meta
const SET_META: &str = "update ingest_runs set meta_json = $2 where id = $1 and status = 'started'";

/// $1 pipeline, $2 scope, $3 status, $4 trigger, $5 before id, $6 limit (each filter null:
/// any), newest first: the twin of SQLite's `LIST`.
const LIST: &str = concat!(
    "select ",
    columns!(),
    " from ingest_runs
     where ($1::text is null or pipeline = $1)
       and ($2::text is null or scope = $2)
       and ($3::text is null or status = $3)
       and ($4::text is null or trigger = $4)
       and ($5::bigint is null or id < $5)
     order by id desc limit $6"
);

/// $1 id
const TIMELINE_OF: &str =
    "select timeline, lease_expires_at from ingest_runs where id = $1 and status = 'started'";

/// $1 id
const GET: &str = concat!("select ", columns!(), " from ingest_runs where id = $1");

/// $1 id: whether the run is started, locked against its ending until the caller commits.
const IS_STARTED: &str = "select status = 'started' from ingest_runs where id = $1 for share";

/// $1 cutoff: terminal runs that finished before it (retention).
const PRUNE: &str = "delete from ingest_runs
    where started_at < $1 and status <> 'started' and finished_at < $1
    returning id";

/// Reads one row selected with [`columns!`], by column name.
fn run_from_row(r: &postgres::Row) -> Result<Run> {
    let id: i64 = get(r, "ingest_runs", "?", "id")?;
    let key = id.to_string();
    let k = key.as_str();
    let timeline: Value = get(r, "ingest_runs", k, "timeline")?;
    let meta: Value = get(r, "ingest_runs", k, "meta_json")?;
    Ok(Run {
        id,
        pipeline: get(r, "ingest_runs", k, "pipeline")?,
        scope: parsed(r, "ingest_runs", k, "scope")?,
        trigger: parsed(r, "ingest_runs", k, "trigger")?,
        status: parsed(r, "ingest_runs", k, "status")?,
        lock_key: get(r, "ingest_runs", k, "lock_key")?,
        account_id: get(r, "ingest_runs", k, "account_id")?,
        started_at: ts(r, "ingest_runs", k, "started_at")?,
        lease_expires_at: opt_ts(r, "ingest_runs", k, "lease_expires_at")?,
        finished_at: opt_ts(r, "ingest_runs", k, "finished_at")?,
        duration_ms: get(r, "ingest_runs", k, "duration_ms")?,
        error_code: get(r, "ingest_runs", k, "error_code")?,
        error_message: get(r, "ingest_runs", k, "error_message")?,
        timeline: timeline::parse(&timeline.to_string())
            .map_err(|e| super::corrupt("ingest_runs", k, "timeline", e.to_string()))?,
        meta: match meta {
            Value::Object(map) => map,
            other => {
                return Err(super::corrupt(
                    "ingest_runs",
                    k,
                    "meta_json",
                    format!("{other} is not an object"),
                ))
            }
        },
    })
}

/// A run about to start.
pub(crate) struct NewRun<'a> {
    pub pipeline: &'a str,
    pub scope: Scope,
    pub trigger: TriggerKind,
    pub account_id: Option<&'a str>,
    pub lease: std::time::Duration,
    /// The slot this run is started for (`meta_json.slotId`).
    pub slot_id: Option<i64>,
    /// The claim on that slot that must still hold for the run to start (the fence of a
    /// ticker's trigger; `None`: no fence).
    pub claim: Option<&'a SlotClaim>,
}

impl NewRun<'_> {
    /// The lock key, exactly as the table's CHECK spells it.
    pub(crate) fn lock_key(&self) -> String {
        let mut key = format!("{}:{}", self.pipeline, self.scope.as_str());
        if let Some(account) = self.account_id {
            key.push(':');
            key.push_str(account);
        }
        key
    }
}

/// What [`start`] did.
pub(crate) enum Started {
    /// The new run holds the lock.
    Run(i64),
    /// Another run holds it; `rejection_id` is the failed run recording this attempt.
    Rejected {
        rejection_id: i64,
        active_run_id: Option<i64>,
        /// When the holder's lease expires.
        lease_expires_at: Option<Timestamp>,
    },
}

/// Starts a run under its lock: finalizes an expired holder as `ABANDONED` first, then
/// inserts the started row, or, when another started run holds the key (committed, or
/// committing concurrently: the unique index waits for it), records this attempt as a
/// failed run (`RUN_ALREADY_ACTIVE`, `blockedStage: "lock"`).
pub(crate) fn start(tx: &mut Tx<'_>, new: &NewRun<'_>, now: Timestamp) -> Result<Started> {
    if let Some(claim) = new.claim {
        // The fence: a claim given back (its ticker was presumed dead) starts nothing.
        if !super::schedules::holds_claim(tx, claim)? {
            return Err(Error::IllegalTransition {
                entity: "due_run",
                id: claim.slot_id.to_string(),
                from: "no longer claimed by this ticker".into(),
                to: "fired".into(),
            });
        }
    }
    let lock_key = new.lock_key();
    if let Some(row) = tx.query_opt(ACTIVE_HOLDER, &[&lock_key])? {
        let id: i64 = row.get(0);
        let lease = opt_ts(&row, "ingest_runs", &id.to_string(), "lease_expires_at")?;
        if lease.is_some_and(|l| l <= now) {
            abandon(tx, id, now)?;
        }
    }
    let (scope, trigger) = (new.scope.as_str(), new.trigger.as_str());
    let mut meta = json!({"source": trigger, "scope": scope});
    if let Some(id) = new.slot_id {
        meta["slotId"] = json!(id);
    }
    let lease = (now + new.lease).to_string();
    let now_text = now.to_string();
    let inserted = tx.query_opt(
        INSERT_STARTED,
        &[
            &new.pipeline,
            &scope,
            &trigger,
            &lock_key,
            &new.account_id,
            &now_text,
            &lease,
            &meta,
        ],
    )?;
    if let Some(row) = inserted {
        return Ok(Started::Run(row.get(0)));
    }
    let (active_run_id, lease_expires_at) = match tx.query_opt(ACTIVE_HOLDER_ID, &[&lock_key])? {
        Some(row) => {
            let id: i64 = row.get(0);
            let lease = opt_ts(&row, "ingest_runs", &id.to_string(), "lease_expires_at")?;
            (Some(id), lease)
        }
        None => (None, None),
    };
    let err = Error::RunAlreadyActive {
        lock_key: lock_key.clone(),
        active_run_id,
        recorded_run_id: None,
        lease_expires_at,
    };
    let message = err.to_string();
    let entry = TimelineEntry::started("lock", StageKind::Lock, 1, now)
        .close(StageStatus::Failed, now)
        .with_error(err.code(), &message)
        .with_detail(Some(json!({"activeRunId": active_run_id})));
    let mut meta = json!({
        "blockedStage": "lock",
        "errorCode": err.code(),
        "source": trigger,
        "scope": scope,
        "activeRunId": active_run_id,
    });
    if let Some(id) = new.slot_id {
        meta["slotId"] = json!(id);
    }
    let timeline = serde_json::to_value([entry]).expect("entries serialize");
    let rejection_id: i64 = tx
        .query_one(
            INSERT_REJECTED,
            &[
                &new.pipeline,
                &scope,
                &trigger,
                &lock_key,
                &new.account_id,
                &now_text,
                &err.code(),
                &message,
                &timeline,
                &meta,
            ],
        )?
        .get(0);
    Ok(Started::Rejected {
        rejection_id,
        active_run_id,
        lease_expires_at,
    })
}

/// Appends `entry` to a started run's timeline; `false` if the run is no longer started.
pub(crate) fn append_entry(tx: &mut Tx<'_>, id: i64, entry: &TimelineEntry) -> Result<bool> {
    let entry = serde_json::to_value(entry).expect("entries serialize");
    Ok(tx.execute(APPEND_ENTRY, &[&id, &entry])? == 1)
}

/// Replaces the last (open) entry of a started run's timeline with its closed form.
pub(crate) fn close_last_entry(tx: &mut Tx<'_>, id: i64, entry: &TimelineEntry) -> Result<bool> {
    let entry = serde_json::to_value(entry).expect("entries serialize");
    Ok(tx.execute(REPLACE_LAST_ENTRY, &[&id, &entry])? == 1)
}

/// Sets the message and detail of a started run's open (last) entry, which stays open;
/// `false` if there is no open entry.
pub(crate) fn annotate_open_entry(
    tx: &mut Tx<'_>,
    id: i64,
    message: Option<&str>,
    detail: &Value,
) -> Result<bool> {
    Ok(tx.execute(ANNOTATE_OPEN_ENTRY, &[&id, &message, detail])? == 1)
}

/// Merges `patch` into a started run's `meta_json` (JSON merge patch, RFC 7386, as
/// SQLite's `json_patch`: keys added or replaced, `null` removes); [`Error::RunEnded`]
/// when the run is no longer started.
pub(crate) fn merge_meta(tx: &mut Tx<'_>, id: i64, patch: &Value) -> Result<()> {
    let Some(row) = tx.query_opt(META_FOR_UPDATE, &[&id])? else {
        return Err(Error::RunEnded { run_id: id });
    };
    let mut meta: Value = get(&row, "ingest_runs", &id.to_string(), "meta_json")?;
    merge_patch(&mut meta, patch);
    tx.execute(SET_META, &[&id, &meta])?;
    Ok(())
}

/// RFC 7386 JSON merge patch of `patch` into `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Runs matching `filter`, newest first (the twin of SQLite's `list`).
pub(crate) fn list(tx: &mut Tx<'_>, filter: &RunFilter) -> Result<Vec<Run>> {
    let limit = i64::from(filter.limit);
    let rows = tx.query(
        LIST,
        &[
            &filter.pipeline,
            &filter.scope.map(Scope::as_str),
            &filter.status.map(RunStatus::as_str),
            &filter.trigger.map(TriggerKind::as_str),
            &filter.before_id,
            &limit,
        ],
    )?;
    rows.iter().map(run_from_row).collect()
}

/// Moves a started run's lease to `until`; `false` if the run is no longer started.
pub(crate) fn renew_lease(tx: &mut Tx<'_>, id: i64, until: Timestamp) -> Result<bool> {
    Ok(tx.execute(RENEW_LEASE, &[&id, &until.to_string()])? == 1)
}

/// Ends a started run; `false` if it had already ended.
pub(crate) fn finish(
    tx: &mut Tx<'_>,
    id: i64,
    status: RunStatus,
    error: Option<(&str, &str)>,
    meta: &Value,
    now: Timestamp,
) -> Result<bool> {
    if !RunStatus::Started.can_transition_to(status) {
        return Err(Error::IllegalTransition {
            entity: "run",
            id: id.to_string(),
            from: RunStatus::Started.to_string(),
            to: status.to_string(),
        });
    }
    if (status == RunStatus::Failed) != error.is_some() {
        return Err(Error::invalid(
            "error",
            "a failed run has an error code, a successful one none",
        ));
    }
    let (code, message) = error.unzip();
    let n = tx.execute(
        FINISH,
        &[
            &id,
            &status.as_str(),
            &now.to_string(),
            &code,
            &message,
            meta,
        ],
    )?;
    Ok(n == 1)
}

/// Finalizes a started run whose holder stopped renewing: its open timeline entry closed
/// as failed, the run failed `ABANDONED`. `false` if it was no longer started.
pub(crate) fn abandon(tx: &mut Tx<'_>, id: i64, now: Timestamp) -> Result<bool> {
    let Some(row) = tx.query_opt(TIMELINE_OF, &[&id])? else {
        return Ok(false);
    };
    abandon_row(tx, id, &row, now)
}

fn abandon_row(tx: &mut Tx<'_>, id: i64, row: &postgres::Row, now: Timestamp) -> Result<bool> {
    let key = id.to_string();
    let lease = opt_ts(row, "ingest_runs", &key, "lease_expires_at")?
        .map(|l| l.to_string())
        .unwrap_or_default();
    let message = format!("lease expired at {lease}: the holder stopped renewing it");
    let meta = json!({"abandonedAt": now.to_string(), "errorCode": "ABANDONED"});
    end_row(tx, id, row, "ABANDONED", &message, meta, now)
}

/// Ends started run `id` (its `TIMELINE_OF` row) failed with `code`: its open timeline entry
/// closed failed with the same code and message. `false` if it was no longer started.
fn end_row(
    tx: &mut Tx<'_>,
    id: i64,
    row: &postgres::Row,
    code: &str,
    message: &str,
    mut meta: Value,
    now: Timestamp,
) -> Result<bool> {
    let text: Value = get(row, "ingest_runs", &id.to_string(), "timeline")?;
    if let Some(last) = timeline::parse(&text.to_string())?.pop() {
        if last.status == StageStatus::Started {
            meta["openStage"] = json!(last.stage);
            let closed = last
                .close(StageStatus::Failed, now)
                .with_error(code, message);
            let closed = serde_json::to_value(&closed).expect("entries serialize");
            tx.execute(REPLACE_LAST_ENTRY, &[&id, &closed])?;
        }
    }
    finish(tx, id, RunStatus::Failed, Some((code, message)), &meta, now)
}

/// Ends started run `id` failed with `code` now (an operator's `abandon` / `interrupt`);
/// `false` if it was no longer started.
pub(crate) fn end_started(
    tx: &mut Tx<'_>,
    id: i64,
    code: &str,
    message: &str,
    meta: Value,
    now: Timestamp,
) -> Result<bool> {
    let Some(row) = tx.query_opt(TIMELINE_OF, &[&id])? else {
        return Ok(false);
    };
    end_row(tx, id, &row, code, message, meta, now)
}

/// Finalizes every started run whose lease expired by `now` (and that no other sweeper
/// holds); returns their ids.
pub(crate) fn sweep(tx: &mut Tx<'_>, now: Timestamp) -> Result<Vec<i64>> {
    let rows = tx.query(EXPIRED, &[&now.to_string()])?;
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        if abandon_row(tx, id, &row, now)? {
            done.push(id);
        }
    }
    Ok(done)
}

/// The run with this id.
pub(crate) fn get_run(tx: &mut Tx<'_>, id: i64) -> Result<Run> {
    match tx.query_opt(GET, &[&id])? {
        Some(row) => run_from_row(&row),
        None => Err(Error::not_found("run", id)),
    }
}

/// $1 slot id (text): the runs started for a slot, `(id, was a lock refusal)`, oldest
/// first; served by the partial index `ingest_runs_slot`.
const SLOT_RUNS: &str = "select id, coalesce(meta_json->>'blockedStage' = 'lock', false)
     from ingest_runs where meta_json ? 'slotId' and meta_json->>'slotId' = $1
     order by id";

/// The runs started for slot `id`: `(run id, was a lock refusal)`, oldest first.
pub(crate) fn slot_runs(tx: &mut Tx<'_>, id: i64) -> Result<Vec<(i64, bool)>> {
    let rows = tx.query(SLOT_RUNS, &[&id.to_string()])?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Whether run `id` is started (`None`: no such run), holding it started (`FOR SHARE`: its
/// ending waits) until the transaction ends.
pub(crate) fn is_started(tx: &mut Tx<'_>, id: i64) -> Result<Option<bool>> {
    Ok(tx.query_opt(IS_STARTED, &[&id])?.map(|r| r.get(0)))
}

/// Deletes terminal runs that finished before `cutoff`; returns their ids.
pub(crate) fn prune(tx: &mut Tx<'_>, cutoff: Timestamp) -> Result<Vec<i64>> {
    Ok(tx
        .query(PRUNE, &[&cutoff.to_string()])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

// ---- doctor checks and copy

const MISSING: &str = "select x from unnest($1::bigint[]) x
     where not exists (select 1 from ingest_runs where id = x) order by x";

const SUCCEEDED: &str =
    "select id from ingest_runs where id = any($1::bigint[]) and status = 'success' order by id";

/// Which of `ids` name no run.
pub(crate) fn missing(client: &mut impl postgres::GenericClient, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(client
        .query(MISSING, &[&ids])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Which of `ids` name a run that ended success.
pub(crate) fn succeeded(
    client: &mut impl postgres::GenericClient,
    ids: &[i64],
) -> Result<Vec<i64>> {
    Ok(client
        .query(SUCCEEDED, &[&ids])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

use super::{err, warn, Bind, PgCheck, TableSql};

const RUNS_STATE: &str = "select id::text, d from (select id, case
       when status is null or not status = any($1::text[]) then 'status ' || quote_nullable(status) || ' is not a run status'
       when scope is null or not scope = any($2::text[]) then 'scope ' || quote_nullable(scope) || ' is not a scope'
       when trigger is null or not trigger = any($3::text[]) then 'trigger ' || quote_nullable(trigger) || ' is not a trigger kind'
     end as d from ingest_runs) t where d is not null";

const RUNS_TIMESTAMPS: &str = "select id::text, d from (select id, case
       when started_at is null or started_at !~ $1::text or coalesce(finished_at, started_at) !~ $1::text
         or coalesce(lease_expires_at, started_at) !~ $1::text
         then 'a timestamp is not fixed-width utc text'
       when (status = 'started') <> (finished_at is null)
         then 'status ' || status || (case when finished_at is null then ' without' else ' with' end) || ' finished_at'
       when (finished_at is null) <> (duration_ms is null) then 'duration_ms disagrees with finished_at'
       when finished_at < started_at then 'finished before it started'
       when duration_ms is distinct from
            round(extract(epoch from (finished_at::timestamptz - started_at::timestamptz)) * 1000)::bigint
         then 'duration_ms ' || duration_ms || ' is not finished_at - started_at'
       when status = 'started' and lease_expires_at is null then 'started without a lease'
     end as d from ingest_runs where status = any($2::text[])) t where d is not null";

const RUNS_OUTCOME: &str = "select id::text, d from (select id, case
       when (status = 'failed') <> (error_code is not null) then 'error_code disagrees with status ' || status
       when status <> 'failed' and error_message is not null then 'error_message on a ' || status || ' run'
       when lock_key is distinct from pipeline || ':' || scope || coalesce(':' || account_id, '')
         then 'lock_key ' || quote_nullable(lock_key) || ' is not pipeline:scope[:account]'
     end as d from ingest_runs where status = any($1::text[])) t where d is not null";

const RUNS_JSON: &str = "select id::text, d from (select id, case
       when timeline is null or jsonb_typeof(timeline) <> 'array' then 'timeline is not a json array'
       when exists (select 1 from jsonb_array_elements(timeline) e where jsonb_typeof(e) <> 'object')
         then 'a timeline entry is not an object'
       when meta_json is null or jsonb_typeof(meta_json) <> 'object' then 'meta_json is not a json object'
     end as d from ingest_runs) t where d is not null";

const RUNS_LOCK: &str =
    "select lock_key, count(*) || ' started runs hold this lock: ' || string_agg(id::text, ', ' order by id)
     from ingest_runs where status = 'started' group by lock_key having count(*) > 1";

const RUNS_ABANDONED: &str =
    "select id::text, 'started, lease expired at ' || lease_expires_at || ' (needs a sweep)'
     from ingest_runs where status = 'started' and lease_expires_at < $1::text";

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[
    err(
        "state",
        "ingest_runs",
        RUNS_STATE,
        &[Bind::RunStatuses, Bind::Scopes, Bind::Triggers],
    ),
    err(
        "timestamps",
        "ingest_runs",
        RUNS_TIMESTAMPS,
        &[Bind::Ts, Bind::RunStatuses],
    ),
    err("outcome", "ingest_runs", RUNS_OUTCOME, &[Bind::RunStatuses]),
    err("json", "ingest_runs", RUNS_JSON, &[]),
    err("run_lock", "ingest_runs", RUNS_LOCK, &[]),
    warn("abandoned_run", "ingest_runs", RUNS_ABANDONED, &[Bind::Now]),
];

/// This module's table, for copy and doctor.
pub(crate) const TABLES: &[TableSql] = &[TableSql {
    table: "ingest_runs",
    any_row: "select exists (select 1 from ingest_runs)",
        lock: "lock table ingest_runs in exclusive mode",
    copy_in: "copy ingest_runs (id, pipeline, scope, trigger, status, lock_key, account_id, started_at, lease_expires_at, finished_at, duration_ms, error_code, error_message, timeline, meta_json) from stdin",
    sequence: "select coalesce(max(id), 0)::bigint,
         coalesce(pg_sequence_last_value(pg_get_serial_sequence('ingest_runs', 'id')), 0)::bigint from ingest_runs",
    set_sequence: "select setval(pg_get_serial_sequence('ingest_runs', 'id'), $1::bigint)",
}];

// ---- the Trust UI's bounded reads (the twins of the SQLite module's `UI_*`)

/// $1 cap. The runs of each scope in each status, capped, in one statement: a column
/// `<scope>_<status>` per pair, each count with its scope and status written in the SQL:
/// one round trip instead of six, and a plan per pair. With `scope = $1 and status = $2`, a
/// generic plan (which PostgreSQL keeps for a prepared statement once it looks no dearer
/// than the custom ones, or always under `plan_cache_mode = force_generic_plan`) is blind
/// to the status and scans the table for one that few runs have (measured: 95 ms at
/// 200,000 runs for `started`); with the values in the SQL each count takes the index its
/// status needs (P8's `(scope, status)`, or the lease index for `started`) and stops at
/// the cap (0.4-0.8 ms for all six there, forced generic).
#[cfg(feature = "http")]
const UI_RUNS_CAPPED: &str = "select
   (select count(*) from (select 1 from ingest_runs
      where scope = 'targets' and status = 'started' limit $1) c) as targets_started,
   (select count(*) from (select 1 from ingest_runs
      where scope = 'targets' and status = 'success' limit $1) c) as targets_success,
   (select count(*) from (select 1 from ingest_runs
      where scope = 'targets' and status = 'failed' limit $1) c) as targets_failed,
   (select count(*) from (select 1 from ingest_runs
      where scope = 'universe' and status = 'started' limit $1) c) as universe_started,
   (select count(*) from (select 1 from ingest_runs
      where scope = 'universe' and status = 'success' limit $1) c) as universe_success,
   (select count(*) from (select 1 from ingest_runs
      where scope = 'universe' and status = 'failed' limit $1) c) as universe_failed";

/// $1 limit
#[cfg(feature = "http")]
const UI_RUNS_FAILED_NEWEST: &str =
    "select id, pipeline, scope, trigger, started_at, error_code, error_message,
       meta_json->>'blockedStage' as blocked_stage
     from ingest_runs
     where status = 'failed' order by started_at desc, id desc limit $1";

/// Per scope (in [`Scope::ALL`] order), its runs per status (in [`RunStatus::ALL`] order),
/// capped; see [`UI_RUNS_CAPPED`].
#[cfg(feature = "http")]
pub(crate) fn ui_run_counts(
    tx: &mut Tx<'_>,
) -> Result<Vec<(Scope, Vec<crate::storage::ui::Capped>)>> {
    use crate::storage::ui::{Capped, COUNT_CAP};
    let row = tx.query_one(UI_RUNS_CAPPED, &[&(COUNT_CAP + 1)])?;
    Scope::ALL
        .iter()
        .map(|&scope| {
            let counts = RunStatus::ALL
                .iter()
                .map(|status| {
                    let column = format!("{}_{}", scope.as_str(), status.as_str());
                    Ok(Capped::of(get(&row, "ingest_runs", "?", &column)?))
                })
                .collect::<Result<_>>()?;
            Ok((scope, counts))
        })
        .collect()
}

/// The newest failed runs, at most `limit`.
#[cfg(feature = "http")]
pub(crate) fn ui_failed_runs(
    tx: &mut Tx<'_>,
    limit: i64,
) -> Result<Vec<crate::storage::ui::FailedRun>> {
    tx.query(UI_RUNS_FAILED_NEWEST, &[&limit])?
        .iter()
        .map(|r| {
            let id: i64 = get(r, "ingest_runs", "?", "id")?;
            let k = id.to_string();
            Ok(crate::storage::ui::FailedRun {
                id,
                pipeline: get(r, "ingest_runs", &k, "pipeline")?,
                scope: get(r, "ingest_runs", &k, "scope")?,
                trigger: get(r, "ingest_runs", &k, "trigger")?,
                started_at: ts(r, "ingest_runs", &k, "started_at")?,
                error_code: get(r, "ingest_runs", &k, "error_code")?,
                error_message: get(r, "ingest_runs", &k, "error_message")?,
                blocked_stage: get(r, "ingest_runs", &k, "blocked_stage")?,
            })
        })
        .collect()
}
