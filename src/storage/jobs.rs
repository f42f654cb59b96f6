//! SQL for the `jobs` table and its `audit_log` rows. Every function takes the connection (or transaction) and `now`;
//! none reads the clock. Writes are guarded updates: the `WHERE` clause carries the expected
//! state and attempt, and a write that matched nothing is diagnosed by [`diagnose`].
//!
//! A clock that stepped back (NTP, or processes whose clocks disagree) must not make a
//! legal transition fail the row's time rules: `started_at` and `finished_at` are written
//! as `max(:now, <the earlier time they must follow>)`.

use rusqlite::{named_params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::check::{err, warn, Check};
use super::col;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::job::state::JobState;
use crate::job::types::{Job, JobStats, NewJob, StateCounts};

/// Every column of a [`Job`], in the order [`job_from_row`] reads them.
macro_rules! job_columns {
    () => {
        "id, user_id, kind, state, input, result, error_code, error_message, \
         progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, \
         attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at, \
         cancel_reason"
    };
}

/// [`job_columns!`] as a constant, for [`col!`].
pub(super) const COLUMNS: &str = job_columns!();

/// `select <job columns> from jobs <tail>`.
macro_rules! select_jobs {
    ($tail:literal) => {
        concat!("select ", job_columns!(), " from jobs ", $tail)
    };
}

const INSERT: &str = concat!(
    "insert into jobs (user_id, kind, input, tags, parent_id, timeout_ms, max_retries, created_at, updated_at)
     values (:user_id, :kind, :input, :tags, :parent_id, :timeout_ms, :max_retries, :now, :now)
     returning ",
    job_columns!()
);

pub(super) const GET: &str = select_jobs!("where id = :id");
const STATE_OF: &str = "select state, attempt from jobs where id = :id";
const LIST_BY_USER: &str = select_jobs!("where user_id = :user_id order by id desc limit :limit");
const LIST_BY_USER_STATES: &str = select_jobs!(
    "where user_id = :user_id and state in (select value from json_each(:states)) order by id desc limit :limit"
);
const LIST: &str = select_jobs!(
    "where (:user_id is null or user_id = :user_id) and (:state is null or state = :state)
       and (:kind is null or kind = :kind) and (:before is null or id < :before)
     order by id desc limit :limit"
);
const RUNNING: &str = select_jobs!("where state = 'running' order by heartbeat_at, id");
const STALE: &str =
    select_jobs!("where state = 'running' and heartbeat_at < :cutoff order by heartbeat_at, id");
const RESUMABLE: &str =
    select_jobs!("where state = 'paused' and checkpoint is not null order by id");

/// Claims the oldest created job of the given kinds (all kinds when `:any` is 1) in one
/// statement, so two workers can never take the same row.
const CLAIM: &str = concat!(
    "update jobs set state = 'running', attempt = attempt + 1, worker_id = :worker,
        started_at = max(:now, created_at), heartbeat_at = :now, updated_at = :now
     where id = (select id from jobs
                 where state = 'created'
                   and (:any or kind in (select value from json_each(:kinds)))
                 order by id limit 1)
     returning ",
    job_columns!()
);

/// Claims up to `:limit` of the oldest created jobs of the given kinds in one statement (on
/// the partial index of created jobs), each moving to running with its next attempt.
const CLAIM_MANY: &str = concat!(
    "update jobs set state = 'running', attempt = attempt + 1, worker_id = :worker,
        started_at = max(:now, created_at), heartbeat_at = :now, updated_at = :now
     where id in (select id from jobs
                  where state = 'created'
                    and (:any or kind in (select value from json_each(:kinds)))
                  order by id limit :limit)
     returning ",
    job_columns!()
);

const CLAIM_PAUSED: &str =
    "update jobs set state = 'running', attempt = attempt + 1, worker_id = :worker,
        heartbeat_at = :now, updated_at = :now
     where id = :id and state = 'paused'";

const HEARTBEAT: &str = "update jobs set heartbeat_at = :now, updated_at = :now
     where id = :id and attempt = :attempt and state = 'running'";

const PROGRESS: &str =
    "update jobs set progress = :progress, step = :step, heartbeat_at = :now, updated_at = :now
     where id = :id and attempt = :attempt and state = 'running'";

const CHECKPOINT: &str = "update jobs set checkpoint = :checkpoint, checkpoint_at = :now, heartbeat_at = :now, updated_at = :now
     where id = :id and attempt = :attempt and state = 'running'";

const COMPLETE: &str = concat!(
    "update jobs set state = 'completed', result = :result, progress = 100,
        finished_at = max(:now, started_at), updated_at = :now
     where id = :id and attempt = :attempt and state = 'running'
     returning ",
    job_columns!()
);

const FAIL: &str = concat!(
    "update jobs set state = 'failed', error_code = :code, error_message = :message,
        finished_at = max(:now, started_at), updated_at = :now
     where id = :id and attempt = :attempt and state = 'running'
     returning ",
    job_columns!()
);

/// An operator's state change (cancel, pause, resume): guarded on the state read just before.
/// `cancel_reason` is written by the cancel and cleared by any other change of state.
const SET_STATE: &str = "update jobs set state = :to, updated_at = :now,
        finished_at = case when :to in ('completed', 'failed', 'cancelled')
                           then max(:now, coalesce(started_at, created_at)) end,
        worker_id = case when :to = 'created' then null else worker_id end,
        started_at = case when :to = 'created' then null else started_at end,
        heartbeat_at = case when :to = 'created' then null else heartbeat_at end,
        error_code = case when :to = 'failed' then :code else null end,
        error_message = case when :to = 'failed' then :message else null end,
        cancel_reason = case when :to = 'cancelled' then :reason else null end
     where id = :id and state = :from";

const RESTART: &str = "update jobs set state = 'created', input = coalesce(:input, input),
        result = null, error_code = null, error_message = null, progress = 0, step = null,
        checkpoint = null, checkpoint_at = null, cancel_reason = null,
        worker_id = null, started_at = null, heartbeat_at = null, finished_at = null,
        updated_at = :now
     where id = :id and state = :from";

const DELETE: &str =
    "delete from jobs where id = :id and state in ('completed', 'failed', 'cancelled')";

const COUNT_BY_STATE_KIND: &str =
    "select kind, state, count(*) as n from jobs group by kind, state";
const COUNT_BY_STATE_KIND_USER: &str =
    "select kind, state, count(*) as n from jobs where user_id = :user_id group by kind, state";
const OLDEST_HEARTBEAT: &str = "select min(heartbeat_at) from jobs where state = 'running'";
const OLDEST_HEARTBEAT_USER: &str =
    "select min(heartbeat_at) from jobs where state = 'running' and user_id = :user_id";

const AUDIT: &str = "insert into audit_log (entity, entity_id, action, actor, at, detail, hash)
     values (:entity, :id, :action, :actor, :now, :detail, :hash)";
/// The newest audit row's chain hash, which the next row follows.
const AUDIT_LAST_HASH: &str = "select hash from audit_log order by id desc limit 1";

fn json_text(v: &Value) -> String {
    v.to_string()
}

/// The JSON in column `i` of `r` (`None` for SQL null).
fn json_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = r.get(i)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    })
    .transpose()
}

