//! The `runledger` binary, run for real on temporary databases: outputs snapshotted with
//! timestamps and temporary paths replaced by placeholders (the demo runs on its own manual
//! clock, so its durations are stable); exit codes; `--json`; errors on stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use runledger::{Engine, EngineOptions, ManualClock, NewJob, Timestamp};
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flex");

/// The CLI's loopback mock of the Flex Web Service (the file the binary builds).
#[path = "../src/bin/runledger/flex_mock.rs"]
#[allow(dead_code)]
mod flex_mock;

/// The token the configured pipeline reads from [`TOKEN_ENV`] (and the mock accepts).
const TOKEN: &str = "clitesttoken42";
const TOKEN_ENV: &str = "RL_CLI_TEST_TOKEN";

/// Writes `<dir>/runledger.toml`: pipeline `flex-main` (query 123456, targets) against
/// `base_url`, polling fast, then `extra`.
fn write_config(dir: &Path, base_url: &str, extra: &str) {
    let text = format!(
        "[[pipeline]]\nname = \"flex-main\"\nkind = \"flex\"\nquery_id = \"123456\"\n\
         token_env = \"{TOKEN_ENV}\"\npolicy = \"none\"\nbase_url = \"{base_url}\"\n\
         first_poll_delay_ms = 50\npoll_interval_ms = 50\n{extra}"
    );
    std::fs::write(dir.join("runledger.toml"), text).unwrap();
}

/// A base URL nothing listens on (for commands that never call it).
const NOWHERE: &str = "http://127.0.0.1:9/FlexWebService";

