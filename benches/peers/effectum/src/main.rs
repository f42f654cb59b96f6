//! effectum's worker on the workload of runledger's `Worker` case (benches/core.rs, issue 11):
//! one producer creates N no-op jobs, one `add_to` call per job (timed: the create rate), then
//! 2 effectum `Worker`s, each with min and max concurrency 1 and a no-op handler, run until
//! every job is recorded `succeeded` in the queue's database (timed: the worker rate).
//!
//! N = 20,000 x RUNLEDGER_BENCH_SCALE (as benches/core.rs). EFFECTUM_PEER_MODES picks the
//! journal modes, comma-separated (default `wal,shipped`):
//! - `wal`: the database file is put in WAL mode before effectum opens it (journal_mode=WAL
//!   is stored in the file), and effectum sets synchronous=NORMAL on its writer: the aim's
//!   "WAL NORMAL".
//! - `shipped`: effectum opens a fresh file itself. Its `Queue::with_options` runs
//!   `pragma journal = wal`, which is not a SQLite pragma (SQLite ignores unknown pragmas), so
//!   the file stays in the default rollback journal (DELETE) with synchronous=NORMAL. The run
//!   prints the journal mode it finds.
//!
//! `cargo run --release` here, or benches/peers/run.sh for the side-by-side run.

use std::path::Path;
use std::time::{Duration, Instant};

use effectum::{Job, JobRunner, Queue, RunningJob, Worker};
use serde_json::json;

const KIND: &str = "noop";

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * s).max(10.0) as usize
}

/// The no-op handler: returns at once with a small result, as runledger's bench handler does.
async fn noop(_job: RunningJob, _ctx: ()) -> Result<serde_json::Value, effectum::Error> {
    Ok(json!({ "ok": true }))
}

fn journal_mode(path: &Path) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("pragma journal_mode", [], |r| r.get(0))
        .unwrap()
}

struct Figures {
    journal: String,
    create: f64,
    worker: f64,
    worker_elapsed: Duration,
}

async fn run(dir: &Path, mode: &str, n: usize) -> Figures {
    let path = dir.join(format!("effectum-{mode}.db"));
    match mode {
        "wal" => {
            let c = rusqlite::Connection::open(&path).unwrap();
            let m: String = c
                .query_row("pragma journal_mode = wal", [], |r| r.get(0))
                .unwrap();
            assert_eq!(m, "wal");
        }
        "shipped" => {}
        other => panic!("unknown mode {other:?} (wal or shipped)"),
    }
    let queue = Queue::new(&path).await.unwrap();
    let journal = journal_mode(&path);

    let start = Instant::now();
    for i in 0..n {
        Job::builder(KIND)
            .json_payload(&json!({ "i": i }))
            .unwrap()
            .add_to(&queue)
            .await
            .unwrap();
    }
    let create = n as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut workers: Vec<Worker> = Vec::new();
    for _ in 0..2 {
        let w = Worker::builder(&queue, ())
            .jobs([JobRunner::builder(KIND, noop).build()])
            .min_concurrency(1)
            .max_concurrency(1)
            .build()
            .await
            .unwrap();
        workers.push(w);
    }
    // A worker's `finished` count goes up once the job's completion transaction has committed
    // (effectum's writer thread answers after COMMIT): the count of jobs recorded completed.
    loop {
        let finished: u64 = workers.iter().map(|w| w.counts().finished).sum();
        if finished as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let worker_elapsed = start.elapsed();
    let worker = n as f64 / worker_elapsed.as_secs_f64();

    for w in workers {
        w.unregister(Some(Duration::from_secs(5))).await.unwrap();
    }
    queue.close(Duration::from_secs(5)).await.unwrap();
    // What the database says: every job succeeded, none left active.
    let c = rusqlite::Connection::open(&path).unwrap();
    let succeeded: i64 = c
        .query_row(
            "select count(*) from jobs where status = 'succeeded' and finished_at is not null",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let active: i64 = c
        .query_row("select count(*) from active_jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(succeeded as usize, n, "jobs recorded succeeded");
    assert_eq!(active, 0, "jobs still active");

    Figures {
        journal,
        create,
        worker,
        worker_elapsed,
    }
}

#[tokio::main]
async fn main() {
    let n = scale(20_000);
    let modes = std::env::var("EFFECTUM_PEER_MODES").unwrap_or_else(|_| "wal,shipped".into());
    let dir = tempfile::tempdir().unwrap();
    println!("## effectum 0.7 worker, runledger's Worker workload (jobs/s, higher is better)\n");
    println!("| mode | journal_mode found | n | create, one call per job | 2 workers, concurrency 1, no-op, until all succeeded | worker time |");
    println!("|---|---|---|---|---|---|");
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let f = run(dir.path(), mode, n).await;
        println!(
            "| {mode} | {} | {n} | {:.0} jobs/s | {:.0} jobs/s | {:.2?} |",
            f.journal, f.create, f.worker, f.worker_elapsed
        );
        // One machine-readable line per mode for benches/peers/run.sh.
        println!(
            "EFFECTUM mode={mode} journal={} n={n} create={:.1} worker={:.1}",
            f.journal, f.create, f.worker
        );
    }
}
