//! The ready-made Flex ingestion [`Pipeline`]: a token gate, then the runner stages
//! `request`, `poll`, `download`, `section_preflight` and `persist`.
//!
//! | stage | does | timeline detail | fails with |
//! |---|---|---|---|
//! | `token` (gate) | resolves the token (env var or host), refuses one IB already declared expired | `tokenSource`, `tokenFingerprint` | `FLEX_TOKEN_MISSING`, `FLEX_TOKEN_INVALID`, `FLEX_TOKEN_EXPIRED` |
//! | `request` | SendRequest (transient and 1018 retries) | `queryId`, `period`, redacted `url`, `referenceCode`, request counts | `FLEX_10xx`, `FLEX_CONNECT`, ... |
//! | `poll` | GetStatement until the statement comes ([`poll`](super::poll)) | `referenceCode`, `polls`, `notReady`, waits | `FLEX_POLL_TIMEOUT`, `FLEX_10xx`, `INTERRUPTED`, ... |
//! | `download` | reads the body under the size cap | `bytes`, `sha256` | `FLEX_BODY_TOO_LARGE`, `FLEX_BODY_TRUNCATED`, `FLEX_TIMEOUT` |
//! | `section_preflight` | scans the statement; checks the account, the requested period and the [`SectionPolicy`] (for the run's account only, when it has one); a statement that fails any of these is kept as a raw record marked rejected | the section report, `warnings`, `unknownSections`, `rejectedRawRecordId` | `MISSING_REQUIRED_SECTION`, `FLEX_MALFORMED_XML`, `FLEX_TRUNCATED`, `FLEX_COUNT_MISMATCH`, `FLEX_ACCOUNT_NOT_IN_STATEMENT`, `FLEX_PERIOD_MISMATCH`, ... |
//! | `persist` | stores the statement as a raw record (`source` `ib_flex`) | `rawRecordId`, `sha256`, `bytes` | database errors |
//!
//! The run is marked success only after `persist`, so a successful run always has its
//! statement stored. `meta_json` gets `queryId`, `tokenFingerprint`, `referenceCode`,
//! `ibCode` (the raw IB error code of a service failure) and `sectionWarnings` (the
//! reconcile sections missing, `"U1: ChangeInNAV"`): operators can `json_extract` them.
//!
//! **Lock key.** The pipeline is named `flex-<query_id>` by default
//! ([`FlexConfig::name`]), and the orchestrator's lock key is `pipeline:scope[:account]`,
//! so a run holds `flex-<query>:<scope>[:<account>]`: two queries, or two accounts of the
//! same query ([`TriggerOptions::account_id`]), never block each other, while a second
//! run of the same query and account is turned away with `RUN_ALREADY_ACTIVE`. Scheduled
//! runs ([`crate::ScheduledRuns`]) trigger without an account: register one pipeline per
//! query.
//!
//! **Token gate.** The token is resolved at each run (so a rotated environment variable is
//! picked up by the next scheduled run). It is "known expired" when the newest earlier run
//! of this pipeline with the same [`fingerprint`](FlexToken::fingerprint) failed with
//! `FLEX_1012` (expired), `FLEX_1015` (invalid) or `FLEX_TOKEN_EXPIRED`: the gate then
//! blocks without spending a request. A new token has a new fingerprint and passes.
//!
//! **The token** lives only in memory, in the gate's per-run state, and in request query
//! strings; the database, timelines, errors and `Debug` output see `***` or its
//! fingerprint.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{FlexClient, FlexTransport, Requested, StatementBody, StatementPeriod};
use super::failure::{FlexError, Result};
use super::policy::{check_account, check_period, SectionPolicy};
use super::poll::{Pacer, PollSettings, PollStats, Poller, Wait, WaitPhase};
use super::statement::{scan_bytes, StatementReport};
use super::{ClientConfig, FetchError, FlexToken, DEFAULT_TOKEN_ENV};
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::run::{
    Gate, Pipeline, RawInput, Run, RunFilter, RunStatus, Scope, StageContext, StageError,
    StageOutput, TriggerKind, TriggerOptions,
};

