//! The API's routes and handlers: thin, each parses strictly, calls the engine on the
//! blocking pool, and answers JSON.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, JsonBody, OptBody, P, Q};
use super::{blocking, stream, AppState};
use crate::clock::Timestamp;
use crate::job::{JobState, NewJob};
use crate::run::{RunFilter, RunStatus, Scope, ScopeSelector, TriggerKind, TriggerOptions};

/// A router that remembers every `(method, path)` it routes, so the OpenAPI test can
/// compare the two both ways.
pub(super) struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn get(self, path: &'static str, h: MethodRouter<AppState>) -> Self {
        self.add("get", path, h)
    }

    fn post(self, path: &'static str, h: MethodRouter<AppState>) -> Self {
        self.add("post", path, h)
    }

    fn add(mut self, method: &'static str, path: &'static str, h: MethodRouter<AppState>) -> Self {
        self.table.push((method, path));
        self.router = self.router.route(path, h);
        self
    }
}

/// Every route of the API.
pub(super) fn table() -> Routes {
    Routes::new()
        .get("/health", get(health))
        .get("/openapi.json", get(openapi))
        .get("/events", get(stream::events))
        .get("/stats", get(stats))
        .get("/users/{user_id}/stats", get(user_stats))
        .post("/jobs", post(create_job))
        .get("/jobs", get(list_jobs))
        .get("/jobs/{id}", get(get_job))
        .post("/jobs/{id}/pause", post(pause))
        .post("/jobs/{id}/resume", post(resume))
        .post("/jobs/{id}/cancel", post(cancel))
        .post("/jobs/{id}/restart", post(restart))
        .get("/jobs/{id}/recovery", get(recovery))
        .get("/jobs/{id}/events", get(job_events))
        .post("/workers/claim", post(claim))
        .post("/jobs/{id}/heartbeat", post(heartbeat))
        .post("/jobs/{id}/progress", post(progress))
        .post("/jobs/{id}/checkpoint", post(checkpoint))
        .post("/jobs/{id}/complete", post(complete))
        .post("/jobs/{id}/fail", post(fail))
        .post("/ingestion/run", post(trigger_run))
        .get("/ingestion/runs", get(list_runs))
        .get("/ingestion/runs/{id}", get(get_run))
        .get("/ingestion/runs/{id}/raw/{raw_id}", get(raw_payload))
        .post("/ingestion/preflight", post(preflight))
        .get("/schedules", get(schedules))
        .post("/schedules/{name}/enable", post(enable_schedule))
        .post("/schedules/{name}/disable", post(disable_schedule))
        .get("/probes", get(probes))
        .get("/readiness", get(readiness))
}

pub(super) fn api() -> Router<AppState> {
    table().router
}

pub(super) fn paths() -> Vec<(&'static str, &'static str)> {
    table().table
}

fn ok() -> Json<Value> {
    Json(json!({"ok": true}))
}

fn parse<T: std::str::FromStr<Err = crate::Error>>(v: Option<&str>) -> ApiResult<Option<T>> {
    v.map(str::parse).transpose().map_err(ApiError::from)
}

fn limit(l: Option<u32>, default: u32, max: u32, field: &str) -> ApiResult<u32> {
    let l = l.unwrap_or(default);
    if l == 0 || l > max {
        return Err(ApiError::invalid(field, format!("must be 1..={max}")));
    }
    Ok(l)
}

// ---- health, openapi, stats ----

