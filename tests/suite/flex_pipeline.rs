//! The ready-made Flex pipeline against the loopback mock: timelines of each scripted
//! scenario, the token gate, lock keys, schedules, rate limits, and the token's absence
//! from everything stored or shown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runledger::flex::{
    self, ClientConfig, FlexClient, FlexConfig, FlexError, FlexToken, FlexTransport, Pacer,
    PollSettings, RateLimits, Requested, StatementBody, StatementPeriod, TokenSource,
};
use runledger::run::Run;
use runledger::schedule::NewSchedule;
use runledger::{Clock, Engine, ManualClock, RunStatus, ScheduledRuns, Timestamp};
use serde_json::{json, Value};

use crate::common::*;
use crate::flex_mock::*;
use crate::snap_json;

/// A config for query 777 against `mock`, on `clock` (the sleeper advances it).
fn config(mock: &MockFlex, clock: &ManualClock) -> FlexConfig {
    let c = clock.clone();
    FlexConfig {
        token: TokenSource::Given(token()),
        client: ClientConfig {
            base_url: mock.base_url(),
            read_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        },
        pacer: Pacer::new(clock.clone(), move |d| c.advance(d), RateLimits::default()),
        ..FlexConfig::new("777")
    }
}

/// The run as JSON, with the mock's port replaced by `<port>`.
fn shown(run: &Run, mock: &MockFlex) -> Value {
    let text = serde_json::to_string(run)
        .unwrap()
        .replace(&mock.port().to_string(), "<port>");
    serde_json::from_str(&text).unwrap()
}

/// A compact line per run: outcome, where it stopped, and what the mock saw.
fn summary(run: &Run, mock: &MockFlex) -> Value {
    let failed_stage = run
        .meta
        .get("failedStage")
        .or_else(|| run.meta.get("blockedStage"))
        .cloned();
    json!({
        "status": run.status,
        "errorCode": run.error_code,
        "errorMessage": run.error_message.as_ref().map(|m| m.replace(&mock.port().to_string(), "<port>")),
        "stoppedAt": failed_stage,
        "ibCode": run.meta.get("ibCode"),
        "stages": run.timeline.iter().map(|e| format!("{}:{:?}", e.stage, e.status).to_lowercase()).collect::<Vec<_>>(),
        "requests": mock.seen().iter().map(|s| s.call().to_string()).collect::<Vec<_>>(),
    })
}

fn run_script(script: Vec<Reply>, tweak: impl FnOnce(&mut FlexConfig)) -> (Run, MockFlex, Engine) {
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(&clock, script);
    let mut cfg = config(&mock, &clock);
    tweak(&mut cfg);
    let run = flex::run_once(&engine, &cfg, None).unwrap();
    (run, mock, engine)
}

fn not_ready_then_ok(n: usize) -> Vec<Reply> {
    let mut script = vec![Reply::accepted()];
    script.extend(std::iter::repeat_n(Reply::not_ready(), n));
    script.push(Reply::fixture("activity_ok.xml"));
    script
}

#[test]
fn success_after_not_ready_polls_persists_the_statement_before_success() {
    let (run, mock, engine) = run_script(not_ready_then_ok(3), |_| {});
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(run.pipeline, "flex-777");
    assert_eq!(run.lock_key, "flex-777:targets");
    let records = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].source, "ib_flex");
    assert_eq!(records[0].upstream_ref.as_deref(), Some("1234567890"));
    assert!(records[0].created_at <= run.finished_at.unwrap());
    assert_eq!(
        engine.runs().raw_payload(&records[0].sha256).unwrap(),
        fixture("activity_ok.xml")
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen[1..]
        .iter()
        .all(|s| s.param("q").as_deref() == Some("1234567890")));
    snap_json!("success_after_three_not_ready", shown(&run, &mock));
}

#[test]
fn fatal_and_unknown_codes_stop_the_run_at_once() {
    let mut out = Vec::new();
    for code in [1003, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 1020, 1025] {
        let (run, mock, _) = run_script(vec![Reply::accepted(), Reply::fail(code)], |_| {});
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(mock.seen().len(), 2, "{code}: no retry");
        let mut line = summary(&run, &mock);
        line["code"] = json!(code);
        out.push(line);
    }
    // A fatal code on SendRequest stops before any poll.
    let (run, mock, _) = run_script(vec![Reply::fail(1014)], |_| {});
    let mut line = summary(&run, &mock);
    line["code"] = json!("1014 on SendRequest");
    out.push(line);
    snap_json!("fatal_codes", out);
}

