//! The engine core's aims (issue 11), each beside a plain-rusqlite baseline measured in the
//! same run: the `Worker`, claim+complete with 2 threads (NORMAL) and 8 threads (FULL),
//! create one call per job and in batches of 1,000, read latency while 8 threads write at
//! FULL, and the resident memory of a worker as the number of processed jobs grows.
//!
//! `cargo bench --bench core` (RUNLEDGER_BENCH_SCALE=0.1 for a quick run).
//! RUNLEDGER_BENCH_CASES=worker,create runs only the named cases (comma-separated: `worker`
//! with its plain baseline and RSS table, `claim_complete`, `create`, `create_many`, `reads`);
//! unset, all of them. benches/peers/run.sh uses it for the effectum comparison.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use runledger::{Durability, Engine, EventKind, NewJob, Worker, WorkerOptions};
use serde_json::json;

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * s).max(10.0) as usize
}

fn new_job(i: usize) -> NewJob {
    NewJob::new("bench", "noop", json!({ "i": i }))
}

fn seed(e: &Engine, n: usize) {
    let batch: Vec<NewJob> = (0..n).map(new_job).collect();
    for chunk in batch.chunks(1000) {
        e.jobs().create_many(chunk).unwrap();
    }
}

const PLAIN_INSERT: &str = "insert into jobs (user_id, kind, state, input, created_at)
    values ('bench', 'noop', 'created', ?1, '2026-11-22T11:30:00.000Z')";
const PLAIN_CLAIM: &str =
    "update jobs set state = 'running', attempt = attempt + 1, worker_id = ?1,
      heartbeat_at = '2026-11-22T11:30:00.000Z'
    where id = (select id from jobs where state = 'created' and kind = 'noop' order by id limit 1)
    returning id";
const PLAIN_COMPLETE: &str = "update jobs set state = 'completed', result = '{\"ok\":true}',
    progress = 100, finished_at = '2026-11-22T11:30:01.000Z' where id = ?1 and attempt = 1";

fn plain_seeded(path: &Path, d: Durability, n: usize) {
    let mut c = baseline_conn(path, sync_name(d));
    c.execute_batch(PLAIN_SCHEMA).unwrap();
    let tx = c.transaction().unwrap();
    for i in 0..n {
        tx.execute(PLAIN_INSERT, [json!({ "i": i }).to_string()])
            .unwrap();
    }
    tx.commit().unwrap();
}

/// Plain claim (one UPDATE ... RETURNING on the partial index) then complete (one UPDATE),
/// each its own BEGIN IMMEDIATE transaction, `threads` threads with a connection each.
fn plain_claim_complete(dir: &Path, d: Durability, n: usize, threads: usize) -> f64 {
    let path = dir.join(format!("plain-cc-{threads}-{d:?}.db"));
    plain_seeded(&path, d, n);
    rate(n, || {
        let ts: Vec<_> = (0..threads)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut c = baseline_conn(&path, sync_name(d));
                    loop {
                        let imm = rusqlite::TransactionBehavior::Immediate;
                        let tx = c.transaction_with_behavior(imm).unwrap();
                        let id: Option<i64> = tx
                            .query_row(PLAIN_CLAIM, [format!("w{w}")], |r| r.get(0))
                            .ok();
                        tx.commit().unwrap();
                        let Some(id) = id else { break };
                        let tx = c.transaction_with_behavior(imm).unwrap();
                        tx.execute(PLAIN_COMPLETE, [id]).unwrap();
                        tx.commit().unwrap();
                    }
                })
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
    })
    .0
}

