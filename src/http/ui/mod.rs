//! The Trust UI: pages to watch and steer runs and jobs in a browser.
//!
//! Every page is rendered on the server from the engine (on tokio's blocking pool) with
//! minijinja templates embedded in the binary; the only JavaScript ([`assets`]) follows the
//! API's live stream (`GET /events`), asks for confirmations and shows toasts. Pages:
//!
//! | path | page |
//! |---|---|
//! | `/` | overview: runs per scope and status, blocked runs, jobs by state, loops, next due |
//! | `/ui/runs`, `/ui/runs/{id}` | runs with filters; a run's timeline chart, meta, raw records, error explained |
//! | `/ui/jobs`, `/ui/jobs/{id}` | live job list; a job's status bar, events, error banner, actions, checkpoint |
//! | `/ui/schedules`, `/ui/probes` | schedules (enable/disable); readiness per scope (preflight) |
//!
//! **Access.** The API's tokens ([`HttpOptions::auth`]): with none configured the (loopback)
//! UI is open and says so. Otherwise a browser signs in once at `/ui/login` (the token goes
//! to an HttpOnly, SameSite=Strict cookie, which also lets it read `GET /events`) or sends
//! `Authorization: Bearer`: the read-write token shows the action buttons, the read-only
//! token shows none and its writes are refused. Every write is a `POST` carrying the header
//! `X-Runledger-UI: 1` (which a cross-site form cannot send) and is recorded with actor `ui`.

pub mod assets;
pub mod guide;
pub mod queries;
mod view;

use std::sync::{Arc, OnceLock};

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::HttpOptions;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The actor the UI's writes are recorded with.
pub const ACTOR: &str = "ui";
/// The cookie holding a signed-in browser's token.
pub const COOKIE: &str = "runledger_ui";
/// The header every UI write must carry.
pub const WRITE_HEADER: &str = "x-runledger-ui";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: sign in first.
    None,
    /// Read pages.
    Read,
    /// Read and act.
    Write,
}

struct Ui {
    engine: Engine,
    opts: Arc<HttpOptions>,
}

type Shared = Arc<Ui>;

/// The UI's routes; [`super::router`] merges them at `/`. Tokens, probes, the preflight
/// policy and the recovery limit are the API's own (`options`).
pub fn router(engine: Engine, options: Arc<HttpOptions>) -> Router {
    let ui = Arc::new(Ui {
        engine,
        opts: options,
    });
    Router::new()
        .route("/", get(overview))
        .route("/ui", get(|| async { Redirect::to("/") }))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/raw/{raw_id}", get(raw))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/live.json", get(job_live))
        .route("/ui/jobs/{id}/{action}", post(job_action))
        .route("/ui/schedules", get(schedules))
        .route("/ui/schedules/{name}/{action}", post(schedule_action))
        .route("/ui/probes", get(probes))
        .route("/ui/probes/preflight", post(preflight))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{file}", get(asset))
        .with_state(ui)
}

// ---------------------------------------------------------------- access

/// The token a signed-in browser's cookie carries, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn presented(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or_else(|| cookie_token(headers))
}

impl Ui {
    /// The same rules as the API's ([`super::Auth::check`]), as a level.
    fn access(&self, headers: &HeaderMap) -> Access {
        let auth = &self.opts.auth;
        if auth.is_open() {
            return Access::Write;
        }
        let token = presented(headers);
        let is = |t: &Option<super::Token>| {
            token
                .as_deref()
                .is_some_and(|p| t.as_ref().is_some_and(|t| t.matches(p)))
        };
        if is(&auth.write) {
            Access::Write
        } else if is(&auth.read) {
            Access::Read
        } else if auth.read.is_none() {
            // Only a write token configured: reads stay open, as the API's are.
            Access::Read
        } else {
            Access::None
        }
    }

    fn access_text(&self, access: Access) -> &'static str {
        match access {
            Access::Write if self.opts.auth.is_open() => {
                "open: no API token is configured (loopback only)"
            }
            Access::Write => "signed in: read and write",
            Access::Read => "read-only",
            Access::None => "signed out",
        }
    }
}

// ---------------------------------------------------------------- rendering

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        env
    })
}