#[test]
fn a_token_ib_declared_expired_is_not_used_again() {
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(
        &clock,
        vec![
            Reply::accepted(),
            Reply::fail(1012),
            Reply::accepted(),
            Reply::fixture("activity_ok.xml"),
        ],
    );
    let cfg = config(&mock, &clock);
    let first = flex::run_once(&engine, &cfg, None).unwrap();
    assert_eq!(first.error_code.as_deref(), Some("FLEX_1012"));
    clock.advance(secs(3600));
    let blocked = flex::run_once(&engine, &cfg, None).unwrap();
    assert_eq!(blocked.error_code.as_deref(), Some("FLEX_TOKEN_EXPIRED"));
    assert_eq!(mock.seen().len(), 2, "the gate spends no request");
    snap_json!("token_known_expired", shown(&blocked, &mock));
    // Still blocked the next time (the refusal itself is remembered)...
    let again = flex::run_once(&engine, &cfg, None).unwrap();
    assert_eq!(again.error_code.as_deref(), Some("FLEX_TOKEN_EXPIRED"));
    // ...until a new token is set.
    let renewed = FlexConfig {
        token: TokenSource::Given(FlexToken::new("111122223333444455556666").unwrap()),
        ..cfg
    };
    let ok = flex::run_once(&engine, &renewed, None).unwrap();
    assert_eq!(ok.status, RunStatus::Success, "{ok:?}");
}

#[test]
fn token_from_the_environment() {
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(&clock, not_ready_then_ok(0));
    let missing = FlexConfig {
        token: TokenSource::Env("RUNLEDGER_TEST_FLEX_TOKEN_UNSET".into()),
        ..config(&mock, &clock)
    };
    let run = flex::run_once(&engine, &missing, None).unwrap();
    assert_eq!(run.error_code.as_deref(), Some("FLEX_TOKEN_MISSING"));
    assert_eq!(run.meta["blockedStage"], "token");
    // SAFETY of set_var: the variable name is used by this test only.
    std::env::set_var("RUNLEDGER_TEST_FLEX_TOKEN_SET", TOKEN);
    let from_env = FlexConfig {
        token: TokenSource::Env("RUNLEDGER_TEST_FLEX_TOKEN_SET".into()),
        ..missing
    };
    let run = flex::run_once(&engine, &from_env, None).unwrap();
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(mock.seen()[0].param("t").as_deref(), Some(TOKEN));
    assert_eq!(
        run.timeline[0].detail.as_ref().unwrap()["tokenSource"],
        "env RUNLEDGER_TEST_FLEX_TOKEN_SET"
    );
}

#[test]
fn throttling_backs_off_a_minute_then_succeeds() {
    let (run, mock, _) = run_script(
        vec![
            Reply::accepted(),
            Reply::fixture("envelope_throttled_1018.xml"),
            Reply::fixture("activity_ok.xml"),
        ],
        |_| {},
    );
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    let seen = mock.seen();
    assert!(seen[2].at.millis_since(seen[1].at) >= 60_000);
    snap_json!("throttled_then_success", shown(&run, &mock));
}

#[test]
fn transient_then_success() {
    let (run, mock, _) = run_script(
        vec![
            Reply::fail(1009),
            Reply::accepted(),
            Reply::fail(1021),
            Reply::fixture("activity_ok.xml"),
        ],
        |_| {},
    );
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    snap_json!("transient_then_success", shown(&run, &mock));
}

