//! The guide: a quick start and one page per concept, every code block a doctest.
//!
//! - [`quickstart`]: open a database, run a job, trigger a pipeline, tick a schedule.
//! - [`jobs`]: the job life cycle, claims and fencing, the worker, the supervisor and its
//!   recovery policies, recovery tools, the versioned job record.
//! - [`runs`]: pipelines, gates and stages, retries, timelines, scopes, locks, leases,
//!   probes and readiness, raw records and retention.
//! - [`schedules`]: rules, zones and DST, misfire policies, ticks that fire each slot once,
//!   [`ScheduledRuns`](crate::ScheduledRuns), the background loop.
//! - `flex` (with the default `flex` feature): the ready-made Interactive Brokers Flex
//!   pipeline, the token, polling and rate limits, the section policy.
//! - [`events`]: the per-job event log, resync after a reconnect, subscriptions, polling
//!   across processes.
//! - [`operations`]: `runbook.sql` in the `sqlite3` shell, `doctor`, durability, several
//!   processes on one file.
//! - [`snapshot_testing`]: pin a pipeline's runs and jobs in snapshot tests with their
//!   versioned diagnostics shapes, on a manual clock.
//! - `postgres` (with the `postgres` feature): the PostgreSQL backend, `runledger::pg`:
//!   when to choose it, what is the same and what is not, what the first slice covers.
//! - [`errors`]: every error code runledger returns or records, what it means and what to do.
//! - `config` (with the default `cli` feature): the `runledger` daemon's `runledger.toml`.

#[doc = include_str!("../docs/quickstart.md")]
pub mod quickstart {}

#[doc = include_str!("../docs/jobs.md")]
pub mod jobs {}

#[doc = include_str!("../docs/runs.md")]
pub mod runs {}

#[doc = include_str!("../docs/schedules.md")]
pub mod schedules {}

#[cfg(feature = "flex")]
#[doc = include_str!("../docs/flex.md")]
pub mod flex {}

#[doc = include_str!("../docs/events.md")]
pub mod events {}

#[doc = include_str!("../docs/operations.md")]
pub mod operations {}

#[cfg(feature = "postgres")]
#[doc = include_str!("../docs/postgres.md")]
pub mod postgres {}

#[doc = include_str!("../docs/errors.md")]
pub mod errors {}

#[cfg(feature = "cli")]
#[doc = include_str!("../docs/config.md")]
pub mod config {}
#[doc = include_str!("../docs/snapshot-testing.md")]
pub mod snapshot_testing {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Upper-case string literals in `src/` that are not error or outcome codes.
    const NOT_CODES: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_VERSION",
        "IBKR_FLEX_TOKEN",
        "SECRET",
        "RUNLEDGER_API_TOKEN",
        "RUNLEDGER_API_READ_TOKEN",
        "RUNLEDGER_TZDB",
    ];

    fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("bin") {
                    collect(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    /// `"CODE"` literals: upper-case letters and digits with at least one underscore, or a
    /// single upper-case word passed as a code.
    fn literals(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for piece in text.split('"').skip(1).step_by(2) {
            let is_code = piece.len() >= 4
                && !piece.ends_with('_')
                && piece.starts_with(|c: char| c.is_ascii_uppercase())
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && (piece.contains('_')
                    || [
                        "PANIC",
                        "STALLED",
                        "BUSY",
                        "DATABASE",
                        "IMMUTABLE",
                        "UNTESTED",
                    ]
                    .contains(&piece));
            if is_code {
                out.push(piece.to_string());
            }
        }
        out
    }

    #[test]
    fn every_code_in_the_library_is_explained_in_the_errors_page() {
        let page = include_str!("../docs/errors.md");
        let mut files = Vec::new();
        collect(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut missing = Vec::new();
        for (path, text) in &files {
            for code in literals(text) {
                if !NOT_CODES.contains(&code.as_str()) && !page.contains(&format!("`{code}`")) {
                    missing.push(format!("{code} ({path})"));
                }
            }
        }
        missing.sort();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "codes not in docs/errors.md: {missing:?}"
        );
        // The scanner finds what it should.
        assert!(literals(r#"x("RUN_ALREADY_ACTIVE", "no", "STALLED")"#).len() == 2);
    }
}
