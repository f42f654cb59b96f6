//! SQL for `job_events` on PostgreSQL: append inside the job change's own transaction (which
//! holds the job's row lock, so each job's `seq` and hash chain grow one writer at a time),
//! and reads after a per-job `seq`.

use serde_json::Value;

use super::{get, ts};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind, EventPayload, FeedFilter, FeedPage};
use crate::integrity;
use crate::pg::engine::Tx;

/// Every column of an [`Event`], as [`from_row`] reads them by name.
macro_rules! columns {
    () => {
        "cursor, job_id, seq, kind, payload, at"
    };
}

/// The event of a job change, appended by the change's own statement: the rest of a `WITH`
/// whose first part, `changed`, is the job's update (`returning` the job's columns); the
/// statement then ends with its own `select ... from changed`. `$kind` is the event's kind,
/// `$at` the parameter holding the time, `$payload` a SQL expression (over `changed` and the
/// parameters) of the payload's JSON text, spelled as `serde_json` writes it: the chain hash
/// covers that text. The seq and the previous hash are the job's newest event's, read in
/// the statement that holds the job's row lock; the hash is src/integrity.rs's
/// `event_hash`, computed by PostgreSQL's built-in `sha256` (tests/pg compare the two, and
/// doctor recomputes every hash in Rust). One statement, so a claim or a complete is one
/// round trip in autocommit ([`PgEngine::write_one`](crate::pg::PgEngine)).
macro_rules! event_of_changed_job {
    ($kind:literal, $at:literal, $payload:literal) => {
        concat!(
            ", event as (
               select changed.id as job_id, coalesce(prev.seq, 0) + 1 as seq,
                      coalesce(prev.hash, '0000000000000000000000000000000000000000000000000000000000000000') as prev_hash,
                      (",
            $payload,
            ")::text as payload
               from changed left join lateral (
                   select seq, hash from job_events where job_id = changed.id
                   order by seq desc limit 1) prev on true),
             appended as (
               insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
               select job_id, seq, '",
            $kind,
            "', payload::json, ",
            $at,
            "::text, prev_hash,
                      encode(sha256(convert_to(concat_ws(chr(10), 'runledger-event-v1', prev_hash,
                          job_id::text, seq::text, '",
            $kind,
            "', ",
            $at,
            "::text, payload), 'UTF8')), 'hex')
               from event)"
        )
    };
}
pub(crate) use event_of_changed_job;

/// $1 job_id, $2 seq, $3 kind, $4 payload (text), $5 at, $6 prev_hash, $7 hash
const APPEND: &str = "insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
     values ($1, $2, $3, ($4::text)::json, $5, $6, $7)
     returning cursor";
/// $1 job_id: the job's newest event (its seq and chain hash), which the next one follows.
const LAST_OF_JOB: &str = "select seq, hash from job_events where job_id = $1
     order by seq desc limit 1";
/// $1 job_id, $2 after seq, $3 limit
const SINCE: &str = concat!(
    "select ",
    columns!(),
    " from job_events where job_id = $1 and seq > $2 order by seq limit $3"
);
/// $1 job_id
const OLDEST_SEQ: &str = "select min(seq), max(seq) from job_events where job_id = $1";

fn from_row(r: &postgres::Row) -> Result<Event> {
    let cursor: i64 = get(r, "job_events", "?", "cursor")?;
    let key = cursor.to_string();
    let k = key.as_str();
    let kind: String = get(r, "job_events", k, "kind")?;
    Ok(Event {
        cursor,
        job_id: get(r, "job_events", k, "job_id")?,
        seq: get(r, "job_events", k, "seq")?,
        kind: EventKind::parse(&kind).ok_or_else(|| {
            super::corrupt(
                "job_events",
                k,
                "kind",
                format!("unknown event kind {kind:?}"),
            )
        })?,
        payload: get::<Value>(r, "job_events", k, "payload")?,
        at: ts(r, "job_events", k, "at")?,
    })
}

/// Appends an event for `job_id` inside the caller's transaction.
pub(crate) fn append(
    tx: &mut Tx<'_>,
    job_id: i64,
    payload: &EventPayload,
    now: Timestamp,
) -> Result<Event> {
    let last = tx
        .query_opt(LAST_OF_JOB, &[&job_id])?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
    append_after(tx, job_id, last, payload, now)
}

/// [`append`] when the job's newest event `(seq, hash)` was already read under the job's
/// row lock, by the statement that changed the job (`None`: the job has none).
pub(crate) fn append_after(
    tx: &mut Tx<'_>,
    job_id: i64,
    last: Option<(i64, String)>,
    payload: &EventPayload,
    now: Timestamp,
) -> Result<Event> {
    let kind = payload.kind();
    let payload = payload.to_wire();
    let (prev_seq, prev_hash) = last.unwrap_or_else(|| (0, integrity::GENESIS.to_string()));
    let seq = prev_seq + 1;
    let (text, at) = (payload.to_string(), now.to_string());
    let hash = integrity::event_hash(&prev_hash, job_id, seq, kind.as_str(), &at, &text);
    let cursor: i64 = tx
        .query_one(
            APPEND,
            &[&job_id, &seq, &kind.as_str(), &text, &at, &prev_hash, &hash],
        )?
        .get(0);
    Ok(Event {
        cursor,
        job_id,
        seq,
        kind,
        payload,
        at: now,
    })
}

/// Events of `job_id` after `seq` (0 for all kept), at most `limit`; `EVENTS_PRUNED` when
/// the ones right after `seq` are gone.
pub(crate) fn since(tx: &mut Tx<'_>, job_id: i64, seq: i64, limit: u32) -> Result<Vec<Event>> {
    if !super::jobs::exists(tx, job_id)? {
        return Err(Error::not_found("job", job_id));
    }
    let row = tx.query_one(OLDEST_SEQ, &[&job_id])?;
    let (oldest, newest): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    if let (Some(oldest), Some(newest)) = (oldest, newest) {
        if seq.saturating_add(1) < oldest {
            return Err(Error::EventsPruned {
                job_id,
                requested: seq,
                oldest_kept: oldest,
                newest,
            });
        }
    }
    let limit = i64::from(limit);
    tx.query(SINCE, &[&job_id, &seq, &limit])?
        .iter()
        .map(from_row)
        .collect()
}

// ---- the global feed (migrations/postgres/P6__feed_fence.sql)

/// Takes this transaction's feed fence (once): before a load of events with their own
/// cursors (`runledger copy`), which the trigger does not redraw.
pub(crate) const FENCE: &str = "select runledger_feed_fence()";
/// The cursor below which every event is committed or gone for good: read BEFORE the
/// snapshot that reads the page, in a transaction of its own.
const HORIZON: &str = "select runledger_feed_horizon()";
/// $1 after cursor, $2 horizon, $3 job (null: any), $4 job ids (null: any), $5 limit
const FEED: &str = concat!(
    "select ",
    columns!(),
    " from job_events
     where cursor > $1 and cursor < $2 and ($3::bigint is null or job_id = $3)
       and ($4::bigint[] is null or job_id = any($4))
     order by cursor limit $5"
);
/// Jobs (of the filter) whose oldest kept event after `$1` is not their first: the events
/// between were pruned, so a reader at `$1` would see a gap. $1 cursor, $2 horizon, $3 job,
/// $4 job ids.
const FEED_GAPS: &str = "select e.job_id from job_events e
     where e.cursor > $1 and e.cursor < $2 and e.seq > 1
       and ($3::bigint is null or e.job_id = $3) and ($4::bigint[] is null or e.job_id = any($4))
       and not exists (select 1 from job_events f where f.job_id = e.job_id and f.seq = e.seq - 1)
     order by e.cursor limit 100";
/// $1 horizon
const HEAD: &str = "select coalesce(max(cursor), 0)::bigint from job_events where cursor < $1";

/// The feed's horizon (see [`HORIZON`]).
pub(crate) fn horizon(tx: &mut Tx<'_>) -> Result<i64> {
    Ok(tx.query_one(HORIZON, &[])?.get(0))
}

/// A page of the feed for `filter` after `cursor`, below `horizon` (read by [`horizon`]
/// before this transaction began). Every event below the horizon was committed (or rolled
/// back) before the horizon was read, so later statements see the same set: the events are
/// read first and the gaps after them, and pruning (which only removes) can then only add a
/// job to `pruned_jobs`, never hide one.
pub(crate) fn feed(
    tx: &mut Tx<'_>,
    horizon: i64,
    filter: &FeedFilter,
    cursor: i64,
    limit: u32,
    check_gaps: bool,
) -> Result<FeedPage> {
    let (job, user) = filter.params();
    let jobs_of_user = match user {
        Some(u) => Some(super::jobs::ids_of_user(tx, u)?),
        None => None,
    };
    let events: Vec<Event> = tx
        .query(
            FEED,
            &[&cursor, &horizon, &job, &jobs_of_user, &i64::from(limit)],
        )?
        .iter()
        .map(from_row)
        .collect::<Result<_>>()?;
    let pruned_jobs = if check_gaps {
        tx.query(FEED_GAPS, &[&cursor, &horizon, &job, &jobs_of_user])?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let users = super::jobs::users_of(tx, &FeedPage::jobs_of(&events))?;
    let head = tx.query_one(HEAD, &[&horizon])?.get(0);
    Ok(FeedPage::of(events, &users, pruned_jobs, head))
}

// ---- doctor checks and copy

use super::{err, Bind, PgCheck, TableSql};

const EVENTS_SEQ: &str = "select job_id::text, 'kept seqs ' || min(seq) || '..' || max(seq) || ' hold ' || count(*) || ' events'
     from job_events group by job_id
     having count(*) <> max(seq) - min(seq) + 1 or min(seq) > greatest(1, max(seq) - $1::bigint + 1)";

const EVENTS_BACKLOG: &str =
    "select job_id::text, count(*) || ' events kept, more than ' || $1::bigint
     from job_events group by job_id having count(*) > $1::bigint";

const EVENTS_ROWS: &str = "select cursor::text, d from (select cursor, case
       when payload is null or json_typeof(payload) <> 'object' then 'payload is not a json object'
       when at is null or at !~ $1::text then 'a timestamp is not fixed-width utc text'
       when hash is null or hash !~ '^[0-9a-f]{64}$' or prev_hash is null or prev_hash !~ '^[0-9a-f]{64}$'
         then 'a hash is not 64 hex digits'
     end as d from job_events) t where d is not null";

/// This module's doctor checks.
pub(crate) const CHECKS: &[PgCheck] = &[
    err("event_seq", "job_events", EVENTS_SEQ, &[Bind::Backlog]),
    err(
        "event_backlog",
        "job_events",
        EVENTS_BACKLOG,
        &[Bind::Backlog],
    ),
    err("json", "job_events", EVENTS_ROWS, &[Bind::Ts]),
];

/// This module's table, for copy and doctor.
pub(crate) const TABLES: &[TableSql] = &[TableSql {
    table: "job_events",
    any_row: "select exists (select 1 from job_events)",
        lock: "lock table job_events in exclusive mode",
    copy_in: "copy job_events (cursor, job_id, seq, kind, payload, at, prev_hash, hash) from stdin",
    sequence: "select coalesce(max(cursor), 0)::bigint,
         coalesce(pg_sequence_last_value(pg_get_serial_sequence('job_events', 'cursor')), 0)::bigint from job_events",
    set_sequence: "select setval(pg_get_serial_sequence('job_events', 'cursor'), $1::bigint)",
}];

const COUNT_PER_JOB: &str = "select job_id, count(*)::bigint from job_events group by job_id";

/// How many events each job with events has.
pub(crate) fn count_per_job(
    client: &mut impl postgres::GenericClient,
) -> Result<std::collections::BTreeMap<i64, i64>> {
    Ok(client
        .query(COUNT_PER_JOB, &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

const EVENT_CHAIN: &str = "select cursor, job_id, seq, kind, at, payload::text, prev_hash, hash
     from job_events order by job_id, seq";

/// One event as its hash covers it: `[kind, at, payload]`.
pub(crate) struct EventChainRow {
    pub cursor: i64,
    pub job_id: i64,
    pub seq: i64,
    pub fields: [String; 3],
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// Calls `f` on every event, per job in seq order (streamed).
pub(crate) fn for_each_chain_row(
    client: &mut impl postgres::GenericClient,
    mut f: impl FnMut(EventChainRow),
) -> Result<()> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut rows = client.query_raw(EVENT_CHAIN, std::iter::empty::<i64>())?;
    while let Some(r) = rows.next()? {
        let t = |i: usize| r.get::<_, Option<String>>(i).unwrap_or_default();
        f(EventChainRow {
            cursor: r.get(0),
            job_id: r.get(1),
            seq: r.get(2),
            fields: [t(3), t(4), t(5)],
            prev_hash: r.get(6),
            hash: r.get(7),
        });
    }
    Ok(())
}
