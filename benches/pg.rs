//! claim+complete on PostgreSQL with 1, 2, 4, 8 and 16 workers (each its own connection),
//! beside a plain-SQL baseline on the same server in the same run: the same
//! `FOR UPDATE SKIP LOCKED` claim statement and a guarded complete on a bare table, without
//! runledger's bookkeeping (triggers, CHECKs, events and their hash chain, statement
//! round trips of the facade).
//!
//! `cargo bench --bench pg --features postgres` against `RUNLEDGER_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`); RUNLEDGER_BENCH_SCALE scales the job count.
//! Each run works in a fresh schema `rl_bench`. A third column runs the plain statements in
//! autocommit (no BEGIN/COMMIT round trips), as runledger runs its one-statement claim and
//! complete since schema version 4: the strictest baseline. `RUNLEDGER_BENCH_PG_SET=synchronous_commit=off`
//! runs both sides without waiting for the WAL flush at commit; `RUNLEDGER_BENCH_PG_WORKERS=1,4`
//! runs only those rows.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use postgres::{Client, NoTls};
use runledger::pg::PgEngine;
use runledger::NewJob;
use serde_json::json;

const PLAIN: &str = "create table plain_jobs (
    id bigint generated always as identity primary key,
    kind text not null, state text not null default 'created', attempt bigint not null default 0,
    worker_id text, input jsonb not null default '{}', result jsonb,
    heartbeat_at text, started_at text, finished_at text, created_at text not null);
    create index plain_jobs_claim on plain_jobs (id) include (kind) where state = 'created'";

const PLAIN_CLAIM: &str =
    "update plain_jobs set state = 'running', attempt = attempt + 1, worker_id = $1,
        started_at = greatest($2, created_at), heartbeat_at = $2
     where id = (select id from plain_jobs where state = 'created' and ($3 or kind = any($4))
                 order by id limit 1 for update skip locked)
     returning id, attempt";
const PLAIN_COMPLETE: &str =
    "update plain_jobs set state = 'completed', result = $3, finished_at = $4
     where id = $1 and attempt = $2 and state = 'running'";

const STRIP_CHECKS: &str = "alter table jobs drop constraint jobs_row_check;
    alter table job_events drop constraint job_events_row_check";
const STRIP_TRIGGERS: &str =
    "alter table jobs disable trigger user; alter table job_events disable trigger user";

/// `base` with the schema's search_path, plus `RUNLEDGER_BENCH_PG_SET` (e.g.
/// `synchronous_commit=off`, to see what the commit's flush costs) on every connection.
fn url(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut options = format!("-csearch_path%3D{schema}");
    if let Ok(set) = std::env::var("RUNLEDGER_BENCH_PG_SET") {
        options.push_str(&format!("%20-c{}", set.replace('=', "%3D")));
    }
    format!("{base}{sep}options={options}")
}

