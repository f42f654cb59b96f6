//! SQL for `jobs` and its `audit_log` rows on PostgreSQL, the twin of `storage::jobs`.
//! Writes are guarded updates carrying the expected state and attempt; a write that
//! matched nothing is explained by [`diagnose`]. Claims skip rows other transactions hold
//! (`FOR UPDATE SKIP LOCKED`), so claimers on many nodes never wait on each other.

use serde_json::Value;

use super::job_events::event_of_changed_job;
use super::{get, opt_ts, parsed, ts};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::integrity;
use crate::job::state::JobState;
use crate::job::types::{Job, JobStats, NewJob};
use crate::pg::engine::{Exec, Tx};
use postgres::types::ToSql;

/// Every column of a [`Job`], as [`job_from_row`] reads them by name.
macro_rules! job_columns {
    () => {
        "id, user_id, kind, state, input, result, error_code, error_message, \
         progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, \
         attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at, \
         cancel_reason"
    };
}

/// The job's newest event (seq, chain hash), read in the statement that changes the job (the
/// row is locked by then), so appending the change's event needs no look-up of its own.
macro_rules! last_event {
    () => {
        ", job_events_last_seq(id) as last_seq, job_events_last_hash(id) as last_hash"
    };
}

/// $1 user_id, $2 kind, $3 input, $4 tags, $5 parent_id, $6 timeout_ms, $7 max_retries, $8 now,
/// $9 the `created` event's payload (JSON text): the job and its first event in one
/// statement.
const INSERT: &str = concat!(
    "with changed as (
     insert into jobs (user_id, kind, input, tags, parent_id, timeout_ms, max_retries, created_at, updated_at)
     values ($1, $2, $3, $4, $5, $6, $7, $8, $8)
     returning ",
    job_columns!(),
    ")",
    event_of_changed_job!("created", "$8", "$9::text"),
    " select ",
    job_columns!(),
    " from changed"
);

/// $1 id
const GET: &str = concat!("select ", job_columns!(), " from jobs where id = $1");
/// $1 user_id, $2 state, $3 kind, $4 before (each null: any), $5 limit: newest first.
const LIST: &str = concat!(
    "select ",
    job_columns!(),
    " from jobs
     where ($1::text is null or user_id = $1) and ($2::text is null or state = $2)
       and ($3::text is null or kind = $3) and ($4::bigint is null or id < $4)
     order by id desc limit $5"
);
/// $1 id
const EXISTS: &str = "select exists (select 1 from jobs where id = $1)";
/// $1 id
const STATE_OF: &str = "select state, attempt from jobs where id = $1";
/// $1 id: the state, with the row locked for the rest of the transaction.
const STATE_OF_LOCKED: &str = "select state, attempt from jobs where id = $1 for update";

/// $1 worker, $2 now, $3 any kind, $4 kinds (text[]), $5 the worker as a JSON string: the
/// oldest created job, skipping rows another claimer holds, and its `claimed` event (payload
/// `{"attempt":..,"worker":..}`, serde_json's spelling: keys sorted, no spaces) in the same
/// statement. The pick is `jobs_claimable` (schema version 7): `select id from jobs where
/// state = 'created' and ($3 or kind = any($4)) order by id nulls first limit 1 for update
/// skip locked`, planned so that it walks the `jobs_claim` index in id order whatever the
/// table's statistics say (schema versions 7 and 10: never a sort of the whole queue, never
/// a walk of the primary key past every claimed job).
const CLAIM: &str = concat!(
    "with changed as (
     update jobs set state = 'running', attempt = attempt + 1, worker_id = $1,
        started_at = greatest($2, created_at), heartbeat_at = $2, updated_at = $2
     where id = (select jobs_claimable($3, $4))
     returning ",
    job_columns!(),
    ")",
    event_of_changed_job!(
        "claimed",
        "$2",
        "'{\"attempt\":' || changed.attempt || ',\"worker\":' || $5::text || '}'"
    ),
    " select ",
    job_columns!(),
    " from changed"
);

/// $1 id, $2 attempt, $3 now
const HEARTBEAT: &str = "update jobs set heartbeat_at = $3, updated_at = $3
     where id = $1 and attempt = $2 and state = 'running' returning id";

/// $1 id, $2 attempt, $3 now, $4 progress, $5 step, $6 the `progress` event's payload (JSON
/// text): the guarded write and its event in one statement.
const PROGRESS: &str = concat!(
    "with changed as (
     update jobs set progress = $4, step = $5, heartbeat_at = $3, updated_at = $3
     where id = $1 and attempt = $2 and state = 'running'
     returning id)",
    event_of_changed_job!("progress", "$3", "$6::text"),
    " select id from changed"
);

/// $1 id, $2 attempt, $3 now, $4 checkpoint, $5 the `checkpoint` event's payload (JSON
/// text): the guarded write and its event in one statement.
const CHECKPOINT: &str = concat!(
    "with changed as (
     update jobs set checkpoint = $4, checkpoint_at = $3, heartbeat_at = $3, updated_at = $3
     where id = $1 and attempt = $2 and state = 'running'
     returning id)",
    event_of_changed_job!("checkpoint", "$3", "$5::text"),
    " select id from changed"
);

