//! Shared helpers of the PostgreSQL suite: the server's URL, one schema per test (so tests
//! run in parallel), the skip-or-fail rule, raw SQL, and child processes.

use std::sync::Arc;

use postgres::{Client, NoTls};
use runledger::pg::PgEngine;
use runledger::{ManualClock, Timestamp};

/// The server the suite uses: `RUNLEDGER_TEST_PG`, or the local default.
pub fn base_url() -> String {
    std::env::var("RUNLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A raw connection to the server, or `None` (test skipped, reason printed) when there is
/// none. With `RUNLEDGER_TEST_PG` set, an unreachable server fails the test instead.
pub fn server() -> Option<Client> {
    match Client::connect(&base_url(), NoTls) {
        Ok(c) => Some(c),
        Err(e) => {
            if std::env::var_os("RUNLEDGER_TEST_PG").is_some() {
                panic!("RUNLEDGER_TEST_PG is set but the server cannot be reached: {e}");
            }
            eprintln!(
                "SKIPPED: no PostgreSQL server at {} ({e}); set RUNLEDGER_TEST_PG to require one",
                base_url()
            );
            None
        }
    }
}

/// The URL of `schema` on the test server (its search_path).
pub fn schema_url(schema: &str) -> String {
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// A fresh, empty schema for one test (dropped first if a previous run left it).
pub struct TestDb {
    pub url: String,
    pub raw: Client,
}

impl TestDb {
    /// A fresh schema named after `test`, or `None` when the server is absent (skip).
    pub fn new(test: &str) -> Option<Self> {
        let mut admin = server()?;
        let schema = format!("rl_{test}");
        assert!(schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        admin
            .batch_execute(&format!(
                "drop schema if exists {schema} cascade; create schema {schema}"
            ))
            .unwrap();
        let url = schema_url(&schema);
        let raw = Client::connect(&url, NoTls).unwrap();
        Some(Self { url, raw })
    }

    /// An engine on this schema, on the system clock.
    pub fn engine(&self) -> PgEngine {
        PgEngine::open(&self.url).unwrap()
    }

    /// An engine on this schema and a manual clock at `start`.
    pub fn engine_at(&self, start: &str) -> (PgEngine, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Timestamp::parse(start).unwrap()));
        let engine = PgEngine::open_with_clock(&self.url, clock.clone()).unwrap();
        (engine, clock)
    }

    /// Runs raw SQL; the server's message on failure.
    pub fn exec(&mut self, sql: &str) -> Result<u64, String> {
        self.raw.execute(sql, &[]).map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        })
    }

    /// Migrations 1 to 8 as this build embeds them, applied by refinery (the schema and the
    /// history a version-8 build left), for tests of what later versions change. A fixed copy
    /// of the start of `src/pg/db.rs`'s list on purpose: that list grows, version 8 does not.
    pub fn migrate_to_version_8(&mut self) {
        let sql = [
            (
                "V1__core",
                include_str!("../../migrations/postgres/P1__core.sql"),
            ),
            (
                "V2__notify",
                include_str!("../../migrations/postgres/P2__notify.sql"),
            ),
            (
                "V3__sqlite_twins",
                include_str!("../../migrations/postgres/P3__sqlite_twins.sql"),
            ),
            (
                "V4__event_listeners",
                include_str!("../../migrations/postgres/P4__event_listeners.sql"),
            ),
            (
                "V5__slot_claim_renewal",
                include_str!("../../migrations/postgres/P5__slot_claim_renewal.sql"),
            ),
            (
                "V6__feed_fence",
                include_str!("../../migrations/postgres/P6__feed_fence.sql"),
            ),
            (
                "V7__claim_walks_the_queue",
                include_str!("../../migrations/postgres/P7__claim_walks_the_queue.sql"),
            ),
            (
                "V8__ui_indexes",
                include_str!("../../migrations/postgres/P8__ui_indexes.sql"),
            ),
        ];
        let migrations: Vec<_> = sql
            .iter()
            .map(|(name, sql)| refinery::Migration::unapplied(name, sql).unwrap())
            .collect();
        refinery::Runner::new(&migrations)
            .run(&mut self.raw)
            .unwrap();
    }

    /// The one integer of `sql`.
    pub fn query_i64(&mut self, sql: &str) -> i64 {
        self.raw.query_one(sql, &[]).unwrap().get(0)
    }
}

/// Starts this test binary again as a child running test `test` (an `#[ignore]`d entry
/// point), with `envs`.
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

/// Waits for a child of [`spawn_child`], fails the test unless it succeeded (printing what
/// it wrote), and returns its standard output.
pub fn finish_child(mut child: std::process::Child) -> String {
    use std::io::Read;
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "a child process failed:\n{out}\n{err}"
    );
    out
}

/// Whether this process is a child started by [`spawn_child`].
pub fn is_child() -> bool {
    std::env::var_os("RUNLEDGER_CHILD").is_some()
}
