//! The global event feed on PostgreSQL (migrations/postgres/P6__feed_fence.sql): cursors are
//! drawn in one order and committed in another, so the feed hands out only events below a
//! horizon no transaction in flight can still commit under. A follower never skips an event,
//! however late its transaction commits; and raw SQL cannot slip an event under the fence.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::{Client, NoTls};
use runledger::{Engine, FeedFilter, NewJob};
use serde_json::json;

use crate::common::TestDb;

const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const AT: &str = "2026-11-30T05:00:00.000Z";

/// Appends a raw `progress` event `seq` of `job` in `tx` (the rows' rules, not the engine's).
fn raw_event(tx: &mut postgres::Transaction<'_>, job: i64, seq: i64) -> i64 {
    tx.query_one(
        "insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
         values ($1, $2, 'progress', '{}', $3, $4, $4) returning cursor",
        &[&job, &seq, &AT, &HASH],
    )
    .unwrap()
    .get(0)
}

/// A new job of `kind` (user "u", empty input).
fn new_job(engine: &Engine, kind: &str) -> runledger::Job {
    engine
        .jobs()
        .create(&NewJob::new("u", kind, json!({})))
        .unwrap()
}

/// `n` threads, each running `per` jobs of its own kind through create, claim (and
/// `progress` when asked) and complete on `engine`, in autocommit as a worker does.
fn writers(
    engine: &Engine,
    n: usize,
    per: usize,
    progress: bool,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let jobs = engine.jobs();
                let kind = format!("k{w}");
                for _ in 0..per {
                    new_job(&engine, &kind);
                    let claim = jobs.claim("w", &[kind.as_str()]).unwrap().unwrap();
                    if progress {
                        jobs.progress(&claim, 50, None).unwrap();
                    }
                    jobs.complete(&claim, &json!({})).unwrap();
                }
            })
        })
        .collect()
}

fn cursors(page: &runledger::FeedPage) -> Vec<i64> {
    page.events.iter().map(|e| e.event.cursor).collect()
}

#[test]
fn an_event_committed_after_a_later_cursor_is_not_skipped() {
    let Some(db) = TestDb::new("feed_late") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let jobs = engine.jobs();
    let first = jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let head = engine
        .events()
        .feed(&FeedFilter::All, 0, 10, false)
        .unwrap()
        .head;
    // another session draws a cursor and keeps its transaction open
    let mut other = Client::connect(&db.url, NoTls).unwrap();
    let mut slow = other.transaction().unwrap();
    let late = raw_event(&mut slow, first.id, 2);
    // meanwhile the engine commits an event under a larger cursor
    let second = jobs.create(&NewJob::new("u", "k", json!({}))).unwrap();
    let created = engine.events().since(second.id, 0, 10).unwrap()[0].cursor;
    assert!(created > late);
    // the feed stops below the cursor still in flight: handing out `created` now would let
    // a follower move past `late`
    let page = engine
        .events()
        .feed(&FeedFilter::All, head, 10, true)
        .unwrap();
    assert!(page.events.is_empty(), "{:?}", cursors(&page));
    assert_eq!(page.head, head, "the head stays below the fence");
    assert!(engine.events().after(head, 10).unwrap().is_empty());
    slow.commit().unwrap();
    let page = engine
        .events()
        .feed(&FeedFilter::All, head, 10, true)
        .unwrap();
    assert_eq!(cursors(&page), [late, created]);
    assert_eq!(page.head, created);
}

#[test]
fn a_rolled_back_writer_releases_the_feed() {
    let Some(db) = TestDb::new("feed_rollback") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let job = new_job(&engine, "k");
    let mut other = Client::connect(&db.url, NoTls).unwrap();
    let mut slow = other.transaction().unwrap();
    raw_event(&mut slow, job.id, 2);
    let next = new_job(&engine, "k");
    assert_eq!(engine.events().after(0, 10).unwrap().len(), 1);
    slow.rollback().unwrap();
    let after = engine.events().after(0, 10).unwrap();
    assert_eq!(
        after.iter().map(|e| e.job_id).collect::<Vec<_>>(),
        [job.id, next.id]
    );
}