/// Jobs per second of `workers` threads each running `work` until it returns false.
fn run(workers: usize, make: impl Fn() -> Box<dyn FnMut() -> bool + Send>) -> f64 {
    let barrier = Arc::new(Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let mut work = make();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut n = 0u64;
                while work() {
                    n += 1;
                }
                n
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let done: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let base = std::env::var("RUNLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let scale: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let n = ((2000.0 * scale) as usize).max(100);
    let mut admin = match Client::connect(&base, NoTls) {
        Ok(c) => c,
        Err(e) => {
            println!("pg bench skipped: no server at {base} ({e})");
            return;
        }
    };
    admin
        .batch_execute("drop schema if exists rl_bench cascade; create schema rl_bench")
        .unwrap();
    let url = url(&base, "rl_bench");
    let setup = PgEngine::open(&url).unwrap();
    let mut raw = Client::connect(&url, NoTls).unwrap();
    raw.batch_execute(PLAIN).unwrap();
    // RUNLEDGER_BENCH_PG_DROP_NOTIFY=1: a diagnostic run without schema version 2's NOTIFY
    // triggers, to show what the wake-ups cost (never how a ledger runs: doctor reports it)
    if std::env::var_os("RUNLEDGER_BENCH_PG_DROP_NOTIFY").is_some() {
        raw.batch_execute(
            "drop trigger jobs_notify_created on jobs; drop trigger jobs_notify_requeued on jobs;
             drop trigger job_events_notify on job_events",
        )
        .unwrap();
        println!("(NOTIFY triggers dropped for this run)");
    }
    // RUNLEDGER_BENCH_PG_STRIP=checks (the row CHECKs of jobs and job_events dropped) or
    // =rules (those and every trigger of the two tables disabled): diagnostic runs that show
    // what the rules cost, never how a ledger runs (doctor reports both)
    if let Ok(strip) = std::env::var("RUNLEDGER_BENCH_PG_STRIP") {
        let sql = match strip.as_str() {
            "checks" => STRIP_CHECKS.to_string(),
            "rules" => format!("{STRIP_CHECKS}; {STRIP_TRIGGERS}"),
            other => panic!("RUNLEDGER_BENCH_PG_STRIP={other}: checks or rules"),
        };
        raw.batch_execute(&sql).unwrap();
        println!("(diagnostic: {strip} stripped for this run)");
    }
    let now = "2026-11-22T11:30:00.000Z";
    println!("claim+complete, {n} jobs per row, jobs/s (each worker its own connection)");
    println!(
        "{:>8} {:>12} {:>12} {:>7} {:>14} {:>7}",
        "workers", "runledger", "plain SQL", "ratio", "plain autocom.", "ratio"
    );
    // RUNLEDGER_BENCH_PG_WORKERS=1,4: only these rows (a diagnostic run, e.g. under a profiler)
    let rows: Vec<usize> = match std::env::var("RUNLEDGER_BENCH_PG_WORKERS") {
        Ok(list) => list.split(',').map(|w| w.trim().parse().unwrap()).collect(),
        Err(_) => vec![1, 2, 4, 8, 16],
    };
    for workers in rows {
        let batch: Vec<NewJob> = (0..n)
            .map(|i| NewJob::new("bench", "research", json!({ "i": i })))
            .collect();
        for chunk in batch.chunks(500) {
            for job in chunk {
                setup.jobs().create(job).unwrap();
            }
        }
        let ours = run(workers, || {
            let engine = PgEngine::open(&url).unwrap();
            let worker = format!("w{}", rand_id());
            Box::new(
                move || match engine.jobs().claim(&worker, &["research"]).unwrap() {
                    Some(claim) => {
                        engine
                            .jobs()
                            .complete(&claim, &json!({"ok": true}))
                            .unwrap();
                        true
                    }
                    None => false,
                },
            )
        });
        let mut tx = raw.transaction().unwrap();
        let insert = tx
            .prepare("insert into plain_jobs (kind, input, created_at) values ('research', $1, $2)")
            .unwrap();
        for i in 0..n {
            tx.execute(&insert, &[&json!({ "i": i }), &now]).unwrap();
        }
        tx.commit().unwrap();
        let plain = run(workers, || {
            let mut c = Client::connect(&url, NoTls).unwrap();
            let claim = c.prepare(PLAIN_CLAIM).unwrap();
            let complete = c.prepare(PLAIN_COMPLETE).unwrap();
            let worker = format!("w{}", rand_id());
            let kinds = vec!["research".to_string()];
            Box::new(move || {
                let mut tx = c.transaction().unwrap();
                let row = tx
                    .query_opt(&claim, &[&worker, &now, &false, &kinds])
                    .unwrap();
                let Some(row) = row else { return false };
                tx.commit().unwrap();
                let (id, attempt): (i64, i64) = (row.get(0), row.get(1));
                let mut tx = c.transaction().unwrap();
                let n = tx
                    .execute(&complete, &[&id, &attempt, &json!({"ok": true}), &now])
                    .unwrap();
                assert_eq!(n, 1);
                tx.commit().unwrap();
                true
            })
        });
        let mut tx = raw.transaction().unwrap();
        for i in 0..n {
            tx.execute(&insert, &[&json!({ "i": i }), &now]).unwrap();
        }
        tx.commit().unwrap();
        let auto = run(workers, || {
            let mut c = Client::connect(&url, NoTls).unwrap();
            let claim = c.prepare(PLAIN_CLAIM).unwrap();
            let complete = c.prepare(PLAIN_COMPLETE).unwrap();
            let worker = format!("w{}", rand_id());
            let kinds = vec!["research".to_string()];
            Box::new(move || {
                let row = c
                    .query_opt(&claim, &[&worker, &now, &false, &kinds])
                    .unwrap();
                let Some(row) = row else { return false };
                let (id, attempt): (i64, i64) = (row.get(0), row.get(1));
                let n = c
                    .execute(&complete, &[&id, &attempt, &json!({"ok": true}), &now])
                    .unwrap();
                assert_eq!(n, 1);
                true
            })
        });
        println!(
            "{workers:>8} {ours:>12.0} {plain:>12.0} {:>6.2}x {auto:>14.0} {:>6.2}x",
            ours / plain,
            ours / auto
        );
    }
    admin.batch_execute("drop schema rl_bench cascade").unwrap();
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
