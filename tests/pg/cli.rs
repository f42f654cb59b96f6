//! The `runledger` binary on PostgreSQL: `--db postgres://...` for `doctor`, `init` and
//! `jobs`, `runs`, `preflight`, `probes`, `raw`, `flex`, `supervise`, `schedule`, `runbook`
//! (answering as on the source file), `copy --from FILE.db --to postgres://...`, and every other
//! command refused with what is supported (never a file named like the URL).

use std::path::Path;
use std::process::{Command, Output};

use crate::common::TestDb;
use crate::copy::{busy_sqlite, TempDir};

fn runledger(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runledger"))
        .current_dir(cwd)
        .env_remove("RUNLEDGER_DB")
        .env_remove("RUNLEDGER_CONFIG")
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pg_cli_doctor_reports_a_clean_and_a_damaged_ledger() {
    let Some(mut db) = TestDb::new("cli_doctor") else {
        return;
    };
    let dir = TempDir::new("cli_doctor");
    let out = runledger(dir.path(), &["--db", &db.url, "doctor"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0 error(s), 0 warning(s)"),
        "{}",
        text(&out.stdout)
    );
    db.exec("alter table jobs disable trigger jobs_state_machine")
        .unwrap();
    let out = runledger(dir.path(), &["--db", &db.url, "--json", "doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(&str, &str)> = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["check"].as_str().unwrap(), a["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [("schema_object", "trigger jobs_state_machine is disabled")]
    );
    assert!(text(&out.stderr).contains("[DOCTOR_ANOMALIES]"));
    // nothing named like the URL was created
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn pg_cli_copy_then_read_the_copied_jobs_and_refuse_the_rest() {
    let Some(db) = TestDb::new("cli_copy") else {
        return;
    };
    let dir = TempDir::new("cli_copy");
    let file = dir.path().join("busy.db");
    drop(busy_sqlite(&file));
    let from = file.to_str().unwrap();

    // every table has a twin: the demo's modules, probes, raw data and supervisor row too
    let out = runledger(dir.path(), &["copy", "--from", from, "--to", &db.url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    for t in [
        "jobs",
        "audit_log",
        "job_events",
        "ingest_runs",
        "schedules",
        "due_runs",
        "supervisor_state",
        "ingest_modules",
        "ingest_probes",
        "raw_payloads",
        "raw_records",
    ] {
        assert!(stderr.contains(&format!("copy: {t} ")), "{t}: {stderr}");
    }
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("left behind"), "{stdout}");
    assert!(stdout.contains("copied:"), "{stdout}");
    assert!(
        !stdout.contains(&db.url) && !stderr.contains(&db.url),
        "no URL printed"
    );

    let out = runledger(
        dir.path(),
        &["--db", &db.url, "--json", "jobs", "show", "1"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["id"], 1);
    let sqlite = runledger(dir.path(), &["--db", from, "--json", "jobs", "show", "1"]);
    assert_eq!(text(&sqlite.stdout), text(&out.stdout));

    // the listing of the copied jobs, filtered and paged, reads the same on both sides
    for args in [
        vec!["--json", "jobs", "list", "--limit", "500"],
        vec!["--json", "jobs", "list", "--state", "completed"],
    ] {
        let mut on_pg = vec!["--db", db.url.as_str()];
        on_pg.extend(&args);
        let out = runledger(dir.path(), &on_pg);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let mut on_sqlite = vec!["--db", from];
        on_sqlite.extend(&args);
        let sqlite = runledger(dir.path(), &on_sqlite);
        assert!(sqlite.status.success(), "{}", text(&sqlite.stderr));
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!listed.is_empty(), "{args:?}: nothing listed");
        assert_eq!(text(&sqlite.stdout), text(&out.stdout), "{args:?}");
    }

    let out = runledger(dir.path(), &["--db", &db.url, "doctor"]);
    assert!(out.status.success(), "{}", text(&out.stdout));

    let out = runledger(
        dir.path(),
        &[
            "copy",
            "--from",
            from,
            "--to",
            &db.url,
            "--skip-sqlite-only",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("[COPY_TARGET_NOT_EMPTY]"),
        "{}",
        text(&out.stderr)
    );

    // runs, raw and supervise go through Engine::open on the URL: the copied runs are there
    let out = runledger(
        dir.path(),
        &["--db", db.url.as_str(), "--json", "runs", "list"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(listed.as_array().is_some_and(|a| !a.is_empty()), "{listed}");
    let out = runledger(
        dir.path(),
        &["--db", db.url.as_str(), "supervise", "--once"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = runledger(dir.path(), &["--db", db.url.as_str(), "raw", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // runs abandon is served on PostgreSQL too: the copied run 1 ended long ago, so it is the
    // typed refusal of the run machine (exit 1), not a refusal of the backend
    let out = runledger(
        dir.path(),
        &[
            "--db",
            db.url.as_str(),
            "runs",
            "abandon",
            "1",
            "--reason",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("[ILLEGAL_TRANSITION]"),
        "{}",
        text(&out.stderr)
    );
    let out = runledger(dir.path(), &["--db", db.url.as_str(), "schedule", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // probes, preflight and flex run on the URL through the file's handlers, and answer what
    // they answer on the source file (the same rows; the time of the check aside)
    for args in [
        vec!["probes", "list"],
        vec!["preflight", "--scope", "targets"],
        vec!["flex", "check", "--raw", "1"],
        vec!["runbook", "latest_runs"],
        vec!["runbook", "health_summary"],
    ] {
        let answer = |db: &str| {
            let mut full = vec!["--db", db, "--json"];
            full.extend(&args);
            let out = runledger(dir.path(), &full);
            let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stderr)));
            if let Some(o) = v.as_object_mut() {
                o.remove("checked_at");
            }
            (out.status.code(), v)
        };
        let (on_pg, on_file) = (answer(db.url.as_str()), answer(from));
        assert_eq!(on_pg, on_file, "{args:?}");
        assert!(on_pg.1 != serde_json::Value::Null, "{args:?}");
    }
    for args in [vec!["demo"], vec!["backup", "out.db"]] {
        let mut full = vec!["--db", db.url.as_str()];
        full.extend(&args);
        let out = runledger(dir.path(), &full);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(stderr.contains("[INVALID_INPUT]"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("supports: doctor, init, jobs, runs, preflight, probes, raw, flex"),
            "{args:?}: {stderr}"
        );
    }
    // the only file in the directory is the source (and its -wal/-shm)
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("busy.db"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
