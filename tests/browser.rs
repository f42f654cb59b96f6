//! The Trust UI in a real browser: serves `runledger::http::router` on loopback over a
//! demo-like database and runs `node tests/browser/ui.mjs`, which drives Debian's chromium
//! through playwright-core; then checks in the database what the clicks did. The same flow
//! runs on a SQLite file and (feature `postgres`) on a PostgreSQL ledger.
//!
//! Skips (saying why) when node, `/usr/bin/chromium` or `tests/browser/node_modules` is
//! missing, unless `RUNLEDGER_CI=1`, where a missing piece fails the test.

/// The CLI's simulated provider, the same file the binary builds.
#[path = "../src/bin/runledger/provider.rs"]
#[allow(dead_code)]
mod demo;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use demo::ProviderOptions;
use runledger::http::{Auth, HttpOptions, Token};
use runledger::run::PreflightConfig;
use runledger::{
    Engine, JobState, NewJob, ScopeSelector, Supervisor, SupervisorOptions, TriggerKind,
};
use serde_json::json;

const WRITE_TOKEN: &str = "write-token-for-the-browser-test";
const READ_TOKEN: &str = "read-token-for-the-browser-test";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_piece() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is not installed (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some("tests/browser/node_modules is missing (npm ci in tests/browser)".into());
    }
    None
}

struct Fixture {
    progress_job: i64,
    pause_job: i64,
    failed_job: i64,
}

/// A demo-like file: both pools triggered with a failing universe module, the default
/// schedule, a supervisor tick, and jobs in several states.
fn populate(engine: &Engine) -> Fixture {
    demo::install(engine).unwrap();
    let opts = ProviderOptions {
        failing_probes: vec!["fundamentals".into()],
        ..Default::default()
    };
    let pipeline = demo::pipeline(&opts).unwrap();
    let out = engine
        .runs()
        .trigger(&pipeline, ScopeSelector::Both, TriggerKind::Manual)
        .unwrap();
    assert_eq!(
        out[1].result.as_ref().unwrap().error_code.as_deref(),
        Some("MODULE_NOT_READY")
    );
    engine.schedules().ensure_default().unwrap();
    Supervisor::new(engine.clone(), SupervisorOptions::default())
        .unwrap()
        .tick(engine.now())
        .unwrap();

    let jobs = engine.jobs();
    jobs.create(&NewJob::new(
        "alice",
        "analysis",
        json!({"symbols": ["AAPL"]}),
    ))
    .unwrap();
    let c = jobs.claim("test-worker", &["analysis"]).unwrap().unwrap();
    jobs.complete(&c, &json!({"ok": true})).unwrap();

    let failed = jobs
        .create(&NewJob::new("carol", "report", json!({"month": "2026-10"})))
        .unwrap();
    let c = jobs.claim("test-worker", &["report"]).unwrap().unwrap();
    jobs.fail(&c, "TIMEOUT", "the attempt ran past its 30 s timeout")
        .unwrap();

    let pause = jobs
        .create(&NewJob::new(
            "bob",
            "research",
            json!({"universe": "sp500"}),
        ))
        .unwrap();
    let c = jobs.claim("test-worker", &["research"]).unwrap().unwrap();
    jobs.progress(&c, 40, Some("normalize")).unwrap();
    jobs.checkpoint(
        &c,
        &json!({"cursor": 420, "processed": ["AAPL", "MSFT"], "phase": "normalize"}),
    )
    .unwrap();

    let progress = jobs
        .create(&NewJob::new("alice", "backfill", json!({"days": 30})))
        .unwrap();
    Fixture {
        progress_job: progress.id,
        pause_job: pause.id,
        failed_job: failed.id,
    }
}

/// A worker that reports progress on its job every 150 ms until `stop`; every 3 s it also
/// creates a job nobody claims (the list's "new jobs" notice).
fn progress_worker(engine: Engine, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let claim = engine
            .jobs()
            .claim("ui-test-worker", &["backfill"])
            .unwrap()
            .unwrap();
        let mut pct = 1u8;
        let mut tick = 0u32;
        while !stop.load(Ordering::SeqCst) {
            tick += 1;
            if tick.is_multiple_of(20) {
                let late = NewJob::new("dave", "late", json!({"tick": tick}));
                engine.jobs().create(&late).unwrap();
            }
            let step = format!("day {pct}");
            if engine.jobs().progress(&claim, pct, Some(&step)).is_err() {
                return;
            }
            pct = if pct >= 99 { 1 } else { pct + 1 };
            std::thread::sleep(Duration::from_millis(150));
        }
    })
}

