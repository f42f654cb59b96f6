//! The HTTP API and event stream under load, over loopback.
//!
//! The server runs in a child process (this binary, re-executed), as in a deployment; the
//! bench process holds the writers (4 worker threads, each with its own connection, so
//! delivery goes through the server's cross-connection watcher) and the stream clients.
//!
//! 1. 1,000 SSE clients follow 100 jobs (10 per job) while 4 workers write progress:
//!    delivery latency (event `at` -> client receipt) p50/p99/max, lost and duplicate counts.
//! 2. Memory per idle stream client: the server's RSS with 1,000 idle streams open, minus
//!    its RSS before, / 1,000.
//! 3. `GET /jobs/{id}` requests/s with 4 keep-alive client threads.
//!
//! `RUNLEDGER_BENCH_SCALE=0.1` runs a tenth of the clients and events.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use runledger::http::{HttpOptions, Server};
use runledger::{Clock, Engine, NewJob, SystemClock, Timestamp};
use serde_json::{json, Value};

const JOBS: usize = 100;
const WORKERS: usize = 4;

fn scale() -> f64 {
    std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn main() {
    if let Ok(db) = std::env::var("RUNLEDGER_BENCH_SERVER") {
        return serve(&db);
    }
    let clients = ((1000.0 * scale()) as usize).max(JOBS);
    let per_job = ((40.0 * scale()) as usize).max(5);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let engine = Engine::open(&db).unwrap();
    let jobs: Vec<i64> = (0..JOBS)
        .map(|i| {
            engine
                .jobs()
                .create(&NewJob::new(format!("u{}", i % 10), "bench", json!({})))
                .unwrap()
                .id
        })
        .collect();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("RUNLEDGER_BENCH_SERVER", &db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_string();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid);

    // Clients connect and wait at the barrier with their stream open.
    let ready = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, ready, job) = (addr.clone(), Arc::clone(&ready), jobs[i % JOBS]);
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || follow(&addr, job, &ready))
                .unwrap()
        })
        .collect();
    ready.wait();
    std::thread::sleep(Duration::from_millis(1000));
    let rss_open = rss_kib(pid);

    // Writers: 4 workers, each its own engine, claim 25 jobs and write round-robin.
    let start = Instant::now();
    let writers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                let engine = Engine::open(&db).unwrap();
                let mut mine = Vec::new();
                for _ in 0..JOBS / WORKERS {
                    let c = engine.jobs().claim(&format!("w{w}"), &[]).unwrap().unwrap();
                    mine.push(c);
                }
                for p in 0..per_job {
                    for c in &mine {
                        engine.jobs().progress(c, (p % 100) as u8, None).unwrap();
                    }
                }
                for c in &mine {
                    engine.jobs().complete(c, &json!({})).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let write_time = start.elapsed();
    let results: Vec<Follow> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    // Expected per client: every event of its job after creation (claimed, progress, completed).
    let expected = 1 + per_job + 1;
    let mut latencies: Vec<i64> = results.iter().flat_map(|r| r.latencies.clone()).collect();
    latencies.sort_unstable();
    let lost: usize = results
        .iter()
        .map(|r| expected.saturating_sub(r.unique))
        .sum();
    let dup: usize = results.iter().map(|r| r.duplicates).sum();
    let resyncs: usize = results.iter().map(|r| r.resyncs).sum();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "stream: {clients} clients on {JOBS} jobs, {WORKERS} writers, {} events written in {:.2} s ({:.0} events/s), {} deliveries",
        JOBS * expected,
        write_time.as_secs_f64(),
        (JOBS * (per_job + 1)) as f64 / write_time.as_secs_f64(),
        latencies.len()
    );
    println!(
        "stream latency (event at -> client): p50 {} ms, p99 {} ms, max {} ms; lost {lost}, duplicates {dup}, resyncs {resyncs}",
        pct(0.5),
        pct(0.99),
        latencies.last().unwrap()
    );
    println!(
        "idle stream memory: server RSS {} KiB before, {} KiB with {clients} streams: {:.1} KiB per client",
        rss_before,
        rss_open,
        (rss_open as f64 - rss_before as f64) / clients as f64
    );

    // GET /jobs/{id} throughput.
    let secs = 3.0 * scale().max(0.34);
    let threads = 4;
    let t0 = Instant::now();
    let counts: Vec<usize> = (0..threads)
        .map(|t| {
            let (addr, job) = (addr.clone(), jobs[t]);
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
                let url = format!("http://{addr}/jobs/{job}");
                let mut n = 0;
                let until = Instant::now() + Duration::from_secs_f64(secs);
                while Instant::now() < until {
                    let mut r = agent.get(&url).call().unwrap();
                    let _ = r.body_mut().read_to_vec().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let total: usize = counts.iter().sum();
    println!(
        "GET /jobs/{{id}}: {total} requests in {:.2} s with {threads} keep-alive clients: {:.0} requests/s",
        t0.elapsed().as_secs_f64(),
        total as f64 / t0.elapsed().as_secs_f64()
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The server child: serve the file until stdin closes.
fn serve(db: &str) {
    let engine = Engine::open(db).unwrap();
    let server = Server::start(engine, HttpOptions::default(), "127.0.0.1:0").unwrap();
    println!("{}", server.addr());
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
    server.stop();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Follow {
    latencies: Vec<i64>,
    unique: usize,
    duplicates: usize,
    resyncs: usize,
}

/// One stream client (HTTP/1.0, so the body is the raw SSE text): reads until its job
/// completes.
fn follow(addr: &str, job: i64, ready: &Barrier) -> Follow {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET /events?job={job} HTTP/1.0\r\nHost: bench\r\n\r\n").unwrap();
    let mut r = BufReader::with_capacity(4096, s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    ready.wait();
    let mut out = Follow {
        latencies: Vec::new(),
        unique: 0,
        duplicates: 0,
        resyncs: 0,
    };
    let mut seen = std::collections::HashSet::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return out;
        }
        if line.starts_with("event: resync") || line.starts_with("event:resync") {
            out.resyncs += 1;
        }
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let now = SystemClock.now();
        let v: Value = serde_json::from_str(data.trim()).unwrap();
        let Some(seq) = v["seq"].as_i64() else {
            continue;
        };
        let at = Timestamp::parse(v["at"].as_str().unwrap()).unwrap();
        out.latencies.push(now.millis_since(at));
        if seen.insert(seq) {
            out.unique += 1;
        } else {
            out.duplicates += 1;
        }
        if v["kind"] == "completed" {
            return out;
        }
    }
}