#[test]
fn http_faults_fail_the_run_with_their_code() {
    let statement = fixture("activity_ok.xml");
    let cases: Vec<(&str, Vec<Reply>)> = vec![
        (
            "html_404",
            vec![
                Reply::accepted(),
                Reply::Body {
                    status: 404,
                    content_type: "text/html",
                    body: fixture("html_404.html"),
                },
            ],
        ),
        (
            "csv_body",
            vec![
                Reply::accepted(),
                Reply::Body {
                    status: 200,
                    content_type: "text/csv",
                    body: fixture("statement.csv"),
                },
            ],
        ),
        (
            "body_cut_off",
            vec![
                Reply::accepted(),
                Reply::Cut {
                    announced: statement.len(),
                    body: statement[..700].to_vec(),
                },
            ],
        ),
        (
            "truncated_xml",
            vec![Reply::accepted(), Reply::fixture("truncated.xml")],
        ),
        (
            "count_mismatch",
            vec![Reply::accepted(), Reply::fixture("count_mismatch.xml")],
        ),
        (
            "slow_past_timeout",
            vec![
                Reply::accepted(),
                Reply::Slow {
                    delay: Duration::from_millis(1500),
                    then: Box::new(Reply::fixture("activity_ok.xml")),
                },
            ],
        ),
        ("connection_dropped", vec![Reply::Drop]),
        (
            "oversized_body",
            vec![Reply::accepted(), Reply::fixture("multi_account.xml")],
        ),
        (
            "poll_budget_exhausted",
            std::iter::once(Reply::accepted())
                .chain(std::iter::repeat_n(Reply::not_ready(), 20))
                .collect(),
        ),
    ];
    let mut out = Vec::new();
    for (name, script) in cases {
        let (run, mock, engine) = run_script(script, |c| {
            c.poll.transient_retries = 0;
            c.client.max_body_bytes = 2000;
        });
        assert_eq!(run.status, RunStatus::Failed, "{name}");
        // A statement that came whole but failed validation is kept, marked rejected
        // (issue 14); nothing else leaves a record.
        let records = engine.runs().raw_records(run.id).unwrap();
        if ["truncated_xml", "count_mismatch"].contains(&name) {
            assert_eq!(records.len(), 1, "{name}");
            let rejected = records[0].rejected.as_ref().expect("marked rejected");
            assert_eq!(
                Some(rejected.code.as_str()),
                run.error_code.as_deref(),
                "{name}"
            );
        } else {
            assert!(records.is_empty(), "{name}");
        }
        let mut line = summary(&run, &mock);
        line["case"] = json!(name);
        out.push(line);
    }
    // Nothing listens at all.
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(&clock, vec![]);
    let port = closed_port();
    let mut cfg = config(&mock, &clock);
    cfg.client.base_url = format!("http://127.0.0.1:{port}/FlexWebService");
    let run = flex::run_once(&engine, &cfg, None).unwrap();
    let mut line = summary(&run, &mock);
    line["case"] = json!("connection_refused");
    line["errorMessage"] = json!(run
        .error_message
        .unwrap()
        .replace(&port.to_string(), "<port>"));
    out.push(line);
    snap_json!("http_fault_runs", out);
}

#[test]
fn a_missing_required_section_fails_the_run_naming_it_per_account() {
    let (run, mock, engine) = run_script(
        vec![Reply::accepted(), Reply::fixture("multi_account.xml")],
        |_| {},
    );
    assert_eq!(run.error_code.as_deref(), Some("MISSING_REQUIRED_SECTION"));
    assert_eq!(
        run.error_message.as_deref(),
        Some("missing required sections: U9000002: OpenPositions")
    );
    assert_eq!(run.meta["failedStage"], "section_preflight");
    // The statement is kept, marked rejected with the run's code (issue 14).
    let records = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(records.len(), 1);
    let rejected = records[0].rejected.as_ref().expect("marked rejected");
    assert_eq!(rejected.code, "MISSING_REQUIRED_SECTION");
    assert_eq!(rejected.reason, run.error_message.clone().unwrap());
    assert_eq!(run.meta["rejectedRawRecordId"], records[0].id);
    snap_json!("missing_required_section", shown(&run, &mock));
}

#[test]
fn missing_reconcile_sections_are_warnings_and_the_run_succeeds() {
    let (run, mock, engine) = run_script(
        vec![Reply::accepted(), Reply::fixture("empty_sections.xml")],
        |_| {},
    );
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    // Operators find the warnings with plain SQL.
    let warnings: String = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select json_extract(meta_json, '$.sectionWarnings') from ingest_runs where id = ?1",
                [run.id],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert!(warnings.contains("U9000003: ChangeInNAV"), "{warnings}");
    let preflight = run
        .timeline
        .iter()
        .find(|e| e.stage == "section_preflight")
        .unwrap();
    snap_json!(
        "reconcile_warnings",
        json!({"meta": run.meta, "section_preflight": preflight.detail, "requests": mock.seen().len()})
    );
}