/// Writers in autocommit beside a raw writer whose transactions stay open for a while (and
/// sometimes roll back), and a follower paging the feed all along: the follower gets every
/// committed event exactly once, in growing cursor order. (With the horizon reduced to the
/// sequence alone, this follower skips events: checked when the fence was written.)
#[test]
fn a_follower_gets_every_event_once_while_writers_commit_out_of_order() {
    let Some(mut db) = TestDb::new("feed_follow") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let slow_job = new_job(&engine, "slow");
    let slow_id = slow_job.id;
    let done = Arc::new(AtomicBool::new(false));
    let writers = writers(&engine, 3, 25, true);
    let url = db.url.clone();
    let slow = std::thread::spawn(move || {
        let mut client = Client::connect(&url, NoTls).unwrap();
        let mut seq = 1;
        for n in 0..40u64 {
            let mut tx = client.transaction().unwrap();
            raw_event(&mut tx, slow_job.id, seq + 1);
            std::thread::sleep(Duration::from_millis(3 + n % 7 * 3));
            if n % 5 == 4 {
                tx.rollback().unwrap();
            } else {
                tx.commit().unwrap();
                seq += 1;
            }
        }
    });
    let follower = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut cursor = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = engine
                    .events()
                    .feed(&FeedFilter::All, cursor, 50, false)
                    .unwrap();
                for e in &page.events {
                    assert!(e.event.cursor > cursor, "cursors only grow");
                    cursor = e.event.cursor;
                    got.push(cursor);
                }
                if finished && page.events.is_empty() {
                    return got;
                }
                if page.events.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    slow.join().unwrap();
    done.store(true, Ordering::SeqCst);
    let got = follower.join().unwrap();
    let all: Vec<i64> = db
        .raw
        .query("select cursor from job_events order by cursor", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // 1 + 3 writers x 25 jobs x 4 events + 32 committed raw events
    assert_eq!(all.len(), 1 + 300 + 32);
    let unique: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no event twice");
    assert_eq!(got, all, "every committed event, in cursor order");
    assert_eq!(
        db.query_i64(&format!(
            "select count(*) from job_events where job_id = {slow_id}"
        )),
        33
    );
}

#[test]
fn raw_sql_cannot_slip_an_event_under_the_fence() {
    let Some(mut db) = TestDb::new("feed_attack") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let job = new_job(&engine, "k");
    let first = engine.events().since(job.id, 0, 1).unwrap()[0].cursor;
    // an explicit cursor on a transaction's first event is drawn again after the fence
    let mut tx = db.raw.transaction().unwrap();
    let kept: i64 = tx
        .query_one(
            "insert into job_events (cursor, job_id, seq, kind, payload, at, prev_hash, hash)
             overriding system value values (1000, $1, 2, 'progress', '{}', $2, $3, $3) returning cursor",
            &[&job.id, &AT, &HASH],
        )
        .unwrap()
        .get(0);
    assert!(kept > first && kept < 1000, "redrawn: {kept}");
    // a later one below the transaction's fence is refused
    let err = tx
        .query_one(
            "insert into job_events (cursor, job_id, seq, kind, payload, at, prev_hash, hash)
             overriding system value values ($1, $2, 3, 'progress', '{}', $3, $4, $4) returning cursor",
            &[&first, &job.id, &AT, &HASH],
        )
        .unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.starts_with("EVENT_CURSOR: job_events:"),
        "{message}"
    );
    drop(tx);
    // a savepoint rolled back takes its fence with it; the next event fences again
    db.raw
        .batch_execute("begin; savepoint s; select runledger_feed_fence(); rollback to savepoint s")
        .unwrap();
    let setting: Option<String> = db
        .raw
        .query_one(
            "select nullif(current_setting('runledger.feed_fence', true), '')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(setting, None);
    db.raw.batch_execute("rollback").unwrap();
    assert_eq!(db.query_i64("select count(*) from job_events"), 1);
    assert_eq!(engine.events().after(0, 10).unwrap().len(), 1);
}

/// A cursor sequence altered to cache values (DDL a shell can run; doctor reports it) hands
/// a session a cursor it drew before a later fence: the trigger refuses such an event
/// (`EVENT_CURSOR`, loudly) rather than let a follower skip it.
#[test]
fn regression_a_cached_cursor_would_come_out_under_a_later_fence() {
    let Some(mut db) = TestDb::new("feed_cache") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let job = new_job(&engine, "k");
    db.exec("alter sequence job_events_cursor_seq cache 50")
        .unwrap();
    // this session caches 50 values; the engine's session then caches the next 50, and its
    // fence is past both: the value it draws from its cache is under its own fence
    db.raw
        .query_one("select nextval('job_events_cursor_seq')", &[])
        .unwrap();
    let refused = engine
        .jobs()
        .create(&NewJob::new("u", "k", json!({})))
        .unwrap_err();
    assert_eq!(refused.code(), "EVENT_CURSOR", "{refused}");
    let mut tx = db.raw.transaction().unwrap();
    let err = tx
        .query_one(
            "insert into job_events (job_id, seq, kind, payload, at, prev_hash, hash)
             values ($1, 2, 'progress', '{}', $2, $3, $3) returning cursor",
            &[&job.id, &AT, &HASH],
        )
        .unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.starts_with("EVENT_CURSOR: job_events:"),
        "{message}"
    );
    drop(tx);
    assert_eq!(
        db.query_i64("select count(*) from jobs"),
        1,
        "nothing half-written"
    );
    assert_eq!(engine.events().after(0, 10).unwrap().len(), 1);
}

