//! The `runledger` binary, run for real on temporary databases: outputs snapshotted with
//! timestamps and temporary paths replaced by placeholders (the demo runs on its own manual
//! clock, so its durations are stable); exit codes; `--json`; errors on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use runledger::{Engine, EngineOptions, ManualClock, NewJob, Timestamp};
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flex");

fn snapshots() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    s.set_prepend_module_to_snapshot(true);
    s.set_omit_expression(true);
    s
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        snapshots().bind(|| insta::assert_snapshot!($name, $value))
    };
}

/// What one run of the binary did.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runledger"));
    c.current_dir(dir)
        .env_remove("RUNLEDGER_DB")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    c
}

fn finish(o: Output, dir: &Path) -> Ran {
    let clean = |b: &[u8]| normalize(std::str::from_utf8(b).unwrap(), dir);
    Ran {
        code: o.status.code().expect("exited"),
        stdout: clean(&o.stdout),
        stderr: clean(&o.stderr),
    }
}

/// Runs `runledger --db <dir>/runledger.db ARGS` in `dir`.
fn rl(dir: &Path, args: &[&str]) -> Ran {
    let db = dir.join("runledger.db");
    let o = cmd(dir)
        .arg("--db")
        .arg(&db)
        .args(args)
        .output()
        .expect("binary runs");
    finish(o, dir)
}

/// Replaces fixed-width timestamps by `<TS>` and the temporary directory by `<DIR>`.
fn normalize(text: &str, dir: &Path) -> String {
    let text = text.replace(&dir.display().to_string(), "<DIR>");
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if i + 24 <= b.len() && is_timestamp(&b[i..i + 24]) {
            out.push_str("<TS>");
            i += 24;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_timestamp(s: &[u8]) -> bool {
    // 2026-11-22T11:30:00.000Z
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.iter().zip(SHAPE).all(|(c, p)| {
        if *p == b'd' {
            c.is_ascii_digit()
        } else {
            c == p
        }
    })
}

/// A temporary directory with a demo database in it (`demo.db`).
fn demo_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let ran = finish(
        cmd(dir.path())
            .arg("--db")
            .arg(&db)
            .arg("demo")
            .output()
            .unwrap(),
        dir.path(),
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    (dir, db)
}

fn on(db: &Path, args: &[&str]) -> Ran {
    let dir = db.parent().unwrap();
    finish(
        cmd(dir).arg("--db").arg(db).args(args).output().unwrap(),
        dir,
    )
}

#[test]
fn demo_runs_end_to_end_on_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    // No --db: the demo writes ./runledger-demo.db, never the default ./runledger.db.
    let ran = finish(cmd(dir.path()).arg("demo").output().unwrap(), dir.path());
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stderr, "");
    assert!(dir.path().join("runledger-demo.db").exists());
    assert!(!dir.path().join("runledger.db").exists());
    assert!(!ran.stdout.contains('\x1b'), "no colour off a terminal");
    snap!("demo", ran.stdout);

    // A second demo refuses to reuse the file...
    let again = finish(cmd(dir.path()).arg("demo").output().unwrap(), dir.path());
    assert_eq!(again.code, 1);
    assert_eq!(again.stdout, "");
    snap!("demo_refuses_existing_file", again.stderr);
    // ...unless forced, and then it starts from an empty database (same run ids).
    let forced = finish(
        cmd(dir.path()).args(["demo", "--force"]).output().unwrap(),
        dir.path(),
    );
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(forced.stdout, ran.stdout);
}

