//! Ingestion-run benchmarks (no criterion: `cargo bench --bench runs`).
//!
//! 1. trigger -> 2 gates -> 4 no-op stages -> success, in runs/s, beside a plain-SQLite
//!    baseline doing the same number of write transactions per run on a file with the same
//!    pragmas (WAL, same `synchronous`).
//! 2. Every runbook.sql query with 1,000,000 runs in `ingest_runs`: time and query plan.

use std::time::{Duration, Instant};

use runledger::run::{Gate, Pipeline, ScopeSelector, StageOutput, TriggerKind};
use runledger::{runbook, Clock, DbOptions, Durability, Engine, EngineOptions, SystemClock};
use rusqlite::{params, Connection};

fn noop(
    _: &mut runledger::run::StageContext<'_>,
) -> Result<StageOutput, runledger::run::StageError> {
    Ok(StageOutput::done())
}

fn pipeline() -> Pipeline {
    Pipeline::builder("bench")
        .gate(Gate::Token, noop)
        .gate(Gate::AnalysisInit, noop)
        .stage("request", noop)
        .stage("poll", noop)
        .stage("download", noop)
        .stage("persist", noop)
        .build()
        .unwrap()
}

/// Write transactions of one run: start, 2 per stage attempt (open + close), finish.
const TX_PER_RUN: usize = 1 + 2 * 6 + 1;

fn bench_runs(durability: Durability, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        db: DbOptions {
            durability,
            ..DbOptions::default()
        },
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(dir.path().join("bench.db"), opts).unwrap();
    let p = pipeline();
    let start = Instant::now();
    for _ in 0..n {
        let out = engine
            .runs()
            .trigger(&p, ScopeSelector::Targets, TriggerKind::Schedule)
            .unwrap();
        assert!(out[0].result.is_ok());
    }
    let ours = start.elapsed();

    // Baseline: the same number of single-statement write transactions, plain rusqlite.
    let conn = Connection::open(dir.path().join("baseline.db")).unwrap();
    conn.query_row("pragma journal_mode = wal", [], |_| Ok(()))
        .unwrap();
    let sync = match durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    };
    conn.pragma_update(None, "synchronous", sync).unwrap();
    conn.execute_batch("create table t (id integer primary key, status text, started_at text, timeline text not null default '[]')").unwrap();
    let start = Instant::now();
    for _ in 0..n {
        conn.execute_batch("begin immediate").unwrap();
        conn.execute(
            "insert into t (status, started_at) values ('started', ?1)",
            params![SystemClock.now()],
        )
        .unwrap();
        let id = conn.last_insert_rowid();
        conn.execute_batch("commit").unwrap();
        for _ in 0..TX_PER_RUN - 1 {
            conn.execute_batch("begin immediate").unwrap();
            conn.execute("update t set timeline = json_insert(timeline, '$[#]', ?1), status = 'x' where id = ?2", params!["{\"stage\":\"s\"}", id]).unwrap();
            conn.execute_batch("commit").unwrap();
        }
    }
    let base = start.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "| {durability:?} | {n} | {:.0} runs/s ({:.2} ms/run) | {:.0} runs/s ({:.2} ms/run) | {:.2}x |",
        rate(ours),
        ours.as_secs_f64() * 1e3 / n as f64,
        rate(base),
        base.as_secs_f64() * 1e3 / n as f64,
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