/// The `source` of the raw records this pipeline stores.
pub const RAW_SOURCE: &str = "ib_flex";

/// Where the token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable, read at each run ([`DEFAULT_TOKEN_ENV`] by default).
    Env(String),
    /// A token the host passed in.
    Given(FlexToken),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env(var) => write!(f, "Env({var})"),
            TokenSource::Given(_) => f.write_str("Given(***)"),
        }
    }
}

impl TokenSource {
    fn resolve(&self) -> std::result::Result<FlexToken, FetchError> {
        match self {
            TokenSource::Env(var) => FlexToken::from_env(var),
            TokenSource::Given(t) => Ok(t.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            TokenSource::Env(var) => format!("env {var}"),
            TokenSource::Given(_) => "host".into(),
        }
    }
}

/// Everything the Flex pipeline needs. [`FlexConfig::new`] fills in the defaults.
#[derive(Clone)]
pub struct FlexConfig {
    /// The pipeline's name (default `flex-<query_id>`; see the module docs on lock keys).
    pub name: Option<String>,
    /// The Flex query id.
    pub query_id: String,
    /// Where the token comes from (default: env `IBKR_FLEX_TOKEN`).
    pub token: TokenSource,
    /// Which dates (default: the query's own).
    pub period: StatementPeriod,
    /// Transport settings (base URL, `<Url>` following, body cap, timeouts).
    pub client: ClientConfig,
    /// Polling waits and bounds.
    pub poll: PollSettings,
    /// Required and reconcile sections (default [`SectionPolicy::activity`]).
    pub policy: SectionPolicy,
    /// The scope its runs belong to (default `targets`).
    pub scope: Scope,
    /// Clock, sleeper and rate limiter (default: system clock, real sleep, IB's limits).
    /// Clones share the limiter: give pipelines that share a token the same pacer.
    pub pacer: Pacer,
    /// A transport to use instead of a [`FlexClient`] built from [`FlexConfig::client`].
    pub transport: Option<Arc<dyn FlexTransport>>,
}

impl std::fmt::Debug for FlexConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlexConfig")
            .field("name", &self.pipeline_name())
            .field("query_id", &self.query_id)
            .field("token", &self.token)
            .field("period", &self.period)
            .field("client", &self.client)
            .field("poll", &self.poll)
            .field("policy", &self.policy)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl FlexConfig {
    /// Defaults for `query_id`: token from `IBKR_FLEX_TOKEN`, the query's own dates, IB's
    /// base URL, [`PollSettings::default`], [`SectionPolicy::activity`], scope `targets`,
    /// [`Pacer::system`].
    pub fn new(query_id: impl Into<String>) -> Self {
        FlexConfig {
            name: None,
            query_id: query_id.into(),
            token: TokenSource::Env(DEFAULT_TOKEN_ENV.to_string()),
            period: StatementPeriod::Query,
            client: ClientConfig::default(),
            poll: PollSettings::default(),
            policy: SectionPolicy::activity(),
            scope: Scope::Targets,
            pacer: Pacer::system(),
            transport: None,
        }
    }

    /// The pipeline's name: [`FlexConfig::name`] or `flex-<query_id>`.
    pub fn pipeline_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("flex-{}", self.query_id))
    }

    /// The lease of a run: long enough for a whole poll stage (budget, throttle backoffs,
    /// timeouts) plus a minute.
    fn lease(&self) -> Duration {
        self.poll.total_budget
            + self
                .poll
                .throttle_backoff
                .saturating_mul(self.poll.throttle_retries)
            + (self.client.connect_timeout + self.client.read_timeout).saturating_mul(3)
            + Duration::from_secs(60)
    }
}

/// What one run carries from stage to stage (in memory only: it holds the token).
struct RunState {
    token: FlexToken,
    started: Option<Timestamp>,
    requested: Option<Requested>,
    body: Option<StatementBody>,
    bytes: Option<Vec<u8>>,
}

