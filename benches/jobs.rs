//! Job store throughput beside a plain-rusqlite baseline doing the minimum SQL for the same
//! work, in the same run, on the same kind of file and durability setting.
//!
//! `cargo bench --bench jobs` (set RUNLEDGER_BENCH_SCALE=0.1 for a quick run).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use runledger::{Durability, NewJob, Supervisor, SupervisorOptions};
use serde_json::json;

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("RUNLEDGER_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * s).max(10.0) as usize
}

fn bench_create(dir: &Path, d: Durability, n: usize) -> (f64, f64) {
    let e = engine(&dir.join(format!("create-{d:?}.db")), d);
    let (ours, _) = rate(n, || {
        for i in 0..n {
            e.jobs()
                .create(&NewJob::new("bench", "research", json!({ "i": i })))
                .unwrap();
        }
    });
    let mut c = baseline_conn(&dir.join(format!("create-base-{d:?}.db")), sync_name(d));
    c.execute_batch(PLAIN_SCHEMA).unwrap();
    let (base, _) = rate(n, || {
        for i in 0..n {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute(
                "insert into jobs (user_id, kind, state, input, created_at) values ('bench', 'research', 'created', ?1, '2026-11-22T11:30:00.000Z')",
                [json!({ "i": i }).to_string()],
            )
            .unwrap();
            tx.commit().unwrap();
        }
    });
    (ours, base)
}

