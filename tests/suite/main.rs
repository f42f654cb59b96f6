//! runledger's integration tests: one binary, one module per area.

mod attacks;
pub mod behaviour;
mod common;
mod daemon;
mod doctor;
mod engine;
#[cfg(feature = "flex")]
mod flex_client;
#[cfg(feature = "flex")]
mod flex_gen;
mod flex_malformed;
#[cfg(feature = "flex")]
mod flex_mock;
#[cfg(feature = "flex")]
mod flex_parse;
#[cfg(feature = "flex")]
mod flex_pipeline;
mod host;
mod host_snapshot;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub mod http_client;
mod jobs;
mod raw_rejected;
mod reliability;
mod reliability_contention;
mod reliability_crash;
mod reliability_faults;
mod reliability_files;
mod reliability_input;
mod reliability_slots;
mod runbook;
mod runs;
mod runs_probe;
mod schedule;
mod scheduled_runs;
mod supervision;
#[cfg(feature = "http")]
mod ui;

/// The CLI's simulated provider (the file the binary builds), for tests that need a
/// demo-like file.
#[path = "../../src/bin/runledger/provider.rs"]
#[allow(dead_code)]
pub mod demo;

/// The behavioural suite ([`behaviour`]) on SQLite: a file engine per scenario (tests/pg runs
/// the same scenarios on PostgreSQL).
mod behaviour_sqlite {
    fn engine(
        _test: &str,
    ) -> Option<(runledger::Engine, runledger::ManualClock, tempfile::TempDir)> {
        Some(crate::common::file_engine())
    }
    crate::behaviour_tests!(engine);

    /// [`crate::behaviour::operator_job_calls_are_audited`], reading `audit_log` on the
    /// engine's own connection.
    #[test]
    fn operator_job_calls_are_audited() {
        let (engine, clock, _dir) = crate::common::file_engine();
        let audit = |id: i64| {
            engine
                .with_connection(|c| {
                    let mut stmt = c.prepare(
                        "select action, actor, detail from audit_log
                         where entity = 'job' and entity_id = ?1 order by id",
                    )?;
                    let rows = stmt.query_map([id.to_string()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?))
                    })?;
                    let mut out = Vec::new();
                    for r in rows {
                        let (action, actor, detail) = r?;
                        out.push((action, actor, serde_json::from_str(&detail).unwrap()));
                    }
                    Ok(out)
                })
                .unwrap()
        };
        crate::behaviour::operator_job_calls_are_audited(&engine, &clock, &audit);
    }
}