struct Shared {
    config: FlexConfig,
    transport: Arc<dyn FlexTransport>,
}

/// Takes the run's state out of its context (a failing stage drops it, with the token; the
/// orchestrator drops whatever is left when the run ends).
fn take(ctx: &StageContext<'_>) -> std::result::Result<RunState, StageError> {
    ctx.take_state::<RunState>().ok_or_else(|| {
        StageError::fatal(
            "FLEX_STATE_LOST",
            "the run's in-memory state is gone (an earlier stage did not finish)",
        )
    })
}

/// A stage error for `e`, with `detail`; IB's raw code goes to `meta_json.ibCode`.
fn fail(ctx: &mut StageContext<'_>, e: FlexError, detail: Value) -> StageError {
    if let FlexError::Fetch(FetchError::Service { raw_code, .. }) = &e {
        let _ = ctx.merge_meta(&json!({"ibCode": raw_code}));
    }
    StageError::from(e).with_detail(detail)
}

fn db(e: crate::Error) -> StageError {
    StageError::from(e)
}

/// The codes that make a token "known expired" for the gate.
const EXPIRED_CODES: &[&str] = &["FLEX_1012", "FLEX_1015", "FLEX_TOKEN_EXPIRED"];

fn token_gate(shared: &Shared, ctx: &mut StageContext<'_>) -> Result<StageOutput, StageError> {
    let source = shared.config.token.describe();
    let token = match shared.config.token.resolve() {
        Ok(t) => t,
        Err(e) => {
            return Err(
                StageError::from(FlexError::from(e)).with_detail(json!({"tokenSource": source}))
            )
        }
    };
    let fingerprint = token.fingerprint();
    ctx.merge_meta(&json!({
        "queryId": shared.config.query_id,
        "tokenFingerprint": fingerprint,
    }))
    .map_err(db)?;
    let detail = json!({"tokenSource": source, "tokenFingerprint": fingerprint});
    let filter = RunFilter {
        pipeline: Some(ctx.pipeline().to_string()),
        limit: 200,
        ..RunFilter::default()
    };
    let earlier = ctx.engine().runs().list(&filter).map_err(db)?;
    let last_use = earlier.iter().find(|r| {
        r.id != ctx.run_id()
            && r.status != RunStatus::Started
            && r.meta.get("tokenFingerprint").and_then(Value::as_str) == Some(&fingerprint)
    });
    if let Some(run) = last_use {
        if let Some(code) = run
            .error_code
            .as_deref()
            .filter(|c| EXPIRED_CODES.contains(c))
        {
            let e = FetchError::TokenKnownExpired {
                fingerprint,
                ib_code: code.to_string(),
                run_id: run.id,
            };
            return Err(StageError::from(FlexError::from(e)).with_detail(detail));
        }
    }
    ctx.set_state(RunState {
        token,
        started: None,
        requested: None,
        body: None,
        bytes: None,
    });
    Ok(StageOutput::with_detail(detail))
}

fn stats_detail(reference: Option<&str>, stats: &PollStats) -> Value {
    let mut v = serde_json::to_value(stats).expect("stats serialize");
    v["referenceCode"] = json!(reference);
    v
}

/// The long waits of a stage, shown live in its open timeline entry and kept in its
/// final detail (`waits`: reason, code, planned and waited ms, start).
#[derive(Default)]
struct Waits(Vec<Value>);

impl Waits {
    /// Records one phase of a wait; while it lasts, the stage's open entry says what it
    /// waits for (message and `detail.waiting`). A failed write is not the stage's failure.
    fn note(&mut self, ctx: &mut StageContext<'_>, w: &Wait, phase: WaitPhase) {
        let mut v = serde_json::to_value(w).unwrap_or_else(|_| json!({}));
        match phase {
            WaitPhase::Begins(at) => {
                v["startedAt"] = json!(at);
                let message = format!(
                    "waiting {}s: {}",
                    w.planned.as_secs_f64().round(),
                    w.reason.describe()
                );
                let _ = ctx.annotate(Some(&message), &json!({"waiting": v, "waits": self.0}));
            }
            WaitPhase::Ended { began, waited } => {
                v["startedAt"] = json!(began);
                v["waitedMs"] = json!(waited.as_millis() as u64);
                self.0.push(v);
                let _ = ctx.annotate(None, &json!({"waits": self.0}));
            }
        }
    }