fn bulk_load(engine: &Engine, n: i64) -> Duration {
    let start = Instant::now();
    let end_ms = SystemClock.now().unix_ms();
    engine
        .with_connection(|c| {
            // Bulk load: only the insert trigger (runs are born started) is lifted, inside
            // the same transaction; every CHECK and the lock index stay on.
            let trigger_sql: String = c.query_row(
                "select sql from sqlite_master where type = 'trigger' and name = 'ingest_runs_insert_started'",
                [],
                |r| r.get(0),
            )?;
            c.execute_batch("begin; drop trigger ingest_runs_insert_started;")?;
            {
                let mut ins = c.prepare(
                    "insert into ingest_runs (pipeline, scope, trigger, status, lock_key, started_at, lease_expires_at,
                        finished_at, duration_ms, error_code, error_message, timeline, meta_json)
                     values (?1, ?2, ?3, ?4, ?1 || ':' || ?2, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                let pipelines = ["flex", "prices", "news"];
                let scopes = ["targets", "universe"];
                for i in 0..n {
                    let start_ms = end_ms - (n - i) * 60_000;
                    let started = runledger::Timestamp::from_unix_ms(start_ms).unwrap();
                    let dur = 1_000 + (i * 7919) % 60_000;
                    let finished = runledger::Timestamp::from_unix_ms(start_ms + dur).unwrap();
                    let pipeline = pipelines[(i % 3) as usize];
                    let scope = scopes[((i / 3) % 2) as usize];
                    let kind = i % 100;
                    let live = i >= n - 6; // the newest run of each lock is still started
                    let (status, code, msg, meta) = if live {
                        ("started", None, None, format!("{{\"source\":\"schedule\",\"scope\":\"{scope}\"}}"))
                    } else if kind < 90 {
                        ("success", None, None, format!("{{\"source\":\"schedule\",\"scope\":\"{scope}\"}}"))
                    } else if kind < 95 {
                        ("failed", Some("TOKEN_MISSING"), Some("no token"), format!("{{\"source\":\"schedule\",\"scope\":\"{scope}\",\"blockedStage\":\"token\",\"errorCode\":\"TOKEN_MISSING\"}}"))
                    } else if kind < 98 {
                        ("failed", Some("HTTP_502"), Some("bad gateway"), format!("{{\"source\":\"schedule\",\"scope\":\"{scope}\",\"failedStage\":\"download\",\"errorCode\":\"HTTP_502\"}}"))
                    } else {
                        ("failed", Some("ABANDONED"), Some("lease expired"), format!("{{\"source\":\"schedule\",\"scope\":\"{scope}\",\"openStage\":\"poll\",\"errorCode\":\"ABANDONED\"}}"))
                    };
                    let stage_status = if status == "failed" { "failed" } else { "success" };
                    let timeline = format!(
                        "[{{\"v\":1,\"stage\":\"token\",\"kind\":\"gate\",\"attempt\":1,\"status\":\"success\",\"started_at\":\"{started}\",\"finished_at\":\"{started}\",\"duration_ms\":0,\"error_code\":null,\"message\":null,\"detail\":null}},\
                          {{\"v\":1,\"stage\":\"download\",\"kind\":\"runner\",\"attempt\":1,\"status\":\"{stage_status}\",\"started_at\":\"{started}\",\"finished_at\":\"{finished}\",\"duration_ms\":{dur},\"error_code\":{},\"message\":null,\"detail\":null}}]",
                        code.map(|c| format!("\"{c}\"")).unwrap_or("null".into())
                    );
                    let (fin, d) = if live { (None, None) } else { (Some(finished), Some(dur)) };
                    let lease = runledger::Timestamp::from_unix_ms(start_ms + 300_000).unwrap();
                    ins.execute(params![pipeline, scope, "schedule", status, started, lease, fin, d, code, msg, timeline, meta])?;
                }
            }
            // No ANALYZE: plans are those of a database as runledger leaves it.
            c.execute_batch(&format!("{trigger_sql}; commit;"))?;
            Ok(())
        })
        .unwrap();
    start.elapsed()
}

/// The same query on the same connection with a 256 MiB page cache (default is 2 MiB).
fn median_with_big_cache(engine: &Engine, sql: &str) -> Duration {
    engine
        .with_connection(|c| {
            c.pragma_update(None, "cache_size", -262_144)?;
            Ok(())
        })
        .unwrap();
    let mut times: Vec<Duration> = (0..6)
        .map(|_| {
            let t = Instant::now();
            engine
                .with_connection(|c| runbook::run_sql(c, sql))
                .unwrap();
            t.elapsed()
        })
        .collect();
    engine
        .with_connection(|c| {
            c.pragma_update(None, "cache_size", -2_000)?;
            Ok(())
        })
        .unwrap();
    times.remove(0); // warms the bigger cache
    times.sort();
    times[2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n_runs = if quick { 50 } else { 500 };
    println!("## trigger -> 2 gates -> 4 no-op stages -> success ({TX_PER_RUN} write transactions per run)\n");
    println!("| durability | runs | runledger | plain SQLite, same writes | ratio |");
    println!("|---|---|---|---|---|");
    bench_runs(Durability::Full, n_runs);
    bench_runs(Durability::Normal, n_runs);

    let n: i64 = if quick { 100_000 } else { 1_000_000 };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().join("big.db")).unwrap();
    let load = bulk_load(&engine, n);
    let size = std::fs::metadata(dir.path().join("big.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.path().join("big.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "\n## runbook.sql with {n} runs (bulk load {:.1} s, file {} MB)\n",
        load.as_secs_f64(),
        size / 1_000_000
    );
    println!("| query | rows | first | median of 5 | max of 5 | median of 5, cache_size 256 MiB |");
    println!("|---|---|---|---|---|---|");
    let mut plans = String::new();
    for q in runbook::queries() {
        let t = Instant::now();
        let r = engine
            .with_connection(|c| runbook::run_sql(c, &q.sql))
            .unwrap();
        let first = t.elapsed();
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                engine
                    .with_connection(|c| runbook::run_sql(c, &q.sql))
                    .unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let big = median_with_big_cache(&engine, &q.sql);
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            q.name,
            r.rows.len(),
            ms(first),
            ms(times[2]),
            ms(times[4]),
            ms(big)
        );
        let plan = engine
            .with_connection(|c| runbook::run_sql(c, &format!("explain query plan {}", q.sql)))
            .unwrap();
        plans.push_str(&format!("\n{}:\n", q.name));
        for row in plan.rows {
            plans.push_str(&format!(
                "  {}\n",
                row.last().and_then(|v| v.as_str()).unwrap_or("")
            ));
        }
    }
    println!("\n## query plans\n\n```{plans}```");
}