#[test]
fn a_custom_policy_and_the_account_check() {
    let (run, _, _) = run_script(
        vec![Reply::accepted(), Reply::fixture("multi_account.xml")],
        |c| {
            c.policy = runledger::flex::SectionPolicy {
                required: vec!["AccountInformation".into(), "CashReport".into()],
                ..runledger::flex::SectionPolicy::none()
            }
        },
    );
    assert_eq!(run.status, RunStatus::Success, "{run:?}");

    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(
        &clock,
        vec![
            Reply::accepted(),
            Reply::fixture("activity_ok.xml"),
            Reply::accepted(),
            Reply::fixture("activity_ok.xml"),
        ],
    );
    let cfg = config(&mock, &clock);
    let ok = flex::run_once(&engine, &cfg, Some("U9000001")).unwrap();
    assert_eq!(ok.status, RunStatus::Success);
    assert_eq!(ok.lock_key, "flex-777:targets:U9000001");
    let other = flex::run_once(&engine, &cfg, Some("U7777777")).unwrap();
    assert_eq!(
        other.error_code.as_deref(),
        Some("FLEX_ACCOUNT_NOT_IN_STATEMENT")
    );
}

/// A transport that, while query 777's run holds its lock, starts other runs.
struct Reentrant {
    inner: FlexClient,
    engine: Engine,
    others: Vec<(FlexConfig, Option<&'static str>)>,
    results: Arc<Mutex<Vec<String>>>,
}

impl FlexTransport for Reentrant {
    fn send_request(
        &self,
        t: &FlexToken,
        q: &str,
        p: &StatementPeriod,
    ) -> Result<Requested, FlexError> {
        for (cfg, account) in &self.others {
            let outcome = match flex::run_once(&self.engine, cfg, *account) {
                Ok(run) => format!(
                    "{} {} {}",
                    run.lock_key,
                    run.status,
                    run.error_code.unwrap_or_default()
                ),
                Err(e) => format!("{}: {}", cfg.pipeline_name(), e.code()),
            };
            self.results.lock().unwrap().push(outcome);
        }
        self.inner.send_request(t, q, p)
    }
    fn get_statement(
        &self,
        t: &FlexToken,
        r: &str,
        u: Option<&str>,
    ) -> Result<StatementBody, FlexError> {
        self.inner.get_statement(t, r, u)
    }
    fn shown_url(&self, call: &str) -> String {
        self.inner.shown_url(call)
    }
}

#[test]
fn lock_keys_separate_queries_and_accounts() {
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(&clock, vec![]);
    let other_query = FlexConfig {
        query_id: "778".into(),
        // Its own mock script: a token gate that passes, then a quick fatal code.
        transport: None,
        ..config(&mock, &clock)
    };
    let results = Arc::new(Mutex::new(Vec::new()));
    let base = config(&mock, &clock);
    let transport = Reentrant {
        inner: FlexClient::new(base.client.clone()).unwrap(),
        engine: engine.clone(),
        others: vec![
            (base.clone(), Some("U1")), // same query, same account: locked
            (base.clone(), Some("U2")), // same query, other account: runs
            (other_query, Some("U1")),  // other query, same account: runs
        ],
        results: results.clone(),
    };
    let cfg = FlexConfig {
        transport: Some(Arc::new(transport)),
        ..base
    };
    let run = flex::run_once(&engine, &cfg, Some("U1")).unwrap();
    assert_eq!(run.lock_key, "flex-777:targets:U1");
    let results = results.lock().unwrap().clone();
    assert_eq!(results[0], "flex-777: RUN_ALREADY_ACTIVE");
    // The others got their lock (and then failed on the mock's exhausted script).
    assert!(
        results[1].starts_with("flex-777:targets:U2 failed"),
        "{results:?}"
    );
    assert!(
        results[2].starts_with("flex-778:targets:U1 failed"),
        "{results:?}"
    );
}

#[test]
fn scheduled_flex_runs() {
    let (engine, clock) = mem_engine();
    clock.set(Timestamp::parse("2026-11-22T11:00:00.000Z").unwrap());
    let mock = MockFlex::start(&clock, not_ready_then_ok(1));
    let p = flex::build_pipeline(config(&mock, &clock)).unwrap();
    engine
        .schedules()
        .create(&NewSchedule::new(
            "flex-daily",
            "flex-777",
            "targets",
            "daily 19:30",
            "Asia/Shanghai",
        ))
        .unwrap();
    let fire = ScheduledRuns::new(engine.clone()).register(p);
    clock.set(Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap());
    engine.schedules().tick(clock.now(), &fire).unwrap();
    let runs = engine.runs().list(&Default::default()).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger.as_str(), "schedule");
    assert_eq!(runs[0].status, RunStatus::Success, "{:?}", runs[0]);
    assert_eq!(
        engine.schedules().slots("flex-daily").unwrap()[0].run_ids,
        [runs[0].id]
    );
}