    /// Adds `waits` to a stage's detail when there were any.
    fn into_detail(self, detail: &mut Value) {
        if !self.0.is_empty() {
            detail["waits"] = Value::Array(self.0);
        }
    }
}

fn request_stage(shared: &Shared, ctx: &mut StageContext<'_>) -> Result<StageOutput, StageError> {
    let cfg = &shared.config;
    let mut state = take(ctx)?;
    let started = cfg.pacer.now();
    state.started = Some(started);
    let mut waits = Waits::default();
    let (result, stats) = {
        let mut poller = Poller::new(
            &*shared.transport,
            &cfg.pacer,
            &cfg.poll,
            &state.token,
            started,
        )
        .on_wait(|w, phase| waits.note(ctx, w, phase));
        let result = poller.send_request(&cfg.query_id, &cfg.period);
        (result, poller.stats())
    };
    let mut detail = stats_detail(None, &stats);
    waits.into_detail(&mut detail);
    detail["queryId"] = json!(cfg.query_id);
    detail["period"] = json!(cfg.period);
    detail["url"] = json!(shared.transport.shown_url("SendRequest"));
    let requested = match result {
        Ok(r) => r,
        Err(e) => return Err(fail(ctx, e, detail)),
    };
    detail["referenceCode"] = json!(requested.reference);
    detail["replyUrl"] = json!(requested.url.as_deref().map(super::redact_url));
    ctx.merge_meta(&json!({"referenceCode": requested.reference}))
        .map_err(db)?;
    state.requested = Some(requested);
    ctx.set_state(state);
    Ok(StageOutput::with_detail(detail))
}

fn poll_stage(shared: &Shared, ctx: &mut StageContext<'_>) -> Result<StageOutput, StageError> {
    let cfg = &shared.config;
    let mut state = take(ctx)?;
    let requested = state.requested.take().ok_or_else(|| {
        StageError::fatal(
            "FLEX_STATE_LOST",
            "no reference code from the request stage",
        )
    })?;
    let first_reference = requested.reference.clone();
    let started = state.started.unwrap_or_else(|| cfg.pacer.now());
    let mut waits = Waits::default();
    let (result, stats) = {
        let mut poller = Poller::new(
            &*shared.transport,
            &cfg.pacer,
            &cfg.poll,
            &state.token,
            started,
        )
        .on_wait(|w, phase| waits.note(ctx, w, phase));
        let result = poller.poll(requested, &cfg.query_id, &cfg.period);
        (result, poller.stats())
    };
    let (requested, body) = match result {
        Ok(v) => v,
        Err(e) => {
            let mut detail = stats_detail(Some(&first_reference), &stats);
            waits.into_detail(&mut detail);
            return Err(fail(ctx, e, detail));
        }
    };
    let mut detail = stats_detail(Some(&requested.reference), &stats);
    waits.into_detail(&mut detail);
    detail["url"] = json!(shared.transport.shown_url("GetStatement"));
    if requested.reference != first_reference {
        detail["firstReferenceCode"] = json!(first_reference);
        ctx.merge_meta(&json!({"referenceCode": requested.reference}))
            .map_err(db)?;
    }
    state.requested = Some(requested);
    state.body = Some(body);
    ctx.set_state(state);
    Ok(StageOutput::with_detail(detail))
}