/// Waits (at most 30 s) until `f` returns `Some`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The runs of the database at `db`, newest first.
fn runs_of(db: &Path) -> Vec<runledger::run::Run> {
    Engine::open(db)
        .unwrap()
        .runs()
        .list(&Default::default())
        .unwrap()
}

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
        .env_remove("RUNLEDGER_CONFIG")
        .env_remove("NO_COLOR")
        .env(TOKEN_ENV, TOKEN)
        // One tz database on every machine: the bundled copy pinned by Cargo.lock.
        .env("RUNLEDGER_TZDB", "bundled")
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
    let no_pipeline = rl(dir.path(), &["schedule", "add", "x", "--rule", "every 15m"]);
    assert_eq!(no_pipeline.code, 2, "{}", no_pipeline.stderr);
    assert!(
        no_pipeline.stderr.starts_with("error [NO_PIPELINE]: "),
        "{}",
        no_pipeline.stderr
    );
    write_config(dir.path(), NOWHERE, "");
    let bad_rule = rl(dir.path(), &["schedule", "add", "x", "--rule", "sometimes"]);
    assert_eq!(bad_rule.code, 2, "{}", bad_rule.stderr);
    assert!(bad_rule.stderr.starts_with("error [INVALID_INPUT]: "));

    // `--version` names the tz database schedules use (here the bundled copy, see `cmd`).
    let version = rl(dir.path(), &["--version"]);
    assert_eq!(version.code, 0);
    assert!(
        version.stdout.starts_with("runledger ") && version.stdout.contains("(tzdb 20"),
        "{}",
        version.stdout
    );
    assert!(
        version.stdout.trim_end().ends_with("(bundled))"),
        "{}",
        version.stdout
    );

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
                 values ('flex-main', 'targets', 'manual', 'started', 'flex-main:targets',
                         '2020-01-01T00:00:00.000Z', ?1, '{}')",
                [lease],
            )?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_trigger_on_an_active_lock_exits_4_naming_the_holder_and_abandon_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let mock = flex_mock::FlexMock::start(TOKEN, 0).unwrap();
    write_config(dir.path(), &mock.base_url(), "");
    let db = dir.path().join("runledger.db");
    plant_active_run(&db, "2999-01-01T00:00:00.000Z");

    let refused = rl(dir.path(), &["runs", "trigger"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert_eq!(
        refused.stderr,
        "error [RUN_ALREADY_ACTIVE]: a run is already active for lock flex-main:targets (held by run 1, lease expires <TS>)\n"
    );
    assert_eq!(
        rl(dir.path(), &["runs", "sweep"]).stdout,
        "no expired run\n"
    );
    // The operator ends the run whose process died: at once, audited.
    let abandoned = rl(
        dir.path(),
        &[
            "runs",
            "abandon",
            "1",
            "--reason",
            "host rebooted",
            "--json",
        ],
    );
    assert_eq!(abandoned.code, 0, "{}", abandoned.stderr);
    let run = abandoned.json();
    assert_eq!(run["error_code"], "ABANDONED");
    assert_eq!(run["error_message"], "abandon by cli: host rebooted");
    let again = rl(dir.path(), &["runs", "abandon", "1", "--reason", "again"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("ILLEGAL_TRANSITION"),
        "{}",
        again.stderr
    );
    let audited = Engine::open(&db)
        .unwrap()
        .with_connection(|c| {
            Ok(c.query_row(
                "select actor || ' ' || action || ' ' || json_extract(detail, '$.reason')
                 from audit_log where entity = 'run' and entity_id = '1'",
                [],
                |r| r.get::<_, String>(0),
            )?)
        })
        .unwrap();
    assert_eq!(audited, "cli abandon host rebooted");

    // The lock is free: the configured Flex pipeline runs against the mock.
    let ok = rl(
        dir.path(),
        &["runs", "trigger", "--pipeline", "flex-main", "--json"],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let run = &ok.json()[0]["run"];
    assert_eq!(run["status"], "success");
    assert_eq!(run["pipeline"], "flex-main");
    let stages: Vec<&str> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "token",
            "request",
            "poll",
            "download",
            "section_preflight",
            "persist"
        ]
    );

    // An expired holder is swept.
    let dir2 = tempfile::tempdir().unwrap();
    plant_active_run(
        &dir2.path().join("runledger.db"),
        "2020-01-01T00:05:00.000Z",
    );
    let swept = rl(dir2.path(), &["runs", "sweep", "--json"]);
    assert_eq!(swept.json(), json!({"abandoned": [1]}));
    // Without a config there is nothing to trigger.
    let none = rl(dir2.path(), &["runs", "trigger"]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.starts_with("error [NO_PIPELINE]"),
        "{}",
        none.stderr
    );
    write_config(dir2.path(), NOWHERE, "");
    let unknown = rl(dir2.path(), &["runs", "trigger", "--pipeline", "ingest"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.starts_with("error [UNKNOWN_PIPELINE]: no pipeline named \"ingest\" is configured in runledger.toml (configured: flex-main)"),
        "{}",
        unknown.stderr
    );
}

/// A loopback health endpoint: `/ok` answers 200, anything else 503.
fn health_server() -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr());
    std::thread::spawn(move || {
        for req in server.incoming_requests() {
            let status = if req.url() == "/ok" { 200 } else { 503 };
            let _ = req.respond(tiny_http::Response::from_string("").with_status_code(status));
        }
    });
    base
}