/// Another schema's writer in flight does not hold this schema's feed back.
#[test]
fn a_writer_in_another_schema_does_not_hold_the_feed() {
    let (Some(a), Some(b)) = (TestDb::new("feed_schema_a"), TestDb::new("feed_schema_b")) else {
        return;
    };
    let (ea, eb) = (Engine::open(&a.url).unwrap(), Engine::open(&b.url).unwrap());
    let job_b = new_job(&eb, "k");
    let mut other = Client::connect(&b.url, NoTls).unwrap();
    let mut slow = other.transaction().unwrap();
    raw_event(&mut slow, job_b.id, 2);
    new_job(&ea, "k");
    assert_eq!(ea.events().after(0, 10).unwrap().len(), 1);
    slow.rollback().unwrap();
}

/// `Events::subscribe` on PostgreSQL follows the feed: events another engine (another
/// process, another node) commits arrive too, woken by NOTIFY well before the one-second
/// read; once the receiver is gone and the next event is read, the follower ends and its
/// listener leaves `runledger_event_listeners` (so writers stop notifying).
#[test]
fn a_subscriber_hears_other_engines_and_its_follower_ends_with_it() {
    let Some(mut db) = TestDb::new("feed_subscribe") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let other = Engine::open(&db.url).unwrap();
    let rx = engine.events().subscribe();
    assert_eq!(
        db.query_i64("select count(*) from runledger_event_listeners"),
        1
    );
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let job = new_job(&other, "k");
        let e = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        latencies.push(started.elapsed());
        assert_eq!((e.job_id, e.seq), (job.id, 1));
    }
    latencies.sort();
    println!("subscribe latency across engines: {latencies:?}");
    assert!(
        latencies[2] < Duration::from_millis(500),
        "woken by NOTIFY, not by the 1 s read: {latencies:?}"
    );
    drop(rx);
    new_job(&other, "k");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db.query_i64("select count(*) from runledger_event_listeners") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fence read the sequence's `last_value` with a plain SELECT, which can see the tuple
/// while a concurrent `nextval` rewrites it (the value it WAL-logs ahead, up to 32 more):
/// the floor came out above the cursor drawn next, and a legitimate claim or complete was
/// refused `EVENT_CURSOR` (the PostgreSQL bench stopped so at 8-16 workers). The fence now
/// reads `pg_sequence_last_value`, under the sequence's buffer lock.
#[test]
fn regression_a_torn_read_of_the_cursor_sequence_refused_legit_writes() {
    let Some(db) = TestDb::new("feed_torn") else {
        return;
    };
    let engine = Engine::open(&db.url).unwrap();
    let threads = writers(&engine, 16, 120, false);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        engine.events().after(0, 10_000).unwrap().len(),
        16 * 120 * 3
    );
}