/// Reads one row selected with `select_jobs!` (or `returning` [`job_columns!`]), by column name.
pub(crate) fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    crate::error::decode_row("jobs", r, job_from_row_unchecked)
}

fn job_from_row_unchecked(r: &Row<'_>) -> rusqlite::Result<Job> {
    let tags: Option<Value> = json_col(r, col!(COLUMNS, "tags"))?;
    let tags = match tags {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Job {
        id: r.get(col!(COLUMNS, "id"))?,
        user_id: r.get(col!(COLUMNS, "user_id"))?,
        kind: r.get(col!(COLUMNS, "kind"))?,
        state: r.get(col!(COLUMNS, "state"))?,
        input: json_col(r, col!(COLUMNS, "input"))?.unwrap_or(Value::Null),
        result: json_col(r, col!(COLUMNS, "result"))?,
        error_code: r.get(col!(COLUMNS, "error_code"))?,
        error_message: r.get(col!(COLUMNS, "error_message"))?,
        progress: r.get(col!(COLUMNS, "progress"))?,
        step: r.get(col!(COLUMNS, "step"))?,
        checkpoint: json_col(r, col!(COLUMNS, "checkpoint"))?,
        checkpoint_at: r.get(col!(COLUMNS, "checkpoint_at"))?,
        tags,
        parent_id: r.get(col!(COLUMNS, "parent_id"))?,
        timeout_ms: r.get(col!(COLUMNS, "timeout_ms"))?,
        max_retries: r.get(col!(COLUMNS, "max_retries"))?,
        attempt: r.get(col!(COLUMNS, "attempt"))?,
        worker_id: r.get(col!(COLUMNS, "worker_id"))?,
        recovery_count: r.get(col!(COLUMNS, "recovery_count"))?,
        created_at: r.get(col!(COLUMNS, "created_at"))?,
        updated_at: r.get(col!(COLUMNS, "updated_at"))?,
        started_at: r.get(col!(COLUMNS, "started_at"))?,
        heartbeat_at: r.get(col!(COLUMNS, "heartbeat_at"))?,
        finished_at: r.get(col!(COLUMNS, "finished_at"))?,
        cancel_reason: r.get(col!(COLUMNS, "cancel_reason"))?,
    })
}

