//! Helpers shared by every test module.
#![allow(dead_code)]

use std::time::Duration;

use runledger::run::{Pipeline, StageContext, StageError, StageOutput};
use runledger::{Engine, EngineOptions, ManualClock, Timestamp};

/// insta settings that keep every snapshot in the top-level `snapshots/` folder.
pub fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s
}

/// Snapshot a serde value as JSON into `snapshots/`.
#[macro_export]
macro_rules! snap_json {
    ($name:expr, $value:expr) => {
        $crate::common::snapshots().bind(|| insta::assert_json_snapshot!($name, $value))
    };
}

/// Snapshot text into `snapshots/`.
#[macro_export]
macro_rules! snap_text {
    ($name:expr, $value:expr) => {
        $crate::common::snapshots().bind(|| insta::assert_snapshot!($name, $value))
    };
}

/// 2026-11-22T11:30:00.000Z, the instant every manual clock starts at.
pub fn t0() -> Timestamp {
    Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap()
}

/// The engine options of every test engine: the defaults, at the durability named by
/// `RUNLEDGER_TEST_DURABILITY` (`full`, the default, or `normal`), so that CI runs the whole
/// suite at both. A test that needs one durability sets it on top.
pub fn options() -> EngineOptions {
    let mut opts = EngineOptions::default();
    opts.db.durability = match std::env::var("RUNLEDGER_TEST_DURABILITY").as_deref() {
        Ok("normal") => runledger::Durability::Normal,
        Ok("full") | Err(_) => runledger::Durability::Full,
        Ok(other) => panic!("RUNLEDGER_TEST_DURABILITY={other}: expected full or normal"),
    };
    opts
}

/// An in-memory engine on a manual clock at [`t0`].
pub fn mem_engine() -> (Engine, ManualClock) {
    let clock = ManualClock::new(t0());
    let engine = Engine::open_in_memory_with(options().with_clock(clock.clone())).unwrap();
    (engine, clock)
}

/// A file engine in a fresh temporary directory on a manual clock at [`t0`].
pub fn file_engine() -> (Engine, ManualClock, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(t0());
    let engine = Engine::open_with(
        dir.path().join("runledger.db"),
        options().with_clock(clock.clone()),
    )
    .unwrap();
    (engine, clock, dir)
}

/// Every row of every user table, as text: compare before and after a refused call to prove
/// the database did not change.
pub fn dump(engine: &Engine) -> String {
    engine
        .with_connection(|c| {
            let mut out = String::new();
            let mut tables = c.prepare(
                "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' order by name",
            )?;
            let names: Vec<String> = tables
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for name in names {
                out.push_str(&format!("-- {name}\n"));
                let mut stmt = c.prepare(&format!("select * from \"{name}\" order by rowid"))?;
                let n = stmt.column_count();
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let vals: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                        .collect();
                    out.push_str(&vals.join("|"));
                    out.push('\n');
                }
            }
            Ok(out)
        })
        .unwrap()
}

/// Milliseconds as a Duration.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Seconds as a Duration.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs one `#[ignore]`d test of this binary in a child process (for crash and
/// multi-process tests). The child sees `RUNLEDGER_CHILD=1` plus `envs`; the child test
/// should return at once unless `RUNLEDGER_CHILD` is set.
pub fn spawn_child(test: &str, envs: &[(&str, String)]) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RUNLEDGER_CHILD", "1")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Whether this process is a child started by [`spawn_child`].
pub fn is_child() -> bool {
    std::env::var_os("RUNLEDGER_CHILD").is_some()
}

