//! The Trust UI's pages on a large file: 1,000,000 runs and 1,000,000 jobs (generated with
//! plain SQL in one transaction), each page fetched over loopback HTTP from the real router.
//! Aim (issue 16): the overview and a run's page in < 50 ms.
//!
//! `cargo bench --bench ui` (`UI_BENCH_ROWS=100000` for a smaller file).

use std::time::{Duration, Instant};

use runledger::http::HttpOptions;
use runledger::{DbOptions, Durability, Engine, EngineOptions};

mod common;

/// Loads `n` finished runs (a tenth failed, half of those blocked at a gate) and `n` jobs in
/// every state, with recursive CTEs. Only the two "born started / created" insert triggers
/// are lifted, inside the same transaction; every CHECK stays on.
fn bulk_load(engine: &Engine, n: i64) -> Duration {
    let start = Instant::now();
    engine
        .with_connection(|c| {
            let mut triggers = Vec::new();
            for name in ["ingest_runs_insert_started", "jobs_insert_created"] {
                let sql: String = c.query_row(
                    "select sql from sqlite_master where type = 'trigger' and name = ?1",
                    [name],
                    |r| r.get(0),
                )?;
                triggers.push((name, sql));
            }
            c.execute_batch("begin")?;
            for (name, _) in &triggers {
                c.execute_batch(&format!("drop trigger {name}"))?;
            }
            c.execute(
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < ?1),
                 r as (select i,
                        strftime('%Y-%m-%dT%H:%M:%fZ', '2024-01-01', '+' || (i * 60) || ' seconds') as s,
                        strftime('%Y-%m-%dT%H:%M:%fZ', '2024-01-01', '+' || (i * 60 + 12) || ' seconds') as f,
                        case when i % 100 < 90 then 'success' else 'failed' end as status,
                        case when i % 2 = 0 then 'targets' else 'universe' end as scope
                      from n)
                 insert into ingest_runs (pipeline, scope, trigger, status, lock_key, started_at,
                     lease_expires_at, finished_at, duration_ms, error_code, error_message, timeline, meta_json)
                 select 'ingest', scope, 'schedule', status, 'ingest:' || scope, s, f, f, 12000,
                   case when status = 'failed' then 'MODULE_NOT_READY' end,
                   case when status = 'failed' then 'not ready: fundamentals: PROBE_FAILED HTTP_503' end,
                   json_array(
                     json_object('v', 1, 'stage', 'preflight', 'kind', 'gate', 'attempt', 1, 'status', 'success',
                       'started_at', s, 'finished_at', s, 'duration_ms', 0, 'error_code', null, 'message', null, 'detail', null),
                     json_object('v', 1, 'stage', 'readiness', 'kind', 'gate', 'attempt', 1,
                       'status', case when status = 'failed' then 'failed' else 'success' end,
                       'started_at', s, 'finished_at', f, 'duration_ms', 12000,
                       'error_code', case when status = 'failed' then 'MODULE_NOT_READY' end,
                       'message', null, 'detail', null)),
                   case when status = 'failed'
                     then json_object('source', 'schedule', 'scope', scope, 'blockedStage', 'readiness', 'errorCode', 'MODULE_NOT_READY')
                     else json_object('source', 'schedule', 'scope', scope) end
                 from r",
                [n],
            )?;
            c.execute(
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < ?1),
                 j as (select i,
                        strftime('%Y-%m-%dT%H:%M:%fZ', '2024-01-01', '+' || (i * 60) || ' seconds') as t,
                        case when i % 100 < 85 then 'completed' when i % 100 < 92 then 'failed'
                             when i % 100 < 95 then 'cancelled' when i % 100 < 97 then 'paused'
                             when i % 100 < 99 then 'created' else 'running' end as state
                      from n)
                 insert into jobs (user_id, kind, state, input, result, error_code, error_message, progress,
                     attempt, worker_id, created_at, updated_at, started_at, heartbeat_at, finished_at)
                 select 'user' || (i % 1000), 'research', state, json_object('n', i),
                   case when state = 'completed' then '{}' end,
                   case when state = 'failed' then 'TIMEOUT' end,
                   case when state = 'failed' then 'too slow' end,
                   case when state = 'completed' then 100 else i % 100 end,
                   case when state = 'created' then 0 else 1 end,
                   case when state = 'running' then 'w' end,
                   t, t,
                   case when state = 'created' then null else t end,
                   case when state = 'running' then t end,
                   case when state in ('completed', 'failed', 'cancelled') then t end
                 from j",
                [n],
            )?;
            for (_, sql) in &triggers {
                c.execute_batch(sql)?;
            }
            c.execute_batch("commit")?;
            Ok(())
        })
        .unwrap();
    start.elapsed()
}

fn main() {
    let n: i64 = std::env::var("UI_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        db: DbOptions {
            durability: Durability::Normal,
            ..DbOptions::default()
        },
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(dir.path().join("ui.db"), opts).unwrap();
    let load = bulk_load(&engine, n);
    let size = std::fs::metadata(dir.path().join("ui.db")).unwrap().len();
    println!(
        "loaded {n} runs + {n} jobs in {:.1} s ({} MiB)",
        load.as_secs_f64(),
        size >> 20
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runledger::http::router(engine.clone(), HttpOptions::default()).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let agent = ureq::Agent::new_with_defaults();
    let get = |path: &str| -> usize {
        let mut resp = agent.get(&format!("{base}{path}")).call().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.body_mut().read_to_string().unwrap().len()
    };
    let mid_failed = n / 2 / 100 * 100 + 90;
    let pages = [
        ("overview `/`", "/".to_string()),
        ("a failed run's page", format!("/ui/runs/{mid_failed}")),
        ("the newest run's page", format!("/ui/runs/{n}")),
        (
            "runs list (failed, universe)",
            "/ui/runs?status=failed&scope=universe".into(),
        ),
        ("jobs list", "/ui/jobs".into()),
        ("jobs list (paused)", "/ui/jobs?state=paused".into()),
        ("a job's page", format!("/ui/jobs/{}", n / 2)),
        ("schedules", "/ui/schedules".into()),
    ];
    println!("| page ({n} runs + {n} jobs) | first request | median of 25 | bytes |");
    println!("|---|---|---|---|");
    for (name, path) in &pages {
        let first = Instant::now();
        let bytes = get(path);
        let first = first.elapsed();
        let med = common::median(25, || {
            get(path);
        });
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {bytes} |",
            first.as_secs_f64() * 1000.0,
            med.as_secs_f64() * 1000.0
        );
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}