async fn health(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let engine = app.engine.clone();
    let name = app.opts.supervisor_name.clone();
    let open = app.opts.auth.is_open();
    let pipelines: Vec<String> = app.opts.pipelines.keys().cloned().collect();
    blocking(move || {
        let schema = engine.schema_version()?;
        let supervisor = crate::Supervisor::new(
            engine.clone(),
            crate::SupervisorOptions {
                name,
                ..Default::default()
            },
        )?
        .status()?;
        let fired: Option<Timestamp> = engine.schedules().last_claimed_at()?;
        Ok(Json(json!({
            "status": "ok",
            "schema_version": schema,
            "now": engine.now(),
            "supervisor_last_tick_at": supervisor.and_then(|s| s.last_tick_at),
            "scheduler_last_fired_at": fired,
            "scheduler_last_tick_at": engine.last_scheduler_tick(),
            "auth": if open { "open" } else { "token" },
            "pipelines": pipelines,
        })))
    })
    .await
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        super::openapi::DOCUMENT,
    )
        .into_response()
}

async fn stats(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || Ok(Json(json!(e.jobs().stats()?)))).await
}

async fn user_stats(State(app): State<AppState>, P(user): P<String>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || Ok(Json(json!(e.jobs().stats_for_user(&user)?)))).await
}

// ---- jobs ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    user_id: String,
    kind: String,
    #[serde(default = "empty_object")]
    input: Value,
    #[serde(default)]
    tags: Vec<String>,
    parent_id: Option<i64>,
    timeout_ms: Option<u64>,
    max_retries: Option<u32>,
}

fn empty_object() -> Value {
    json!({})
}