/// runledger claim then complete, one call each, `threads` threads sharing one engine.
fn claim_complete(dir: &Path, d: Durability, n: usize, threads: usize) -> f64 {
    let e = engine(&dir.join(format!("cc-{threads}-{d:?}.db")), d);
    seed(&e, n);
    rate(n, || {
        let ts: Vec<_> = (0..threads)
            .map(|w| {
                let e = e.clone();
                std::thread::spawn(move || {
                    let name = format!("w{w}");
                    while let Some(c) = e.jobs().claim(&name, &["noop"]).unwrap() {
                        e.jobs().complete(&c, &json!({"ok": true})).unwrap();
                    }
                })
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
    })
    .0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// 2 `Worker`s (concurrency 1, no-op handler) until every job is recorded completed
/// (counted from the committed `completed` events); RSS sampled every `n / 4` jobs.
fn workers(dir: &Path, n: usize) -> (f64, Vec<(usize, u64)>) {
    let e = engine(&dir.join("worker.db"), Durability::Normal);
    seed(&e, n);
    let events = e.events().subscribe();
    let mut samples = vec![(0, rss_kib())];
    let (r, _) = rate(n, || {
        let ws: Vec<_> = (0..2)
            .map(|w| {
                let mut opts = WorkerOptions::new(format!("w{w}"), ["noop"]);
                opts.idle_poll = Duration::from_millis(1);
                Worker::start(e.clone(), opts, |_| Ok(json!({"ok": true}))).unwrap()
            })
            .collect();
        let mut done = 0;
        while done < n {
            let ev = events.recv().unwrap();
            if ev.kind == EventKind::Completed {
                done += 1;
                if done % (n / 4).max(1) == 0 {
                    samples.push((done, rss_kib()));
                }
            }
        }
        for w in ws {
            w.shutdown(Duration::from_secs(5));
        }
    });
    let counts = e.jobs().stats().unwrap();
    assert_eq!(counts.by_state.completed as usize, n);
    (r, samples)
}

fn create_one_by_one(dir: &Path, n: usize) -> (f64, f64) {
    let e = engine(&dir.join("create.db"), Durability::Normal);
    let ours = rate(n, || {
        for i in 0..n {
            e.jobs().create(&new_job(i)).unwrap();
        }
    })
    .0;
    let mut c = baseline_conn(&dir.join("plain-create.db"), "normal");
    c.execute_batch(PLAIN_SCHEMA).unwrap();
    let base = rate(n, || {
        for i in 0..n {
            let imm = rusqlite::TransactionBehavior::Immediate;
            let tx = c.transaction_with_behavior(imm).unwrap();
            tx.execute(PLAIN_INSERT, [json!({ "i": i }).to_string()])
                .unwrap();
            tx.commit().unwrap();
        }
    })
    .0;
    (ours, base)
}

fn create_batches(dir: &Path, n: usize) -> (f64, f64) {
    let e = engine(&dir.join("create-many.db"), Durability::Normal);
    let batches: Vec<Vec<NewJob>> = (0..n)
        .map(new_job)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[NewJob]>::to_vec)
        .collect();
    let ours = rate(n, || {
        for b in &batches {
            e.jobs().create_many(b).unwrap();
        }
    })
    .0;
    let mut c = baseline_conn(&dir.join("plain-create-many.db"), "normal");
    c.execute_batch(PLAIN_SCHEMA).unwrap();
    let base = rate(n, || {
        for b in &batches {
            let tx = c.transaction().unwrap();
            {
                let mut ins = tx.prepare_cached(PLAIN_INSERT).unwrap();
                for j in b {
                    ins.execute([j.input.to_string()]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
    })
    .0;
    (ours, base)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// While 8 threads claim+complete at FULL, one thread alternates reading one job's last 50
/// events and listing 50 jobs; returns the latencies of each, sorted, and how many jobs the
/// writers finished meanwhile.
fn reads_under_writes(
    dir: &Path,
    jobs: usize,
    reads: usize,
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let e = engine(&dir.join("reads.db"), Durability::Full);
    seed(&e, jobs);
    e.jobs()
        .create(&NewJob::new("reader", "watched", json!({})))
        .unwrap();
    let w = e.jobs().claim("watcher", &["watched"]).unwrap().unwrap();
    for p in 0..60u8 {
        e.jobs().progress(&w, p, None).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let name = format!("w{t}");
                let mut done = 0;
                while !stop.load(Ordering::SeqCst) {
                    let Some(c) = e.jobs().claim(&name, &["noop"]).unwrap() else {
                        break;
                    };
                    e.jobs().complete(&c, &json!(1)).unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (mut ev_lat, mut list_lat) = (Vec::new(), Vec::new());
    for _ in 0..reads {
        let t = Instant::now();
        let got = e.events().since(w.id(), 61 - 50, 50).unwrap();
        ev_lat.push(t.elapsed());
        assert_eq!(got.len(), 50);
        let t = Instant::now();
        let got = e.jobs().list(None, None, None, 50).unwrap();
        list_lat.push(t.elapsed());
        assert_eq!(got.len(), 50);
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::SeqCst);
    let done = writers.into_iter().map(|t| t.join().unwrap()).sum();
    ev_lat.sort();
    list_lat.sort();
    (ev_lat, list_lat, done)
}

fn dist(name: &str, lat: &[Duration]) {
    println!(
        "| {name} | {} | {:?} | {:?} | {:?} | {:?} | {:?} |",
        lat.len(),
        percentile(lat, 0.5),
        percentile(lat, 0.9),
        percentile(lat, 0.99),
        percentile(lat, 0.999),
        lat[lat.len() - 1]
    );
}

/// Whether `case` is selected by RUNLEDGER_BENCH_CASES (all cases when it is unset or empty).
fn selected(case: &str) -> bool {
    match std::env::var("RUNLEDGER_BENCH_CASES") {
        Ok(v) if !v.trim().is_empty() => v.split(',').any(|c| c.trim() == case),
        _ => true,
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = scale(20_000);
    let n_full = scale(4_000);
    println!("## Engine core (jobs/s, higher is better)\n");
    println!("| case | runledger | plain rusqlite | ratio |");
    println!("|---|---|---|---|");
    let (want_worker, want_cc) = (selected("worker"), selected("claim_complete"));
    let plain2 = if want_worker || want_cc {
        plain_claim_complete(d, Durability::Normal, n, 2)
    } else {
        0.0
    };
    let mut rss = Vec::new();
    if want_worker {
        let (w, samples) = workers(d, n);
        rss = samples;
        report(
            &format!("Worker x2, concurrency 1, no-op (Normal, n={n}) vs plain claim+complete x2"),
            "jobs/s",
            w,
            plain2,
        );
    }
    if want_cc {
        let cc2 = claim_complete(d, Durability::Normal, n, 2);
        report(
            &format!("claim+complete, 2 threads (Normal, n={n})"),
            "jobs/s",
            cc2,
            plain2,
        );
        let plain8 = plain_claim_complete(d, Durability::Full, n_full, 8);
        let cc8 = claim_complete(d, Durability::Full, n_full, 8);
        report(
            &format!("claim+complete, 8 threads (Full, n={n_full})"),
            "jobs/s",
            cc8,
            plain8,
        );
    }
    if selected("create") {
        let (o, b) = create_one_by_one(d, n);
        report(
            &format!("create, one call per job (Normal, n={n})"),
            "jobs/s",
            o,
            b,
        );
    }
    if selected("create_many") {
        let (o, b) = create_batches(d, n);
        report(
            &format!("create_many of 1,000 (Normal, n={n}) vs plain batch insert"),
            "jobs/s",
            o,
            b,
        );
    }
    if want_worker {
        println!("\n## Worker resident memory (VmRSS) by jobs completed\n");
        println!("| jobs completed | RSS KiB |");
        println!("|---|---|");
        for (done, kib) in rss {
            println!("| {done} | {kib} |");
        }
    }
    if !selected("reads") {
        return;
    }
    let (ev, list, done) = reads_under_writes(d, scale(50_000), scale(2_000));
    println!("\n## Reads while 8 threads claim+complete at Full ({done} jobs done meanwhile)\n");
    println!("| read | n | p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    dist("one job's last 50 events", &ev);
    dist("list 50 jobs", &list);
}