/// Every template, embedded.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("job.html", include_str!("templates/job.html")),
    ("schedules.html", include_str!("templates/schedules.html")),
    ("probes.html", include_str!("templates/probes.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
];

const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/", "Overview"),
    ("runs", "/ui/runs", "Runs"),
    ("jobs", "/ui/jobs", "Jobs"),
    ("schedules", "/ui/schedules", "Schedules"),
    ("probes", "/ui/probes", "Probes"),
];

fn security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Renders template `name` with the page's own `ctx` and the layout's fields.
fn render(
    status: StatusCode,
    name: &str,
    page: &str,
    access: Access,
    access_text: &str,
    cursor: i64,
    ctx: Value,
) -> Response {
    let nav: Vec<Value> = NAV
        .iter()
        .map(|(key, href, label)| json!({"key": key, "href": href, "label": label}))
        .collect();
    let mut full = json!({
        "page": page,
        "nav": nav,
        "assets": {"css": assets::url("app.css"), "js": assets::url("app.js")},
        "can_write": access == Access::Write,
        "access": access_text,
        "stream": "/events",
        "cursor": cursor,
    });
    if let (Some(full), Value::Object(own)) = (full.as_object_mut(), ctx) {
        full.extend(own);
    }
    let html = env().get_template(name).and_then(|t| t.render(&full));
    let mut resp = match html {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("template {name} failed: {e}"),
        )
            .into_response(),
    };
    security_headers(&mut resp);
    resp
}

fn status_of(e: &Error) -> StatusCode {
    match e.code() {
        "NOT_FOUND" => StatusCode::NOT_FOUND,
        "INVALID_INPUT" | "TOO_LARGE" => StatusCode::BAD_REQUEST,
        "ILLEGAL_TRANSITION" | "RUN_ALREADY_ACTIVE" | "STALE_ATTEMPT" | "JOB_NOT_RUNNING" => {
            StatusCode::CONFLICT
        }
        "UNREACHABLE" => StatusCode::SERVICE_UNAVAILABLE,
        "UNSUPPORTED_BACKEND" => StatusCode::NOT_IMPLEMENTED,
        _ if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a page or a JSON error says of `e`: its message, but never the database server's
/// own text (PostgreSQL's carries SQL details), as the API's errors (`super::ApiError`).
fn message_of(e: &Error) -> String {
    match e {
        Error::Postgres { .. } => "database error".into(),
        other => other.to_string(),
    }
}

/// Runs `f` on the blocking pool (engine calls wait on SQLite).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::invalid(
            "request",
            format!("the handler stopped: {e}"),
        ))
    })
}

/// A page handler's work: the template, the page key and its context.
struct Page {
    template: &'static str,
    key: &'static str,
    ctx: Value,
}

impl Ui {
    /// Renders a page computed by `f` on the blocking pool, or the error page; asks to sign
    /// in when the request may not read.
    async fn page(
        self: Arc<Self>,
        headers: &HeaderMap,
        f: impl FnOnce(&Engine, &HttpOptions) -> Result<Page> + Send + 'static,
    ) -> Response {
        let access = self.access(headers);
        if access == Access::None {
            return Redirect::to("/ui/login").into_response();
        }
        let text = self.access_text(access);
        let ui = Arc::clone(&self);
        let out = blocking(move || {
            let cursor = queries::last_cursor(&ui.engine)?;
            Ok((cursor, f(&ui.engine, &ui.opts)?))
        })
        .await;
        match out {
            Ok((cursor, p)) => render(
                StatusCode::OK,
                p.template,
                p.key,
                access,
                text,
                cursor,
                p.ctx,
            ),
            Err(e) => render(
                status_of(&e),
                "error.html",
                "",
                access,
                text,
                0,
                json!({
                    "title": if status_of(&e) == StatusCode::NOT_FOUND { "Not found" } else { "Something went wrong" },
                    "code": e.code(),
                    "message": message_of(&e),
                    "explanation": guide::explain(e.code()),
                }),
            ),
        }
    }
}

/// A JSON error body `{code, message}` with its status.
fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut resp = (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response();
    security_headers(&mut resp);
    resp
}