async fn create_job(
    State(app): State<AppState>,
    JsonBody(b): JsonBody<CreateJob>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let e = app.engine.clone();
    let job = blocking(move || {
        let mut new = NewJob::new(b.user_id, b.kind, b.input).tags(b.tags);
        if let Some(p) = b.parent_id {
            new = new.parent(p);
        }
        if let Some(t) = b.timeout_ms {
            new = new.timeout(std::time::Duration::from_millis(t));
        }
        if let Some(m) = b.max_retries {
            new = new.max_retries(m);
        }
        e.jobs().create(&new)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!(job))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    user_id: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

async fn list_jobs(State(app): State<AppState>, Q(q): Q<JobQuery>) -> ApiResult<Json<Value>> {
    let state: Option<JobState> = parse(q.state.as_deref())?;
    let limit = limit(q.limit, 50, 1000, "limit")?;
    let e = app.engine.clone();
    let jobs = blocking(move || {
        e.jobs().list_before(
            q.user_id.as_deref(),
            state,
            q.kind.as_deref(),
            q.cursor,
            limit,
        )
    })
    .await?;
    let next = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    Ok(Json(json!({"jobs": jobs, "next_cursor": next})))
}

async fn get_job(State(app): State<AppState>, P(id): P<i64>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || Ok(Json(json!(e.jobs().get(id)?)))).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    actor: Option<String>,
    reason: Option<String>,
    input: Option<Value>,
}

#[derive(Clone, Copy)]
enum Op {
    Pause,
    Resume,
    Cancel,
    Restart,
}

async fn control(app: AppState, id: i64, b: Control, op: Op) -> ApiResult<Json<Value>> {
    let actor = b.actor.unwrap_or_else(|| app.opts.default_actor.clone());
    let refuse = |field: &str, what: &str| {
        Err(ApiError::invalid(
            field,
            format!("{what} does not take `{field}`"),
        ))
    };
    match op {
        Op::Pause | Op::Resume if b.reason.is_some() => return refuse("reason", "this action"),
        Op::Pause | Op::Resume | Op::Cancel if b.input.is_some() => {
            return refuse("input", "this action")
        }
        Op::Restart if b.reason.is_some() => return refuse("reason", "restart"),
        _ => {}
    }
    let e = app.engine.clone();
    let job = blocking(move || {
        let jobs = e.jobs();
        match op {
            Op::Pause => jobs.pause(id, &actor),
            Op::Resume => jobs.resume(id, &actor),
            Op::Cancel => jobs.cancel(id, &actor, b.reason.as_deref()),
            Op::Restart => jobs.restart(id, &actor, b.input.as_ref()),
        }
    })
    .await?;
    Ok(Json(json!(job)))
}

async fn pause(
    State(app): State<AppState>,
    P(id): P<i64>,
    OptBody(b): OptBody<Control>,
) -> ApiResult<Json<Value>> {
    control(app, id, b, Op::Pause).await
}

async fn resume(
    State(app): State<AppState>,
    P(id): P<i64>,
    OptBody(b): OptBody<Control>,
) -> ApiResult<Json<Value>> {
    control(app, id, b, Op::Resume).await
}

async fn cancel(
    State(app): State<AppState>,
    P(id): P<i64>,
    OptBody(b): OptBody<Control>,
) -> ApiResult<Json<Value>> {
    control(app, id, b, Op::Cancel).await
}

async fn restart(
    State(app): State<AppState>,
    P(id): P<i64>,
    OptBody(b): OptBody<Control>,
) -> ApiResult<Json<Value>> {
    control(app, id, b, Op::Restart).await
}

async fn recovery(State(app): State<AppState>, P(id): P<i64>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    let max = app.opts.max_recoveries;
    blocking(move || {
        let jobs = e.jobs();
        Ok(Json(json!({
            "options": jobs.recovery_options(id, max)?,
            "checkpoint": jobs.checkpoint_details(id)?,
            "validation": jobs.validate_checkpoint(id)?,
        })))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeqQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn job_events(
    State(app): State<AppState>,
    P(id): P<i64>,
    Q(q): Q<SeqQuery>,
) -> ApiResult<Json<Value>> {
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid("after", "must be a non-negative seq"));
    }
    let limit = limit(q.limit, 200, 1000, "limit")?;
    let e = app.engine.clone();
    blocking(move || Ok(Json(json!({"events": e.events().since(id, after, limit)?})))).await
}

// ---- workers ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    worker: String,
    #[serde(default)]
    kinds: Vec<String>,
    max: Option<u32>,
}

async fn claim(
    State(app): State<AppState>,
    JsonBody(b): JsonBody<ClaimBody>,
) -> ApiResult<Json<Value>> {
    let max = limit(b.max, 1, 100, "max")?;
    let e = app.engine.clone();
    blocking(move || {
        let kinds: Vec<&str> = b.kinds.iter().map(String::as_str).collect();
        let mut claims = Vec::new();
        for _ in 0..max {
            match e.jobs().claim(&b.worker, &kinds)? {
                Some(c) => claims.push(json!({"job": c.job, "attempt": c.attempt})),
                None => break,
            }
        }
        Ok(Json(json!({"claims": claims})))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptBody {
    attempt: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressBody {
    attempt: i64,
    progress: u8,
    step: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    attempt: i64,
    checkpoint: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    attempt: i64,
    #[serde(default = "empty_object")]
    result: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailBody {
    attempt: i64,
    code: String,
    message: String,
}

// A remote worker's fenced writes carry only (id, attempt): the write itself checks the
// attempt against the database (and says NOT_FOUND, STALE_ATTEMPT or JOB_NOT_RUNNING), so
// no read of the job comes first.

async fn heartbeat(
    State(app): State<AppState>,
    P(id): P<i64>,
    JsonBody(b): JsonBody<AttemptBody>,
) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || e.jobs().heartbeat_fenced(id, b.attempt)).await?;
    Ok(ok())
}

async fn progress(
    State(app): State<AppState>,
    P(id): P<i64>,
    JsonBody(b): JsonBody<ProgressBody>,
) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || {
        e.jobs()
            .progress_fenced(id, b.attempt, b.progress, b.step.as_deref())
    })
    .await?;
    Ok(ok())
}

async fn checkpoint(
    State(app): State<AppState>,
    P(id): P<i64>,
    JsonBody(b): JsonBody<CheckpointBody>,
) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || e.jobs().checkpoint_fenced(id, b.attempt, &b.checkpoint)).await?;
    Ok(ok())
}

