//! The Trust UI over real loopback HTTP (the browser itself is tests/browser.rs): every page
//! renders, assets are cached by hash, access rules, refused writes change nothing, HTML is
//! escaped, the sign-in cookie reads the API's event stream and nothing more, raw downloads.

use std::io::{BufRead, BufReader};

use crate::demo;
use runledger::http::{Auth, HttpOptions, Token};
use runledger::run::PreflightConfig;
use runledger::{Engine, JobState, NewJob, TriggerKind};
use serde_json::{json, Value};

use crate::common::{dump, file_engine};

const WRITE: &str = "ui-suite-write-token";
const READ: &str = "ui-suite-read-token";

struct Server {
    base: String,
    _rt: tokio::runtime::Runtime,
}

fn serve(engine: &Engine, opts: HttpOptions) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runledger::http::router(engine.clone(), opts).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, _rt: rt }
}

fn tokens() -> HttpOptions {
    HttpOptions {
        auth: Auth {
            write: Token::new(WRITE),
            read: Token::new(READ),
        },
        ..HttpOptions::default()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn reply(mut r: ureq::http::Response<ureq::Body>) -> Reply {
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Reply {
        status: r.status().as_u16(),
        headers,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn get(s: &Server, path: &str, token: Option<&str>) -> Reply {
    let mut req = agent().get(&format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    reply(req.call().unwrap())
}

fn post(s: &Server, path: &str, token: Option<&str>, ui_header: bool) -> Reply {
    let mut req = agent().post(&format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.header("cookie", &format!("runledger_ui={t}"));
    }
    if ui_header {
        req = req.header("x-runledger-ui", "1");
    }
    reply(req.send_empty().unwrap())
}

#[test]
fn every_page_renders_on_an_empty_and_a_populated_file() {
    let (engine, _clock, _dir) = file_engine();
    let s = serve(&engine, HttpOptions::default());
    let pages = [
        "/",
        "/ui/runs",
        "/ui/jobs",
        "/ui/schedules",
        "/ui/probes",
        "/ui/login",
    ];
    for path in pages {
        let r = get(&s, path, None);
        assert_eq!(r.status, 200, "{path} on an empty file: {}", r.body);
    }
    let (job, _) = crate::http_client::ui_ledger(&engine);
    for path in pages.iter().map(|p| p.to_string()).chain([
        "/ui/runs/1".to_string(),
        "/ui/runs/2".to_string(),
        format!("/ui/jobs/{job}"),
        "/ui/runs?status=failed&scope=universe".into(),
        "/ui/jobs?state=running".into(),
    ]) {
        let r = get(&s, &path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r
            .header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'"));
        if path != "/ui/login" {
            assert!(
                r.body.contains("open: no API token is configured"),
                "{path}"
            );
        }
    }
    let overview = get(&s, "/", None).body;
    assert!(overview.contains("MODULE_NOT_READY") && overview.contains("readiness"));
    let run = get(&s, "/ui/runs/2", None).body;
    assert!(
        run.contains("data-stage=\"readiness\""),
        "the timeline chart has the gate"
    );
    assert!(
        run.contains("readiness gate"),
        "the code is explained from the guide"
    );

    let missing = get(&s, "/ui/runs/999", None);
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("NOT_FOUND") && missing.body.contains("treat as gone"));
    let bad = get(&s, "/ui/runs?status=sleeping", None);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("INVALID_INPUT"));
}

#[test]
fn assets_are_cached_by_hash_and_revalidated_by_etag() {
    let (engine, _clock, _dir) = file_engine();
    let s = serve(&engine, HttpOptions::default());
    // (minijinja's HTML escaping writes `/` as `&#x2f;` in attributes.)
    let page = get(&s, "/", None).body.replace("&#x2f;", "/");
    let css = page
        .split("href=\"")
        .skip(1)
        .find_map(|p| p.split('"').next().filter(|u| u.ends_with(".css")))
        .unwrap()
        .to_string();
    assert!(css.starts_with("/ui/assets/app.") && css.len() > "/ui/assets/app.css".len());
    let hashed = get(&s, &css, None);
    assert_eq!(hashed.status, 200);
    assert_eq!(
        hashed.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        hashed.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    let etag = hashed.header("etag").unwrap().to_string();
    let plain = get(&s, "/ui/assets/app.css", None);
    assert_eq!(plain.header("cache-control"), Some("no-cache"));
    assert_eq!(plain.body, hashed.body);
    let again = reply(
        agent()
            .get(&format!("{}/ui/assets/app.css", s.base))
            .header("if-none-match", &etag)
            .call()
            .unwrap(),
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(get(&s, "/ui/assets/app.old.css", None).status, 404);
    // Nothing is fetched from elsewhere: no absolute URL in a page or an asset.
    for text in [
        &page,
        &hashed.body,
        &get(&s, "/ui/assets/app.js", None).body,
    ] {
        assert!(!text.contains("http://") && !text.contains("https://"));
    }
}

#[test]
fn write_actions_need_the_write_token_and_the_ui_header() {
    let (engine, _clock, _dir) = file_engine();
    let (job, _) = crate::http_client::ui_ledger(&engine);
    let s = serve(&engine, tokens());
    let page = format!("/ui/jobs/{job}");
    let action = format!("/ui/jobs/{job}/pause");

    // Signed out: pages send to the sign-in form, writes get 401.
    let out = get(&s, &page, None);
    assert_eq!(
        (out.status, out.header("location")),
        (303, Some("/ui/login"))
    );
    let before = dump(&engine);
    assert_eq!(post(&s, &action, None, true).json()["code"], "UNAUTHORIZED");
    // Read-only: the page has no action button, the write is refused.
    let ro = get(&s, &page, Some(READ));
    assert_eq!(ro.status, 200);
    assert!(
        !ro.body.contains("data-action="),
        "read-only page shows buttons"
    );
    assert!(ro.body.contains("read-only"));
    let refused = post(&s, &action, Some(READ), true);
    assert_eq!(
        (refused.status, refused.json()["code"].clone()),
        (403, json!("FORBIDDEN"))
    );
    // The write token without the UI's header (a cross-site form could send the cookie).
    assert_eq!(post(&s, &action, Some(WRITE), false).status, 403);
    assert_eq!(dump(&engine), before, "a refused write changed the file");
    // Neither token reaches a page.
    let rw = get(&s, &page, Some(WRITE));
    assert!(rw.body.contains("data-action=\"pause\""));
    assert!(!rw.body.contains(WRITE) && !ro.body.contains(READ));

    let ok = post(&s, &action, Some(WRITE), true);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["state"], "paused");
    assert_eq!(engine.jobs().get(job).unwrap().state, JobState::Paused);
    let actor: String = engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select actor from audit_log where entity = 'job' and entity_id = ?1 and action = 'pause'",
                [job.to_string()],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(actor, "ui");
}

#[test]
fn sign_in_sets_an_http_only_strict_cookie_and_a_wrong_token_sets_none() {
    let (engine, _clock, _dir) = file_engine();
    let s = serve(&engine, tokens());
    let form = |token: &str| {
        reply(
            agent()
                .post(&format!("{}/ui/login", s.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .send(format!("token={token}"))
                .unwrap(),
        )
    };
    let ok = form(WRITE);
    assert_eq!((ok.status, ok.header("location")), (303, Some("/")));
    let cookie = ok.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let bad = form("guess");
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    assert!(!bad.body.contains("guess"), "the page echoes no token");
}

#[test]
fn an_illegal_action_is_refused_with_its_code_and_changes_nothing() {
    let (engine, _clock, _dir) = file_engine();
    let (job, _) = crate::http_client::ui_ledger(&engine);
    let s = serve(&engine, HttpOptions::default());
    let before = dump(&engine);
    let resume = post(&s, &format!("/ui/jobs/{job}/resume"), None, true);
    assert_eq!(
        (resume.status, resume.json()["code"].clone()),
        (409, json!("ILLEGAL_TRANSITION"))
    );
    let unknown = post(&s, &format!("/ui/jobs/{job}/explode"), None, true);
    assert_eq!(
        (unknown.status, unknown.json()["code"].clone()),
        (400, json!("INVALID_INPUT"))
    );
    let gone = post(&s, "/ui/jobs/999/pause", None, true);
    assert_eq!(
        (gone.status, gone.json()["code"].clone()),
        (404, json!("NOT_FOUND"))
    );
    let schedule = post(&s, "/ui/schedules/nope/disable", None, true);
    assert_eq!(schedule.status, 404);
    let preflight = post(&s, "/ui/probes/preflight?scope=universe", None, true);
    assert_eq!(
        preflight.status, 400,
        "no probes registered: {}",
        preflight.body
    );
    assert_eq!(dump(&engine), before);
}

#[test]
fn schedules_and_preflight_act_from_the_ui() {
    let (engine, clock, _dir) = file_engine();
    crate::http_client::ui_ledger(&engine);
    let opts = HttpOptions::default().probes(demo::probes(&[]), PreflightConfig::default());
    let s = serve(&engine, opts);
    let name = engine.schedules().list().unwrap()[0].name.clone();
    assert_eq!(
        post(&s, &format!("/ui/schedules/{name}/disable"), None, true).status,
        200
    );
    assert!(!engine.schedules().get(&name).unwrap().enabled);
    assert!(get(&s, "/ui/schedules", None).body.contains("Enable…"));
    assert_eq!(
        post(&s, &format!("/ui/schedules/{name}/enable"), None, true).status,
        200
    );
    assert!(engine.schedules().get(&name).unwrap().enabled);
    // The failed probe is stale after 15 minutes, so preflight probes it again (now ok).
    clock.advance(std::time::Duration::from_secs(16 * 60));
    let pf = post(&s, "/ui/probes/preflight?scope=universe", None, true);
    assert_eq!(pf.status, 200, "{}", pf.body);
    assert!(
        engine
            .runs()
            .readiness(runledger::Scope::Universe, &Default::default())
            .unwrap()
            .ready
    );
}

#[test]
fn html_is_escaped_everywhere_a_host_value_appears() {
    let (engine, _clock, _dir) = file_engine();
    let evil = "<script>alert(1)</script>";
    let job = engine
        .jobs()
        .create(&NewJob::new(evil, "research", json!({"x": evil})))
        .unwrap();
    let s = serve(&engine, HttpOptions::default());
    for path in [format!("/ui/jobs/{}", job.id), "/ui/jobs".into()] {
        let body = get(&s, &path, None).body;
        assert!(!body.contains(evil), "{path} renders host text as HTML");
        assert!(body.contains("&lt;script&gt;"), "{path}");
    }
}

#[test]
fn raw_records_download_with_their_type_and_bytes() {
    let (engine, _clock, _dir) = file_engine();
    crate::http_client::ui_ledger(&engine);
    let record = engine.runs().raw_records(1).unwrap().remove(0);
    let s = serve(&engine, HttpOptions::default());
    let r = get(&s, &format!("/ui/runs/1/raw/{}", record.id), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(record.content_type.as_str()));
    assert_eq!(
        r.header("content-disposition"),
        Some(format!("attachment; filename=\"run-1-raw-{}.csv\"", record.id).as_str())
    );
    assert_eq!(
        r.body.as_bytes(),
        engine.runs().raw_payload(&record.sha256).unwrap()
    );
    // A record of another run is not served under this run.
    assert_eq!(
        get(&s, &format!("/ui/runs/2/raw/{}", record.id), None).status,
        404
    );
}

/// Reads SSE frames until `n` `job` events arrived: their ids (cursors) and kinds.
fn frames(reader: &mut impl BufRead, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let (mut id, mut data) = (None, String::new());
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("id:") {
            id = Some(v.trim().parse().unwrap());
        } else if let Some(v) = l.strip_prefix("data:") {
            data = v.trim().to_string();
        } else if l.is_empty() {
            if let Some(i) = id.take() {
                let e: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(e["cursor"], i);
                out.push((i, e["kind"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

#[test]
fn the_sign_in_cookie_reads_the_event_stream_but_writes_nothing_through_the_api() {
    let (engine, _clock, _dir) = file_engine();
    let (job, _) = crate::http_client::ui_ledger(&engine); // created, claimed, progress, checkpoint
    let s = serve(&engine, tokens());
    let url = format!("{}/events?after=0&job={job}", s.base);
    let anonymous = reply(agent().get(&url).call().unwrap());
    assert_eq!(anonymous.status, 401);
    // The page's EventSource sends the cookie, as a browser does.
    let r = agent()
        .get(&url)
        .header("cookie", &format!("runledger_ui={READ}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = BufReader::new(r.into_body().into_reader());
    let got = frames(&mut body, 4);
    let all: Vec<(i64, String)> = engine
        .events()
        .since(job, 0, 100)
        .unwrap()
        .iter()
        .map(|e| (e.cursor, e.kind.as_str().to_string()))
        .collect();
    assert_eq!(got, all);
    // The cookie is not a bearer token for the API's writes (those need the header).
    let before = dump(&engine);
    let write = post(&s, &format!("/jobs/{job}/pause"), Some(WRITE), true);
    assert_eq!(write.status, 401, "{}", write.body);
    assert_eq!(dump(&engine), before);
}

#[test]
fn a_rejected_raw_record_shows_its_code_on_the_run_page() {
    use runledger::run::{Pipeline, RawInput, StageError};
    let (engine, _clock, _dir) = file_engine();
    let p = Pipeline::builder("keep")
        .stage("check", |ctx| {
            let input = RawInput {
                source: "ib_flex",
                upstream_ref: None,
                content_type: "application/xml",
                bytes: b"<FlexQueryResponse a=\xe2\x80\x9cx\"/>",
            };
            ctx.store_rejected_raw(&input, "FLEX_MALFORMED_XML", "at byte 21 <&>")
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            Err(StageError::fatal("FLEX_MALFORMED_XML", "at byte 21 <&>"))
        })
        .build()
        .unwrap();
    let run = engine
        .runs()
        .trigger(&p, runledger::Scope::Targets.into(), TriggerKind::Manual)
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    let s = serve(&engine, HttpOptions::default());
    let page = get(&s, &format!("/ui/runs/{}", run.id), None);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("rejected FLEX_MALFORMED_XML"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("title=\"at byte 21 &lt;&amp;&gt;\""),
        "escaped reason"
    );
}