#[test]
fn a_long_not_ready_run_stays_within_ib_rate_limits() {
    let (run, mock, _) = run_script(not_ready_then_ok(30), |c| {
        c.poll = PollSettings {
            first_poll_delay: Duration::ZERO,
            poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_millis(200),
            total_budget: Duration::from_secs(3600),
            ..PollSettings::default()
        };
    });
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    let seen = mock.seen();
    assert_eq!(seen.len(), 32);
    for w in seen.windows(2) {
        assert!(w[1].at.millis_since(w[0].at) >= 1000, "1 request/s");
    }
    for w in seen.windows(11) {
        assert!(w[10].at.millis_since(w[0].at) >= 60_000, "10 requests/min");
    }
}

#[test]
fn the_token_reaches_no_database_byte_timeline_error_or_debug_print() {
    let (engine, clock, dir) = file_engine();
    let echo = format!(
        "<FlexStatementResponse timestamp='x'><Status>Fail</Status><ErrorCode>1015</ErrorCode><ErrorMessage>Token {TOKEN} is invalid.</ErrorMessage></FlexStatementResponse>"
    )
    .into_bytes();
    let mut script = not_ready_then_ok(2);
    script.extend([
        Reply::accepted(),
        Reply::fixture("envelope_throttled_1018.xml"),
        Reply::fixture("multi_account.xml"),
        Reply::accepted(),
        Reply::Body {
            status: 404,
            content_type: "text/html",
            body: fixture("html_404.html"),
        },
        Reply::accepted(),
        Reply::xml(echo),
    ]);
    let mock = MockFlex::start(&clock, script);
    let cfg = config(&mock, &clock);
    let mut shown_text = format!("{cfg:?} {:?}", flex::build_pipeline(cfg.clone()).unwrap());
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(flex::run_once(&engine, &cfg, Some("U9000001")).unwrap());
        clock.advance(secs(60));
    }
    // Blocked by the gate after 1015; and a refused trigger, as an error value.
    runs.push(flex::run_once(&engine, &cfg, Some("U9000001")).unwrap());
    let statuses: Vec<_> = runs.iter().map(|r| r.error_code.clone()).collect();
    assert_eq!(
        statuses,
        [
            None,
            // multi_account.xml lacks OpenPositions for U9000002 only; `--account
            // U9000001` restricts the section check to U9000001 (issue 14).
            None,
            Some("FLEX_HTTP_STATUS".into()),
            Some("FLEX_1015".into()),
            Some("FLEX_TOKEN_EXPIRED".into()),
        ]
    );
    assert!(runs[3]
        .error_message
        .as_deref()
        .unwrap()
        .contains("Token *** is invalid"));
    let bad_url = FlexClient::new(ClientConfig {
        base_url: format!("https://h.example/x?t={TOKEN}"),
        ..ClientConfig::default()
    })
    .unwrap_err();
    let errors: Vec<FlexError> = vec![
        bad_url,
        FlexToken::new(format!("{TOKEN}&")).unwrap_err().into(),
    ];
    for e in &errors {
        shown_text.push_str(&format!("{e} {e:?} {}", e.code()));
    }
    for r in &runs {
        shown_text.push_str(&format!("{r:?} {}", serde_json::to_string(r).unwrap()));
    }
    shown_text.push_str(&dump(&engine));
    assert!(!shown_text.contains(TOKEN), "token leaked into shown text");
    // The raw bytes of the database file and its WAL, while open and after closing.
    let db_path = dir.path().join("runledger.db");
    let files = |when: &str| {
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", db_path.display());
            if let Ok(bytes) = std::fs::read(&path) {
                assert!(
                    !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                    "token found in {path} ({when})"
                );
            }
        }
    };
    files("open");
    drop(engine);
    files("closed");
    // The test can fail: the token was really sent.
    assert!(mock
        .seen()
        .iter()
        .all(|s| s.param("t").as_deref() == Some(TOKEN)));
}