/// $1 id, $2 attempt, $3 now, $4 result, $5 the `completed` event's payload (JSON text): the
/// guarded complete and its event in one statement.
const COMPLETE: &str = concat!(
    "with changed as (
     update jobs set state = 'completed', result = $4, progress = 100,
        finished_at = greatest($3, started_at), updated_at = $3
     where id = $1 and attempt = $2 and state = 'running'
     returning ",
    job_columns!(),
    ")",
    event_of_changed_job!("completed", "$3", "$5::text"),
    " select ",
    job_columns!(),
    " from changed"
);

/// $1 id, $2 attempt, $3 now, $4 code, $5 message
const FAIL: &str = concat!(
    "update jobs set state = 'failed', error_code = $4, error_message = $5,
        finished_at = greatest($3, started_at), updated_at = $3
     where id = $1 and attempt = $2 and state = 'running'
     returning ",
    job_columns!()
);

/// $1 id, $2 from, $3 now, $4 to, $5 cancel reason, $6 error code, $7 error message: an
/// operator's transition (cancel, pause, resume, mark failed), guarded on the state read (and
/// locked) just before; the twin of SQLite's `SET_STATE`: back to `created` clears the
/// worker, start and heartbeat; a terminal state sets `finished_at`; `failed` takes the
/// error, any other state clears it.
const SET_STATE: &str = concat!(
    "update jobs set state = $4, updated_at = $3,
        finished_at = case when $4 in ('completed', 'failed', 'cancelled')
                           then greatest($3, coalesce(started_at, created_at)) end,
        worker_id = case when $4 = 'created' then null else worker_id end,
        started_at = case when $4 = 'created' then null else started_at end,
        heartbeat_at = case when $4 = 'created' then null else heartbeat_at end,
        error_code = case when $4 = 'failed' then $6::text end,
        error_message = case when $4 = 'failed' then $7::text end,
        cancel_reason = case when $4 = 'cancelled' then $5 end
     where id = $1 and state = $2
     returning ",
    job_columns!()
);

/// $1 id, $2 from, $3 now, $4 new input (null: keep): failed|cancelled -> created from
/// scratch, the twin of SQLite's `RESTART`.
const RESTART: &str = concat!(
    "update jobs set state = 'created', input = coalesce($4, input),
        result = null, error_code = null, error_message = null, progress = 0, step = null,
        checkpoint = null, checkpoint_at = null, cancel_reason = null,
        worker_id = null, started_at = null, heartbeat_at = null, finished_at = null,
        updated_at = $3
     where id = $1 and state = $2
     returning ",
    job_columns!()
);

/// $1 user_id, $2 any state, $3 states (text[]), $4 limit: a user's jobs, newest first.
const LIST_BY_USER: &str = concat!(
    "select ",
    job_columns!(),
    " from jobs where user_id = $1 and ($2 or state = any($3))
     order by id desc limit $4"
);
/// Every running job, stalest heartbeat first.
const RUNNING: &str = concat!(
    "select ",
    job_columns!(),
    " from jobs where state = 'running' order by heartbeat_at, id"
);
/// $1 cutoff: running jobs whose heartbeat is older, stalest first.
const STALE: &str = concat!(
    "select ",
    job_columns!(),
    " from jobs where state = 'running' and heartbeat_at < $1 order by heartbeat_at, id"
);
/// Paused jobs holding a checkpoint, oldest first.
const RESUMABLE: &str = concat!(
    "select ",
    job_columns!(),
    " from jobs where state = 'paused' and checkpoint is not null order by id"
);
/// $1 user_id (null: every user): the count per kind and state, and each group's oldest
/// running heartbeat, in one statement (one snapshot).
const STATS: &str = "select kind, state, count(*)::bigint as n,
        min(heartbeat_at) filter (where state = 'running') as oldest
     from jobs where ($1::text is null or user_id = $1) group by kind, state";

/// $1 id, $2 worker, $3 now: a paused job resumed straight onto a worker (paused ->
/// running, next attempt), the twin of SQLite's `CLAIM_PAUSED`.
const CLAIM_PAUSED: &str = concat!(
    "update jobs set state = 'running', attempt = attempt + 1, worker_id = $2,
        heartbeat_at = $3, updated_at = $3
     where id = $1 and state = 'paused'
     returning ",
    job_columns!()
);

/// $1 id: the job, its row locked for the rest of the transaction.
const GET_LOCKED: &str = concat!(
    "select ",
    job_columns!(),
    " from jobs where id = $1 for update"
);
/// $1 id: a terminal job (its events go by the foreign key's cascade, which
/// `job_events_no_delete` allows once the job is gone; its audit rows stay).
const DELETE: &str =
    "delete from jobs where id = $1 and state in ('completed', 'failed', 'cancelled')";

/// $1 id, $2 now: the recovery counter back to zero (a completed job is final).
const RESET_RECOVERY: &str = "update jobs set recovery_count = 0, updated_at = $2
     where id = $1 and state <> 'completed'";