async fn complete(
    State(app): State<AppState>,
    P(id): P<i64>,
    JsonBody(b): JsonBody<CompleteBody>,
) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    let job = blocking(move || e.jobs().complete_fenced(id, b.attempt, &b.result)).await?;
    Ok(Json(json!(job)))
}

async fn fail(
    State(app): State<AppState>,
    P(id): P<i64>,
    JsonBody(b): JsonBody<FailBody>,
) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    let job = blocking(move || e.jobs().fail_fenced(id, b.attempt, &b.code, &b.message)).await?;
    Ok(Json(json!(job)))
}

// ---- runs ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    pipeline: String,
    scope: Option<String>,
    account_id: Option<String>,
}

async fn trigger_run(
    State(app): State<AppState>,
    JsonBody(b): JsonBody<TriggerBody>,
) -> ApiResult<Response> {
    let pipeline = app
        .opts
        .pipelines
        .get(&b.pipeline)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                "NOT_FOUND",
                format!("pipeline {:?} is not registered", b.pipeline),
            )
            .with("entity", "pipeline")
            .with("id", &b.pipeline)
        })?;
    let scope: ScopeSelector = match b.scope.as_deref() {
        Some(s) => s.parse()?,
        None => match pipeline.scopes() {
            [one] => ScopeSelector::from(*one),
            _ => ScopeSelector::Both,
        },
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<Value, ApiError>>();
    let engine = app.engine.clone();
    let opts = TriggerOptions {
        account_id: b.account_id,
    };
    // The run goes on after the answer: on its own thread, not the blocking pool.
    std::thread::Builder::new()
        .name("runledger-http-run".into())
        .spawn(move || {
            let mut tx = Some(tx);
            let mut first = |_: Scope, started: Result<&crate::run::Run, &crate::Error>| {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(match started {
                        Ok(run) => Ok(json!(run)),
                        Err(e) => Err(refusal(&engine, e)),
                    });
                }
            };
            let out = engine.runs().trigger_observed(
                &pipeline,
                scope,
                TriggerKind::Manual,
                &opts,
                &mut first,
            );
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err(match out {
                    Err(e) => ApiError::from(e),
                    Ok(_) => ApiError::new("INTERNAL", "the trigger started no run"),
                }));
            }
        })
        .map_err(|_| ApiError::new("BUSY", "cannot start a run thread"))?;
    let run = rx
        .await
        .map_err(|_| ApiError::new("INTERNAL", "the trigger ended without an answer"))??;
    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
}

/// The error of a trigger that did not start; a refusal carries the holder's lease expiry.
fn refusal(engine: &crate::Engine, e: &crate::Error) -> ApiError {
    let err = ApiError::from(e);
    match e {
        crate::Error::RunAlreadyActive {
            active_run_id: Some(holder),
            ..
        } => {
            let lease = engine
                .runs()
                .get(*holder)
                .ok()
                .and_then(|r| r.lease_expires_at);
            err.with("lease_expires_at", lease)
        }
        _ => err,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunQuery {
    pipeline: Option<String>,
    scope: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
    limit: Option<u32>,
    cursor: Option<i64>,
}

async fn list_runs(State(app): State<AppState>, Q(q): Q<RunQuery>) -> ApiResult<Json<Value>> {
    let filter = RunFilter {
        pipeline: q.pipeline,
        scope: parse::<Scope>(q.scope.as_deref())?,
        status: parse::<RunStatus>(q.status.as_deref())?,
        trigger: parse::<TriggerKind>(q.trigger.as_deref())?,
        before_id: q.cursor,
        limit: limit(q.limit, 50, 1000, "limit")?,
    };
    let e = app.engine.clone();
    let want = filter.limit as usize;
    let runs = blocking(move || e.runs().list(&filter)).await?;
    let next = (runs.len() == want)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({"runs": runs, "next_cursor": next})))
}