/// Inserts a validated new job.
pub(crate) fn insert(conn: &Connection, new: &NewJob, now: Timestamp) -> Result<Job> {
    let tags = serde_json::to_string(&new.tags).expect("strings serialize");
    let timeout_ms = new
        .timeout
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if let Some(parent) = new.parent_id {
        get(conn, parent).map_err(|e| match e {
            Error::NotFound { .. } => {
                Error::invalid("parent_id", format!("job {parent} does not exist"))
            }
            other => other,
        })?;
    }
    let job = conn.prepare_cached(INSERT)?.query_row(
        named_params! {
            ":user_id": new.user_id,
            ":kind": new.kind,
            ":input": json_text(&new.input),
            ":tags": tags,
            ":parent_id": new.parent_id,
            ":timeout_ms": timeout_ms,
            ":max_retries": new.max_retries,
            ":now": now,
        },
        job_from_row,
    )?;
    Ok(job)
}

/// The job with this id.
pub(crate) fn get(conn: &Connection, id: i64) -> Result<Job> {
    conn.prepare_cached(GET)?
        .query_row(named_params! {":id": id}, job_from_row)
        .optional()?
        .ok_or_else(|| Error::not_found("job", id))
}

fn collect(
    conn: &Connection,
    sql: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, job_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A user's jobs, newest first; `states` empty means every state.
pub(crate) fn list_by_user(
    conn: &Connection,
    user_id: &str,
    states: &[JobState],
    limit: u32,
) -> Result<Vec<Job>> {
    if states.is_empty() {
        return collect(
            conn,
            LIST_BY_USER,
            named_params! {":user_id": user_id, ":limit": limit},
        );
    }
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let states = serde_json::to_string(&states).expect("strings serialize");
    collect(
        conn,
        LIST_BY_USER_STATES,
        named_params! {":user_id": user_id, ":states": states, ":limit": limit},
    )
}

/// Jobs matching every given filter, newest first.
pub(crate) fn list(
    conn: &Connection,
    user_id: Option<&str>,
    state: Option<JobState>,
    kind: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<Job>> {
    collect(
        conn,
        LIST,
        named_params! {
            ":user_id": user_id,
            ":state": state.map(JobState::as_str),
            ":kind": kind,
            ":before": before,
            ":limit": limit,
        },
    )
}

/// Every running job, stalest heartbeat first.
pub(crate) fn running(conn: &Connection) -> Result<Vec<Job>> {
    collect(conn, RUNNING, &[])
}

/// Running jobs whose last heartbeat is older than `cutoff`.
pub(crate) fn stale(conn: &Connection, cutoff: Timestamp) -> Result<Vec<Job>> {
    collect(conn, STALE, named_params! {":cutoff": cutoff})
}

/// Paused jobs that hold a checkpoint.
pub(crate) fn resumable(conn: &Connection) -> Result<Vec<Job>> {
    collect(conn, RESUMABLE, &[])
}

/// Atomically claims the oldest created job of `kinds` (any kind if empty).
pub(crate) fn claim(
    conn: &Connection,
    worker: &str,
    kinds: &[&str],
    now: Timestamp,
) -> Result<Option<Job>> {
    let kinds_json = serde_json::to_string(kinds).expect("strings serialize");
    Ok(conn
        .prepare_cached(CLAIM)?
        .query_row(
            named_params! {":worker": worker, ":any": kinds.is_empty(), ":kinds": kinds_json, ":now": now},
            job_from_row,
        )
        .optional()?)
}

/// Claims up to `limit` created jobs of `kinds` for `worker` in one statement, oldest first.
pub(crate) fn claim_many(
    conn: &Connection,
    worker: &str,
    kinds: &[&str],
    limit: u32,
    now: Timestamp,
) -> Result<Vec<Job>> {
    let kinds_json = serde_json::to_string(kinds).expect("strings serialize");
    let mut stmt = conn.prepare_cached(CLAIM_MANY)?;
    let rows = stmt.query_map(
        named_params! {":worker": worker, ":any": kinds.is_empty(), ":kinds": kinds_json, ":limit": limit, ":now": now},
        job_from_row,
    )?;
    let mut jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING has no order: hand them out oldest first.
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Claims one paused job for `worker` (paused -> running, next attempt).
pub(crate) fn claim_paused(conn: &Connection, id: i64, worker: &str, now: Timestamp) -> Result<()> {
    let n = conn
        .prepare_cached(CLAIM_PAUSED)?
        .execute(named_params! {":id": id, ":worker": worker, ":now": now})?;
    if n == 0 {
        let (state, _) = state_of(conn, id)?;
        return Err(illegal(id, state, JobState::Running));
    }
    Ok(())
}

/// The state and attempt of a job.
pub(crate) fn state_of(conn: &Connection, id: i64) -> Result<(JobState, i64)> {
    conn.prepare_cached(STATE_OF)?
        .query_row(named_params! {":id": id}, |r| {
            Ok((r.get("state")?, r.get("attempt")?))
        })
        .optional()?
        .ok_or_else(|| Error::not_found("job", id))
}

fn illegal(id: i64, from: JobState, to: JobState) -> Error {
    Error::IllegalTransition {
        entity: "job",
        id: id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// Explains why a worker's guarded write matched no row: unknown job, stale attempt, or the
/// attempt still owns the job but it is no longer running (cancelled or paused meanwhile).
pub(crate) fn diagnose(conn: &Connection, id: i64, attempt: i64) -> Error {
    match state_of(conn, id) {
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

/// The bindings of a fenced write: the job, the attempt its writer holds, and `params`.
fn fenced<'a>(
    id: &'a i64,
    attempt: &'a i64,
    params: &[(&'a str, &'a dyn rusqlite::ToSql)],
) -> Vec<(&'a str, &'a dyn rusqlite::ToSql)> {
    let mut all: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":id", id), (":attempt", attempt)];
    all.extend_from_slice(params);
    all
}

fn guarded(
    conn: &Connection,
    sql: &str,
    id: i64,
    attempt: i64,
    params: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<()> {
    let n = conn
        .prepare_cached(sql)?
        .execute(fenced(&id, &attempt, params).as_slice())?;
    if n == 1 {
        Ok(())
    } else {
        Err(diagnose(conn, id, attempt))
    }
}

/// Heartbeat of the worker holding `attempt`.
pub(crate) fn heartbeat(conn: &Connection, id: i64, attempt: i64, now: Timestamp) -> Result<()> {
    guarded(conn, HEARTBEAT, id, attempt, named_params! {":now": now})
}

/// Progress (0..=100) and step text of the worker holding `attempt`.
pub(crate) fn progress(
    conn: &Connection,
    id: i64,
    attempt: i64,
    pct: u8,
    step: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    guarded(
        conn,
        PROGRESS,
        id,
        attempt,
        named_params! {":progress": pct, ":step": step, ":now": now},
    )
}

/// Saves a checkpoint (already validated and serialized).
pub(crate) fn checkpoint(
    conn: &Connection,
    id: i64,
    attempt: i64,
    json: &str,
    now: Timestamp,
) -> Result<()> {
    guarded(
        conn,
        CHECKPOINT,
        id,
        attempt,
        named_params! {":checkpoint": json, ":now": now},
    )
}

/// A guarded update that returns the updated row.
fn guarded_returning(
    conn: &Connection,
    sql: &str,
    id: i64,
    attempt: i64,
    params: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<Job> {
    conn.prepare_cached(sql)?
        .query_row(fenced(&id, &attempt, params).as_slice(), job_from_row)
        .optional()?
        .ok_or_else(|| diagnose(conn, id, attempt))
}

/// running -> completed with `result`.
pub(crate) fn complete(
    conn: &Connection,
    id: i64,
    attempt: i64,
    result: &Value,
    now: Timestamp,
) -> Result<Job> {
    guarded_returning(
        conn,
        COMPLETE,
        id,
        attempt,
        named_params! {":result": json_text(result), ":now": now},
    )
}

/// running -> failed with an error code and message.
pub(crate) fn fail(
    conn: &Connection,
    id: i64,
    attempt: i64,
    code: &str,
    message: &str,
    now: Timestamp,
) -> Result<Job> {
    guarded_returning(
        conn,
        FAIL,
        id,
        attempt,
        named_params! {":code": code, ":message": message, ":now": now},
    )
}

/// A transition from the job's current state to `to`, done only when the current state is
/// one of `allowed_from` (the operation's own sources) and the Rust table allows it;
/// returns the state it left.
pub(crate) fn transition(
    conn: &Connection,
    id: i64,
    allowed_from: &[JobState],
    to: JobState,
    error: Option<(&str, &str)>,
    cancel_reason: Option<&str>,
    now: Timestamp,
) -> Result<JobState> {
    let (from, _) = state_of(conn, id)?;
    if !allowed_from.contains(&from) || !from.can_transition_to(to) {
        return Err(illegal(id, from, to));
    }
    let (code, message) = error.unzip();
    let n = conn.prepare_cached(SET_STATE)?.execute(named_params! {
        ":id": id, ":from": from, ":to": to, ":now": now, ":code": code, ":message": message,
        ":reason": cancel_reason,
    })?;
    debug_assert_eq!(n, 1, "state read in the same transaction");
    Ok(from)
}

/// failed|cancelled -> created, from scratch: outcome, progress and checkpoint cleared;
/// `input` replaces the input if given.
pub(crate) fn restart(
    conn: &Connection,
    id: i64,
    input: Option<&Value>,
    now: Timestamp,
) -> Result<JobState> {
    let (from, _) = state_of(conn, id)?;
    if !matches!(from, JobState::Failed | JobState::Cancelled) {
        return Err(illegal(id, from, JobState::Created));
    }
    conn.prepare_cached(RESTART)?.execute(named_params! {
        ":id": id, ":from": from, ":input": input.map(json_text), ":now": now,
    })?;
    Ok(from)
}

/// Deletes `job` (read in the same transaction) if it is terminal.
pub(crate) fn delete(conn: &Connection, job: &Job) -> Result<()> {
    if !job.state.is_terminal() {
        return Err(Error::IllegalTransition {
            entity: "job",
            id: job.id.to_string(),
            from: job.state.to_string(),
            to: "deleted".into(),
        });
    }
    conn.prepare_cached(DELETE)?
        .execute(named_params! {":id": job.id})?;
    Ok(())
}

/// Appends one audit row for a job.
pub(crate) fn audit(
    conn: &Connection,
    id: i64,
    action: &str,
    actor: &str,
    detail: &Value,
    now: Timestamp,
) -> Result<()> {
    audit_entity(conn, "job", id, action, actor, detail, now)
}

/// Appends one audit row for an `entity` (`job`, `run`, `schedule`, `supervisor`: the
/// table's CHECK) with its id, on the one hash chain of `audit_log`.
pub(crate) fn audit_entity(
    conn: &Connection,
    entity: &str,
    id: i64,
    action: &str,
    actor: &str,
    detail: &Value,
    now: Timestamp,
) -> Result<()> {
    let prev: Option<Option<String>> = conn
        .prepare_cached(AUDIT_LAST_HASH)?
        .query_row([], |r| r.get(0))
        .optional()?;
    let prev = prev.flatten();
    let (entity_id, detail, at) = (id.to_string(), json_text(detail), now.to_string());
    let hash = crate::integrity::audit_hash(
        prev.as_deref().unwrap_or(crate::integrity::GENESIS),
        entity,
        &entity_id,
        action,
        actor,
        &at,
        &detail,
    );
    conn.prepare_cached(AUDIT)?.execute(named_params! {
        ":entity": entity, ":id": entity_id, ":action": action, ":actor": actor, ":now": at, ":detail": detail, ":hash": hash,
    })?;
    Ok(())
}

/// Every audit row in id order as its chain hash covers it (for doctor's `audit_chain`).
const AUDIT_CHAIN: &str =
    "select id, entity, entity_id, action, actor, at, detail, hash from audit_log order by id";

/// One audit row as [`crate::integrity::audit_hash`] covers it: each field as the text
/// that was hashed.
#[derive(Debug)]
pub(crate) struct AuditChainRow {
    pub id: i64,
    /// `[entity, entity_id, action, actor, at, detail]`.
    pub fields: [String; 6],
    pub hash: Option<String>,
}

/// Calls `f` on every audit row, oldest first.
pub(crate) fn for_each_audit_row(
    conn: &Connection,
    mut f: impl FnMut(AuditChainRow) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(AUDIT_CHAIN)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let t = |i: usize| super::hashed_text(r, i);
        f(AuditChainRow {
            id: r.get(0)?,
            fields: [t(1)?, t(2)?, t(3)?, t(4)?, t(5)?, t(6)?],
            hash: r.get(7)?,
        })?;
    }
    Ok(())
}

/// The largest id of each table here, for doctor's `sequence` check.
pub(super) const MAX_IDS: &[(&str, &str)] = &[
    ("jobs", "select max(id) from jobs"),
    ("audit_log", "select max(id) from audit_log"),
];

/// Counts per state and per kind (optionally of one user) and the oldest running heartbeat.
pub(crate) fn stats(conn: &Connection, user_id: Option<&str>) -> Result<JobStats> {
    let mut stats = JobStats::default();
    let mut add = |kind: String, state: JobState, n: u64| {
        stats.by_state.add(state, n);
        stats
            .by_kind
            .entry(kind)
            .or_insert_with(StateCounts::default)
            .add(state, n);
        stats.total += n;
    };
    let row = |r: &Row<'_>| {
        Ok((
            r.get::<_, String>("kind")?,
            r.get::<_, JobState>("state")?,
            r.get::<_, i64>("n")?,
        ))
    };
    let oldest: Option<Timestamp> = match user_id {
        None => {
            let mut stmt = conn.prepare_cached(COUNT_BY_STATE_KIND)?;
            for r in stmt.query_map([], row)? {
                let (k, s, n) = r?;
                add(k, s, n as u64);
            }
            conn.prepare_cached(OLDEST_HEARTBEAT)?
                .query_row([], |r| r.get(0))?
        }
        Some(user) => {
            let mut stmt = conn.prepare_cached(COUNT_BY_STATE_KIND_USER)?;
            for r in stmt.query_map(named_params! {":user_id": user}, row)? {
                let (k, s, n) = r?;
                add(k, s, n as u64);
            }
            conn.prepare_cached(OLDEST_HEARTBEAT_USER)?
                .query_row(named_params! {":user_id": user}, |r| r.get(0))?
        }
    };
    stats.oldest_running_heartbeat = oldest;
    Ok(stats)
}

/// The columns of a [`Candidate`], the one list [`candidate`] reads by name.
macro_rules! candidate_columns {
    () => {
        "id, attempt, checkpoint is not null as has_checkpoint, recovery_count"
    };
}

/// Running jobs whose heartbeat is older than `cutoff`, stalest first: a range of the
/// `jobs_running_heartbeat` partial index, so a tick costs what is stale, not what runs.
const STALE_CANDIDATES: &str = concat!(
    "select ",
    candidate_columns!(),
    " from jobs
     where state = 'running' and heartbeat_at < :cutoff
     order by heartbeat_at"
);

/// One running job, whatever its heartbeat (an operator's recovery).
const RUNNING_CANDIDATE: &str = concat!(
    "select ",
    candidate_columns!(),
    " from jobs
     where id = :id and state = 'running'"
);

/// The supervisor's guarded update: only the attempt it saw, only while still running.
const RECOVER: &str =
    "update jobs set state = :to, recovery_count = recovery_count + 1, updated_at = :now,
        finished_at = case when :to = 'failed' then max(:now, started_at) end,
        error_code = case when :to = 'failed' then :code else null end,
        error_message = case when :to = 'failed' then :message else null end,
        worker_id = case when :to = 'created' then null else worker_id end,
        started_at = case when :to = 'created' then null else started_at end,
        heartbeat_at = case when :to = 'created' then null else heartbeat_at end
     where id = :id and attempt = :attempt and state = 'running'";

const RESET_RECOVERY: &str =
    "update jobs set recovery_count = 0, updated_at = :now where id = :id and state <> 'completed'";

/// A running job the supervisor may recover.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub id: i64,
    pub attempt: i64,
    pub has_checkpoint: bool,
    pub recovery_count: i64,
}

fn candidate(r: &Row<'_>) -> rusqlite::Result<Candidate> {
    Ok(Candidate {
        id: r.get("id")?,
        attempt: r.get("attempt")?,
        has_checkpoint: r.get("has_checkpoint")?,
        recovery_count: r.get("recovery_count")?,
    })
}

/// Running jobs whose heartbeat is before `cutoff`, or only job `only` (if it is running,
/// whatever its heartbeat).
pub(crate) fn recovery_candidates(
    conn: &Connection,
    cutoff: Timestamp,
    only: Option<i64>,
) -> Result<Vec<Candidate>> {
    let rows = match only {
        None => {
            let mut stmt = conn.prepare_cached(STALE_CANDIDATES)?;
            let rows = stmt.query_map(named_params! {":cutoff": cutoff}, candidate)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
        Some(id) => conn
            .prepare_cached(RUNNING_CANDIDATE)?
            .query_row(named_params! {":id": id}, candidate)
            .optional()?
            .into_iter()
            .collect(),
    };
    Ok(rows)
}

/// Moves a running job at `attempt` to `to` (paused, created or failed with `error`),
/// counting the recovery. Returns false if the job moved on meanwhile.
pub(crate) fn recover(
    conn: &Connection,
    c: &Candidate,
    to: JobState,
    error: Option<(&str, &str)>,
    now: Timestamp,
) -> Result<bool> {
    debug_assert!(JobState::Running.can_transition_to(to));
    let (code, message) = error.unzip();
    let n = conn.prepare_cached(RECOVER)?.execute(named_params! {
        ":id": c.id, ":attempt": c.attempt, ":to": to, ":now": now, ":code": code, ":message": message,
    })?;
    Ok(n == 1)
}

/// Sets a job's recovery counter back to zero.
pub(crate) fn reset_recovery_count(conn: &Connection, id: i64, now: Timestamp) -> Result<()> {
    let n = conn
        .prepare_cached(RESET_RECOVERY)?
        .execute(named_params! {":id": id, ":now": now})?;
    if n == 0 {
        let (state, _) = state_of(conn, id)?;
        return Err(illegal(id, state, state));
    }
    Ok(())
}

const EXISTS: &str = "select exists(select 1 from jobs where id = :id)";

/// Whether job `id` exists.
pub(crate) fn exists(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(EXISTS)?
        .query_row(named_params! {":id": id}, |r| r.get(0))?)
}

const IDS_OF_USER: &str = "select id from jobs where user_id = :user order by id";

/// The ids of `user`'s jobs (an event feed filtered by user reads their events).
pub(crate) fn ids_of_user(conn: &Connection, user: &str) -> Result<Vec<i64>> {
    Ok(conn
        .prepare_cached(IDS_OF_USER)?
        .query_map(named_params! {":user": user}, |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

const USERS_OF: &str = "select id, user_id from jobs
     where id in (select value from json_each(:ids))";

/// The user of each of the jobs `ids` that still exists.
pub(crate) fn users_of(
    conn: &Connection,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, String>> {
    let ids = serde_json::to_string(ids).expect("integers serialize");
    Ok(conn
        .prepare_cached(USERS_OF)?
        .query_map(named_params! {":ids": ids}, |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

const MISSING: &str = "select value as id from json_each(:ids)
     where value not in (select id from jobs) order by value";

/// Which of `ids` name no job.
pub(crate) fn missing(conn: &Connection, ids: &[i64]) -> Result<Vec<i64>> {
    let ids = serde_json::to_string(ids).expect("integers serialize");
    let mut stmt = conn.prepare_cached(MISSING)?;
    let rows = stmt.query_map(named_params! {":ids": ids}, |r| r.get("id"))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ---- doctor checks: the rows' rules (migrations) restated as queries that list offenders

const JOBS_STATE: &str = "select id, 'state ' || quote(state) || ' is not a job state' from jobs
     where state is null or state not in (select value from json_each(:job_states))";

const JOBS_TIMESTAMPS: &str = "select id, case
       when created_at is null or created_at not glob :ts or updated_at is null or updated_at not glob :ts
         or coalesce(started_at, created_at) not glob :ts or coalesce(heartbeat_at, created_at) not glob :ts
         or coalesce(finished_at, created_at) not glob :ts or coalesce(checkpoint_at, created_at) not glob :ts
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
       when checkpoint is not null and checkpoint_at is null then 'checkpoint without checkpoint_at'
     end as detail from jobs
     where detail is not null and state in (select value from json_each(:job_states))";

const JOBS_OUTCOME: &str = "select id, case
       when state <> 'completed' and result is not null then 'result on a ' || state || ' job'
       when state = 'completed' and progress <> 100 then 'completed at progress ' || progress
       when (state = 'failed') <> (error_code is not null) then 'error_code disagrees with state ' || state
       when progress not between 0 and 100 then 'progress ' || progress || ' out of 0..100'
       when attempt < 0 or recovery_count < 0 or max_retries < 0 then 'a negative counter'
       when cancel_reason is not null and state <> 'cancelled' then 'cancel_reason on a ' || state || ' job'
       when cancel_reason is not null and length(cast(cancel_reason as blob)) not between 1 and 1000
         then 'cancel_reason of ' || length(cast(cancel_reason as blob)) || ' bytes'
     end as detail from jobs
     where detail is not null and state in (select value from json_each(:job_states))";

const JOBS_JSON: &str = "select id, case
       when not json_valid(input) then 'input is not json'
       when result is not null and not json_valid(result) then 'result is not json'
       when checkpoint is not null and not json_valid(checkpoint) then 'checkpoint is not json'
       when not json_valid(tags) or json_type(tags) <> 'array' then 'tags is not a json array'
     end as detail from jobs where detail is not null";

const JOBS_STALE: &str =
    "select id, 'running, last heartbeat ' || heartbeat_at || ' (needs the supervisor)'
     from jobs where state = 'running' and heartbeat_at < :stale_before";

const AUDIT_ROWS: &str = "select id, case
       when not json_valid(detail) or json_type(detail) <> 'object' then 'detail is not a json object'
       when at is null or at not glob :ts then 'a timestamp is not fixed-width utc text'
     end as d from audit_log where d is not null";

/// This module's tables read whole (every column of every row) by the damage survey.
pub(crate) const SCANS: &[(&str, &str)] = &[
    ("jobs", "select * from jobs"),
    ("audit_log", "select * from audit_log"),
];

/// This module's doctor checks (collected by `doctor`).
pub(crate) const CHECKS: &[Check] = &[
    err("state", "jobs", JOBS_STATE),
    err("timestamps", "jobs", JOBS_TIMESTAMPS),
    err("outcome", "jobs", JOBS_OUTCOME),
    err("json", "jobs", JOBS_JSON),
    warn("stale_job", "jobs", JOBS_STALE),
    err("json", "audit_log", AUDIT_ROWS),
];

// ---- the Trust UI's bounded reads (index-ordered LIMITs, capped counts)

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_JOBS_WINDOW_STATES: &str = "select state, count(*) from
       (select state from jobs order by id desc limit :window) group by state order by state";

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_JOBS_CREATED_CAPPED: &str =
    "select count(*) from (select 1 from jobs where state = 'created' limit :cap)";

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_JOBS_RUNNING_CAPPED: &str =
    "select count(*) from (select 1 from jobs where state = 'running' limit :cap)";

/// The Trust UI's bounded read (run by `http::ui::queries`).
#[cfg(feature = "http")]
pub(crate) const UI_JOB_AUDIT: &str = "select action, actor, at, detail from audit_log
     where entity = 'job' and entity_id = :id order by id desc limit :limit";