#[test]
fn bad_configs_are_refused_before_any_run() {
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(&clock, vec![]);
    let before = dump(&engine);
    let bad = [
        FlexConfig {
            query_id: "7 7".into(),
            ..config(&mock, &clock)
        },
        FlexConfig {
            period: StatementPeriod::Days { days: 400 },
            ..config(&mock, &clock)
        },
        FlexConfig {
            poll: PollSettings {
                poll_interval: Duration::ZERO,
                ..PollSettings::default()
            },
            ..config(&mock, &clock)
        },
    ];
    for cfg in bad {
        assert_eq!(
            flex::run_once(&engine, &cfg, None).unwrap_err().code(),
            "INVALID_INPUT"
        );
    }
    assert_eq!(dump(&engine), before);
    assert!(mock.seen().is_empty());
}

#[test]
fn stages_merge_meta_but_never_the_orchestrators_keys() {
    use runledger::run::{Pipeline, StageError, StageOutput};
    let (engine, _) = mem_engine();
    let p = Pipeline::builder("meta")
        .stage("note", |ctx| {
            for bad in [json!({"errorCode": "X"}), json!({"scope": "x"}), json!([1])] {
                let e = ctx.merge_meta(&bad).unwrap_err();
                assert_eq!(e.code(), "INVALID_INPUT", "{bad}");
            }
            ctx.merge_meta(&json!({"warnings": ["a"], "n": 1}))
                .map_err(StageError::from)?;
            ctx.merge_meta(&json!({"n": null, "m": 2}))
                .map_err(StageError::from)?;
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let run = engine
        .runs()
        .trigger(
            &p,
            runledger::ScopeSelector::Targets,
            runledger::TriggerKind::Manual,
        )
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(run.meta["warnings"], json!(["a"]));
    assert_eq!(run.meta["m"], 2);
    assert!(!run.meta.contains_key("n"));
    assert_eq!(run.meta["scope"], "targets");
}

#[test]
fn long_waits_leave_their_reason_and_duration_in_the_timeline() {
    let (run, _mock, _) = run_script(
        vec![
            Reply::fail(1009),
            Reply::accepted(),
            Reply::fixture("envelope_throttled_1018.xml"),
            Reply::fixture("activity_ok.xml"),
        ],
        |_| {},
    );
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    let entry = |stage: &str| run.timeline.iter().find(|e| e.stage == stage).unwrap();
    // The transient retry of SendRequest, in the request stage's entry.
    let waits = &entry("request").detail.as_ref().unwrap()["waits"];
    assert_eq!(waits.as_array().unwrap().len(), 1, "{waits}");
    assert_eq!(waits[0]["reason"], "transient");
    assert_eq!(waits[0]["code"], "FLEX_1009");
    assert_eq!(waits[0]["retry"], 1);
    assert_eq!(waits[0]["plannedMs"], 10_000);
    assert_eq!(waits[0]["waitedMs"], 10_000);
    // The 60 s throttle back-off, in the poll stage's entry.
    let waits = &entry("poll").detail.as_ref().unwrap()["waits"];
    assert_eq!(waits.as_array().unwrap().len(), 1, "{waits}");
    assert_eq!(waits[0]["reason"], "throttled");
    assert_eq!(waits[0]["code"], "FLEX_1018");
    assert_eq!(waits[0]["plannedMs"], 60_000);
    assert_eq!(waits[0]["waitedMs"], 60_000);
    assert!(waits[0]["startedAt"].is_string());
}

#[test]
fn a_wait_in_progress_shows_in_the_open_timeline_entry_and_an_interrupt_ends_the_run_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(
        &clock,
        vec![
            Reply::fixture("envelope_throttled_1018.xml"),
            Reply::accepted(),
            Reply::fixture("activity_ok.xml"),
        ],
    );
    let mut cfg = config(&mock, &clock);
    let interrupt = Arc::new(AtomicBool::new(false));
    let seen_open: Arc<Mutex<Option<runledger::run::TimelineEntry>>> = Arc::default();
    let announced: Arc<Mutex<Vec<flex::Wait>>> = Arc::default();
    let (c, flag, probe, db, ann) = (
        clock.clone(),
        interrupt.clone(),
        seen_open.clone(),
        engine.clone(),
        announced.clone(),
    );
    // The sleeper plays the operator: 20 s into the back-off it reads the run's open
    // entry, then presses Ctrl-C.
    let slept = Arc::new(Mutex::new(Duration::ZERO));
    let fired = Arc::new(AtomicBool::new(false));
    cfg.pacer = Pacer::new(
        clock.clone(),
        move |d| {
            c.advance(d);
            let mut total = slept.lock().unwrap();
            *total += d;
            if *total >= secs(20) && !fired.swap(true, Ordering::SeqCst) {
                let run = db.runs().list(&Default::default()).unwrap().remove(0);
                *probe.lock().unwrap() = run.timeline.last().cloned();
                flag.store(true, Ordering::SeqCst);
            }
        },
        RateLimits::default(),
    )
    .with_interrupt(interrupt.clone())
    .observe_waits(move |w| ann.lock().unwrap().push(w.clone()));
    let run = flex::run_once(&engine, &cfg, None).unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("INTERRUPTED"));
    assert!(run.duration_ms.unwrap() < 21_000, "{:?}", run.duration_ms);
    let open = seen_open
        .lock()
        .unwrap()
        .clone()
        .expect("seen during the wait");
    assert_eq!(open.stage, "request");
    assert_eq!(
        open.message.as_deref(),
        Some("waiting 60s: throttled by IB (1018): backing off")
    );
    assert_eq!(open.detail.unwrap()["waiting"]["reason"], "throttled");
    assert_eq!(
        announced.lock().unwrap()[0].reason,
        flex::WaitReason::Throttled
    );
    let failed = run.timeline.last().unwrap();
    assert_eq!(failed.error_code.as_deref(), Some("INTERRUPTED"));
    assert_eq!(
        failed.detail.as_ref().unwrap()["waits"][0]["waitedMs"],
        20_000
    );
    // The lock is free and the token gone with the run's state: a retry runs at once.
    interrupt.store(false, Ordering::SeqCst);
    let retry = flex::run_once(&engine, &cfg, None).unwrap();
    assert_eq!(retry.status, RunStatus::Success, "{retry:?}");
}