#[test]
fn listings_after_the_demo_as_tables_and_json() {
    let (_dir, db) = demo_dir();
    let runs = on(&db, &["runs", "list"]);
    assert_eq!(runs.code, 0);
    snap!("runs_list", runs.stdout);
    let json = on(&db, &["--json", "runs", "list", "--scope", "universe"]);
    snap!("runs_list_universe_json", json.stdout);
    let v = json.json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["meta"]["blockedStage"], "readiness");
    assert_eq!(v[0]["error_code"], "MODULE_NOT_READY");
    // --json also after the subcommand (a global flag).
    let failed = on(&db, &["runs", "list", "--status", "failed", "--json"]).json();
    assert_eq!(failed.as_array().unwrap().len(), 2);

    snap!("runs_show_blocked", on(&db, &["runs", "show", "2"]).stdout);
    snap!("runs_show_success", on(&db, &["runs", "show", "1"]).stdout);
    let show = on(&db, &["runs", "show", "1", "--json"]).json();
    assert_eq!(show["rawRecords"][0]["content_type"], "text/csv");
    assert_eq!(show["run"]["timeline"].as_array().unwrap().len(), 5);

    snap!("jobs_list", on(&db, &["jobs", "list"]).stdout);
    snap!("jobs_show", on(&db, &["jobs", "show", "1"]).stdout);
    let events = on(&db, &["jobs", "events", "1", "--after", "10", "--json"]).json();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["progress", "checkpoint", "completed"]);

    snap!("schedule_list", on(&db, &["schedule", "list"]).stdout);
    snap!("probes_list", on(&db, &["probes", "list"]).stdout);
    snap!("runbook_queries", on(&db, &["runbook"]).stdout);
    snap!(
        "runbook_blocked_failures",
        on(&db, &["runbook", "blocked_failures"]).stdout
    );
    let health = on(&db, &["runbook", "health_summary", "--json"]).json();
    assert_eq!(health["columns"], json!(["scope", "status", "cnt"]));
    assert_eq!(health["rows"].as_array().unwrap().len(), 3);
}

#[test]
fn usage_errors_exit_2_and_unknown_rows_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing_arg = rl(dir.path(), &["runs", "show"]);
    assert_eq!(missing_arg.code, 2);
    assert!(
        missing_arg.stderr.contains("<ID>"),
        "{}",
        missing_arg.stderr
    );
    let bad_scope = rl(dir.path(), &["runs", "list", "--scope", "galaxy"]);
    assert_eq!(bad_scope.code, 2);
    assert!(
        bad_scope.stderr.contains("unknown scope"),
        "{}",
        bad_scope.stderr
    );
    assert_eq!(rl(dir.path(), &["frobnicate"]).code, 2);

    let not_found = rl(dir.path(), &["runs", "show", "42"]);
    assert_eq!(
        (not_found.code, not_found.stderr.as_str()),
        (1, "error [NOT_FOUND]: run 42 not found\n")
    );
    let bad_rule = rl(dir.path(), &["schedule", "add", "x", "--rule", "sometimes"]);
    assert_eq!(bad_rule.code, 2, "{}", bad_rule.stderr);
    assert!(bad_rule.stderr.starts_with("error [INVALID_INPUT]: "));

    let init = rl(dir.path(), &["init"]);
    assert_eq!(init.code, 0);
    assert_eq!(
        init.stdout,
        format!(
            "database: <DIR>/runledger.db\nschema version: {}\n",
            runledger::known_schema_version()
        )
    );
}

#[test]
fn flex_check_reports_sections_and_exits_3_on_a_missing_required_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| format!("{FIXTURES}/{name}");
    let multi = file("multi_account.xml");

    let missing = rl(dir.path(), &["flex", "check", &multi]);
    assert_eq!(missing.code, 3);
    assert_eq!(
        missing.stderr,
        "error [MISSING_REQUIRED_SECTION]: missing required sections: U9000002: OpenPositions\n"
    );
    snap!("flex_check_multi_account", missing.stdout);

    let passes = rl(
        dir.path(),
        &[
            "flex",
            "check",
            &multi,
            "--require",
            "AccountInformation,CashReport",
            "--reconcile",
            "OpenPositions",
            "--json",
        ],
    );
    assert_eq!(passes.code, 0, "{}", passes.stderr);
    let v = passes.json();
    assert_eq!(v["check"]["missingRequired"], json!([]));
    assert_eq!(
        v["check"]["missingReconcile"],
        json!([{"account": "U9000002", "section": "OpenPositions", "missing": "absent"}])
    );
    assert_eq!(v["report"]["statements"].as_array().unwrap().len(), 2);

    let truncated = rl(dir.path(), &["flex", "check", &file("truncated.xml")]);
    assert_eq!(truncated.code, 3);
    assert!(truncated.stderr.starts_with("error [FLEX_TRUNCATED]: "));
    let absent = rl(dir.path(), &["flex", "check", "no-such-file.xml"]);
    assert_eq!(absent.code, 1);
    assert!(absent
        .stderr
        .starts_with("error [IO]: cannot open no-such-file.xml"));
    // flex check never touches a database.
    assert!(!dir.path().join("runledger.db").exists());
}