/// The audit chain is one sequence across writers: its writers take turns (operator
/// actions only, never a worker's hot path).
const AUDIT_LOCK: &str = "lock table audit_log in exclusive mode";
/// The newest audit row's chain hash, which the next row follows.
const AUDIT_LAST_HASH: &str = "select hash from audit_log order by id desc limit 1";
/// $1 entity, $2 entity_id, $3 action, $4 actor, $5 at, $6 detail (text), $7 hash
const AUDIT: &str = "insert into audit_log (entity, entity_id, action, actor, at, detail, hash)
     values ($1, $2, $3, $4, $5, ($6::text)::json, $7)";

/// Reads one row selected with [`job_columns!`], by column name.
pub(crate) fn job_from_row(r: &postgres::Row) -> Result<Job> {
    let id: i64 = get(r, "jobs", "?", "id")?;
    let key = id.to_string();
    let k = key.as_str();
    let tags: Value = get(r, "jobs", k, "tags")?;
    let tags = match tags {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let progress: i32 = get(r, "jobs", k, "progress")?;
    Ok(Job {
        id,
        user_id: get(r, "jobs", k, "user_id")?,
        kind: get(r, "jobs", k, "kind")?,
        state: parsed(r, "jobs", k, "state")?,
        input: get(r, "jobs", k, "input")?,
        result: get(r, "jobs", k, "result")?,
        error_code: get(r, "jobs", k, "error_code")?,
        cancel_reason: get(r, "jobs", k, "cancel_reason")?,
        error_message: get(r, "jobs", k, "error_message")?,
        progress: u8::try_from(progress).map_err(|_| {
            super::corrupt("jobs", k, "progress", format!("{progress} is out of range"))
        })?,
        step: get(r, "jobs", k, "step")?,
        checkpoint: get(r, "jobs", k, "checkpoint")?,
        checkpoint_at: opt_ts(r, "jobs", k, "checkpoint_at")?,
        tags,
        parent_id: get(r, "jobs", k, "parent_id")?,
        timeout_ms: get(r, "jobs", k, "timeout_ms")?,
        max_retries: get(r, "jobs", k, "max_retries")?,
        attempt: get(r, "jobs", k, "attempt")?,
        worker_id: get(r, "jobs", k, "worker_id")?,
        recovery_count: get(r, "jobs", k, "recovery_count")?,
        created_at: ts(r, "jobs", k, "created_at")?,
        updated_at: ts(r, "jobs", k, "updated_at")?,
        started_at: opt_ts(r, "jobs", k, "started_at")?,
        heartbeat_at: opt_ts(r, "jobs", k, "heartbeat_at")?,
        finished_at: opt_ts(r, "jobs", k, "finished_at")?,
    })
}

/// The job's newest event as read by a statement with [`last_event!`]: `(seq, hash)`.
pub(crate) type LastEvent = Option<(i64, String)>;

fn last_event(r: &postgres::Row) -> Result<LastEvent> {
    let id: i64 = get(r, "jobs", "?", "id")?;
    let key = id.to_string();
    let seq: Option<i64> = get(r, "job_events", &key, "last_seq")?;
    let hash: Option<String> = get(r, "job_events", &key, "last_hash")?;
    Ok(seq.zip(hash))
}

/// Inserts a validated new job with its `created` event, whose payload is the JSON text
/// `payload`, in one statement.
pub(crate) fn insert(
    tx: &mut impl Exec,
    new: &NewJob,
    payload: &str,
    now: Timestamp,
) -> Result<Job> {
    let tags = Value::from(new.tags.clone());
    let timeout_ms = new
        .timeout
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if let Some(parent) = new.parent_id {
        if !exists(tx, parent)? {
            return Err(Error::invalid(
                "parent_id",
                format!("job {parent} does not exist"),
            ));
        }
    }
    let max_retries = i64::from(new.max_retries);
    let row = tx.query_opt(
        INSERT,
        &[
            &new.user_id,
            &new.kind,
            &new.input,
            &tags,
            &new.parent_id,
            &timeout_ms,
            &max_retries,
            &now.to_string(),
            &payload,
        ],
    )?;
    match row {
        Some(row) => job_from_row(&row),
        None => Err(super::corrupt(
            "jobs",
            "?",
            "id",
            "the insert returned no row (a trigger skipped it)".to_string(),
        )),
    }
}

/// Whether job `id` exists.
pub(crate) fn exists(tx: &mut impl Exec, id: i64) -> Result<bool> {
    Ok(tx
        .query_opt(EXISTS, &[&id])?
        .is_some_and(|r| r.get::<_, bool>(0)))
}

/// The job with this id.
pub(crate) fn get_job(tx: &mut Tx<'_>, id: i64) -> Result<Job> {
    match tx.query_opt(GET, &[&id])? {
        Some(row) => job_from_row(&row),
        None => Err(Error::not_found("job", id)),
    }
}

/// Jobs matching every given filter (`None`: any), newest first, at most `limit`.
pub(crate) fn list(
    tx: &mut Tx<'_>,
    user_id: Option<&str>,
    state: Option<JobState>,
    kind: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<Job>> {
    let state = state.map(|s| s.as_str());
    let rows = tx.query(LIST, &[&user_id, &state, &kind, &before, &i64::from(limit)])?;
    rows.iter().map(job_from_row).collect()
}

/// Claims the oldest created job of `kinds` (any kind if empty) for `worker`, appending its
/// `claimed` event, in one statement.
pub(crate) fn claim(
    tx: &mut impl Exec,
    worker: &str,
    kinds: &[&str],
    now: Timestamp,
) -> Result<Option<Job>> {
    let any = kinds.is_empty();
    let worker_json = Value::from(worker).to_string();
    tx.query_opt(
        CLAIM,
        &[&worker, &now.to_string(), &any, &kinds, &worker_json],
    )?
    .map(|r| job_from_row(&r))
    .transpose()
}

fn state_of(tx: &mut impl Exec, sql: &'static str, id: i64) -> Result<(JobState, i64)> {
    let row = tx
        .query_opt(sql, &[&id])?
        .ok_or_else(|| Error::not_found("job", id))?;
    let key = id.to_string();
    Ok((
        parsed(&row, "jobs", &key, "state")?,
        get(&row, "jobs", &key, "attempt")?,
    ))
}

/// Explains why a worker's guarded write matched no row: unknown job, stale attempt, or the
/// attempt still owns the job but it is no longer running.
pub(crate) fn diagnose(tx: &mut impl Exec, id: i64, attempt: i64) -> Error {
    match state_of(tx, STATE_OF, id) {
        Err(e) => e,
        Ok((state, current)) if current != attempt => Error::StaleAttempt {
            job_id: id,
            attempt,
            current,
            state: state.to_string(),
        },
        Ok((state, _)) => Error::JobNotRunning { job_id: id, state },
    }
}

/// A guarded write of one statement (`returning` a row when it matched): `Ok` when it did,
/// else why not ([`diagnose`]).
fn guarded(
    tx: &mut impl Exec,
    sql: &'static str,
    id: i64,
    attempt: i64,
    rest: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<()> {
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&id, &attempt];
    params.extend_from_slice(rest);
    match tx.query_opt(sql, &params)? {
        Some(_) => Ok(()),
        None => Err(diagnose(tx, id, attempt)),
    }
}

fn guarded_returning(
    tx: &mut Tx<'_>,
    sql: &'static str,
    id: i64,
    attempt: i64,
    rest: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Job> {
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&id, &attempt];
    params.extend_from_slice(rest);
    match tx.query_opt(sql, &params)? {
        Some(row) => job_from_row(&row),
        None => Err(diagnose(tx, id, attempt)),
    }
}

/// Heartbeat of the worker holding `attempt`: one statement, so it runs in autocommit
/// ([`PgEngine::write_one`](crate::pg::PgEngine)); the fence's refusal is diagnosed after it.
pub(crate) fn heartbeat(tx: &mut impl Exec, id: i64, attempt: i64, now: Timestamp) -> Result<()> {
    match tx.query_opt(HEARTBEAT, &[&id, &attempt, &now.to_string()])? {
        Some(_) => Ok(()),
        None => Err(diagnose(tx, id, attempt)),
    }
}

/// Progress and step of the worker holding `attempt`, appending the `progress` event whose
/// payload is the JSON text `payload`, in one statement.
pub(crate) fn progress(
    tx: &mut impl Exec,
    id: i64,
    attempt: i64,
    pct: u8,
    step: Option<&str>,
    payload: &str,
    now: Timestamp,
) -> Result<()> {
    let pct = i32::from(pct);
    let now = now.to_string();
    guarded(tx, PROGRESS, id, attempt, &[&now, &pct, &step, &payload])
}

/// The checkpoint of the worker holding `attempt`, appending the `checkpoint` event whose
/// payload is the JSON text `payload`, in one statement.
pub(crate) fn checkpoint(
    tx: &mut impl Exec,
    id: i64,
    attempt: i64,
    checkpoint: &Value,
    payload: &str,
    now: Timestamp,
) -> Result<()> {
    let now = now.to_string();
    guarded(tx, CHECKPOINT, id, attempt, &[&now, checkpoint, &payload])
}

/// running -> completed with `result`, appending the `completed` event whose payload is the
/// JSON text `payload`, in one statement.
pub(crate) fn complete(
    tx: &mut impl Exec,
    id: i64,
    attempt: i64,
    result: &Value,
    payload: &str,
    now: Timestamp,
) -> Result<Job> {
    let now = now.to_string();
    match tx.query_opt(COMPLETE, &[&id, &attempt, &now, result, &payload])? {
        Some(row) => job_from_row(&row),
        None => Err(diagnose(tx, id, attempt)),
    }
}

/// running -> failed with `code` and `message`.
pub(crate) fn fail(
    tx: &mut Tx<'_>,
    id: i64,
    attempt: i64,
    code: &str,
    message: &str,
    now: Timestamp,
) -> Result<Job> {
    guarded_returning(tx, FAIL, id, attempt, &[&now.to_string(), &code, &message])
}

/// Restarts a failed or cancelled job from scratch (input replaced when given), under the
/// row lock; returns the state it left and the job.
pub(crate) fn restart(
    tx: &mut Tx<'_>,
    id: i64,
    input: Option<&Value>,
    now: Timestamp,
) -> Result<(JobState, Job)> {
    let (from, _) = state_of(tx, STATE_OF_LOCKED, id)?;
    if !matches!(from, JobState::Failed | JobState::Cancelled) {
        return Err(Error::IllegalTransition {
            entity: "job",
            id: id.to_string(),
            from: from.to_string(),
            to: JobState::Created.to_string(),
        });
    }
    let row = tx.query_one(RESTART, &[&id, &from.as_str(), &now.to_string(), &input])?;
    Ok((from, job_from_row(&row)?))
}

/// An operator moves job `id` from one of `allowed` to `to` (cancel, pause, resume, mark
/// failed with `error`), under the row lock; returns the state it left and the job.
pub(crate) fn transition(
    tx: &mut Tx<'_>,
    id: i64,
    allowed: &[JobState],
    to: JobState,
    reason: Option<&str>,
    error: Option<(&str, &str)>,
    now: Timestamp,
) -> Result<(JobState, Job)> {
    let (from, _) = state_of(tx, STATE_OF_LOCKED, id)?;
    if !allowed.contains(&from) || !from.can_transition_to(to) {
        return Err(illegal(id, from, &to.to_string()));
    }
    let (code, message) = error.unzip();
    let row = tx.query_one(
        SET_STATE,
        &[
            &id,
            &from.as_str(),
            &now.to_string(),
            &to.as_str(),
            &reason,
            &code,
            &message,
        ],
    )?;
    Ok((from, job_from_row(&row)?))
}

fn illegal(id: i64, from: JobState, to: &str) -> Error {
    Error::IllegalTransition {
        entity: "job",
        id: id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

fn jobs_of(tx: &mut Tx<'_>, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Job>> {
    tx.query(sql, params)?.iter().map(job_from_row).collect()
}

/// A user's jobs in one of `states` (every state when empty), newest first.
pub(crate) fn list_by_user(
    tx: &mut Tx<'_>,
    user_id: &str,
    states: &[JobState],
    limit: u32,
) -> Result<Vec<Job>> {
    let any = states.is_empty();
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    jobs_of(
        tx,
        LIST_BY_USER,
        &[&user_id, &any, &states, &i64::from(limit)],
    )
}

/// Every running job, stalest heartbeat first.
pub(crate) fn running(tx: &mut Tx<'_>) -> Result<Vec<Job>> {
    jobs_of(tx, RUNNING, &[])
}

/// Running jobs whose last heartbeat is older than `cutoff`, stalest first.
pub(crate) fn stale(tx: &mut Tx<'_>, cutoff: Timestamp) -> Result<Vec<Job>> {
    jobs_of(tx, STALE, &[&cutoff.to_string()])
}

/// Paused jobs that hold a checkpoint.
pub(crate) fn resumable(tx: &mut Tx<'_>) -> Result<Vec<Job>> {
    jobs_of(tx, RESUMABLE, &[])
}

/// Counts per state and per kind (of one user's jobs when given) and the oldest running
/// heartbeat, as SQLite's `stats`.
pub(crate) fn stats(tx: &mut Tx<'_>, user_id: Option<&str>) -> Result<JobStats> {
    let mut stats = JobStats::default();
    for r in tx.query(STATS, &[&user_id])? {
        let kind: String = get(&r, "jobs", "?", "kind")?;
        let state: JobState = parsed(&r, "jobs", &kind, "state")?;
        let n: i64 = get(&r, "jobs", &kind, "n")?;
        let n = u64::try_from(n).unwrap_or(0);
        stats.by_state.add(state, n);
        stats.by_kind.entry(kind.clone()).or_default().add(state, n);
        stats.total += n;
        if let Some(oldest) = opt_ts(&r, "jobs", &kind, "oldest")? {
            let min = stats
                .oldest_running_heartbeat
                .map_or(oldest, |o| o.min(oldest));
            stats.oldest_running_heartbeat = Some(min);
        }
    }
    Ok(stats)
}

/// A paused job resumed directly on `worker` (paused -> running, next attempt):
/// `ILLEGAL_TRANSITION` from any other state.
pub(crate) fn claim_paused(tx: &mut Tx<'_>, id: i64, worker: &str, now: Timestamp) -> Result<Job> {
    match tx.query_opt(CLAIM_PAUSED, &[&id, &worker, &now.to_string()])? {
        Some(row) => job_from_row(&row),
        None => {
            let (state, _) = state_of(tx, STATE_OF, id)?;
            Err(illegal(id, state, JobState::Running.as_str()))
        }
    }
}

/// Deletes job `id` if it is terminal (`ILLEGAL_TRANSITION` to `deleted` otherwise), under
/// the row lock; returns the job as it was.
pub(crate) fn delete(tx: &mut Tx<'_>, id: i64) -> Result<Job> {
    let job = match tx.query_opt(GET_LOCKED, &[&id])? {
        Some(row) => job_from_row(&row)?,
        None => return Err(Error::not_found("job", id)),
    };
    if !job.state.is_terminal() {
        return Err(illegal(id, job.state, "deleted"));
    }
    tx.execute(DELETE, &[&id])?;
    Ok(job)
}

/// Sets a job's recovery counter back to zero; `ILLEGAL_TRANSITION` for a completed job.
pub(crate) fn reset_recovery_count(tx: &mut Tx<'_>, id: i64, now: Timestamp) -> Result<()> {
    if tx.execute(RESET_RECOVERY, &[&id, &now.to_string()])? == 0 {
        let (state, _) = state_of(tx, STATE_OF, id)?;
        return Err(illegal(id, state, state.as_str()));
    }
    Ok(())
}

/// Appends an audit row for job `id`, chained on the newest row (src/integrity.rs).
pub(crate) fn audit(
    tx: &mut Tx<'_>,
    id: i64,
    action: &str,
    actor: &str,
    detail: &Value,
    now: Timestamp,
) -> Result<()> {
    audit_entity(tx, "job", id, action, actor, detail, now)
}

/// Appends an audit row for `entity` `id` (`job`, `schedule`), chained on the newest row.
pub(crate) fn audit_entity(
    tx: &mut Tx<'_>,
    entity: &str,
    id: i64,
    action: &str,
    actor: &str,
    detail: &Value,
    now: Timestamp,
) -> Result<()> {
    tx.execute(AUDIT_LOCK, &[])?;
    let prev: Option<String> = tx.query_opt(AUDIT_LAST_HASH, &[])?.map(|r| r.get(0));
    let prev = prev.unwrap_or_else(|| integrity::GENESIS.to_string());
    let (entity_id, at, text) = (id.to_string(), now.to_string(), detail.to_string());
    let hash = integrity::audit_hash(&prev, entity, &entity_id, action, actor, &at, &text);
    tx.execute(
        AUDIT,
        &[&entity, &entity_id, &action, &actor, &at, &text, &hash],
    )?;
    Ok(())
}

/// The columns of a [`Candidate`], the one list [`candidate`] reads by name.
macro_rules! candidate_columns {
    () => {
        "id, attempt, checkpoint is not null as has_checkpoint, recovery_count"
    };
}

/// $1 cutoff, $2 max: running jobs whose heartbeat is older than the cutoff, stalest
/// first, locked for this supervisor; rows another supervisor (or the job's worker, mid
/// write) holds are skipped, so supervisors on every node never wait on each other nor
/// recover the same attempt twice.
const STALE_CANDIDATES: &str = concat!(
    "select ",
    candidate_columns!(),
    " from jobs
     where state = 'running' and heartbeat_at < $1
     order by heartbeat_at, id
     limit $2
     for update skip locked"
);

/// $1 id: one running job, whatever its heartbeat (an operator's recovery), locked.
const RUNNING_CANDIDATE: &str = concat!(
    "select ",
    candidate_columns!(),
    " from jobs where id = $1 and state = 'running' for update"
);

/// $1 id, $2 attempt, $3 to, $4 now, $5 code, $6 message: the supervisor's guarded update,
/// only the attempt it saw, only while still running (the twin of SQLite's `RECOVER`).
const RECOVER: &str = concat!(
    "update jobs set state = $3, recovery_count = recovery_count + 1, updated_at = $4,
        finished_at = case when $3 = 'failed' then greatest($4, started_at) end,
        error_code = case when $3 = 'failed' then $5 end,
        error_message = case when $3 = 'failed' then $6 end,
        worker_id = case when $3 = 'created' then null else worker_id end,
        started_at = case when $3 = 'created' then null else started_at end,
        heartbeat_at = case when $3 = 'created' then null else heartbeat_at end
     where id = $1 and attempt = $2 and state = 'running'
     returning id",
    last_event!()
);

/// A running job the supervisor may recover.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: i64,
    pub attempt: i64,
    pub has_checkpoint: bool,
    pub recovery_count: i64,
}

fn candidate(r: &postgres::Row) -> Result<Candidate> {
    let id: i64 = get(r, "jobs", "?", "id")?;
    let key = id.to_string();
    Ok(Candidate {
        id,
        attempt: get(r, "jobs", &key, "attempt")?,
        has_checkpoint: get(r, "jobs", &key, "has_checkpoint")?,
        recovery_count: get(r, "jobs", &key, "recovery_count")?,
    })
}

/// Running jobs whose heartbeat is before `cutoff` (at most `max`, stalest first), or only
/// job `only` if it is running, whatever its heartbeat; each locked until the transaction
/// ends.
pub(crate) fn recovery_candidates(
    tx: &mut Tx<'_>,
    cutoff: Timestamp,
    max: i64,
    only: Option<i64>,
) -> Result<Vec<Candidate>> {
    let rows = match only {
        None => tx.query(STALE_CANDIDATES, &[&cutoff.to_string(), &max])?,
        Some(id) => tx.query(RUNNING_CANDIDATE, &[&id])?,
    };
    rows.iter().map(candidate).collect()
}

/// Moves a running job at `c.attempt` to `to` (paused, created or failed with `error`),
/// counting the recovery: the job's newest event before the change, or `None` when the job
/// moved on meanwhile (nothing written).
pub(crate) fn recover(
    tx: &mut Tx<'_>,
    c: &Candidate,
    to: JobState,
    error: Option<(&str, &str)>,
    now: Timestamp,
) -> Result<Option<LastEvent>> {
    debug_assert!(JobState::Running.can_transition_to(to));
    let (code, message) = error.unzip();
    let row = tx.query_opt(
        RECOVER,
        &[
            &c.id,
            &c.attempt,
            &to.as_str(),
            &now.to_string(),
            &code,
            &message,
        ],
    )?;
    row.map(|r| last_event(&r)).transpose()
}

// ---- doctor checks and copy: the rows' rules (migrations) restated as queries that list
// offenders, and each table's copy statements

use super::{err, warn, Bind, PgCheck, TableSql};

const JOBS_STATE: &str =
    "select id::text, 'state ' || quote_nullable(state) || ' is not a job state'
     from jobs where state is null or not state = any($1::text[])";

const JOBS_TIMESTAMPS: &str = "select id::text, d from (select id, case
       when created_at is null or created_at !~ $1::text or updated_at is null or updated_at !~ $1::text
         or coalesce(started_at, created_at) !~ $1::text or coalesce(heartbeat_at, created_at) !~ $1::text
         or coalesce(finished_at, created_at) !~ $1::text or coalesce(checkpoint_at, created_at) !~ $1::text
         then 'a timestamp is not fixed-width utc text'
       when (state in ('completed', 'failed', 'cancelled')) <> (finished_at is not null)
         then 'state ' || state || (case when finished_at is null then ' without' else ' with' end) || ' finished_at'
       when finished_at < created_at then 'finished before it was created'
       when started_at < created_at then 'started before it was created'
       when state in ('running', 'paused', 'completed') and started_at is null then 'state ' || state || ' without started_at'
       when state = 'created' and (started_at is not null or heartbeat_at is not null or worker_id is not null)
         then 'created with a start, heartbeat or worker'
       when state = 'running' and (heartbeat_at is null or worker_id is null or attempt < 1)
         then 'running without heartbeat, worker or attempt'
       when (checkpoint is null) <> (checkpoint_at is null) then 'checkpoint and checkpoint_at disagree'
     end as d from jobs where state = any($2::text[])) t where d is not null";

const JOBS_OUTCOME: &str = "select id::text, d from (select id, case
       when state <> 'completed' and result is not null then 'result on a ' || state || ' job'
       when state = 'completed' and progress <> 100 then 'completed at progress ' || progress
       when (state = 'failed') <> (error_code is not null) then 'error_code disagrees with state ' || state
       when progress not between 0 and 100 then 'progress ' || progress || ' out of 0..100'
       when attempt < 0 or recovery_count < 0 or max_retries < 0 then 'a negative counter'
       when cancel_reason is not null and state <> 'cancelled' then 'cancel_reason on a ' || state || ' job'
       when cancel_reason is not null and octet_length(cancel_reason) not between 1 and 1000
         then 'cancel_reason of ' || octet_length(cancel_reason) || ' bytes'
     end as d from jobs where state = any($1::text[])) t where d is not null";

const JOBS_JSON: &str = "select id::text, d from (select id, case
       when input is null then 'input is null'
       when tags is null or jsonb_typeof(tags) <> 'array' then 'tags is not a json array'
       when jsonb_array_length(tags) > 32 then 'more than 32 tags'
     end as d from jobs) t where d is not null";