/// Runs `statement` once for `account` with `tweak`ed settings.
fn run_statement(
    statement: &str,
    account: Option<&str>,
    tweak: impl FnOnce(&mut FlexConfig),
) -> (Run, Engine) {
    let (engine, clock) = mem_engine();
    let mock = MockFlex::start(&clock, vec![Reply::accepted(), Reply::fixture(statement)]);
    let mut cfg = config(&mock, &clock);
    tweak(&mut cfg);
    let run = flex::run_once(&engine, &cfg, account).unwrap();
    (run, engine)
}

#[test]
fn the_account_restricts_the_section_check_to_that_account() {
    // multi_account.xml: U9000002 lacks OpenPositions, U9000001 has every section.
    let (all, _) = run_statement("multi_account.xml", None, |_| {});
    assert_eq!(all.error_code.as_deref(), Some("MISSING_REQUIRED_SECTION"));
    let (u1, _) = run_statement("multi_account.xml", Some("U9000001"), |_| {});
    assert_eq!(u1.status, RunStatus::Success, "{u1:?}");
    let (u2, engine) = run_statement("multi_account.xml", Some("U9000002"), |_| {});
    assert_eq!(
        u2.error_message.as_deref(),
        Some("missing required sections: U9000002: OpenPositions")
    );
    assert!(engine.runs().raw_records(u2.id).unwrap()[0]
        .rejected
        .is_some());
    let (absent, engine) = run_statement("multi_account.xml", Some("U7"), |_| {});
    assert_eq!(
        absent.error_code.as_deref(),
        Some("FLEX_ACCOUNT_NOT_IN_STATEMENT")
    );
    assert_eq!(
        engine.runs().raw_records(absent.id).unwrap()[0]
            .rejected
            .as_ref()
            .unwrap()
            .code,
        "FLEX_ACCOUNT_NOT_IN_STATEMENT"
    );
}