fn bench_claim_complete(dir: &Path, d: Durability, n: usize) -> (f64, f64) {
    let path = dir.join(format!("claim-{d:?}.db"));
    let e = engine(&path, d);
    for i in 0..n {
        e.jobs()
            .create(&NewJob::new("bench", "research", json!({ "i": i })))
            .unwrap();
    }
    let (ours, _) = rate(n, || {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let e = engine(&path, d);
                    let name = format!("w{w}");
                    while let Some(c) = e.jobs().claim(&name, &["research"]).unwrap() {
                        e.jobs().complete(&c, &json!({"ok": true})).unwrap();
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
    });
    let bpath = dir.join(format!("claim-base-{d:?}.db"));
    {
        let mut c = baseline_conn(&bpath, sync_name(d));
        c.execute_batch(PLAIN_SCHEMA).unwrap();
        let tx = c.transaction().unwrap();
        for i in 0..n {
            tx.execute(
                "insert into jobs (user_id, kind, state, input, created_at) values ('bench', 'research', 'created', ?1, '2026-11-22T11:30:00.000Z')",
                [json!({ "i": i }).to_string()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let (base, _) = rate(n, || {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let bpath = bpath.clone();
                std::thread::spawn(move || {
                    let mut c = baseline_conn(&bpath, sync_name(d));
                    loop {
                        let tx = c
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .unwrap();
                        let id: Option<i64> = tx
                            .query_row(
                                "update jobs set state = 'running', attempt = attempt + 1, worker_id = ?1,
                                   heartbeat_at = '2026-11-22T11:30:00.000Z'
                                 where id = (select id from jobs where state = 'created' and kind = 'research' order by id limit 1)
                                 returning id",
                                [format!("w{w}")],
                                |r| r.get(0),
                            )
                            .ok();
                        tx.commit().unwrap();
                        let Some(id) = id else { break };
                        let tx = c
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .unwrap();
                        tx.execute(
                            "update jobs set state = 'completed', result = '{\"ok\":true}', progress = 100,
                               finished_at = '2026-11-22T11:30:01.000Z' where id = ?1 and attempt = 1",
                            [id],
                        )
                        .unwrap();
                        tx.commit().unwrap();
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
    });
    (ours, base)
}

fn bench_heartbeat_and_progress(dir: &Path, d: Durability, n: usize) -> [(f64, f64); 2] {
    let e = engine(&dir.join(format!("hb-{d:?}.db")), d);
    e.jobs()
        .create(&NewJob::new("bench", "research", json!({})))
        .unwrap();
    let c = e.jobs().claim("w", &[]).unwrap().unwrap();
    let (hb, _) = rate(n, || {
        for _ in 0..n {
            e.jobs().heartbeat(&c).unwrap();
        }
    });
    let (pr, _) = rate(n, || {
        for i in 0..n {
            e.jobs()
                .progress(&c, (i % 100) as u8, Some("step"))
                .unwrap();
        }
    });
    let mut b = baseline_conn(&dir.join(format!("hb-base-{d:?}.db")), sync_name(d));
    b.execute_batch(PLAIN_SCHEMA).unwrap();
    b.execute(
        "insert into jobs (id, state, attempt) values (1, 'running', 1)",
        [],
    )
    .unwrap();
    // Each heartbeat writes a new time: SQLite skips writing a row whose bytes do not change,
    // so a constant value would measure a transaction that writes nothing.
    let start = runledger::Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap();
    let (hb_base, _) = rate(n, || {
        for i in 0..n {
            let tx = b
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute(
                "update jobs set heartbeat_at = ?1 where id = 1 and attempt = 1",
                [start + Duration::from_millis(i as u64 + 1)],
            )
            .unwrap();
            tx.commit().unwrap();
        }
    });
    let (pr_base, _) = rate(n, || {
        for i in 0..n {
            let tx = b
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute(
                "update jobs set progress = ?1 where id = 1 and attempt = 1",
                [(i % 100) as i64],
            )
            .unwrap();
            tx.execute(
                "insert into events (job_id, kind, payload, at) values (1, 'progress', '{\"progress\":1}', '2026-11-22T11:30:00.000Z')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
    });
    [(hb, hb_base), (pr, pr_base)]
}

/// Supervisor tick on a table holding `finished` finished jobs and `running` fresh running
/// ones (nothing stale): the work that every tick does.
fn bench_tick(dir: &Path, finished: usize, running: usize) -> (Duration, Duration) {
    let path = dir.join(format!("tick-{finished}.db"));
    let e = engine(&path, Durability::Normal);
    e.with_connection(|c| {
        c.execute_batch("begin")?;
        {
            let mut ins = c.prepare(
                "insert into jobs (user_id, kind, created_at, updated_at) values ('u', 'research', '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z')",
            )?;
            for _ in 0..finished + running {
                ins.execute([])?;
            }
        }
        c.execute(
            "update jobs set state = 'running', attempt = 1, worker_id = 'w', started_at = '2026-11-01T00:00:00.000Z',
               heartbeat_at = '2099-01-01T00:00:00.000Z' where id <= ?1",
            [(finished + running) as i64],
        )?;
        c.execute(
            "update jobs set state = 'completed', progress = 100, finished_at = '2026-11-01T00:00:01.000Z' where id <= ?1",
            [finished as i64],
        )?;
        c.execute_batch("commit")?;
        Ok(())
    })
    .unwrap();
    let sup = Supervisor::new(e.clone(), SupervisorOptions::default()).unwrap();
    let now = runledger::Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap();
    let ours = median(25, || {
        let r = sup.tick(now).unwrap();
        assert!(r.recovered.is_empty());
    });
    let base = median(25, || {
        e.with_connection(|c| {
            let mut s = c.prepare_cached(
                "select id from jobs where state = 'running' and heartbeat_at < '2026-11-22T11:29:30.000Z'",
            )?;
            let n = s.query_map([], |r| r.get::<_, i64>(0))?.count();
            assert_eq!(n, 0);
            Ok(())
        })
        .unwrap();
    });
    (ours, base)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    println!("## Job store (ops/s, higher is better)\n");
    println!("| operation | runledger | plain rusqlite | ratio |");
    println!("|---|---|---|---|");
    for dur in [Durability::Normal, Durability::Full] {
        let n = scale(if dur == Durability::Full { 1000 } else { 4000 });
        let (o, b) = bench_create(d, dur, n);
        report(&format!("create ({dur:?}, n={n})"), "jobs/s", o, b);
        let (o, b) = bench_claim_complete(d, dur, n);
        report(
            &format!("claim+complete, 2 workers ({dur:?}, n={n})"),
            "jobs/s",
            o,
            b,
        );
        let [(hb, hbb), (pr, prb)] = bench_heartbeat_and_progress(d, dur, n);
        report(&format!("heartbeat ({dur:?}, n={n})"), "ops/s", hb, hbb);
        report(
            &format!("progress + event append with pruning ({dur:?}, n={n}; baseline: update + plain insert)"),
            "ops/s",
            pr,
            prb,
        );
    }
    println!("\n## Supervisor tick, nothing stale (median of 25; lower is better)\n");
    println!("| finished jobs | running jobs | tick | plain stale select | ratio |");
    println!("|---|---|---|---|---|");
    let running = scale(10_000);
    for finished in [0, scale(1_000_000)] {
        let (o, b) = bench_tick(d, finished, running);
        println!(
            "| {finished} | {running} | {:?} | {:?} | {:.2}x |",
            o,
            b,
            o.as_secs_f64() / b.as_secs_f64()
        );
    }
    let _ = Duration::ZERO;
}