const JOBS_PARENT: &str = "select j.id::text, 'parent_id ' || j.parent_id || ' names no job'
     from jobs j where j.parent_id is not null and not exists (select 1 from jobs p where p.id = j.parent_id)";

const JOBS_STALE: &str =
    "select id::text, 'running, last heartbeat ' || heartbeat_at || ' (needs the supervisor)'
     from jobs where state = 'running' and heartbeat_at < $1::text";

const AUDIT_ROWS: &str = "select id::text, d from (select id, case
       when detail is null or json_typeof(detail) <> 'object' then 'detail is not a json object'
       when at is null or at !~ $1::text then 'a timestamp is not fixed-width utc text'
       when hash is null or hash !~ '^[0-9a-f]{64}$' then 'hash is not 64 hex digits'
     end as d from audit_log) t where d is not null";

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[
    err("state", "jobs", JOBS_STATE, &[Bind::JobStates]),
    err(
        "timestamps",
        "jobs",
        JOBS_TIMESTAMPS,
        &[Bind::Ts, Bind::JobStates],
    ),
    err("outcome", "jobs", JOBS_OUTCOME, &[Bind::JobStates]),
    err("json", "jobs", JOBS_JSON, &[]),
    err("foreign_key", "jobs", JOBS_PARENT, &[]),
    warn("stale_job", "jobs", JOBS_STALE, &[Bind::StaleBefore]),
    err("json", "audit_log", AUDIT_ROWS, &[Bind::Ts]),
];