/// Plants a started run holding `ingest:targets` with a lease ending at `lease`.
fn plant_active_run(db: &Path, lease: &str) {
    let engine = Engine::open(db).unwrap();
    engine
        .with_connection(|c| {
            c.execute(
                "insert into ingest_runs (pipeline, scope, trigger, status, lock_key, started_at, lease_expires_at, meta_json)
                 values ('ingest', 'targets', 'manual', 'started', 'ingest:targets',
                         '2020-01-01T00:00:00.000Z', ?1, '{}')",
                [lease],
            )?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_trigger_on_an_active_lock_exits_4_and_the_sweep_frees_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runledger.db");
    plant_active_run(&db, "2999-01-01T00:00:00.000Z");

    let refused = rl(dir.path(), &["runs", "trigger", "--scope", "targets"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert_eq!(
        refused.stderr,
        "error [RUN_ALREADY_ACTIVE]: a run is already active for lock ingest:targets\n"
    );
    // `both`: universe still runs (pool isolation) while targets is refused.
    let both = rl(dir.path(), &["runs", "trigger", "--json"]);
    assert_eq!(both.code, 4);
    let v = both.json();
    assert_eq!(v[0]["error"]["code"], "RUN_ALREADY_ACTIVE");
    assert_eq!(v[1]["run"]["status"], "success");
    assert_eq!(
        rl(dir.path(), &["runs", "sweep"]).stdout,
        "no expired run\n"
    );

    let dir2 = tempfile::tempdir().unwrap();
    plant_active_run(
        &dir2.path().join("runledger.db"),
        "2020-01-01T00:05:00.000Z",
    );
    let swept = rl(dir2.path(), &["runs", "sweep", "--json"]);
    assert_eq!(swept.json(), json!({"abandoned": [1]}));
    let ok = rl(
        dir2.path(),
        &["runs", "trigger", "--scope", "targets", "--json"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let run = &ok.json()[0]["run"];
    assert_eq!(
        (run["id"].as_i64(), &run["status"]),
        (Some(2), &json!("success"))
    );
    let stages: Vec<(&str, &str)> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["stage"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("preflight", "success"),
            ("readiness", "success"),
            ("fetch", "success"),
            ("normalize", "success"),
            ("persist", "success")
        ]
    );
    let failing = rl(
        dir2.path(),
        &[
            "runs",
            "trigger",
            "--scope",
            "universe",
            "--fail-probe",
            "estimates",
        ],
    );
    assert_eq!(failing.code, 1);
    assert!(failing
        .stderr
        .starts_with("error [MODULE_NOT_READY]: run 3 (universe) failed: not ready: estimates: PROBE_FAILED HTTP_503"));
}

#[test]
fn preflight_probes_the_scope_and_prints_its_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let ran = rl(
        dir.path(),
        &[
            "preflight",
            "--scope",
            "universe",
            "--fail-probe",
            "fundamentals",
        ],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    snap!("preflight_universe", ran.stdout);
    // Fresh probes are not repeated.
    let again = rl(dir.path(), &["preflight", "--scope", "universe", "--json"]).json();
    assert_eq!(again["probed"], json!([]));
    assert_eq!(again["ready"], false);
}

/// A job claimed by a worker whose last heartbeat was in 2020 (then never again).
fn plant_stale_job(db: &Path) -> i64 {
    let clock = ManualClock::new(Timestamp::parse("2020-01-01T00:00:00.000Z").unwrap());
    let engine = Engine::open_with(db, EngineOptions::default().with_clock(clock)).unwrap();
    let jobs = engine.jobs();
    let job = jobs
        .create(&NewJob::new("alice", "research", json!({"q": 1})))
        .unwrap();
    let claim = jobs.claim("w1", &[]).unwrap().unwrap();
    jobs.checkpoint(&claim, &json!({"page": 1})).unwrap();
    job.id
}

#[test]
fn jobs_controls_and_the_supervisor_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runledger.db");
    let id = plant_stale_job(&db).to_string();

    let sup = rl(dir.path(), &["supervise", "--once"]);
    assert_eq!(sup.code, 0, "{}", sup.stderr);
    snap!("supervise_once", sup.stdout);
    assert_eq!(
        rl(dir.path(), &["supervise", "--once", "--json"]).json()["recovered"],
        json!([])
    );

    let step = |args: &[&str]| {
        let r = rl(dir.path(), args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        r.stdout
    };
    assert_eq!(step(&["jobs", "resume", &id]), "job 1: created\n");
    let not_running = rl(dir.path(), &["jobs", "pause", &id]);
    assert_eq!(
        (not_running.code, not_running.stderr.as_str()),
        (
            1,
            "error [ILLEGAL_TRANSITION]: job 1 cannot go from created to paused\n"
        )
    );
    {
        // A second job, running now (system clock): an operator pauses it.
        let engine = Engine::open(&db).unwrap();
        let job = engine
            .jobs()
            .create(&NewJob::new("bob", "trade", json!({})))
            .unwrap();
        assert_eq!(job.id, 2);
        let claim = engine.jobs().claim("w2", &["trade"]).unwrap().unwrap();
        assert_eq!(claim.id(), 2);
    }
    assert_eq!(step(&["jobs", "pause", "2"]), "job 2: paused\n");
    assert_eq!(
        step(&["jobs", "cancel", &id, "--reason", "not needed"]),
        "job 1: cancelled\n"
    );
    let again = rl(dir.path(), &["jobs", "cancel", &id]);
    assert_eq!(
        (again.code, again.stderr.as_str()),
        (
            1,
            "error [ILLEGAL_TRANSITION]: job 1 cannot go from cancelled to cancelled\n"
        )
    );
    let restarted = rl(
        dir.path(),
        &["jobs", "restart", &id, "--input", r#"{"q": 2}"#, "--json"],
    )
    .json();
    assert_eq!(
        (&restarted["state"], &restarted["input"]),
        (&json!("created"), &json!({"q": 2}))
    );
    let bad_json = rl(dir.path(), &["jobs", "restart", &id, "--input", "{"]);
    assert_eq!(bad_json.code, 2);
    assert_eq!(
        rl(dir.path(), &["jobs", "pause", "99"]).stderr,
        "error [NOT_FOUND]: job 99 not found\n"
    );
    let events = rl(dir.path(), &["jobs", "events", &id]);
    snap!("jobs_events_controls", events.stdout);
    let listed = rl(
        dir.path(),
        &["jobs", "list", "--state", "created", "--json"],
    )
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let none = rl(dir.path(), &["jobs", "list", "--user", "carol"]);
    assert!(none.stdout.ends_with("(none)\n"), "{}", none.stdout);
}

#[test]
fn schedules_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let add = rl(
        dir.path(),
        &[
            "schedule",
            "add",
            "close",
            "--rule",
            "daily 16:05 mon-fri",
            "--zone",
            "America/New_York",
            "--scope",
            "targets",
            "--misfire",
            "skip",
        ],
    );
    assert_eq!(add.code, 0, "{}", add.stderr);
    snap!("schedule_add", add.stdout);
    let disabled = rl(dir.path(), &["schedule", "disable", "close", "--json"]).json();
    assert_eq!(disabled["enabled"], false);
    let enabled = rl(dir.path(), &["schedule", "enable", "close", "--json"]).json();
    assert_eq!(enabled["enabled"], true);
    let dup = rl(
        dir.path(),
        &["schedule", "add", "close", "--rule", "every 15m"],
    );
    assert_eq!(dup.code, 2);
    // Nothing is due yet: a tick fires nothing and names the next slot.
    let tick = rl(dir.path(), &["schedule", "tick", "--json"]).json();
    assert_eq!(tick["slots"], json!([]));
    assert_eq!(tick["next_due"], enabled["next_due_at"]);
}

#[cfg(unix)]
#[test]
fn serve_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = cmd(dir.path())
        .args(["--db", "runledger.db", "serve", "--poll", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("serving runledger.db: scheduler (0 schedules"),
        "{first}"
    );
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(lines.next().unwrap().unwrap(), "stopped");
}

/// A copy of `db` (a consistent snapshot, whatever is in its WAL) at `to`.
fn copy_db(db: &Path, to: &Path) {
    let engine = Engine::open(db).unwrap();
    engine
        .with_connection(|c| {
            c.execute("vacuum into ?1", [to.to_str().unwrap()])?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn doctor_finds_anomalies_planted_by_raw_sql_in_a_copy() {
    let (dir, db) = demo_dir();
    let clean = on(&db, &["doctor"]);
    assert_eq!((clean.code, clean.stderr.as_str()), (0, ""));
    assert!(
        clean.stdout.ends_with(": 0 error(s), 0 warning(s)\n"),
        "{}",
        clean.stdout
    );

    // A crashed host: a started run whose lease expired long ago. Work for the sweeper: a
    // warning, exit 0.
    let crashed = dir.path().join("crashed.db");
    copy_db(&db, &crashed);
    Engine::open(&crashed)
        .unwrap()
        .with_connection(|c| {
            c.execute_batch(
                "insert into ingest_runs (pipeline, scope, trigger, status, lock_key, started_at, lease_expires_at, meta_json)
                 values ('ingest', 'universe', 'schedule', 'started', 'ingest:universe',
                         '2020-01-01T00:00:00.000Z', '2020-01-01T00:05:00.000Z', '{}')",
            )?;
            Ok(())
        })
        .unwrap();
    let warned = on(&crashed, &["doctor"]);
    assert_eq!(warned.code, 0, "{}", warned.stderr);
    snap!("doctor_expired_lease", warned.stdout);

    // Damage: the audit log's immutability trigger dropped and a finished run edited back
    // to `started` with its finish time kept (the run machine's triggers dropped and CHECKs
    // ignored, as a careless hand edit could).
    let damaged = dir.path().join("damaged.db");
    copy_db(&db, &damaged);
    Engine::open(&damaged)
        .unwrap()
        .with_connection(|c| {
            c.execute_batch(
                "drop trigger audit_log_no_update;
                 drop trigger ingest_runs_terminal_is_final;
                 drop trigger ingest_runs_state_machine;
                 pragma ignore_check_constraints = on;
                 update ingest_runs set status = 'started',
                   lease_expires_at = '2999-01-01T00:00:00.000Z' where id = 1;",
            )?;
            Ok(())
        })
        .unwrap();
    let found = on(&damaged, &["doctor"]);
    assert_eq!(found.code, 1);
    assert!(
        found.stderr.starts_with("error [DOCTOR_ANOMALIES]: "),
        "{}",
        found.stderr
    );
    snap!("doctor_damaged", found.stdout);
    let json = on(&damaged, &["doctor", "--json"]);
    assert_eq!(json.code, 1);
    let report = json.json();
    let checks: Vec<&str> = report["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["check"].as_str().unwrap())
        .collect();
    for expected in ["immutable_guard", "schema_object", "timestamps"] {
        assert!(checks.contains(&expected), "{expected} in {checks:?}");
    }
}

/// A one-reply loopback Flex mock: answers every request with `body`; returns its base URL
/// and the URLs it saw.
fn one_reply_mock(body: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/FlexWebService", server.server_addr());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let _ = tx.send(req.url().to_owned());
            let _ = req.respond(tiny_http::Response::from_string(body));
        }
    });
    (base, rx)
}

#[test]
fn flex_run_fails_with_the_service_code_and_never_prints_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (base, seen) = one_reply_mock(
        "<FlexStatementResponse timestamp='22 November, 2026 06:40 AM EST'>\n<Status>Fail</Status>\n<ErrorCode>1015</ErrorCode>\n<ErrorMessage>Token is invalid.</ErrorMessage>\n</FlexStatementResponse>\n",
    );
    let token = "SECRET987654321TOKEN";
    let o = cmd(dir.path())
        .args([
            "--db",
            "runledger.db",
            "flex",
            "run",
            "--query-id",
            "777",
            "--base-url",
            &base,
        ])
        .env("IBKR_FLEX_TOKEN", token)
        .output()
        .unwrap();
    let ran = finish(o, dir.path());
    assert_eq!(
        ran.code, 1,
        "a service failure is an error, not a validation failure"
    );
    assert!(ran.stderr.contains("error [FLEX_1015]"), "{}", ran.stderr);
    assert!(ran.stdout.contains("failed"), "{}", ran.stdout);
    assert!(
        seen.recv().unwrap().contains(token),
        "the mock did receive the token"
    );
    for text in [&ran.stdout, &ran.stderr] {
        assert!(!text.contains(token), "token leaked: {text}");
    }
    let db = std::fs::read(dir.path().join("runledger.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
}

#[test]
fn flex_run_without_a_token_is_refused_at_the_token_gate() {
    let dir = tempfile::tempdir().unwrap();
    let o = cmd(dir.path())
        .args([
            "--db",
            "runledger.db",
            "flex",
            "run",
            "--query-id",
            "777",
            "--token-env",
            "NO_SUCH_TOKEN_VAR",
        ])
        .output()
        .unwrap();
    let ran = finish(o, dir.path());
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("error [FLEX_TOKEN_MISSING]"),
        "{}",
        ran.stderr
    );
    assert!(ran.stdout.contains("blocked at token"), "{}", ran.stdout);
}

#[test]
fn serve_http_answers_on_loopback_and_refuses_an_open_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let refused = rl(dir.path(), &["serve", "--http", "0.0.0.0:0"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("RUNLEDGER_API_TOKEN"),
        "{}",
        refused.stderr
    );

    let mut child = cmd(dir.path())
        .arg("--db")
        .arg(dir.path().join("runledger.db"))
        .args(["serve", "--http", "127.0.0.1:0"])
        .env_remove("RUNLEDGER_API_TOKEN")
        .env_remove("RUNLEDGER_API_READ_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open until the child is killed, so its later lines never hit a closed pipe.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(
        first.contains("open: no RUNLEDGER_API_TOKEN set"),
        "{first}"
    );
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let body = ureq::get(format!("http://{addr}/health"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["pipelines"], json!(["ingest"]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn backup_writes_a_verified_copy_and_doctor_reports_a_damaged_file_instead_of_failing() {
    let (dir, db) = demo_dir();
    let copy = dir.path().join("copy.db");
    let ran = on(&db, &["backup", copy.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("0 error(s)"), "{}", ran.stdout);
    let again = on(&db, &["backup", copy.to_str().unwrap()]);
    assert_eq!(
        (again.code, again.stderr.contains("INVALID_INPUT")),
        (2, true)
    );
    assert_eq!(on(&copy, &["doctor"]).code, 0);

    // Overwrite the jobs table's root page of the copy.
    let (root, page): (i64, i64) = {
        let c = rusqlite::Connection::open(&copy).unwrap();
        let root = c
            .query_row(
                "select rootpage from sqlite_master where name = 'jobs'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (
            root,
            c.query_row("pragma page_size", [], |r| r.get(0)).unwrap(),
        )
    };
    let mut bytes = std::fs::read(&copy).unwrap();
    let at = ((root - 1) * page) as usize;
    bytes[at..at + page as usize].fill(0xA5);
    std::fs::write(&copy, bytes).unwrap();
    let ran = on(&copy, &["doctor"]);
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(!ran.stderr.contains("[DATABASE]"), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("what to do:") && ran.stdout.contains(".recover"),
        "{}",
        ran.stdout
    );
    let json = on(&copy, &["--json", "doctor"]).json();
    assert_eq!(json["damage"]["tables"][2]["table"], "jobs");
    assert_eq!(json["damage"]["tables"][2]["readable"], false);
}

// ---------- Flex for real statements (issue 14) ----------

/// A loopback Flex mock answering requests from a script, one reply each (the last one
/// repeats); returns its base URL.
fn script_mock(replies: Vec<Vec<u8>>) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/FlexWebService", server.server_addr());
    std::thread::spawn(move || {
        for (i, req) in server.incoming_requests().enumerate() {
            let body = replies[i.min(replies.len() - 1)].clone();
            let _ = req.respond(tiny_http::Response::from_data(body));
        }
    });
    base
}

const ACCEPTED: &str = "<FlexStatementResponse timestamp='22 November, 2026 06:40 AM EST'>\n<Status>Success</Status>\n<ReferenceCode>1234567890</ReferenceCode>\n<Url>https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement</Url>\n</FlexStatementResponse>\n";
const THROTTLED: &str = "<FlexStatementResponse timestamp='22 November, 2026 06:40 AM EST'>\n<Status>Fail</Status>\n<ErrorCode>1018</ErrorCode>\n<ErrorMessage>Too many requests have been made from this token.</ErrorMessage>\n</FlexStatementResponse>\n";

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

/// `flex run` against `base` with the test token, extra `args`.
fn flex_run(dir: &Path, base: &str, args: &[&str]) -> Command {
    let mut c = cmd(dir);
    c.args([
        "--db",
        "runledger.db",
        "flex",
        "run",
        "--query-id",
        "777",
        "--base-url",
        base,
    ])
    .args(args)
    .env("IBKR_FLEX_TOKEN", "CLITESTTOKEN1234567890");
    c
}

#[test]
fn flex_check_refuses_malformed_xml_with_the_offset_and_a_json_error_object() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "malformed_query_name_quote.xml",
        "malformed_typographic_quotes.xml",
        "malformed_bare_ampersand.xml",
        "malformed_undefined_entity.xml",
    ] {
        let path = format!("{FIXTURES}/{name}");
        let text = rl(dir.path(), &["flex", "check", &path]);
        assert_ne!(text.code, 0, "{name}");
        assert!(
            text.stderr
                .contains("error [FLEX_MALFORMED_XML]: malformed flex xml at byte "),
            "{name}: {}",
            text.stderr
        );
        let json = rl(dir.path(), &["--json", "flex", "check", &path]);
        assert_eq!(json.code, text.code, "{name}");
        let v = json.json();
        assert_eq!(v["error"]["code"], "FLEX_MALFORMED_XML", "{name}");
        let position = v["error"]["position"].as_u64().expect("an offset");
        assert!(position < fixture_bytes(name).len() as u64, "{name}");
    }
    assert!(
        !dir.path().join("runledger.db").exists(),
        "no database touched"
    );
}

#[test]
fn section_flags_are_trimmed_checked_and_flag_names_that_are_not_ib_sections() {
    let dir = tempfile::tempdir().unwrap();
    let ok = format!("{FIXTURES}/activity_ok.xml");
    let empty = rl(
        dir.path(),
        &["flex", "check", &ok, "--require", "Trades,,CashReport"],
    );
    assert_eq!(empty.code, 2, "{}", empty.stderr);
    assert!(empty.stderr.contains("INVALID_INPUT"), "{}", empty.stderr);
    let blank = rl(dir.path(), &["flex", "check", &ok, "--reconcile", " "]);
    assert_eq!(blank.code, 2, "{}", blank.stderr);
    let bad_preset = rl(dir.path(), &["flex", "check", &ok, "--policy", "strict"]);
    assert_eq!(bad_preset.code, 2, "{}", bad_preset.stderr);
    // Trimmed names pass; a typo is flagged and (being absent) fails the check.
    let spaced = rl(
        dir.path(),
        &["flex", "check", &ok, "--require", " Trades , CashReport "],
    );
    assert_eq!(spaced.code, 0, "{}", spaced.stderr);
    assert!(!spaced.stderr.contains("warning"), "{}", spaced.stderr);
    let typo = rl(dir.path(), &["flex", "check", &ok, "--require", "Trade"]);
    assert!(
        typo.stderr
            .contains("warning: not IB Flex section names (check the spelling): Trade"),
        "{}",
        typo.stderr
    );
    assert_eq!(typo.code, 3, "{}", typo.stderr);
    let none = rl(dir.path(), &["flex", "check", &ok, "--policy", "none"]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    // flex run takes the same flags, checked before anything is sent.
    let run = cmd(dir.path())
        .args(["--db", "runledger.db", "flex", "run", "--query-id", "777"])
        .args(["--require", "Trades,", "--base-url", "http://127.0.0.1:9/x"])
        .output()
        .unwrap();
    let run = finish(run, dir.path());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("INVALID_INPUT"), "{}", run.stderr);
}

#[test]
fn flex_run_keeps_a_malformed_statement_as_a_rejected_raw_record_not_flex_not_xml() {
    let dir = tempfile::tempdir().unwrap();
    let statement = fixture_bytes("malformed_query_name_quote.xml");
    let base = script_mock(vec![ACCEPTED.as_bytes().to_vec(), statement.clone()]);
    let o = flex_run(dir.path(), &base, &["--policy", "none"])
        .output()
        .unwrap();
    let ran = finish(o, dir.path());
    assert_ne!(ran.code, 0);
    assert!(
        ran.stderr.contains("error [FLEX_MALFORMED_XML]"),
        "{}",
        ran.stderr
    );
    // The statement is kept, marked rejected, linked to the failed run.
    let listed = rl(dir.path(), &["--json", "raw", "list", "--rejected"]).json();
    let records = listed.as_array().unwrap();
    assert_eq!(records.len(), 1, "{listed}");
    let record = &records[0];
    assert_eq!(record["rejected"]["code"], "FLEX_MALFORMED_XML");
    let run_id = record["run_id"].as_i64().unwrap();
    let run = rl(dir.path(), &["--json", "runs", "show", &run_id.to_string()]).json();
    assert_eq!(run["run"]["status"], "failed", "{run}");
    assert_eq!(run["run"]["error_code"], "FLEX_MALFORMED_XML", "{run}");
    assert_eq!(
        run["rawRecords"][0]["rejected"]["code"],
        "FLEX_MALFORMED_XML"
    );
    let shown = rl(dir.path(), &["runs", "show", &run_id.to_string()]);
    assert!(
        shown
            .stdout
            .contains("raw 1 rejected [FLEX_MALFORMED_XML]: malformed flex xml at byte "),
        "{}",
        shown.stdout
    );
    let of_run = rl(
        dir.path(),
        &["--json", "raw", "list", "--run", &run_id.to_string()],
    )
    .json();
    assert_eq!(of_run.as_array().unwrap().len(), 1);
    assert_eq!(
        rl(dir.path(), &["--json", "raw", "list", "--run", "999"]).json(),
        json!([])
    );
    // Exported byte for byte, owner-only.
    let id = record["id"].as_i64().unwrap().to_string();
    let out = dir.path().join("kept.xml");
    let export = rl(
        dir.path(),
        &["raw", "export", &id, "--out", out.to_str().unwrap()],
    );
    assert_eq!(export.code, 0, "{}", export.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), statement);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = rl(
        dir.path(),
        &["raw", "export", &id, "--out", out.to_str().unwrap()],
    );
    assert_ne!(again.code, 0, "an existing file is not overwritten");
    // Re-checked from the database: the same verdict as the run's.
    let recheck = rl(dir.path(), &["--json", "flex", "check", "--raw", &id]);
    assert_ne!(recheck.code, 0);
    assert_eq!(recheck.json()["error"]["code"], "FLEX_MALFORMED_XML");
    let missing = rl(dir.path(), &["flex", "check", "--raw", "4242"]);
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_a_throttled_flex_run_ends_it_interrupted_and_frees_the_lock() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let base = script_mock(vec![
        THROTTLED.as_bytes().to_vec(),
        ACCEPTED.as_bytes().to_vec(),
        fixture_bytes("activity_ok.xml"),
    ]);
    let mut child = flex_run(dir.path(), &base, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Not a terminal: one line per long wait, the 60 s back-off first.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("waiting 60s: throttled by IB (1018)"),
        "{line}"
    );
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exit status of an interrupted run"
    );
    let engine = Engine::open(dir.path().join("runledger.db")).unwrap();
    let runs = engine.runs().list(&Default::default()).unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.status.to_string(), "failed");
    assert_eq!(run.error_code.as_deref(), Some("INTERRUPTED"));
    assert!(
        run.duration_ms.unwrap() < 30_000,
        "ended at once, not after the back-off"
    );
    // The wait is in the timeline with its reason and how long it lasted.
    let entry = run.timeline.last().unwrap();
    assert_eq!(entry.stage, "request");
    assert_eq!(entry.error_code.as_deref(), Some("INTERRUPTED"));
    let wait = &entry.detail.as_ref().unwrap()["waits"][0];
    assert_eq!(wait["reason"], "throttled");
    assert_eq!(wait["plannedMs"], 60_000);
    assert_eq!(wait["code"], "FLEX_1018");
    assert!(wait["waitedMs"].as_u64().unwrap() < 30_000);
    drop(engine);
    // The lock is free: a retry runs now and succeeds.
    let o = flex_run(dir.path(), &base, &[]).output().unwrap();
    let retry = finish(o, dir.path());
    assert_eq!(retry.code, 0, "{}\n{}", retry.stdout, retry.stderr);
    assert!(retry.stdout.contains("success"), "{}", retry.stdout);
}

#[cfg(unix)]
#[test]
fn sigterm_during_a_throttled_flex_run_ends_it_interrupted_too() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let base = script_mock(vec![THROTTLED.as_bytes().to_vec()]);
    let mut child = flex_run(dir.path(), &base, &["--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("waiting 60s"), "{line}");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    drop(stderr);
    let engine = Engine::open(dir.path().join("runledger.db")).unwrap();
    let run = engine.runs().list(&Default::default()).unwrap().remove(0);
    assert_eq!(run.error_code.as_deref(), Some("INTERRUPTED"));
    assert!(run.finished_at.is_some(), "the lock is released");
}
