//! The HTTP client helpers the API tests share on both backends (tests/suite/http.rs on
//! SQLite, tests/pg/http.rs on PostgreSQL, which includes this file): a server on a free
//! loopback port with a client that never turns statuses into errors, and a Server-Sent
//! Events reader.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use runledger::http::{HttpOptions, Server};
use runledger::run::{Pipeline, RawInput, StageOutput};
use runledger::{Engine, Scope};
use serde_json::{json, Value};

/// A server on a free loopback port and a client that never turns statuses into errors.
pub struct Api {
    pub server: Option<Server>,
    pub agent: ureq::Agent,
    pub base: String,
    pub token: Option<String>,
}

/// A client that opens a connection per request: a pooled keep-alive connection that the
/// server closes after an error response races the next request ("peer disconnected")
/// under load, which is the client's retry to make, not what these tests are about.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl Api {
    pub fn start(engine: &Engine, opts: HttpOptions) -> Self {
        let server = Server::start(engine.clone(), opts, "127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.addr());
        Self {
            server: Some(server),
            agent: agent(),
            base,
            token: None,
        }
    }

    pub fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }

    pub fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        read(req.call().unwrap())
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        read(req.send(body).unwrap())
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().as_bytes())
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

/// Declares a body of `len` bytes and reads the answer before sending any of it (a server
/// that closes with unread bytes resets the connection, losing its answer to the test).
pub fn oversized_post(api: &Api, path: &str, len: usize) -> (u16, Value) {
    use std::io::Write;
    let addr = api.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = BufReader::new(s).read_to_string(&mut text);
    let status = text[9..12].parse().unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

pub fn read(mut res: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

// ---- the event stream client ----

/// One SSE frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

pub struct Sse {
    lines: BufReader<Box<dyn Read + Send>>,
}

impl Sse {
    pub fn open(base: &str, query: &str, last_event_id: Option<i64>) -> Self {
        let mut req = agent().get(format!("{base}/events{query}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.call().unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let headers = res.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["x-accel-buffering"], "no");
        let reader: Box<dyn Read + Send> = Box::new(res.into_body().into_reader());
        Self {
            lines: BufReader::new(reader),
        }
    }

    /// The next frame (keep-alive comments skipped): it blocks, and a stream never ends on
    /// its own, so this is not an `Iterator`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Frame {
        self.try_next().expect("stream ended")
    }

    /// The next frame, or `None` once the stream (or its connection) ended.
    pub fn try_next(&mut self) -> Option<Frame> {
        let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
        loop {
            let mut line = String::new();
            if !matches!(self.lines.read_line(&mut line), Ok(n) if n > 0) {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return Some(Frame {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }
}

pub fn create_job(api: &Api, user: &str) -> i64 {
    let (s, job) = api.post(
        "/jobs",
        json!({"user_id": user, "kind": "research", "input": {"q": 1}}),
    );
    assert_eq!(s, 201, "{job}");
    job["id"].as_i64().unwrap()
}

pub fn claim(api: &Api, worker: &str) -> (i64, i64) {
    let (s, v) = api.post("/workers/claim", json!({"worker": worker}));
    assert_eq!(s, 200, "{v}");
    let c = &v["claims"][0];
    (
        c["job"]["id"].as_i64().unwrap(),
        c["attempt"].as_i64().unwrap(),
    )
}

// ---- scenarios both backends run

/// The stream resumes after a cut with no gap and no duplicate (`Last-Event-ID`), user and
/// all streams see the same event with the same id: a scenario over `engine`'s server, run
/// on both backends.
pub fn sse_resumes_after_a_cut(engine: &Engine) {
    let api = Api::start(engine, HttpOptions::default());
    let id = create_job(&api, "alice");
    let (_, attempt) = claim(&api, "w");
    let mut sse = Sse::open(&api.base, &format!("?job={id}&after=0"), None);
    let first: Vec<Frame> = (0..2).map(|_| sse.next()).collect();
    assert_eq!(
        first
            .iter()
            .map(|f| f.data["kind"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["created", "claimed"]
    );
    for pct in [10, 20] {
        api.post(
            &format!("/jobs/{id}/progress"),
            json!({"attempt": attempt, "progress": pct}),
        );
    }
    let f = sse.next();
    assert_eq!(
        (
            f.data["seq"].as_i64(),
            f.data["payload"]["progress"].as_i64()
        ),
        (Some(3), Some(10))
    );
    let cut_at = f.id.unwrap();
    assert_eq!(f.data["cursor"].as_i64(), Some(cut_at));
    drop(sse); // the connection is cut mid-stream (seq 4 may be in flight)
    for pct in [30, 40, 50] {
        api.post(
            &format!("/jobs/{id}/progress"),
            json!({"attempt": attempt, "progress": pct}),
        );
    }
    let mut again = Sse::open(&api.base, &format!("?job={id}&after=0"), Some(cut_at));
    let seqs: Vec<i64> = (0..4)
        .map(|_| again.next().data["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6, 7], "exact continuation after Last-Event-ID");
    // And live: the next write arrives once.
    api.post(&format!("/jobs/{id}/complete"), json!({"attempt": attempt}));
    let f = again.next();
    assert_eq!(
        (f.data["seq"].as_i64(), f.data["kind"].as_str()),
        (Some(8), Some("completed"))
    );

    // A user stream and the all stream see the same event with the same id.
    let mut user = Sse::open(&api.base, "?user=bob", None);
    let mut all = Sse::open(&api.base, "", None);
    let bob = create_job(&api, "bob");
    let (u, a) = (user.next(), all.next());
    assert_eq!(
        (u.data["job_id"].as_i64(), u.data["user_id"].as_str()),
        (Some(bob), Some("bob"))
    );
    assert_eq!(u, a);
}

/// A pipeline whose one stage stores a raw payload and then waits for `release` (so its
/// run stays `started` while a test contends for the lock).
pub fn held_pipeline(release: Arc<Mutex<bool>>) -> Pipeline {
    Pipeline::builder("held")
        .scopes(&[Scope::Targets])
        .stage("fetch", move |ctx| {
            ctx.store_raw(&RawInput {
                source: "test",
                upstream_ref: Some("r1"),
                content_type: "text/csv",
                bytes: b"a,b\n1,2\n",
            })?;
            let start = Instant::now();
            while !*release.lock().unwrap() && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(StageOutput::done())
        })
        .build()
        .unwrap()
}

pub fn wait_run_status(api: &Api, id: i64, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let (_, run) = api.get(&format!("/ingestion/runs/{id}"));
        if run["status"] == want || start.elapsed() > Duration::from_secs(10) {
            return run;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Eight concurrent triggers on one lock over HTTP: one 202, seven 409 `RUN_ALREADY_ACTIVE`
/// each recorded as a failed run naming the holder; the raw payload downloads; run listing
/// with filters and cursor: a scenario run on both backends.
pub fn concurrent_triggers_on_one_lock(engine: &Engine) {
    let release = Arc::new(Mutex::new(false));
    let api = Arc::new(Api::start(
        engine,
        HttpOptions::default().pipeline(held_pipeline(release.clone())),
    ));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let answers: Vec<(u16, Value)> = (0..n)
        .map(|_| {
            let (api, barrier) = (Arc::clone(&api), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                api.post("/ingestion/run", json!({"pipeline": "held"}))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, v)| v)
        .collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 409)
        .map(|(_, v)| v)
        .collect();
    assert_eq!((accepted.len(), refused.len()), (1, n - 1), "{answers:?}");
    let run = accepted[0];
    assert_eq!(
        (run["status"].as_str(), run["lock_key"].as_str()),
        (Some("started"), Some("held:targets"))
    );
    let holder = run["id"].as_i64().unwrap();
    let mut refusal_ids = Vec::new();
    for r in &refused {
        assert_eq!(
            (code(r), r["message"].as_str()),
            ("RUN_ALREADY_ACTIVE", Some("run already active"))
        );
        assert_eq!(r["active_run_id"].as_i64(), Some(holder));
        assert!(r["lease_expires_at"].is_string(), "{r}");
        let rid = r["refusal_run_id"].as_i64().unwrap();
        let (s, rec) = api.get(&format!("/ingestion/runs/{rid}"));
        assert_eq!(
            (s, rec["status"].as_str(), rec["error_code"].as_str()),
            (200, Some("failed"), Some("RUN_ALREADY_ACTIVE"))
        );
        assert_eq!(rec["meta"]["blockedStage"], "lock");
        refusal_ids.push(rid);
    }
    refusal_ids.sort();
    refusal_ids.dedup();
    assert_eq!(refusal_ids.len(), n - 1);

    *release.lock().unwrap() = true;
    let done = wait_run_status(&api, holder, "success");
    assert_eq!(done["status"], "success", "{done}");
    let raw = &done["raw_records"][0];
    assert_eq!(raw["content_type"], "text/csv");
    let res = api
        .agent
        .get(format!(
            "{}/ingestion/runs/{holder}/raw/{}",
            api.base, raw["id"]
        ))
        .call()
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/csv");
    assert_eq!(res.into_body().read_to_string().unwrap(), "a,b\n1,2\n");
    let (s, v) = api.get(&format!("/ingestion/runs/{holder}/raw/999"));
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));

    let (s, list) = api.get("/ingestion/runs?status=failed&trigger=manual&limit=3");
    assert_eq!((s, list["runs"].as_array().unwrap().len()), (200, 3));
    let (_, rest) = api.get(&format!(
        "/ingestion/runs?status=failed&limit=100&cursor={}",
        list["next_cursor"]
    ));
    assert_eq!(rest["runs"].as_array().unwrap().len(), n - 1 - 3);
    let (_, none) = api.get("/ingestion/runs?trigger=schedule");
    assert_eq!(none["runs"], json!([]));
    let (s, v) = api.post("/ingestion/run", json!({"pipeline": "nope"}));
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
    let (s, v) = api.post(
        "/ingestion/run",
        json!({"pipeline": "held", "scope": "universe"}),
    );
    assert_eq!((s, code(&v)), (400, "INVALID_INPUT"));
}

/// Preflight, readiness, probes and schedules over HTTP on the demo provider's modules: a
/// scenario run on both backends.
pub fn preflight_probes_readiness_and_schedules(engine: &Engine) {
    crate::demo::install(engine).unwrap();
    let provider = crate::demo::ProviderOptions::default();
    let opts = HttpOptions::default().probes(
        crate::demo::probes(&["quotes".to_string()]),
        provider.preflight,
    );
    let api = Api::start(engine, opts);
    let (s, snap) = api.post("/ingestion/preflight", json!({"scope": "targets"}));
    assert_eq!((s, snap["ready"].as_bool()), (200, Some(false)), "{snap}");
    assert!(snap["probed"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "quotes"));
    let (s, r) = api.get("/readiness?scope=targets");
    assert_eq!((s, r["ready"].as_bool()), (200, Some(false)));
    let (s, p) = api.get("/probes");
    assert_eq!(
        (
            s,
            p["modules"].as_array().unwrap().len(),
            p["readiness"].as_array().unwrap().len()
        ),
        (200, 4, 2)
    );
    let (s, v) = api.post("/ingestion/preflight", json!({"scope": "everything"}));
    assert_eq!((s, code(&v)), (400, "INVALID_INPUT"));

    engine.schedules().ensure_default().unwrap();
    let (s, list) = api.get("/schedules");
    assert_eq!(s, 200);
    let sched = &list["schedules"][0];
    let name = sched["name"].as_str().unwrap().to_string();
    assert_eq!(sched["zone"], "Asia/Shanghai");
    let local = sched["next_due_local"].as_str().unwrap();
    assert!(
        local.ends_with("+08:00") && local.contains("T19:30:00"),
        "{local}"
    );
    let (s, d) = api.post_raw(&format!("/schedules/{name}/disable"), b"");
    assert_eq!((s, d["enabled"].as_bool()), (200, Some(false)));
    let (s, e) = api.post_raw(&format!("/schedules/{name}/enable"), b"");
    assert_eq!((s, e["enabled"].as_bool()), (200, Some(true)));
    let (s, v) = api.post_raw("/schedules/nope/enable", b"");
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
}

/// Runs `examples/<example>` with `tool` (python3, node) against a server over `engine`:
/// a worker through the worker endpoints and a follower through the stream; what the
/// client saw is what the database holds. Skipped without the tool (required under CI).
pub fn run_example(engine: &Engine, tool: &str, example: &str) {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let ci = std::env::var_os("CI").is_some() || std::env::var_os("RUNLEDGER_CI").is_some();
        assert!(!ci, "{tool} is required under CI to run {example}");
        eprintln!("SKIPPED: {example}: {tool} is not installed");
        return;
    }
    let api = Api::start(engine, HttpOptions::default());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/");
    let out = std::process::Command::new(tool)
        .arg(format!("{path}{example}"))
        .arg(&api.base)
        .env_remove("RUNLEDGER_API_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{example} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let job = summary["job"].as_i64().unwrap();
    // What the client saw is what the database holds.
    assert_eq!(
        engine.jobs().get(job).unwrap().state,
        runledger::JobState::Completed
    );
    let kept = engine.events().since(job, 0, 1000).unwrap();
    assert_eq!(summary["events"].as_u64(), Some(kept.len() as u64));
    let kinds: Vec<&str> = kept.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(summary["kinds"], json!(kinds));
}

/// A position older than the per-job backlog keeps gets `resync` (pruned) naming the job and
/// continues from the present; the per-job endpoint says 410 `EVENTS_PRUNED`: a scenario run
/// on both backends.
pub fn sse_position_older_than_the_backlog_gets_resync(engine: &Engine) {
    let api = Api::start(engine, HttpOptions::default());
    let claim_at = |id: i64, attempt: i64| runledger::Claim {
        job: engine.jobs().get(id).unwrap(),
        attempt,
    };
    let id = create_job(&api, "alice");
    let (_, attempt) = claim(&api, "w");
    let early = engine.events().since(id, 0, 1).unwrap()[0].cursor;
    for i in 0..250u32 {
        engine
            .jobs()
            .progress(&claim_at(id, attempt), (i % 100) as u8, None)
            .unwrap();
    }
    let head = engine.events().since(id, 251, 1).unwrap()[0].cursor;
    let mut sse = Sse::open(&api.base, &format!("?job={id}&after={early}"), None);
    let f = sse.next();
    assert_eq!(f.event, "resync");
    assert_eq!(
        (f.data["reason"].as_str(), &f.data["jobs"]),
        (Some("pruned"), &json!([id]))
    );
    assert_eq!(f.id, Some(head), "continues from the present");
    engine
        .jobs()
        .progress(&claim_at(id, attempt), 99, Some("last"))
        .unwrap();
    let f = sse.next();
    assert_eq!(
        (f.event.as_str(), f.data["seq"].as_i64()),
        ("message", Some(253))
    );
    // The per-job endpoint says the same with 410 EVENTS_PRUNED.
    let (s, v) = api.get(&format!("/jobs/{id}/events?after=1"));
    assert_eq!((s, code(&v)), (410, "EVENTS_PRUNED"));
    assert_eq!(v["oldest_kept"].as_i64(), Some(54));
}

/// A client more than its buffer behind gets `resync` (lagged), not unbounded buffering, and
/// goes on from the present; `other` is another engine on the same ledger (its commits
/// reach the server's watcher as another process's do): a scenario run on both backends.
pub fn a_client_that_falls_behind_its_buffer_gets_resync(engine: &Engine, other: &Engine) {
    let opts = HttpOptions {
        stream: runledger::http::StreamOptions {
            poll: Duration::from_millis(500),
            client_buffer: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let api = Api::start(engine, opts);
    let mut sse = Sse::open(&api.base, "", None);
    // One burst in one transaction: the watcher reads it in one go and broadcasts it at
    // once, far past a 2-event buffer.
    let burst: Vec<runledger::NewJob> = (0..300)
        .map(|i| runledger::NewJob::new("burst", "research", json!({"i": i})))
        .collect();
    other.jobs().create_many(&burst).unwrap();
    let mut last = 0;
    let mut resync = None;
    let mut seen = std::collections::HashSet::new();
    let head = engine
        .events()
        .feed(&runledger::FeedFilter::All, i64::MAX, 1, false)
        .unwrap()
        .head;
    while last < head {
        let f = sse.next();
        let id = f.id.unwrap();
        // A `resync` names the position the stream continues from: the newest event when
        // it was sent, which may be the one the client already has (then nothing was
        // skipped). Every event after it is newer.
        if f.event == "resync" {
            assert!(id >= last, "a resync never moves back: {id} after {last}");
        } else {
            assert!(id > last, "ids only grow: {id} after {last}");
        }
        last = id;
        if f.event == "resync" {
            assert_eq!(f.data["reason"], "lagged");
            resync = Some(id);
        } else {
            assert!(seen.insert(id), "duplicate {id}");
        }
    }
    assert!(
        resync.is_some(),
        "a 2-event buffer kept up with a 300-event burst"
    );
    assert!(seen.len() < 300);
    // The stream goes on from the present.
    let job = create_job(&api, "after");
    loop {
        let f = sse.next();
        if f.data["job_id"].as_i64() == Some(job) {
            break;
        }
    }
}

/// Both pools triggered with a failing universe module, the default schedule, and a
/// running job with a checkpoint (the Trust UI suites' ledger, on either backend). Returns (running job id, its attempt).
pub fn ui_ledger(engine: &Engine) -> (i64, i64) {
    crate::demo::install(engine).unwrap();
    let opts = crate::demo::ProviderOptions {
        failing_probes: vec!["fundamentals".into()],
        ..Default::default()
    };
    engine
        .runs()
        .trigger(
            &crate::demo::pipeline(&opts).unwrap(),
            runledger::ScopeSelector::Both,
            runledger::TriggerKind::Manual,
        )
        .unwrap();
    engine.schedules().ensure_default().unwrap();
    let jobs = engine.jobs();
    let job = jobs
        .create(&runledger::NewJob::new(
            "alice",
            "research",
            json!({"q": 1}),
        ))
        .unwrap();
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    jobs.progress(&c, 30, Some("fetch")).unwrap();
    jobs.checkpoint(&c, &json!({"cursor": 7, "seen": [1, 2]}))
        .unwrap();
    (job.id, c.attempt)
}

/// The kinds of a `/jobs/{id}/events` reply, in order.
pub fn event_kinds(reply: &Value) -> Vec<&str> {
    reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect()
}