#[test]
fn the_returned_period_is_compared_with_the_requested_one() {
    // activity_ok.xml covers 20261120..20261120.
    let (same, _) = run_statement("activity_ok.xml", None, |c| {
        c.period = StatementPeriod::range("20261120", "20261120").unwrap()
    });
    assert_eq!(same.status, RunStatus::Success, "{same:?}");
    let (other, engine) = run_statement("activity_ok.xml", None, |c| {
        c.period = StatementPeriod::range("20261101", "20261120").unwrap()
    });
    assert_eq!(other.error_code.as_deref(), Some("FLEX_PERIOD_MISMATCH"));
    assert_eq!(
        other.error_message.as_deref(),
        Some("the statement for U9000001 covers 20261120..20261120, but 20261101..20261120 was requested")
    );
    let records = engine.runs().raw_records(other.id).unwrap();
    assert_eq!(
        records[0].rejected.as_ref().unwrap().code,
        "FLEX_PERIOD_MISMATCH"
    );
    // The query's own dates are not compared.
    let (own, _) = run_statement("activity_ok.xml", None, |_| {});
    assert_eq!(own.status, RunStatus::Success);
}

#[test]
fn the_period_check_reads_both_iso_and_compact_dates_and_notes_other_formats() {
    let xml = |from: &str, to: &str| {
        format!(
            "<FlexQueryResponse type=\"AF\"><FlexStatements count=\"1\"><FlexStatement accountId=\"U1\" fromDate=\"{from}\" toDate=\"{to}\"/></FlexStatements></FlexQueryResponse>"
        )
    };
    let want = StatementPeriod::range("20261101", "20261130").unwrap();
    let report = |from, to| flex::scan_bytes(xml(from, to).as_bytes()).unwrap();
    assert!(
        flex::check_period(&report("20261101", "20261130"), &want, None)
            .unwrap()
            .is_empty()
    );
    assert!(
        flex::check_period(&report("2026-11-01", "2026-11-30"), &want, None)
            .unwrap()
            .is_empty()
    );
    let e = flex::check_period(&report("2026-11-02", "2026-11-30"), &want, None).unwrap_err();
    assert_eq!(e.code(), "FLEX_PERIOD_MISMATCH");
    assert_eq!(
        flex::check_period(&report("11/01/2026", "11/30/2026"), &want, None).unwrap(),
        ["U1"]
    );
    // Another account's statement is not looked at.
    assert!(
        flex::check_period(&report("20200101", "20200101"), &want, Some("U2"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn section_names_are_trimmed_empty_ones_refused_and_unknown_ones_flagged() {
    use runledger::flex::{PolicyPreset, SectionPolicy};
    let p = SectionPolicy::from_parts(
        Some(PolicyPreset::None),
        Some(&[" Trades ", "Trade", "Trades"][..]),
        None,
    )
    .unwrap();
    assert_eq!(p.required, ["Trades", "Trade"]);
    assert!(p.reconcile.is_empty());
    assert_eq!(p.unknown_sections(), ["Trade"]);
    let e = SectionPolicy::from_parts(None, Some(&["Trades", " "][..]), None).unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT");
    assert!(e.to_string().contains("section name 2 is empty"), "{e}");
    assert_eq!(
        SectionPolicy::from_parts::<&str>(None, None, None).unwrap(),
        SectionPolicy::activity()
    );
    assert_eq!(
        SectionPolicy::from_parts(None, None, Some(&["ChangeInNAV"][..]))
            .unwrap()
            .required,
        Vec::<String>::new()
    );
    assert!("strict".parse::<PolicyPreset>().is_err());
    // Every name the activity preset uses is one of IB's.
    assert!(SectionPolicy::activity().unknown_sections().is_empty());
}