fn download_stage(_shared: &Shared, ctx: &mut StageContext<'_>) -> Result<StageOutput, StageError> {
    let mut state = take(ctx)?;
    let body = state
        .body
        .take()
        .ok_or_else(|| StageError::fatal("FLEX_STATE_LOST", "no statement body from poll"))?;
    let content_length = body.content_length();
    let bytes = match body.read_to_end() {
        Ok(b) => b,
        Err(e) => return Err(fail(ctx, e, json!({"contentLength": content_length}))),
    };
    let detail = json!({
        "bytes": bytes.len(),
        "contentLength": content_length,
        "sha256": crate::run::raw::sha256_hex(&bytes),
    });
    state.bytes = Some(bytes);
    ctx.set_state(state);
    Ok(StageOutput::with_detail(detail))
}

/// The section report of a scan, for the timeline: per statement its account, dates and
/// sections with row counts.
fn report_json(report: &StatementReport) -> Value {
    let statements: Vec<Value> = report
        .statements
        .iter()
        .map(|st| {
            let sections: serde_json::Map<String, Value> = st
                .sections
                .iter()
                .map(|s| (s.name.clone(), json!(s.rows)))
                .collect();
            json!({
                "accountId": st.account_id,
                "fromDate": st.from_date,
                "toDate": st.to_date,
                "period": st.period,
                "whenGenerated": st.when_generated,
                "sections": sections,
            })
        })
        .collect();
    json!({
        "rootType": report.root_type,
        "queryName": report.query_name,
        "declaredCount": report.declared_count,
        "statements": statements,
    })
}

/// Keeps a statement that failed its validation or check as a raw record marked
/// rejected (so it is never lost), then fails the stage with that code; the record's id
/// goes to the detail (`rejectedRawRecordId`) and to `meta_json`.
fn reject(
    ctx: &mut StageContext<'_>,
    state: &RunState,
    bytes: &[u8],
    code: &str,
    message: String,
    mut detail: Value,
) -> StageError {
    let reference = state.requested.as_ref().map(|r| r.reference.as_str());
    let stored = ctx.store_rejected_raw(
        &RawInput {
            source: RAW_SOURCE,
            upstream_ref: reference,
            content_type: "application/xml",
            bytes,
        },
        code,
        &message,
    );
    match stored {
        Ok(record) => {
            detail["rejectedRawRecordId"] = json!(record.id);
            detail["sha256"] = json!(record.sha256);
            let _ = ctx.merge_meta(&json!({"rejectedRawRecordId": record.id}));
        }
        Err(e) => detail["rejectedRawStoreError"] = json!(format!("{}: {e}", e.code())),
    }
    StageError::fatal(code, message).with_detail(detail)
}

fn section_stage(shared: &Shared, ctx: &mut StageContext<'_>) -> Result<StageOutput, StageError> {
    let state = take(ctx)?;
    let bytes = state
        .bytes
        .as_deref()
        .ok_or_else(|| StageError::fatal("FLEX_STATE_LOST", "no statement bytes"))?;
    let report = match scan_bytes(bytes) {
        Ok(r) => r,
        Err(e) => {
            let detail = json!({"bytes": bytes.len()});
            return Err(reject(ctx, &state, bytes, e.code(), e.to_string(), detail));
        }
    };
    let account = ctx.account_id().map(str::to_string);
    let policy = &shared.config.policy;
    let outcome = check_account(&report, policy, account.as_deref());
    let mut detail = report_json(&report);
    let warnings: Vec<String> = outcome
        .missing_reconcile
        .iter()
        .map(|m| format!("{}: {}", m.account, m.section))
        .collect();
    detail["warnings"] = json!(warnings);
    detail["missingRequired"] = json!(outcome.missing_required);
    detail["emptyRequired"] = json!(outcome.empty_required);
    let unknown = policy.unknown_sections();
    if !unknown.is_empty() {
        detail["unknownSections"] = json!(unknown);
    }
    if !warnings.is_empty() {
        ctx.merge_meta(&json!({"sectionWarnings": warnings}))
            .map_err(db)?;
    }
    if let Some(account) = &account {
        let present = report
            .statements
            .iter()
            .any(|s| s.account_id.as_deref() == Some(account));
        if !present {
            let message = format!("the statement holds no FlexStatement for account {account}");
            return Err(reject(
                ctx,
                &state,
                bytes,
                "FLEX_ACCOUNT_NOT_IN_STATEMENT",
                message,
                detail,
            ));
        }
    }
    match check_period(&report, &shared.config.period, account.as_deref()) {
        Ok(unchecked) if !unchecked.is_empty() => detail["periodUnchecked"] = json!(unchecked),
        Ok(_) => {}
        Err(e) => {
            detail["requestedPeriod"] = json!(shared.config.period);
            return Err(reject(ctx, &state, bytes, e.code(), e.to_string(), detail));
        }
    }
    if let Err(e) = outcome.into_result() {
        return Err(reject(ctx, &state, bytes, e.code(), e.to_string(), detail));
    }
    ctx.set_state(state);
    Ok(StageOutput::with_detail(detail))
}