async fn get_run(State(app): State<AppState>, P(id): P<i64>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    blocking(move || {
        let run = e.runs().get(id)?;
        let raw = e.runs().raw_records(id)?;
        let mut v = json!(run);
        v["raw_records"] = json!(raw);
        Ok(Json(v))
    })
    .await
}

async fn raw_payload(
    State(app): State<AppState>,
    P((run_id, raw_id)): P<(i64, i64)>,
) -> ApiResult<Response> {
    let e = app.engine.clone();
    let (record, bytes) = blocking(move || {
        e.runs().get(run_id)?;
        let record = e
            .runs()
            .raw_records(run_id)?
            .into_iter()
            .find(|r| r.id == raw_id)
            .ok_or_else(|| crate::Error::not_found("raw record", raw_id))?;
        let bytes = e.runs().raw_payload(&record.sha256)?;
        Ok((record, bytes))
    })
    .await?;
    let content_type = HeaderValue::from_str(&record.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let sha = HeaderValue::from_str(&record.sha256).unwrap_or(HeaderValue::from_static(""));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::HeaderName::from_static("x-content-sha256"), sha),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreflightBody {
    scope: String,
}

async fn preflight(
    State(app): State<AppState>,
    JsonBody(b): JsonBody<PreflightBody>,
) -> ApiResult<Json<Value>> {
    let scope: Scope = b.scope.parse()?;
    let probes = app
        .opts
        .probes
        .clone()
        .ok_or_else(|| ApiError::invalid("scope", "this server has no probes registered"))?;
    let config = app.opts.preflight;
    let e = app.engine.clone();
    blocking(move || Ok(Json(json!(e.runs().preflight(scope, &probes, &config)?)))).await
}

// ---- schedules, probes ----

fn in_zone(at: Timestamp, zone: &str) -> Option<String> {
    let z = crate::schedule::Zone::new(zone).ok()?;
    let off = time::UtcOffset::from_whole_seconds(z.offset_seconds_at(at)).ok()?;
    at.to_offset_datetime()
        .to_offset(off)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

async fn schedules(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    let list = blocking(move || e.schedules().list()).await?;
    let out: Vec<Value> = list
        .into_iter()
        .map(|s| {
            let local = s.next_due_at.and_then(|t| in_zone(t, s.zone.name()));
            let mut v = json!(s);
            v["next_due_local"] = json!(local);
            v
        })
        .collect();
    Ok(Json(json!({"schedules": out})))
}

async fn set_schedule(app: AppState, name: String, enable: bool) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    let actor = app.opts.default_actor.clone();
    blocking(move || {
        let schedules = e.schedules().by(&actor);
        let s = if enable {
            schedules.enable(&name)?
        } else {
            schedules.disable(&name)?
        };
        Ok(Json(json!(s)))
    })
    .await
}

async fn enable_schedule(
    State(app): State<AppState>,
    P(name): P<String>,
) -> ApiResult<Json<Value>> {
    set_schedule(app, name, true).await
}

async fn disable_schedule(
    State(app): State<AppState>,
    P(name): P<String>,
) -> ApiResult<Json<Value>> {
    set_schedule(app, name, false).await
}

async fn probes(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let e = app.engine.clone();
    let config = app.opts.preflight;
    blocking(move || {
        let readiness = Scope::ALL
            .iter()
            .map(|s| e.runs().readiness(*s, &config))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Json(
            json!({"modules": e.runs().modules()?, "readiness": readiness}),
        ))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadinessQuery {
    scope: Option<String>,
}

async fn readiness(State(app): State<AppState>, Q(q): Q<ReadinessQuery>) -> ApiResult<Json<Value>> {
    let scope: Scope = parse(q.scope.as_deref())?
        .ok_or_else(|| ApiError::invalid("scope", "is required (targets or universe)"))?;
    let e = app.engine.clone();
    let config = app.opts.preflight;
    blocking(move || Ok(Json(json!(e.runs().readiness(scope, &config)?)))).await
}