#[test]
fn preflight_probes_the_configured_modules_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let health = health_server();
    write_config(
        dir.path(),
        NOWHERE,
        &format!(
            "[[module]]\nname = \"broker\"\nscope = \"targets\"\nurl = \"{health}/ok\"\n\
             [[module]]\nname = \"quotes\"\nscope = \"both\"\nurl = \"{health}/down\"\nexpect_status = 200\n"
        ),
    );
    let ran = rl(dir.path(), &["preflight", "--scope", "targets"]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout
            .starts_with("preflight targets: not ready (probed now: broker, quotes)"),
        "{}",
        ran.stdout
    );
    let v = rl(dir.path(), &["preflight", "--scope", "targets", "--json"]).json();
    // Fresh probes are not repeated.
    assert_eq!(v["probed"], json!([]));
    assert_eq!(v["ready"], false);
    let by_name = |name: &str| {
        v["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["module"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("broker")["ready"], true);
    assert_eq!(by_name("quotes")["ready"], false);
    assert_eq!(by_name("quotes")["last_probe"]["code"], "HTTP_503");
    let probes = rl(dir.path(), &["probes", "list", "--json"]).json();
    assert_eq!(probes.as_array().unwrap().len(), 2);
    // The pipeline's preflight gate probes them too: the run is blocked at preflight.
    let blocked = rl(dir.path(), &["runs", "trigger", "--json"]);
    assert_eq!(blocked.code, 1, "{}", blocked.stderr);
    assert_eq!(
        blocked.json()[0]["run"]["meta"]["blockedStage"],
        "preflight"
    );
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
    // The reason is stored on the job: `jobs show` and its JSON say it.
    let shown = rl(dir.path(), &["jobs", "show", &id]);
    assert!(
        shown.stdout.contains("\nreason        not needed\n"),
        "{}",
        shown.stdout
    );
    let shown = rl(dir.path(), &["jobs", "show", &id, "--json"]).json();
    assert_eq!(shown["cancel_reason"], json!("not needed"));
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
    assert_eq!(
        restarted["cancel_reason"],
        json!(null),
        "a restart clears it"
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
    write_config(dir.path(), NOWHERE, "");
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
    // Typed scopes; only configured pipelines; the pipeline's own scope.
    let add_with = |name: &str, extra: &[&str]| {
        let mut args = vec!["schedule", "add", name, "--rule", "every 15m"];
        args.extend_from_slice(extra);
        rl(dir.path(), &args)
    };
    let galaxy = add_with("g", &["--scope", "galaxy"]);
    assert_eq!(galaxy.code, 2);
    assert!(galaxy.stderr.contains("unknown scope"), "{}", galaxy.stderr);
    let universe = add_with("u", &["--scope", "universe"]);
    assert_eq!(universe.code, 2);
    assert!(
        universe.stderr.contains("runs in scope targets only"),
        "{}",
        universe.stderr
    );
    let nope = add_with("n", &["--pipeline", "nope"]);
    assert_eq!(nope.code, 2);
    assert!(
        nope.stderr.starts_with("error [UNKNOWN_PIPELINE]"),
        "{}",
        nope.stderr
    );
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
    // Every change was audited as the shell's.
    let db = dir.path().join("runledger.db");
    let audit: Vec<String> = Engine::open(&db)
        .unwrap()
        .with_connection(|c| {
            let mut st = c.prepare(
                "select action || ':' || actor from audit_log where entity = 'schedule' order by id",
            )?;
            let rows = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .unwrap();
    assert_eq!(audit, ["create:cli", "disable:cli", "enable:cli"]);
    let deleted = rl(dir.path(), &["schedule", "delete", "close"]);
    assert_eq!(deleted.stdout, "deleted schedule close\n");
}

/// Plants schedule `name` of `pipeline` (`rule`, UTC) whose next slot is already due, as if
/// the process had been down: its cursor is moved back by raw SQL.
fn plant_due_schedule(db: &Path, name: &str, pipeline: &str, rule: &str) {
    let engine = Engine::open(db).unwrap();
    engine
        .schedules()
        .create(&runledger::NewSchedule::new(
            name, pipeline, "targets", rule, "UTC",
        ))
        .unwrap();
    engine
        .with_connection(|c| {
            c.execute(
                "update schedules set next_due_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 seconds')
                 where name = ?1",
                [name],
            )?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_tick_leaves_the_slot_of_a_pipeline_it_does_not_have_pending_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), NOWHERE, "");
    let db = dir.path().join("runledger.db");
    // hourly: a minute boundary between the planting and the tick (a loaded machine) would
    // make a second slot due with "every 1m" (regression: the CI run of 2026-11-30 03:16)
    plant_due_schedule(&db, "host-job", "host-pipeline", "every 1h");
    let tick = rl(dir.path(), &["schedule", "tick"]);
    assert_eq!(tick.code, 0, "{}", tick.stderr);
    assert!(
        tick.stdout
            .contains("left pending: slot 1 of host-job: its pipeline is not configured here"),
        "{}",
        tick.stdout
    );
    let v = rl(dir.path(), &["schedule", "tick", "--json"]).json();
    assert_eq!(v["slots"][0]["status"], "pending");
    assert_eq!(v["slots"][0]["code"], "PIPELINE_NOT_HERE");
    let slots = Engine::open(&db)
        .unwrap()
        .schedules()
        .slots("host-job")
        .unwrap();
    assert_eq!(
        (slots[0].status.as_str(), slots[0].claimed_by.as_deref()),
        ("pending", None)
    );
}

#[cfg(unix)]
#[test]
fn serve_fires_a_configured_flex_schedule_and_stores_the_statement() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mock = flex_mock::FlexMock::start(TOKEN, 1).unwrap();
    write_config(
        dir.path(),
        &mock.base_url(),
        "[[schedule]]\nname = \"flex-daily\"\npipeline = \"flex-main\"\nrule = \"every 1h\"\nzone = \"UTC\"\n",
    );
    let checked = rl(dir.path(), &["config", "check"]);
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    let db = dir.path().join("runledger.db");
    // The config's schedule, already due (as after downtime).
    // hourly: with "every 1m" a minute boundary during the run made a second slot due, whose
    // run was refused RUN_ALREADY_ACTIVE behind the first (regression: the CI run of
    // 2026-11-30 07:13, in serve_fires_a_configured_flex_schedule_and_stores_the_statement)
    plant_due_schedule(&db, "flex-daily", "flex-main", "every 1h");
    let mut child = cmd(dir.path())
        .args(["--db", "runledger.db", "serve", "--poll", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("pipelines: flex-main"), "{first}");
    let run = wait_for("the scheduled run", || {
        runs_of(&db)
            .into_iter()
            .find(|r| r.status != runledger::RunStatus::Started)
    });
    assert_eq!(
        (
            run.status.as_str(),
            run.trigger.as_str(),
            run.pipeline.as_str()
        ),
        ("success", "schedule", "flex-main"),
        "{run:?}"
    );
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let engine = Engine::open(&db).unwrap();
    let raw = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].source, "ib_flex");
    let slot = engine
        .schedules()
        .slots("flex-daily")
        .unwrap()
        .into_iter()
        .find(|s| s.status.as_str() == "fired")
        .expect("a fired slot");
    assert_eq!(slot.run_ids, vec![run.id]);
    let bytes = std::fs::read(&db).unwrap();
    assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_runs_trigger_ends_the_run_interrupted_and_frees_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    // Never ready: the run polls until it is stopped.
    let slow = flex_mock::FlexMock::start(TOKEN, usize::MAX).unwrap();
    write_config(dir.path(), &slow.base_url(), "");
    let db = dir.path().join("runledger.db");
    let child = cmd(dir.path())
        .args([
            "--db",
            "runledger.db",
            "runs",
            "trigger",
            "--pipeline",
            "flex-main",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = wait_for("the run to start polling", || {
        runs_of(&db).into_iter().find(|r| {
            r.status == runledger::RunStatus::Started
                && r.timeline.iter().any(|e| e.stage == "poll")
        })
    });
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "interrupted: run {} ended failed INTERRUPTED",
            started.id
        )),
        "{stderr}"
    );
    let run = Engine::open(&db).unwrap().runs().get(started.id).unwrap();
    assert_eq!(run.status.as_str(), "failed");
    assert_eq!(run.error_code.as_deref(), Some("INTERRUPTED"));
    assert_eq!(run.meta["openStage"], "poll");
    // The lock is free at once: a new trigger (against a ready service) succeeds.
    let ready = flex_mock::FlexMock::start(TOKEN, 0).unwrap();
    write_config(dir.path(), &ready.base_url(), "");
    let ok = rl(dir.path(), &["runs", "trigger", "--json"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.json()[0]["run"]["status"], "success");
}

#[test]
fn config_check_prints_what_serve_runs_and_an_error_names_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let none = rl(dir.path(), &["config", "check"]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr
            .starts_with("error [CONFIG_INVALID]: no config file"),
        "{}",
        none.stderr
    );
    write_config(
        dir.path(),
        NOWHERE,
        "[[schedule]]\nname = \"flex-daily\"\npipeline = \"flex-main\"\nrule = \"daily 06:00\"\n\
         [http]\nlisten = \"127.0.0.1:8750\"\n",
    );
    let ok = rl(dir.path(), &["config", "check"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    snap!("config_check", ok.stdout);
    let v = rl(dir.path(), &["config", "check", "--json"]).json();
    assert_eq!(v["pipelines"][0]["tokenEnv"], TOKEN_ENV);
    assert_eq!(v["pipelines"][0]["tokenSet"], true);
    assert_eq!(v["schedules"][0]["zone"], "Asia/Shanghai");
    let text = std::fs::read_to_string(dir.path().join("runledger.toml")).unwrap();
    // A token pasted in place of the variable's name: refused, the token never echoed.
    let pasted = "987654321987654321987654";
    std::fs::write(dir.path().join("bad.toml"), text.replace(TOKEN_ENV, pasted)).unwrap();
    let bad = rl(dir.path(), &["--config", "bad.toml", "config", "check"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .starts_with("error [CONFIG_INVALID]: bad.toml:5:13: this value looks like a token"),
        "{}",
        bad.stderr
    );
    assert!(!bad.stderr.contains(pasted));
    std::fs::write(
        dir.path().join("bad.toml"),
        text.replace("rule =", "rules ="),
    )
    .unwrap();
    let unknown = rl(dir.path(), &["--config", "bad.toml", "config", "check"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains("bad.toml:13:1: unknown field `rules`"),
        "{}",
        unknown.stderr
    );
    // Commands that run pipelines refuse an invalid file too.
    let trigger = rl(dir.path(), &["--config", "bad.toml", "runs", "trigger"]);
    assert_eq!(trigger.code, 2);
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
    // Owner-only, as runledger creates its files (doctor warns about `file_mode`).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
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

    let (mut child, first, health, _out) = serve_http_health(dir.path());
    assert!(
        first.contains("open: no RUNLEDGER_API_TOKEN set"),
        "{first}"
    );
    assert_eq!(health["pipelines"], json!([]), "no config: no pipeline");
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

#[test]
fn serve_listens_on_the_configs_address_unless_the_flag_names_another() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), NOWHERE, "[http]\nlisten = \"0.0.0.0:0\"\n");
    // The config's public address, without a token: refused, so the config was read.
    let refused = finish(
        cmd(dir.path())
            .args(["--db", "runledger.db", "serve"])
            .env_remove("RUNLEDGER_API_TOKEN")
            .env_remove("RUNLEDGER_API_READ_TOKEN")
            .output()
            .unwrap(),
        dir.path(),
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("RUNLEDGER_API_TOKEN"),
        "{}",
        refused.stderr
    );
    // The flag wins.
    let (mut child, first, health, _out) = serve_http_health(dir.path());
    assert!(
        first.starts_with("http API on http://127.0.0.1:"),
        "{first}"
    );
    assert_eq!(health["pipelines"], json!(["flex-main"]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn regression_a_closed_stdout_made_the_cli_panic() {
    // `runledger flex check F | head -1` and `runledger jobs list | head -1`: the reader
    // goes away; the CLI must neither panic nor change its exit status.
    let (dir, db) = demo_dir();
    let db = db.to_str().unwrap();
    let statement = format!("{FIXTURES}/multi_account.xml");
    let cases: [Vec<&str>; 5] = [
        vec!["--db", db, "jobs", "list"],
        vec!["--db", db, "jobs", "list", "--json"],
        vec!["--db", db, "runs", "list"],
        vec!["--db", db, "doctor"],
        vec!["flex", "check", &statement],
    ];
    for args in cases {
        let piped = cmd(dir.path()).args(&args).output().unwrap();
        assert!(!piped.stdout.is_empty(), "{args:?} prints something");
        let mut child = cmd(dir.path())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before the first write
        let closed = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&closed.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_eq!(
            closed.status.code(),
            piped.status.code(),
            "{args:?}: {stderr}"
        );
    }
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

#[cfg(unix)]
#[test]
fn ctrl_c_during_serve_ends_the_scheduled_run_in_progress_interrupted_and_frees_its_lock() {
    // Before: serve waited for the firing slot to finish (a 60 s throttle back-off, or a
    // five-minute poll) and a second Ctrl-C left its run started until the lease expired.
    let dir = tempfile::tempdir().unwrap();
    let base = script_mock(vec![
        THROTTLED.as_bytes().to_vec(),
        ACCEPTED.as_bytes().to_vec(),
        fixture_bytes("activity_ok.xml"),
    ]);
    write_config(
        dir.path(),
        &base,
        "[[schedule]]\nname = \"flex-daily\"\npipeline = \"flex-main\"\nrule = \"every 1h\"\nzone = \"UTC\"\n",
    );
    let db = dir.path().join("runledger.db");
    // hourly: with "every 1m" a minute boundary during the run made a second slot due, whose
    // run was refused RUN_ALREADY_ACTIVE behind the first (regression: the CI run of
    // 2026-11-30 07:13, in serve_fires_a_configured_flex_schedule_and_stores_the_statement)
    plant_due_schedule(&db, "flex-daily", "flex-main", "every 1h");
    let mut child = cmd(dir.path())
        .args(["--db", "runledger.db", "serve", "--poll", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The scheduled run is in its throttle back-off.
    wait_for("the scheduled run waiting", || {
        runs_of(&db).into_iter().find(|r| {
            r.status == runledger::RunStatus::Started
                && r.timeline.last().is_some_and(|e| {
                    e.detail
                        .as_ref()
                        .is_some_and(|d| d.get("waiting").is_some())
                })
        })
    });
    let asked = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(20),
        "serve stopped in {:?}, not after the 60 s back-off",
        asked.elapsed()
    );
    let runs = runs_of(&db);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, runledger::RunStatus::Failed);
    assert_eq!(runs[0].error_code.as_deref(), Some("INTERRUPTED"));
    // The lock is free: a trigger now starts a run (which the mock answers at once).
    let engine = Engine::open(&db).unwrap();
    assert!(engine
        .runs()
        .list(&runledger::run::RunFilter {
            status: Some(runledger::RunStatus::Started),
            ..Default::default()
        })
        .unwrap()
        .is_empty());
}

/// `serve --http 127.0.0.1:0` on `dir/runledger.db` with no API token: the child, its first
/// line (which names the address), its `GET /health`, and its stdout, to be kept open until
/// the child is killed so its later lines never hit a closed pipe.
fn serve_http_health(
    dir: &Path,
) -> (
    std::process::Child,
    String,
    Value,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = cmd(dir)
        .args(["--db", "runledger.db", "serve", "--http", "127.0.0.1:0"])
        .env_remove("RUNLEDGER_API_TOKEN")
        .env_remove("RUNLEDGER_API_READ_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let body = ureq::get(format!("http://{addr}/health"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    (child, first, serde_json::from_str(&body).unwrap(), out)
}

#[cfg(unix)]
#[test]
fn regression_supervise_ignored_the_configs_supervisor_section() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), NOWHERE, "[supervisor]\nstale_after = 77\n");
    let mut child = cmd(dir.path())
        .args(["--db", "runledger.db", "supervise"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.contains("stale after 77s"), "{first}");
    // The flag wins over the file.
    let mut flagged = cmd(dir.path())
        .args(["--db", "runledger.db", "supervise", "--stale-after", "5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(flagged.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    flagged.kill().unwrap();
    flagged.wait().unwrap();
    assert!(first.contains("stale after 5s"), "{first}");
}

/// `--db postgres://...` on a command PostgreSQL does not support (and on any command in
/// a build without the `postgres` feature): exit 2 naming what is supported, and no file
/// named like the URL. (The supported commands run in tests/pg/cli.rs, against a server.)
#[test]
fn a_postgres_url_is_never_opened_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://nobody@127.0.0.1:1/ledger";
    for args in [
        vec!["runs", "list"],
        vec!["schedule", "list"],
        vec!["demo"],
        vec!["backup", "out.db"],
    ] {
        let o = cmd(dir.path())
            .arg("--db")
            .arg(url)
            .args(&args)
            .output()
            .unwrap();
        let r = finish(o, dir.path());
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("[INVALID_INPUT]"), "{}", r.stderr);
        assert!(
            r.stderr
                .contains("supports: doctor, init, jobs, runs, preflight, probes, raw, flex"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("nobody@"), "the URL is not printed");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