fn json_err(e: &Error) -> Response {
    json_error(status_of(e), e.code(), message_of(e))
}

/// The refusal of a request that may not even read, if it may not.
fn refuse_read(ui: &Ui, headers: &HeaderMap) -> Option<Response> {
    (ui.access(headers) == Access::None).then(|| {
        json_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "sign in with the API token",
        )
    })
}

/// The refusal of a write that lacks the write token or the UI's header, if it does.
fn refuse_write(ui: &Ui, headers: &HeaderMap) -> Option<Response> {
    match ui.access(headers) {
        Access::Write => {}
        Access::Read => {
            return Some(json_error(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this token may only read",
            ))
        }
        Access::None => return refuse_read(ui, headers),
    }
    if headers.get(WRITE_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "UI writes must come from the UI's own script",
        ));
    }
    None
}

// ---------------------------------------------------------------- pages

async fn overview(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    ui.page(&headers, |e, _| {
        Ok(Page {
            template: "overview.html",
            key: "overview",
            ctx: view::overview(e)?,
        })
    })
    .await
}

/// Query of the runs list.
#[derive(Debug, Default, Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    scope: Option<String>,
    status: Option<String>,
    before: Option<i64>,
}

async fn runs(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Response {
    ui.page(&headers, move |e, _| {
        Ok(Page {
            template: "runs.html",
            key: "runs",
            ctx: view::runs(e, q.pipeline, q.scope, q.status, q.before)?,
        })
    })
    .await
}

async fn run(State(ui): State<Shared>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    ui.page(&headers, move |e, _| {
        Ok(Page {
            template: "run.html",
            key: "runs",
            ctx: view::run(e, id)?,
        })
    })
    .await
}

async fn raw(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path((id, raw_id)): Path<(i64, i64)>,
) -> Response {
    if let Some(refused) = refuse_read(&ui, &headers) {
        return refused;
    }
    let engine = ui.engine.clone();
    let out = blocking(move || {
        let record = engine
            .runs()
            .raw_records(id)?
            .into_iter()
            .find(|r| r.id == raw_id)
            .ok_or_else(|| Error::not_found("raw record", raw_id))?;
        let bytes = engine.runs().raw_payload(&record.sha256)?;
        Ok((record, bytes))
    })
    .await;
    match out {
        Ok((record, bytes)) => {
            let ext = view::extension(&record.content_type);
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&record.content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"run-{id}-raw-{raw_id}.{ext}\""
            )) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            security_headers(&mut resp);
            resp
        }
        Err(e) => json_err(&e),
    }
}

/// Query of the jobs list.
#[derive(Debug, Default, Deserialize)]
struct JobsQuery {
    user: Option<String>,
    state: Option<String>,
    kind: Option<String>,
}