/// This module's tables, for copy and doctor.
pub(crate) const TABLES: &[TableSql] = &[
    TableSql {
        table: "jobs",
        any_row: "select exists (select 1 from jobs)",
        lock: "lock table jobs in exclusive mode",
        copy_in: "copy jobs (id, user_id, kind, state, input, result, error_code, error_message, progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at, cancel_reason) from stdin",
        sequence: "select coalesce(max(id), 0)::bigint,
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('jobs', 'id')), 0)::bigint from jobs",
        set_sequence: "select setval(pg_get_serial_sequence('jobs', 'id'), $1::bigint)",
    },
    TableSql {
        table: "audit_log",
        any_row: "select exists (select 1 from audit_log)",
        lock: "lock table audit_log in exclusive mode",
        copy_in: "copy audit_log (id, entity, entity_id, action, actor, at, detail, hash) from stdin",
        sequence: "select coalesce(max(id), 0)::bigint,
             coalesce(pg_sequence_last_value(pg_get_serial_sequence('audit_log', 'id')), 0)::bigint from audit_log",
        set_sequence: "select setval(pg_get_serial_sequence('audit_log', 'id'), $1::bigint)",
    },
];

const IDS_OF_USER: &str = "select id from jobs where user_id = $1 order by id";

/// The ids of `user`'s jobs (a feed of one user's events).
pub(crate) fn ids_of_user(tx: &mut Tx<'_>, user: &str) -> Result<Vec<i64>> {
    Ok(tx
        .query(IDS_OF_USER, &[&user])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

const USERS_OF: &str = "select id, user_id from jobs where id = any($1)";

/// The user of each of the jobs `ids` that still exists.
pub(crate) fn users_of(
    tx: &mut Tx<'_>,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, String>> {
    Ok(tx
        .query(USERS_OF, &[&ids])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

const MISSING: &str = "select x from unnest($1::bigint[]) x
     where not exists (select 1 from jobs where id = x) order by x";

/// Which of `ids` name no job.
pub(crate) fn missing(client: &mut impl postgres::GenericClient, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(client
        .query(MISSING, &[&ids])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

const AUDIT_CHAIN: &str =
    "select id, entity, entity_id, action, actor, at, detail::text, hash from audit_log order by id";

/// One audit row as its hash covers it: `[entity, entity_id, action, actor, at, detail]`.
pub(crate) struct AuditChainRow {
    pub id: i64,
    pub fields: [String; 6],
    pub hash: Option<String>,
}

/// Calls `f` on every audit row in id order (streamed).
pub(crate) fn for_each_audit_row(
    client: &mut impl postgres::GenericClient,
    mut f: impl FnMut(AuditChainRow),
) -> Result<()> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut rows = client.query_raw(AUDIT_CHAIN, std::iter::empty::<i64>())?;
    while let Some(r) = rows.next()? {
        let t = |i: usize| r.get::<_, Option<String>>(i).unwrap_or_default();
        f(AuditChainRow {
            id: r.get(0),
            fields: [t(1), t(2), t(3), t(4), t(5), t(6)],
            hash: r.get(7),
        });
    }
    Ok(())
}

// ---- the Trust UI's bounded reads (the twins of the SQLite module's `UI_*`)

/// $1 window (the newest jobs counted)
#[cfg(feature = "http")]
const UI_WINDOW_STATES: &str = "select state, count(*) as n from
       (select state from jobs order by id desc limit $1) w group by state order by state";

/// $1 cap
#[cfg(feature = "http")]
const UI_CREATED_CAPPED: &str =
    "select count(*) as n from (select 1 from jobs where state = 'created' limit $1) c";

/// $1 cap
#[cfg(feature = "http")]
const UI_RUNNING_CAPPED: &str =
    "select count(*) as n from (select 1 from jobs where state = 'running' limit $1) c";

/// $1 job id (as `entity_id` text), $2 limit
#[cfg(feature = "http")]
const UI_JOB_AUDIT: &str = "select action, actor, at, detail::text as detail from audit_log
     where entity = 'job' and entity_id = $1 order by id desc limit $2";

/// Jobs per state among the newest [`JOB_WINDOW`](crate::storage::ui::JOB_WINDOW) jobs,
/// and the capped counts of created and running jobs.
#[cfg(feature = "http")]
pub(crate) fn ui_job_counts(tx: &mut Tx<'_>) -> Result<crate::storage::ui::JobCounts> {
    use crate::storage::ui::{Capped, JobCounts, COUNT_CAP, JOB_WINDOW};
    let window = tx
        .query(UI_WINDOW_STATES, &[&JOB_WINDOW])?
        .iter()
        .map(|r| Ok((get(r, "jobs", "?", "state")?, get(r, "jobs", "?", "n")?)))
        .collect::<Result<_>>()?;
    let mut capped = |sql: &'static str| -> Result<Capped> {
        let n: i64 = get(&tx.query_one(sql, &[&(COUNT_CAP + 1)])?, "jobs", "?", "n")?;
        Ok(Capped::of(n))
    };
    Ok(JobCounts {
        window,
        created: Some(capped(UI_CREATED_CAPPED)?),
        running: Some(capped(UI_RUNNING_CAPPED)?),
    })
}

/// Job `job_id`'s newest audit rows, at most `limit`.
#[cfg(feature = "http")]
pub(crate) fn ui_job_audit(
    tx: &mut Tx<'_>,
    job_id: i64,
    limit: i64,
) -> Result<Vec<crate::storage::ui::AuditRow>> {
    let id = job_id.to_string();
    tx.query(UI_JOB_AUDIT, &[&id, &limit])?
        .iter()
        .map(|r| {
            Ok(crate::storage::ui::AuditRow {
                action: get(r, "audit_log", &id, "action")?,
                actor: get(r, "audit_log", &id, "actor")?,
                at: ts(r, "audit_log", &id, "at")?,
                detail: get(r, "audit_log", &id, "detail")?,
            })
        })
        .collect()
}
