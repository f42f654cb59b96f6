//! The engine's hot paths, one phase each, for an instruction profile (BENCHMARKS.md,
//! "Engine core"). On a fresh temporary file at `Durability::Normal`:
//!
//! 1. `phase_create_many`: 2,000 jobs by `create_many` in two batches of 1,000;
//! 2. `phase_create`: 2,000 jobs, one `create` each;
//! 3. `phase_claim_complete`: 2,000 x (`claim` then `complete`);
//! 4. `phase_claim_many_complete`: 2,000 jobs by `claim_many` of 50, each then `complete`d.
//!
//! Each phase is its own `#[inline(never)]` function, so callgrind can count it alone
//! (instruction counts do not depend on the machine's load):
//!
//! ```text
//! cargo build --release --no-default-features --example profile_hot_path
//! valgrind --tool=callgrind --toggle-collect='*phase_*' --dump-after='*phase_*' \
//!     target/release/examples/profile_hot_path
//! callgrind_annotate callgrind.out.<pid>.<n>     # one dump per phase, in order
//! ```
//!
//! (`--no-default-features` builds only the library's core, which is all it uses.) Without
//! valgrind it prints each phase's wall time, which does depend on the load.

use std::time::Instant;

use runledger::{DbOptions, Durability, Engine, EngineOptions, NewJob};
use serde_json::json;

const N: usize = 2000;

fn new_job(i: usize) -> NewJob {
    NewJob::new("bench", "noop", json!({ "i": i }))
}

#[inline(never)]
fn phase_create_many(e: &Engine) {
    let batch: Vec<NewJob> = (0..N).map(new_job).collect();
    for chunk in batch.chunks(1000) {
        e.jobs().create_many(chunk).unwrap();
    }
}

#[inline(never)]
fn phase_create(e: &Engine) {
    for i in 0..N {
        e.jobs().create(&new_job(i)).unwrap();
    }
}

#[inline(never)]
fn phase_claim_complete(e: &Engine) {
    for _ in 0..N {
        let c = e.jobs().claim("w1", &["noop"]).unwrap().expect("a job");
        e.jobs().complete(&c, &json!({"ok": true})).unwrap();
    }
}

#[inline(never)]
fn phase_claim_many_complete(e: &Engine) {
    let mut done = 0;
    while done < N {
        let claims = e.jobs().claim_many("w2", &["noop"], 50).unwrap();
        assert!(!claims.is_empty());
        for c in &claims {
            e.jobs().complete(c, &json!({"ok": true})).unwrap();
        }
        done += claims.len();
    }
}

fn timed(e: &Engine, name: &str, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let us = t.elapsed().as_secs_f64() * 1e6 / N as f64;
    println!("{name}: {us:.1} µs per job (wall time, depends on the machine's load)");
    report_reprepares(e);
}

/// Lists the writer connection's statements (its statement cache) that SQLite re-prepared
/// since the previous call (`SQLITE_STMTSTATUS_REPREPARE`, counters reset as read).
fn report_reprepares(e: &Engine) {
    use rusqlite::ffi;
    e.with_connection(|c| {
        // SAFETY: the handle is only used on this thread while `c` is borrowed; statements
        // are only inspected (their SQL text and a counter), never stepped or finalized.
        unsafe {
            let db = c.handle();
            let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                let n = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 1);
                if n > 0 {
                    let sql = std::ffi::CStr::from_ptr(ffi::sqlite3_sql(stmt)).to_string_lossy();
                    let sql: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
                    println!("  re-prepared {n} times: {:.100}", sql);
                }
                stmt = ffi::sqlite3_next_stmt(db, stmt);
            }
        }
        Ok(())
    })
    .unwrap();
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        db: DbOptions {
            durability: Durability::Normal,
            ..DbOptions::default()
        },
        ..EngineOptions::default()
    };
    let e = Engine::open_with(dir.path().join("profile.db"), opts).unwrap();
    timed(&e, "create_many", || phase_create_many(&e));
    timed(&e, "create", || phase_create(&e));
    timed(&e, "claim+complete", || phase_claim_complete(&e));
    timed(&e, "claim_many(50)+complete", || {
        phase_claim_many_complete(&e)
    });
    let stats = e.jobs().stats().unwrap();
    assert_eq!(stats.by_state.completed as usize, 2 * N);
}