fn persist_stage(_shared: &Shared, ctx: &mut StageContext<'_>) -> Result<StageOutput, StageError> {
    let state = take(ctx)?;
    let bytes = state
        .bytes
        .as_deref()
        .ok_or_else(|| StageError::fatal("FLEX_STATE_LOST", "no statement bytes"))?;
    let reference = state.requested.as_ref().map(|r| r.reference.as_str());
    let record = ctx
        .store_raw(&RawInput {
            source: RAW_SOURCE,
            upstream_ref: reference,
            content_type: "application/xml",
            bytes,
        })
        .map_err(db)?;
    Ok(StageOutput::with_detail(json!({
        "rawRecordId": record.id,
        "sha256": record.sha256,
        "bytes": record.size,
        "referenceCode": reference,
    })))
}

/// Builds the Flex pipeline for `config` (see the module docs). Refuses an invalid query
/// id, period or poll settings, and a base URL that is not https (or http to loopback).
pub fn build_pipeline(config: FlexConfig) -> Result<Pipeline> {
    super::client::validate_query_id(&config.query_id)?;
    config.period.validate()?;
    config.poll.validate()?;
    let transport: Arc<dyn FlexTransport> = match &config.transport {
        Some(t) => t.clone(),
        None => Arc::new(FlexClient::new(config.client.clone())?),
    };
    let name = config.pipeline_name();
    let scope = config.scope;
    let lease = config.lease();
    let shared = Arc::new(Shared { config, transport });
    let s = |f: fn(&Shared, &mut StageContext<'_>) -> Result<StageOutput, StageError>| {
        let shared = shared.clone();
        move |ctx: &mut StageContext<'_>| f(&shared, ctx)
    };
    Ok(Pipeline::builder(name)
        .scopes(&[scope])
        .lease(lease)
        .gate(Gate::Token, s(token_gate))
        .stage("request", s(request_stage))
        .stage("poll", s(poll_stage))
        .stage("download", s(download_stage))
        .stage("section_preflight", s(section_stage))
        .stage("persist", s(persist_stage))
        .build()?)
}

/// Builds the pipeline for `config` and runs it once, now (trigger `manual`), for
/// `account` (part of the lock key; when given, the statement must hold that account).
/// Returns the finished run (look at its `status`), or [`crate::Error::RunAlreadyActive`] when a
/// run of the same query and account is in progress.
///
/// Build the pipeline once with [`build_pipeline`] when running it repeatedly: its in-memory
/// state is per pipeline (the rate limiter is shared through [`FlexConfig::pacer`]).
pub fn run_once(engine: &Engine, config: &FlexConfig, account: Option<&str>) -> Result<Run> {
    let scope = config.scope;
    let p = build_pipeline(config.clone())?;
    let opts = TriggerOptions {
        account_id: account.map(str::to_string),
    };
    let mut outcomes = engine
        .runs()
        .trigger_with(&p, scope.into(), TriggerKind::Manual, &opts)?;
    outcomes
        .pop()
        .map(|o| o.result.map_err(FlexError::from))
        .unwrap_or_else(|| Err(FlexError::invalid("scope", "no run was started")))
}