/// Proves a state machine's Rust table and its SQL rules are the same machine: for every
/// `(from, to)` pair of distinct states, plants a row in `from`, moves it to `to` through
/// raw SQL (with every other column made consistent, so only the transition rules can
/// refuse), and asserts the database accepted exactly when `rust_allows(from, to)`. An
/// accepted move leaves the row in `to`; a refused one is `ILLEGAL_TRANSITION` and leaves the
/// whole database as it was. Returns `from -> to: allowed|refused` per pair, for snapshots.
pub fn machine_equals_sql<S>(
    states: &[S],
    rust_allows: impl Fn(S, S) -> bool,
    mut plant: impl FnMut(S) -> (Engine, i64),
    mut raw_move: impl FnMut(&Engine, i64, S) -> runledger::Result<()>,
    mut state_of: impl FnMut(&Engine, i64) -> S,
) -> Vec<String>
where
    S: Copy + PartialEq + std::fmt::Display + std::fmt::Debug,
{
    let mut table = Vec::new();
    for &from in states {
        for &to in states {
            if from == to {
                continue;
            }
            let (engine, id) = plant(from);
            assert_eq!(state_of(&engine, id), from, "planted in {from}");
            let before = dump(&engine);
            let result = raw_move(&engine, id, to);
            let allowed = rust_allows(from, to);
            match &result {
                Ok(()) if allowed => assert_eq!(state_of(&engine, id), to, "{from} -> {to}"),
                Err(e) if !allowed => {
                    assert_eq!(e.code(), "ILLEGAL_TRANSITION", "{from} -> {to}: {e}");
                    assert_eq!(dump(&engine), before, "{from} -> {to} changed the database");
                }
                _ => panic!("{from} -> {to}: rust says {allowed}, sql says {result:?}"),
            }
            table.push(format!(
                "{from} -> {to}: {}",
                if allowed { "allowed" } else { "refused" }
            ));
        }
    }
    table
}

/// Runs `sql` (one or more statements, no parameters) on `engine`'s connection: raw row
/// planting that bypasses the Rust machines but not the database's own rules.
pub fn exec(engine: &Engine, sql: &str) -> runledger::Result<()> {
    engine.with_connection(|c| Ok(c.execute_batch(sql)?))
}

/// The first column of the first row of `sql` with `params`, as an integer (`None`
/// without a row).
pub fn query_i64(engine: &Engine, sql: &str, params: impl rusqlite::Params) -> Option<i64> {
    engine
        .with_connection(|c| {
            use rusqlite::OptionalExtension;
            Ok(c.query_row(sql, params, |r| r.get(0)).optional()?)
        })
        .unwrap()
}

/// A fixed-width UTC timestamp from its text.
pub fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap_or_else(|e| panic!("bad test timestamp {text}: {e}"))
}

/// A stage that takes `took` ms of manual-clock time and succeeds with `detail`.
pub fn ok_stage(
    clock: &ManualClock,
    took: u64,
    detail: serde_json::Value,
) -> impl Fn(&mut StageContext<'_>) -> Result<StageOutput, StageError> + Send + Sync {
    let c = clock.clone();
    move |_| {
        c.advance(ms(took));
        Ok(StageOutput::with_detail(detail.clone()))
    }
}

/// A stage that takes `took` ms and fails with `err`.
pub fn failing_stage(
    clock: &ManualClock,
    took: u64,
    err: StageError,
) -> impl Fn(&mut StageContext<'_>) -> Result<StageOutput, StageError> + Send + Sync {
    let c = clock.clone();
    move |_| {
        c.advance(ms(took));
        Err(err.clone())
    }
}

/// Pipeline `name` with one stage `stage` that does nothing and succeeds.
pub fn noop_pipeline(name: &str, stage: &str) -> Pipeline {
    Pipeline::builder(name)
        .stage(stage, |_| Ok(StageOutput::done()))
        .build()
        .unwrap()
}

/// The claim a worker holding `attempt` of job `id` presents: the job row as it is now (or,
/// when no job `id` exists, another job's row under that id), with `attempt` as its fencing
/// token. For tests of stale, forged and late writes.
pub fn claim_at(jobs: &runledger::Jobs<'_>, id: i64, attempt: i64) -> runledger::Claim {
    let job = jobs.get(id).unwrap_or_else(|_| {
        let mut any = jobs
            .list(None, None, None, 1)
            .unwrap()
            .pop()
            .expect("claim_at on a missing id needs some other job to copy");
        any.id = id;
        any
    });
    runledger::Claim { job, attempt }
}