/// Skips (or, under `RUNLEDGER_CI=1`, fails) when a piece is missing: `false` then.
fn can_run(test: &str) -> bool {
    if let Some(why) = missing_piece() {
        if std::env::var("RUNLEDGER_CI").as_deref() == Ok("1") {
            panic!("browser test cannot run under RUNLEDGER_CI=1: {why}");
        }
        eprintln!("skipped: {test}: {why}");
        return false;
    }
    true
}

#[test]
fn the_trust_ui_in_chromium() {
    if !can_run("the_trust_ui_in_chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path().join("runledger.db")).unwrap();
    drive(&engine, |job| {
        engine
            .with_connection(|c| {
                let mut st = c.prepare(
                    "select action, actor from audit_log where entity = 'job' and entity_id = ?1 order by id",
                )?;
                let rows = st
                    .query_map([job.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .unwrap()
    });
}

/// The same clicks on a PostgreSQL ledger (feature `postgres`, the server of
/// `RUNLEDGER_TEST_PG`, default the local `test` database; skipped without a server unless
/// `RUNLEDGER_TEST_PG` is set): the pages, the live progress bar fed by the stream (woken by
/// NOTIFY), the actions, checked in the database.
#[cfg(feature = "postgres")]
#[test]
fn the_trust_ui_in_chromium_on_postgresql() {
    if !can_run("the_trust_ui_in_chromium_on_postgresql") {
        return;
    }
    let base = std::env::var("RUNLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let mut admin = match postgres::Client::connect(&base, postgres::NoTls) {
        Ok(c) => c,
        Err(e) if std::env::var_os("RUNLEDGER_TEST_PG").is_none() => {
            eprintln!("SKIPPED: no PostgreSQL server at {base} ({e})");
            return;
        }
        Err(e) => panic!("RUNLEDGER_TEST_PG is set but the server cannot be reached: {e}"),
    };
    let schema = "rl_browser_ui";
    admin
        .batch_execute(&format!(
            "drop schema if exists {schema} cascade; create schema {schema}"
        ))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    let engine = Engine::open(&url).unwrap();
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    drive(&engine, |job| {
        raw.query(
            "select action, actor from audit_log where entity = 'job' and entity_id = $1 order by id",
            &[&job.to_string()],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
}

/// Populates `engine`, serves the UI over it with a live worker, runs `ui.mjs` in chromium,
/// then checks what the clicks did through `audit` (a job's `(action, actor)` rows).
fn drive(engine: &Engine, mut audit: impl FnMut(i64) -> Vec<(String, String)>) {
    let fx = populate(engine);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opts = HttpOptions {
        auth: Auth {
            write: Token::new(WRITE_TOKEN),
            read: Token::new(READ_TOKEN),
        },
        ..HttpOptions::default()
    }
    .probes(
        demo::probes(&["fundamentals".to_string()]),
        PreflightConfig::default(),
    );
    let app = runledger::http::router(engine.clone(), opts).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let stop = Arc::new(AtomicBool::new(false));
    let worker = progress_worker(engine.clone(), Arc::clone(&stop));
    // The worker has claimed its job before the browser looks.
    let started = Instant::now();
    while engine.jobs().get(fx.progress_job).unwrap().state != JobState::Running {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "worker never claimed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let shots = root().join("target/ui-screenshots");
    let out = Command::new("node")
        .arg(root().join("tests/browser/ui.mjs"))
        .env("RUNLEDGER_URL", format!("http://{addr}"))
        .env("RUNLEDGER_SCREENSHOTS", &shots)
        .env("RUNLEDGER_UI_WRITE_TOKEN", WRITE_TOKEN)
        .env("RUNLEDGER_UI_READ_TOKEN", READ_TOKEN)
        .env("RUNLEDGER_PROGRESS_JOB", fx.progress_job.to_string())
        .env("RUNLEDGER_PAUSE_JOB", fx.pause_job.to_string())
        .env("RUNLEDGER_FAILED_JOB", fx.failed_job.to_string())
        .env("RUNLEDGER_CHECKPOINT_KEYS", "cursor,phase,processed")
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "ui.mjs failed:\n{stdout}\n{stderr}");

    // What the clicks did, in the database: paused then resumed by actor `ui`.
    let job = engine.jobs().get(fx.pause_job).unwrap();
    assert_eq!(job.state, JobState::Created);
    assert_eq!(
        audit(fx.pause_job),
        [
            ("pause".to_string(), "ui".to_string()),
            ("resume".to_string(), "ui".to_string())
        ]
    );
    // The read-only browser's refused pause changed nothing on the progress job.
    assert!(audit(fx.progress_job).is_empty());
    for name in [
        "overview",
        "run",
        "jobs",
        "job-running",
        "job-paused",
        "job-failed",
        "schedules",
        "probes",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "no screenshot {name}.png"
        );
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}
