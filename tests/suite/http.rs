//! The HTTP API and event stream over real loopback HTTP (feature `http`).

use std::time::Duration;

use runledger::http::{route_table, HttpOptions, Server, Token};
use runledger::{Engine, SystemClock};
use serde_json::{json, Value};

use crate::common::{dump, file_engine, is_child, spawn_child};
use crate::http_client::{agent, claim, code, create_job, oversized_post, read, Api, Sse};

// ---- endpoints and error mapping ----

#[test]
fn jobs_and_workers_over_http_with_every_error_mapping() {
    let (engine, _clock, _dir) = file_engine();
    let api = Api::start(&engine, HttpOptions::default());

    let (s, h) = api.get("/health");
    assert_eq!(
        (s, h["status"].as_str(), h["auth"].as_str()),
        (200, Some("ok"), Some("open"))
    );
    assert!(h["schema_version"].as_i64().unwrap() >= 4);
    assert!(h["scheduler_last_tick_at"].is_null(), "no tick yet: {h}");
    // A tick of this process's scheduler shows in /health.
    let fire = runledger::ScheduledRuns::new(engine.clone());
    let report = engine.schedules().tick(engine.now(), &fire).unwrap();
    let (_, h) = api.get("/health");
    assert_eq!(
        h["scheduler_last_tick_at"].as_str(),
        Some(report.now.to_string().as_str()),
        "{h}"
    );

    let id = create_job(&api, "alice");
    let (s, job) = api.get(&format!("/jobs/{id}"));
    assert_eq!(
        (s, job["state"].as_str(), job["user_id"].as_str()),
        (200, Some("created"), Some("alice"))
    );

    // Bad input: typed errors, and the database is unchanged.
    let before = dump(&engine);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/jobs", b"{not json".to_vec(), 400, "INVALID_INPUT"),
        (
            "/jobs",
            br#"{"user_id": 5, "kind": "x"}"#.to_vec(),
            400,
            "INVALID_INPUT",
        ),
        (
            "/jobs",
            br#"{"user_id": "a", "kind": "x", "evil": 1}"#.to_vec(),
            400,
            "INVALID_INPUT",
        ),
        (
            "/jobs",
            br#"{"user_id": "", "kind": "research"}"#.to_vec(),
            400,
            "INVALID_INPUT",
        ),
        ("/jobs/999/pause", b"{}".to_vec(), 404, "NOT_FOUND"),
        ("/jobs/abc/pause", b"{}".to_vec(), 400, "INVALID_INPUT"),
        ("/jobs/1/resume", b"".to_vec(), 409, "ILLEGAL_TRANSITION"),
        (
            "/jobs/1/progress",
            br#"{"attempt": 1, "progress": 300}"#.to_vec(),
            400,
            "INVALID_INPUT",
        ),
        (
            "/jobs/1/heartbeat",
            br#"{"attempt": 1}"#.to_vec(),
            409,
            "STALE_ATTEMPT",
        ),
        (
            "/jobs/1/heartbeat",
            br#"{"attempt": 0}"#.to_vec(),
            409,
            "JOB_NOT_RUNNING",
        ),
        (
            "/workers/claim",
            br#"{"worker": "w", "max": 0}"#.to_vec(),
            400,
            "INVALID_INPUT",
        ),
        ("/nope", b"{}".to_vec(), 404, "NOT_FOUND"),
    ];
    for (path, body, status, want) in cases {
        let (s, v) = api.post_raw(path, &body);
        assert_eq!((s, code(&v)), (status, want), "{path}: {v}");
        assert!(v["message"].is_string(), "{v}");
    }
    // A body over the limit is refused from its Content-Length, before it is read (a
    // client still sending gets the 413 and a closed connection).
    let (s, v) = oversized_post(&api, "/jobs", 2 << 20);
    assert_eq!((s, code(&v)), (413, "TOO_LARGE"));
    assert_eq!(
        dump(&engine),
        before,
        "refused requests changed the database"
    );
    let (s, v) = api.get("/jobs/999");
    assert_eq!(
        (s, code(&v), v["entity"].as_str()),
        (404, "NOT_FOUND", Some("job"))
    );
    let (s, v) = api.get("/jobs?state=sleeping");
    assert_eq!((s, code(&v)), (400, "INVALID_INPUT"));
    let (s, v) = api.get("/jobs?bogus=1");
    assert_eq!((s, code(&v)), (400, "INVALID_INPUT"));
    let (s, v) = api.get("/readiness");
    assert_eq!((s, code(&v)), (400, "INVALID_INPUT"));

    // A worker in any language: claim, heartbeat, progress, checkpoint, complete.
    let (jid, attempt) = claim(&api, "py-worker");
    assert_eq!(jid, id);
    for (path, body) in [
        ("heartbeat", json!({"attempt": attempt})),
        (
            "progress",
            json!({"attempt": attempt, "progress": 40, "step": "fetch"}),
        ),
        (
            "checkpoint",
            json!({"attempt": attempt, "checkpoint": {"page": 4}}),
        ),
    ] {
        let (s, v) = api.post(&format!("/jobs/{id}/{path}"), body);
        assert_eq!((s, &v), (200, &json!({"ok": true})), "{path}");
    }
    let (s, v) = api.post(
        &format!("/jobs/{id}/progress"),
        json!({"attempt": attempt + 1, "progress": 50}),
    );
    assert_eq!(
        (s, code(&v), v["current_attempt"].as_i64()),
        (409, "STALE_ATTEMPT", Some(attempt))
    );
    let (s, rec) = api.get(&format!("/jobs/{id}/recovery"));
    assert_eq!(s, 200);
    assert_eq!(rec["checkpoint"]["keys"], json!(["page"]));
    assert_eq!(rec["validation"]["valid"], json!(true));
    let (s, done) = api.post(
        &format!("/jobs/{id}/complete"),
        json!({"attempt": attempt, "result": {"rows": 3}}),
    );
    assert_eq!(
        (s, done["state"].as_str(), &done["result"]),
        (200, Some("completed"), &json!({"rows": 3}))
    );
    let (s, v) = api.post(&format!("/jobs/{id}/complete"), json!({"attempt": attempt}));
    assert_eq!((s, code(&v)), (409, "JOB_NOT_RUNNING"));

    // Events after a seq, and the pruned case.
    let (s, ev) = api.get(&format!("/jobs/{id}/events?after=2"));
    assert_eq!(s, 200);
    assert_eq!(
        crate::http_client::event_kinds(&ev),
        ["progress", "checkpoint", "completed"]
    );

    // Operator actions, recorded with their actor.
    let other = create_job(&api, "bob");
    let (_, a2) = claim(&api, "w2");
    let (s, p) = api.post(&format!("/jobs/{other}/pause"), json!({"actor": "ops"}));
    assert_eq!((s, p["state"].as_str()), (200, Some("paused")));
    let (s, v) = api.post(&format!("/jobs/{other}/heartbeat"), json!({"attempt": a2}));
    assert_eq!((s, code(&v)), (409, "JOB_NOT_RUNNING"));
    let (s, r) = api.post_raw(&format!("/jobs/{other}/resume"), b"");
    assert_eq!((s, r["state"].as_str()), (200, Some("created")));
    let (s, c) = api.post(
        &format!("/jobs/{other}/cancel"),
        json!({"reason": "not needed"}),
    );
    assert_eq!((s, c["state"].as_str()), (200, Some("cancelled")));
    assert_eq!(c["cancel_reason"], json!("not needed"), "stored on the job");
    let (s, g) = api.get(&format!("/jobs/{other}"));
    assert_eq!((s, &g["cancel_reason"]), (200, &json!("not needed")));
    let (s, r) = api.post(
        &format!("/jobs/{other}/restart"),
        json!({"input": {"q": 2}}),
    );
    assert_eq!(
        (s, r["state"].as_str(), &r["input"]),
        (200, Some("created"), &json!({"q": 2}))
    );
    assert_eq!(r["cancel_reason"], json!(null), "cleared by the restart");
    let actors: Vec<String> = engine
        .with_connection(|c| {
            let mut st = c.prepare(
                "select actor from audit_log where entity = 'job' and entity_id = ?1 order by id",
            )?;
            let rows = st.query_map([other.to_string()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .unwrap();
    assert!(
        actors.contains(&"ops".to_string()) && actors.contains(&"api".to_string()),
        "{actors:?}"
    );

    // Listing with cursor pagination, stats.
    for _ in 0..3 {
        create_job(&api, "carol");
    }
    let (s, page1) = api.get("/jobs?user_id=carol&limit=2");
    assert_eq!(s, 200);
    let next = page1["next_cursor"].as_i64().unwrap();
    let (_, page2) = api.get(&format!("/jobs?user_id=carol&limit=2&cursor={next}"));
    let ids = |v: &Value| {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let mut all = ids(&page1);
    all.extend(ids(&page2));
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "{all:?}");
    assert_eq!(page2["next_cursor"], Value::Null);
    let (s, st) = api.get("/stats");
    assert_eq!((s, st["total"].as_u64()), (200, Some(5)));
    let (_, st) = api.get("/users/carol/stats");
    assert_eq!(st["by_state"]["created"].as_u64(), Some(3));
}

#[test]
fn unknown_method_and_route_are_json_errors() {
    let (engine, _clock, _dir) = file_engine();
    let api = Api::start(&engine, HttpOptions::default());
    let res = api
        .agent
        .delete(format!("{}/jobs", api.base))
        .call()
        .unwrap();
    let (s, v) = read(res);
    assert_eq!((s, code(&v)), (405, "METHOD_NOT_ALLOWED"));
    let (s, v) = api.get("/does/not/exist");
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
}

// ---- runs ----

#[test]
fn concurrent_triggers_on_one_lock_give_one_202_and_recorded_409s() {
    let (engine, _clock, _dir) = file_engine();
    crate::http_client::concurrent_triggers_on_one_lock(&engine);
}

#[test]
fn preflight_probes_readiness_and_schedules() {
    let (engine, _clock, _dir) = file_engine();
    crate::http_client::preflight_probes_readiness_and_schedules(&engine);
}

// ---- auth ----

#[test]
fn tokens_guard_writes_and_never_echo() {
    let (engine, _clock, _dir) = file_engine();
    let opts = HttpOptions {
        auth: runledger::http::Auth {
            write: Token::new("w-secret-123"),
            read: Token::new("r-secret-456"),
        },
        ..Default::default()
    };
    assert!(!format!("{opts:?}").contains("secret"));
    let base = Api::start(&engine, opts);
    let body = json!({"user_id": "a", "kind": "research"});
    let (s, v) = base.post("/jobs", body.clone());
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"));
    let (s, v) = base.get("/jobs");
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"));
    let (s, _) = base.get("/health");
    assert_eq!(s, 200, "health stays public");
    let reader = Api {
        server: None,
        agent: agent(),
        base: base.base.clone(),
        token: None,
    }
    .with_token("r-secret-456");
    let (s, v) = reader.post("/jobs", body.clone());
    assert_eq!((s, code(&v)), (403, "FORBIDDEN"));
    assert!(!v.to_string().contains("secret"));
    let (s, _) = reader.get("/jobs");
    assert_eq!(s, 200);
    let wrong = Api {
        server: None,
        agent: agent(),
        base: base.base.clone(),
        token: None,
    }
    .with_token("w-secret-12");
    let (s, v) = wrong.post("/jobs", body.clone());
    assert_eq!((s, code(&v)), (401, "UNAUTHORIZED"));
    assert!(!v.to_string().contains("secret"));
    let writer = Api {
        server: None,
        agent: agent(),
        base: base.base.clone(),
        token: None,
    }
    .with_token("w-secret-123");
    let (s, _) = writer.post("/jobs", body);
    assert_eq!(s, 201);

    let err = Server::start(engine.clone(), HttpOptions::default(), "0.0.0.0:0").unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    assert!(err.to_string().contains("RUNLEDGER_API_TOKEN"), "{err}");
}

// ---- the event stream ----

#[test]
fn sse_resumes_after_a_cut_with_no_gap_and_no_duplicate() {
    let (engine, _clock, _dir) = file_engine();
    crate::http_client::sse_resumes_after_a_cut(&engine);
}

#[test]
fn sse_position_older_than_the_backlog_gets_resync() {
    let (engine, _clock, _dir) = file_engine();
    crate::http_client::sse_position_older_than_the_backlog_gets_resync(&engine);
}

/// Another process commits 20 events; they must reach an open stream within 100 ms of their
/// commit (the child prints the instant each commit returned). On the shared 2-core
/// machines the tests run on (load averages of 20-30 while other builds run) the test's own
/// threads stall for tens of milliseconds, so the test holds the median to the bound and
/// every event to one second; without the cross-process watcher none would arrive at all,
/// and a per-second poll would put the median near 500 ms. The tail is measured by
/// `benches/http.rs` (BENCHMARKS.md).
#[test]
fn events_from_another_process_reach_the_stream_within_100ms() {
    let (engine, _clock, dir) = file_engine();
    let api = Api::start(&engine, HttpOptions::default());
    let mut sse = Sse::open(&api.base, "?user=child", None);
    let db = dir.path().join("runledger.db");
    let child = spawn_child(
        "http::child_writes_events",
        &[("RUNLEDGER_TEST_DB", db.display().to_string())],
    );
    let mut received = std::collections::HashMap::new();
    for _ in 0..20 {
        let f = sse.next();
        let now = runledger::Clock::now(&SystemClock).unix_ms();
        received.insert(f.data["job_id"].as_i64().unwrap(), now);
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut delays: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest's own "test ... " may precede the first line.
        .filter_map(|l| l.split_once("COMMITTED ").map(|(_, rest)| rest))
        .map(|l| {
            let (job, at) = l.split_once(' ').unwrap();
            received[&job.parse::<i64>().unwrap()] - at.parse::<i64>().unwrap()
        })
        .collect();
    delays.sort_unstable();
    assert_eq!(delays.len(), 20);
    assert!(
        delays[10] < 100 && delays[19] < 1000,
        "commit -> stream delays (ms): {delays:?}"
    );
}

#[test]
#[ignore = "run by events_from_another_process_reach_the_stream_within_100ms"]
fn child_writes_events() {
    if !is_child() {
        return;
    }
    let engine = Engine::open(std::env::var("RUNLEDGER_TEST_DB").unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..20 {
        let job = engine
            .jobs()
            .create(&runledger::NewJob::new(
                "child",
                "research",
                json!({"i": i}),
            ))
            .unwrap();
        let at = runledger::Clock::now(&SystemClock).unix_ms();
        println!("COMMITTED {} {at}", job.id);
        std::thread::sleep(Duration::from_millis(30));
    }
}

// ---- the document ----

#[test]
fn openapi_documents_exactly_the_routed_paths() {
    let doc = runledger::http::document();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = route_table()
        .into_iter()
        .map(|(m, p)| (m.into(), p.into()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);

    // And each documented operation reaches a handler (not the fallback) on a live server.
    let (engine, _clock, _dir) = file_engine();
    let api = Api::start(&engine, HttpOptions::default());
    let (s, served) = api.get("/openapi.json");
    assert_eq!((s, &served), (200, &doc));
    for (m, p) in route_table() {
        if p == "/events" {
            continue;
        }
        let path = p
            .replace("{id}", "1")
            .replace("{raw_id}", "1")
            .replace("{user_id}", "u")
            .replace("{name}", "n");
        let (s, v) = if m == "get" {
            api.get(&path)
        } else {
            api.post_raw(&path, b"{}")
        };
        assert!(s != 405 && v["entity"] != "route", "{m} {p}: {s} {v}");
    }
}

#[test]
fn readme_api_reference_matches_openapi() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("### API reference")
        .expect("README has an API reference");
    let section = &readme[start..];
    let section = &section[..section[4..]
        .find("\n## ")
        .map(|i| i + 4)
        .unwrap_or(section.len())];
    let mut listed: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("| `")?;
            let (m, rest) = l.split_once(' ')?;
            let path = rest.split('`').next()?;
            Some((m.to_lowercase(), path.to_string()))
        })
        .collect();
    let mut routed: Vec<(String, String)> = route_table()
        .into_iter()
        .map(|(m, p)| (m.into(), p.into()))
        .collect();
    listed.sort();
    routed.sort();
    assert_eq!(listed, routed, "README's API reference vs openapi.json");
}

// ---- the examples ----

/// Runs `tool example BASE` against a live server; skipped with a printed reason when the
/// tool is missing, except under CI (`CI`/`RUNLEDGER_CI` set), where that is a failure.
fn run_example(tool: &str, example: &str) {
    let (engine, _clock, _dir) = file_engine();
    crate::http_client::run_example(&engine, tool, example);
}

#[test]
fn python_example_runs_a_worker_and_a_follower() {
    run_example("python3", "http_client.py");
}

#[test]
fn node_example_runs_a_worker_and_a_follower() {
    run_example("node", "http_client.mjs");
}

#[test]
fn a_client_that_falls_behind_its_buffer_gets_resync_not_unbounded_buffering() {
    let (engine, _clock, dir) = file_engine();
    // another connection: no in-process wake-up, the watcher finds the burst at its poll
    let other = Engine::open(dir.path().join("runledger.db")).unwrap();
    crate::http_client::a_client_that_falls_behind_its_buffer_gets_resync(&engine, &other);
}

#[test]
fn cors_is_off_unless_an_origin_is_configured() {
    let (engine, _clock, _dir) = file_engine();
    let closed = Api::start(&engine, HttpOptions::default());
    let res = closed
        .agent
        .get(format!("{}/stats", closed.base))
        .header("origin", "http://ui.test")
        .call()
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let open = Api::start(
        &engine,
        HttpOptions {
            cors_origins: vec!["http://ui.test".into()],
            ..Default::default()
        },
    );
    let res = open
        .agent
        .get(format!("{}/stats", open.base))
        .header("origin", "http://ui.test")
        .call()
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://ui.test"
    );
    let res = open
        .agent
        .get(format!("{}/stats", open.base))
        .header("origin", "http://evil.test")
        .call()
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let preflight = ureq::http::Request::builder()
        .method("OPTIONS")
        .uri(format!("{}/jobs", open.base))
        .header("origin", "http://ui.test")
        .body(())
        .unwrap();
    let pre = open.agent.run(preflight).unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
}