async fn jobs(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Response {
    ui.page(&headers, move |e, _| {
        Ok(Page {
            template: "jobs.html",
            key: "jobs",
            ctx: view::jobs(e, q.user, q.state, q.kind)?,
        })
    })
    .await
}

async fn job(State(ui): State<Shared>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    ui.page(&headers, move |e, opts| {
        Ok(Page {
            template: "job.html",
            key: "jobs",
            ctx: view::job(e, id, opts.max_recoveries)?,
        })
    })
    .await
}

async fn job_live(State(ui): State<Shared>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    if let Some(refused) = refuse_read(&ui, &headers) {
        return refused;
    }
    let (engine, max) = (ui.engine.clone(), ui.opts.max_recoveries);
    match blocking(move || view::job_live(&engine, id, max)).await {
        Ok(v) => {
            let mut resp = Json(v).into_response();
            security_headers(&mut resp);
            resp
        }
        Err(e) => json_err(&e),
    }
}

async fn job_action(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path((id, action)): Path<(i64, String)>,
) -> Response {
    if let Some(refused) = refuse_write(&ui, &headers) {
        return refused;
    }
    let engine = ui.engine.clone();
    let out = blocking(move || {
        let jobs = engine.jobs();
        let job = match action.as_str() {
            "pause" => jobs.pause(id, ACTOR)?,
            "resume" => jobs.resume(id, ACTOR)?,
            "cancel" => jobs.cancel(id, ACTOR, Some("cancelled from the UI"))?,
            "restart" => jobs.restart(id, ACTOR, None)?,
            other => {
                return Err(Error::invalid(
                    "action",
                    format!("{other:?} is not one of pause, resume, cancel, restart"),
                ))
            }
        };
        Ok((action, job))
    })
    .await;
    match out {
        Ok((action, job)) => {
            let done = match action.as_str() {
                "pause" => "paused",
                "resume" => "resumed: back in the queue",
                "cancel" => "cancelled",
                _ => "restarted from scratch",
            };
            Json(json!({
                "ok": true,
                "job_id": job.id,
                "state": job.state,
                "message": format!("Job #{} {done}.", job.id),
            }))
            .into_response()
        }
        Err(e) => json_err(&e),
    }
}

async fn schedules(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    ui.page(&headers, |e, _| {
        Ok(Page {
            template: "schedules.html",
            key: "schedules",
            ctx: view::schedules(e)?,
        })
    })
    .await
}

async fn schedule_action(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = refuse_write(&ui, &headers) {
        return refused;
    }
    let engine = ui.engine.clone();
    let out = blocking(move || match action.as_str() {
        "enable" => engine.schedules().by("ui").enable(&name),
        "disable" => engine.schedules().by("ui").disable(&name),
        other => Err(Error::invalid(
            "action",
            format!("{other:?} is not one of enable, disable"),
        )),
    })
    .await;
    match out {
        Ok(s) => Json(json!({
            "ok": true,
            "message": format!("Schedule {} {}.", s.name, if s.enabled { "enabled" } else { "disabled" }),
        }))
        .into_response(),
        Err(e) => json_err(&e),
    }
}

async fn probes(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    ui.page(&headers, |e, opts| {
        Ok(Page {
            template: "probes.html",
            key: "probes",
            ctx: view::probes(e, opts)?,
        })
    })
    .await
}

/// Query of the preflight button.
#[derive(Debug, Deserialize)]
struct ScopeQuery {
    scope: String,
}

async fn preflight(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ScopeQuery>,
) -> Response {
    if let Some(refused) = refuse_write(&ui, &headers) {
        return refused;
    }
    let Some(probes) = ui.opts.probes.clone() else {
        return json_err(&Error::invalid(
            "probes",
            "this server has no probes registered",
        ));
    };
    let (engine, config) = (ui.engine.clone(), ui.opts.preflight);
    let out = blocking(move || {
        let scope = q.scope.parse()?;
        engine.runs().preflight(scope, &probes, &config)
    })
    .await;
    match out {
        Ok(s) => Json(json!({
            "ok": true,
            "message": format!("Preflight of {}: {}.", s.scope, s.why_not()),
        }))
        .into_response(),
        Err(e) => json_err(&e),
    }
}

async fn login_page(State(ui): State<Shared>) -> Response {
    render(
        StatusCode::OK,
        "login.html",
        "",
        Access::None,
        ui.access_text(Access::None),
        0,
        json!({"failed": false}),
    )
}

/// The sign-in form.
#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(ui): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    let mut headers = HeaderMap::new();
    let token = form.token.trim();
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"');
    if cookie_safe {
        if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={token}")) {
            headers.insert(header::COOKIE, v);
        }
    }
    let access = ui.access(&headers);
    let configured = !ui.opts.auth.is_open();
    if !configured || access == Access::None || !cookie_safe {
        return render(
            StatusCode::UNAUTHORIZED,
            "login.html",
            "",
            Access::None,
            ui.access_text(Access::None),
            0,
            json!({"failed": configured}),
        );
    }
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("runledger_ui=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    assets::serve(&file, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_never_show_the_database_server_s_own_text() {
        let e = Error::Postgres {
            sqlstate: "42P01".into(),
            message: "relation \"secret_table\" does not exist".into(),
        };
        assert_eq!(message_of(&e), "database error");
        assert_eq!(status_of(&e), StatusCode::INTERNAL_SERVER_ERROR);
        let away = Error::Unreachable {
            detail: "connection refused".into(),
        };
        assert_eq!(status_of(&away), StatusCode::SERVICE_UNAVAILABLE);
        assert!(message_of(&away).contains("connection refused"));
    }
}
