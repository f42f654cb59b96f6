//! `runledger.toml`: the daemon's configuration (Flex pipelines, schedules, modules, the
//! supervisor, the HTTP listen address), read with `toml` and serde, every key checked
//! (unknown keys refused), and `config check`, which prints what `serve` would run.
//!
//! It lives in the CLI, not the library: it names environment variables, listen addresses
//! and the CLI's own defaults. A host builds the same objects ([`FlexConfig`], `NewSchedule`,
//! `Module`, probes) directly in code.
//!
//! **Tokens never appear in the file.** `token_env` names the variable that holds the token
//! at run time; every string value that looks like a token (16 or more hex digits in a row,
//! or a 32+ character run of letters and digits with both in it) is refused, wherever it was
//! pasted.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runledger::flex::{self, FlexConfig, SectionPolicy, StatementPeriod, TokenSource};
use runledger::run::{
    check_pipeline_name, Module, Pipeline, PreflightConfig, ProbeError, ProbeSet, Scope,
    ScopeSelector, TriggerOptions,
};
use runledger::schedule::{Misfire, Rule, Zone};
use runledger::{Engine, NewSchedule, ScheduledRuns};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use toml::Spanned;

use crate::output::{CliResult, Failure};

/// The file read when `--config` is not given, if it exists in the working directory.
pub const DEFAULT_FILE: &str = "runledger.toml";

/// The actor of the audit rows of schedules written from the config file.
pub const ACTOR: &str = "config";

// ---- the file's shape (the contract of issue 14: extend it, never rename)

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    http: Option<HttpSection>,
    #[serde(default, rename = "pipeline")]
    pipelines: Vec<PipelineSpec>,
    #[serde(default, rename = "schedule")]
    schedules: Vec<ScheduleSpec>,
    #[serde(default)]
    supervisor: Option<SupervisorSection>,
    #[serde(default, rename = "module")]
    modules: Vec<ModuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Spanned<Plain>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Flex,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PolicyName {
    Activity,
    None,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ScopeName {
    Targets,
    Universe,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ScopeSel {
    Targets,
    Universe,
    Both,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum MisfireName {
    LatestOnly,
    All,
    Skip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSpec {
    name: Spanned<Plain>,
    kind: Kind,
    query_id: Spanned<Plain>,
    #[serde(default)]
    account: Option<Plain>,
    token_env: EnvName,
    #[serde(default)]
    require: Option<Spanned<Vec<Plain>>>,
    #[serde(default)]
    policy: Option<Spanned<PolicyName>>,
    #[serde(default)]
    reconcile: Option<Vec<Plain>>,
    #[serde(default)]
    base_url: Option<Spanned<Plain>>,
    #[serde(default)]
    period: Option<Spanned<Plain>>,
    #[serde(default)]
    scope: Option<ScopeName>,
    /// Wait after SendRequest before the first GetStatement (default 5000; IB's rate
    /// limits still apply: at least 1.1 s between two requests).
    #[serde(default)]
    first_poll_delay_ms: Option<Spanned<u64>>,
    /// Wait after the first "not ready" reply, growing 1.5 times (default 5000).
    #[serde(default)]
    poll_interval_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSpec {
    name: Spanned<Plain>,
    pipeline: Spanned<Plain>,
    rule: Spanned<Plain>,
    #[serde(default)]
    zone: Option<Spanned<Plain>>,
    #[serde(default)]
    scope: Option<Spanned<ScopeSel>>,
    #[serde(default)]
    misfire: Option<MisfireName>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorSection {
    #[serde(default)]
    stale_after: Option<u64>,
    #[serde(default)]
    auto_resume: Option<bool>,
    #[serde(default)]
    poll: Option<u64>,
    #[serde(default)]
    fire_threads: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleSpec {
    name: Spanned<Plain>,
    scope: ScopeSel,
    url: Spanned<Plain>,
    #[serde(default = "default_status")]
    expect_status: Spanned<u16>,
    #[serde(default)]
    domain: Option<Plain>,
}

fn default_status() -> Spanned<u16> {
    Spanned::new(0..0, 200)
}

/// A string value that is not a token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plain(String);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if looks_like_token(&s) {
            return Err(D::Error::custom(
                "this value looks like a token: a token never goes in the config file; \
                 put it in an environment variable and name the variable in token_env",
            ));
        }
        Ok(Plain(s))
    }
}

/// The name of an environment variable: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes, and
/// not a token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EnvName(String);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Plain(s) = Plain::deserialize(d)?;
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.as_bytes()[0].is_ascii_digit()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(D::Error::custom(
                "token_env is the NAME of the environment variable holding the token \
                 (letters, digits and '_', not starting with a digit), never the token",
            ));
        }
        Ok(EnvName(s))
    }
}

/// Whether `s` looks like a secret pasted into the file: 16 or more hex digits in a row (an
/// IB Flex token is 20-odd digits), or 32 or more letters and digits in a row mixing both.
pub fn looks_like_token(s: &str) -> bool {
    let b = s.as_bytes();
    let longest = |pred: &dyn Fn(u8) -> bool| {
        let mut best = 0;
        let mut start = None;
        for (i, &c) in b.iter().enumerate() {
            match (pred(c), start) {
                (true, None) => start = Some(i),
                (false, Some(st)) => {
                    best = best.max(i - st);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(st) = start {
            best = best.max(b.len() - st);
        }
        best
    };
    if longest(&|c: u8| c.is_ascii_hexdigit()) >= 16 {
        return true;
    }
    // A long alphanumeric run with both letters and digits (base64-like secrets).
    s.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        w.len() >= 32
            && w.bytes().any(|c| c.is_ascii_digit())
            && w.bytes().any(|c| c.is_ascii_alphabetic())
    })
}

// ---- what the file resolves to

/// A configured pipeline, checked.
#[derive(Debug, Clone)]
pub struct PipelineConf {
    /// Its name (the runs' `pipeline` column and lock key).
    pub name: String,
    /// The Flex settings (the token is read from `token_env` at each run).
    pub flex: FlexConfig,
    /// The account its runs are for (part of the lock key), if any.
    pub account: Option<String>,
    /// The variable holding the token.
    pub token_env: String,
    /// What `config check` shows.
    pub summary: Value,
}

impl PipelineConf {
    /// The scope its runs belong to.
    pub fn scope(&self) -> Scope {
        self.flex.scope
    }
}

/// A configured module: a catalog entry and its HTTP health check.
#[derive(Debug, Clone)]
pub struct ModuleConf {
    /// The catalog entry.
    pub module: Module,
    /// The health URL (https, or http to loopback).
    pub url: String,
    /// The status that means healthy.
    pub expect_status: u16,
}

/// Supervisor and scheduler settings from `[supervisor]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SupervisorConf {
    /// A running job without heartbeat for this many seconds is stale.
    pub stale_after: Option<u64>,
    /// Requeue stale jobs that have a checkpoint instead of pausing them.
    pub auto_resume: Option<bool>,
    /// The scheduler's longest sleep between ticks, in seconds.
    pub poll: Option<u64>,
    /// How many slots the scheduler fires at once.
    pub fire_threads: Option<usize>,
}

/// A checked config file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Where it was read from (`None`: no file, nothing configured).
    pub path: Option<PathBuf>,
    /// `[http] listen`.
    pub listen: Option<String>,
    /// `[[pipeline]]`s, in file order.
    pub pipelines: Vec<PipelineConf>,
    /// `[[schedule]]`s, in file order.
    pub schedules: Vec<NewSchedule>,
    /// `[[module]]`s, in file order.
    pub modules: Vec<ModuleConf>,
    /// `[supervisor]`.
    pub supervisor: SupervisorConf,
}

/// A config error at a place in the file.
fn at(
    path: &Path,
    src: &str,
    span: Option<Range<usize>>,
    message: impl std::fmt::Display,
) -> Failure {
    let place = match span {
        Some(r) if r.end > 0 || r.start > 0 => {
            let (line, col) = line_col(src, r.start);
            format!("{}:{line}:{col}", path.display())
        }
        _ => path.display().to_string(),
    };
    Failure {
        code: "CONFIG_INVALID".into(),
        message: format!("{place}: {message}"),
        exit: 2,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Config {
    /// The config named by `--config`, else `./runledger.toml` when present, else an
    /// empty one (nothing configured).
    pub fn load(explicit: Option<&Path>) -> CliResult<Config> {
        match explicit {
            Some(p) => Config::read(p),
            None if Path::new(DEFAULT_FILE).is_file() => Config::read(Path::new(DEFAULT_FILE)),
            None => Ok(Config::default()),
        }
    }

    /// Reads and checks the file at `path`.
    pub fn read(path: &Path) -> CliResult<Config> {
        let src = std::fs::read_to_string(path).map_err(|e| Failure {
            code: "CONFIG_INVALID".into(),
            message: format!("cannot read {}: {e}", path.display()),
            exit: 2,
        })?;
        Config::parse(path, &src)
    }

    /// Parses and checks `src` (read from `path`, which errors name).
    pub fn parse(path: &Path, src: &str) -> CliResult<Config> {
        let file: File = toml::from_str(src).map_err(|e| at(path, src, e.span(), e.message()))?;
        let err = |span: Range<usize>, m: String| at(path, src, Some(span), m);
        let mut cfg = Config {
            path: Some(path.to_path_buf()),
            ..Config::default()
        };
        if let Some(h) = &file.http {
            let listen = &h.listen.get_ref().0;
            listen.parse::<std::net::SocketAddr>().map_err(|_| {
                err(
                    h.listen.span(),
                    format!("listen {listen:?} is not an address like 127.0.0.1:8750"),
                )
            })?;
            cfg.listen = Some(listen.clone());
        }
        let mut names = BTreeSet::new();
        for p in &file.pipelines {
            let name = p.name.get_ref().0.clone();
            check_pipeline_name(&name).map_err(|e| err(p.name.span(), e.to_string()))?;
            if !names.insert(name.clone()) {
                return Err(err(
                    p.name.span(),
                    format!("a pipeline named {name:?} is configured twice"),
                ));
            }
            let mut conf = pipeline(p, &name, &err)?;
            // IB's rate limits are per token: pipelines reading the same variable share
            // one limiter (clones of a Pacer share it).
            if let Some(first) = cfg.pipelines.iter().find(|q| q.token_env == conf.token_env) {
                conf.flex.pacer = first.flex.pacer.clone();
            }
            cfg.pipelines.push(conf);
        }
        let mut schedule_names = BTreeSet::new();
        for s in &file.schedules {
            let name = s.name.get_ref().0.clone();
            if !schedule_names.insert(name.clone()) {
                return Err(err(
                    s.name.span(),
                    format!("a schedule named {name:?} is configured twice"),
                ));
            }
            let pipeline_name = &s.pipeline.get_ref().0;
            let Some(p) = cfg.pipelines.iter().find(|p| &p.name == pipeline_name) else {
                return Err(err(
                    s.pipeline.span(),
                    format!("no [[pipeline]] is named {pipeline_name:?}"),
                ));
            };
            let rule_text = &s.rule.get_ref().0;
            let rule: Rule = rule_text
                .parse()
                .map_err(|e: runledger::Error| err(s.rule.span(), e.to_string()))?;
            let zone_text = s
                .zone
                .as_ref()
                .map_or(crate::schedule::DEFAULT_ZONE, |z| z.get_ref().0.as_str());
            if let Err(e) = Zone::new(zone_text) {
                let span = s.zone.as_ref().map_or(s.name.span(), Spanned::span);
                return Err(err(span, e.to_string()));
            }
            let scope = match s.scope.as_ref().map(|s| (*s.get_ref(), s.span())) {
                None => ScopeSelector::from(p.scope()),
                Some((sel, span)) => {
                    let sel = match sel {
                        ScopeSel::Targets => ScopeSelector::Targets,
                        ScopeSel::Universe => ScopeSelector::Universe,
                        ScopeSel::Both => ScopeSelector::Both,
                    };
                    if !sel.scopes().contains(&p.scope()) || sel.scopes().len() > 1 {
                        return Err(err(
                            span,
                            format!("pipeline {:?} runs in scope {} only", p.name, p.scope()),
                        ));
                    }
                    sel
                }
            };
            let misfire = match s.misfire {
                None | Some(MisfireName::LatestOnly) => Misfire::LatestOnly,
                Some(MisfireName::All) => Misfire::All,
                Some(MisfireName::Skip) => Misfire::Skip,
            };
            let new =
                NewSchedule::new(&name, &p.name, scope.as_str(), &rule.to_string(), zone_text)
                    .misfire(misfire);
            cfg.schedules.push(new);
        }
        let mut module_names = BTreeSet::new();
        for m in &file.modules {
            let name = m.name.get_ref().0.clone();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !valid {
                return Err(err(
                    m.name.span(),
                    format!("module name {name:?} must be 1..=64 of [A-Za-z0-9_.-]"),
                ));
            }
            if !module_names.insert(name.clone()) {
                return Err(err(
                    m.name.span(),
                    format!("a module named {name:?} is configured twice"),
                ));
            }
            let url = m.url.get_ref().0.clone();
            check_probe_url(&url)
                .map_err(|reason| err(m.url.span(), format!("url {url:?}: {reason}")))?;
            let status = *m.expect_status.get_ref();
            if !(100..=599).contains(&status) {
                return Err(err(
                    m.expect_status.span(),
                    format!("expect_status {status} is not an HTTP status"),
                ));
            }
            let scopes = match m.scope {
                ScopeSel::Targets => vec![Scope::Targets],
                ScopeSel::Universe => vec![Scope::Universe],
                ScopeSel::Both => vec![Scope::Targets, Scope::Universe],
            };
            cfg.modules.push(ModuleConf {
                module: Module {
                    module: name,
                    domain: m
                        .domain
                        .as_ref()
                        .map_or_else(|| "http".into(), |d| d.0.clone()),
                    scopes,
                    enabled: true,
                },
                url,
                expect_status: status,
            });
        }
        if let Some(s) = &file.supervisor {
            cfg.supervisor = SupervisorConf {
                stale_after: s.stale_after,
                auto_resume: s.auto_resume,
                poll: s.poll,
                fire_threads: s.fire_threads,
            };
        }
        Ok(cfg)
    }

    /// The configured pipeline called `name`.
    /// This config with every pipeline's waits interruptible by `flag` (Flex's
    /// [`Pacer::with_interrupt`](runledger::flex::Pacer::with_interrupt)): once it is set, a
    /// run in progress ends failed `INTERRUPTED` within about 100 ms and frees its lock.
    pub fn interruptible(&self, flag: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> Config {
        let mut out = self.clone();
        for p in &mut out.pipelines {
            p.flex.pacer = p.flex.pacer.clone().with_interrupt(flag.clone());
        }
        out
    }

    pub fn pipeline(&self, name: &str) -> Option<&PipelineConf> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// The pipeline `runs trigger` uses: `name`, or the only configured one.
    pub fn pick(&self, name: Option<&str>) -> CliResult<&PipelineConf> {
        match name {
            Some(n) => self.pipeline(n).ok_or_else(|| self.unknown(n)),
            None if self.pipelines.len() == 1 => Ok(&self.pipelines[0]),
            None if self.pipelines.is_empty() => Err(Failure {
                code: "NO_PIPELINE".into(),
                message: format!(
                    "no pipeline is configured: write a [[pipeline]] in ./{DEFAULT_FILE} or pass --config FILE"
                ),
                exit: 2,
            }),
            None => Err(Failure {
                code: "INVALID_INPUT".into(),
                message: format!("several pipelines are configured: name one with --pipeline ({})", self.names().join(", ")),
                exit: 2,
            }),
        }
    }

    /// `UNKNOWN_PIPELINE` for `name` (exit 2).
    pub fn unknown(&self, name: &str) -> Failure {
        Failure {
            code: "UNKNOWN_PIPELINE".into(),
            message: format!(
                "no pipeline named {name:?} is configured{} (configured: {})",
                self.path
                    .as_ref()
                    .map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default(),
                if self.pipelines.is_empty() {
                    "none".to_string()
                } else {
                    self.names().join(", ")
                }
            ),
            exit: 2,
        }
    }

    /// The configured pipelines' names.
    pub fn names(&self) -> Vec<String> {
        self.pipelines.iter().map(|p| p.name.clone()).collect()
    }

    /// Adds the configured modules to the catalog (an existing entry is replaced by the
    /// configured one; modules not in the file are left alone).
    pub fn install_modules(&self, engine: &Engine) -> CliResult {
        for m in &self.modules {
            engine.runs().upsert_module(&m.module)?;
        }
        Ok(())
    }

    /// HTTP probes of the configured modules.
    pub fn probes(&self) -> ProbeSet {
        let mut set = ProbeSet::new();
        for m in &self.modules {
            let (url, expect) = (m.url.clone(), m.expect_status);
            set = set.with(m.module.module.clone(), move || http_probe(&url, expect));
        }
        set
    }

    /// The runtime pipeline of `p`: Flex's, behind the modules' preflight gate when modules
    /// are configured.
    pub fn build(&self, p: &PipelineConf) -> CliResult<Pipeline> {
        let pipeline = flex::build_pipeline(p.flex.clone()).map_err(flex_failure)?;
        if self.modules.is_empty() {
            return Ok(pipeline);
        }
        Ok(pipeline.with_preflight(self.probes(), PreflightConfig::default())?)
    }

    /// Every configured pipeline, for the scheduler (with its account).
    pub fn scheduled_runs(&self, engine: &Engine) -> CliResult<ScheduledRuns> {
        self.install_modules(engine)?;
        let mut runs = ScheduledRuns::new(engine.clone());
        for p in &self.pipelines {
            let opts = TriggerOptions {
                account_id: p.account.clone(),
            };
            runs = runs.register_with(self.build(p)?, opts);
        }
        Ok(runs)
    }

    /// What `config check` prints as JSON.
    pub fn summary(&self) -> Value {
        json!({
            "file": self.path,
            "http": {"listen": self.listen},
            "pipelines": self.pipelines.iter().map(|p| &p.summary).collect::<Vec<_>>(),
            "schedules": self.schedules.iter().map(|s| json!({
                "name": s.name, "pipeline": s.pipeline, "scope": s.scope, "rule": s.rule,
                "zone": s.zone, "misfire": s.misfire.as_str(),
            })).collect::<Vec<_>>(),
            "modules": self.modules.iter().map(|m| json!({
                "name": m.module.module, "domain": m.module.domain,
                "scopes": m.module.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "url": m.url, "expectStatus": m.expect_status,
            })).collect::<Vec<_>>(),
            "supervisor": {
                "staleAfter": self.supervisor.stale_after, "autoResume": self.supervisor.auto_resume,
                "poll": self.supervisor.poll, "fireThreads": self.supervisor.fire_threads,
            },
        })
    }
}

fn flex_failure(e: flex::FlexError) -> Failure {
    let code = e.code();
    Failure {
        code: code.into(),
        message: e.to_string(),
        exit: crate::output::exit_code(code),
    }
}

fn pipeline(
    p: &PipelineSpec,
    name: &str,
    err: &dyn Fn(Range<usize>, String) -> Failure,
) -> CliResult<PipelineConf> {
    let Kind::Flex = p.kind;
    let query_id = p.query_id.get_ref().0.clone();
    let mut flex = FlexConfig::new(&query_id);
    flex.name = Some(name.to_string());
    flex.token = TokenSource::Env(p.token_env.0.clone());
    let policy = match (&p.require, &p.policy) {
        (Some(r), Some(_)) => {
            return Err(err(
                r.span(),
                "give either require or policy, not both".into(),
            ))
        }
        (Some(r), None) => {
            let mut names = Vec::new();
            for n in r.get_ref() {
                let n = n.0.trim();
                if n.is_empty() {
                    return Err(err(r.span(), "an empty section name in require".into()));
                }
                names.push(n.to_string());
            }
            SectionPolicy {
                required: names,
                ..SectionPolicy::none()
            }
        }
        (None, Some(p)) if *p.get_ref() == PolicyName::None => SectionPolicy::none(),
        (None, _) => SectionPolicy::activity(),
    };
    flex.policy = policy;
    if let Some(rec) = &p.reconcile {
        let names: Vec<String> = rec.iter().map(|n| n.0.trim().to_string()).collect();
        if names.iter().any(String::is_empty) {
            return Err(err(
                p.name.span(),
                "an empty section name in reconcile".into(),
            ));
        }
        flex.policy.reconcile = names;
    }
    if let Some(url) = &p.base_url {
        flex.client.base_url = url.get_ref().0.clone();
    }
    if let Some(period) = &p.period {
        flex.period = parse_period(&period.get_ref().0).map_err(|m| err(period.span(), m))?;
    }
    if let Some(ms) = &p.first_poll_delay_ms {
        flex.poll.first_poll_delay = Duration::from_millis(*ms.get_ref());
    }
    if let Some(ms) = &p.poll_interval_ms {
        let v = *ms.get_ref();
        if v == 0 {
            return Err(err(ms.span(), "poll_interval_ms must be at least 1".into()));
        }
        flex.poll.poll_interval = Duration::from_millis(v);
        flex.poll.max_poll_interval = flex.poll.max_poll_interval.max(flex.poll.poll_interval);
    }
    flex.scope = match p.scope {
        None | Some(ScopeName::Targets) => Scope::Targets,
        Some(ScopeName::Universe) => Scope::Universe,
    };
    // Everything the library checks (query id, period, base URL) before anything runs.
    if let Err(e) = flex::build_pipeline(flex.clone()) {
        let text = e.to_string();
        let span = if text.contains("query") {
            p.query_id.span()
        } else {
            p.base_url.as_ref().map_or(p.name.span(), Spanned::span)
        };
        return Err(err(span, text));
    }
    let account = p.account.as_ref().map(|a| a.0.clone());
    let summary = json!({
        "name": name,
        "kind": "flex",
        "queryId": query_id,
        "account": account,
        "tokenEnv": p.token_env.0,
        "tokenSet": std::env::var_os(&p.token_env.0).is_some_and(|v| !v.is_empty()),
        "scope": flex.scope.as_str(),
        "policy": flex.policy,
        "period": flex.period,
        "baseUrl": flex.client.base_url,
    });
    Ok(PipelineConf {
        name: name.to_string(),
        flex,
        account,
        token_env: p.token_env.0.clone(),
        summary,
    })
}

/// `query` (the query's own dates), `last N days` (1..=365), or `yyyymmdd-yyyymmdd`.
fn parse_period(text: &str) -> Result<StatementPeriod, String> {
    let t = text.trim();
    if t == "query" {
        return Ok(StatementPeriod::Query);
    }
    if let Some(rest) = t.strip_prefix("last ") {
        let n = rest
            .trim_end_matches(" days")
            .trim_end_matches(" day")
            .trim();
        let days: u16 = n
            .parse()
            .map_err(|_| format!("period {text:?}: expected `last N days`"))?;
        let p = StatementPeriod::Days { days };
        p.validate().map_err(|e| e.to_string())?;
        return Ok(p);
    }
    if let Some((from, to)) = t.split_once('-') {
        return StatementPeriod::range(from.trim(), to.trim()).map_err(|e| e.to_string());
    }
    Err(format!(
        "period {text:?}: expected `query`, `last N days` or `yyyymmdd-yyyymmdd`"
    ))
}

/// A module's health URL: `https`, or `http` to a loopback host (the rule of Flex's base
/// URL); no user info.
fn check_probe_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|_| "not a url".to_string())?;
    let host = uri.host().ok_or("no host")?;
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        Some("http") => return Err("plain http is allowed only to a loopback host".into()),
        _ => return Err("scheme must be https".into()),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry user info".into());
    }
    Ok(())
}

/// One health check: GET `url`, healthy when it answers `expect`.
fn http_probe(url: &str, expect: u16) -> Result<(), ProbeError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(resp) if resp.status().as_u16() == expect => Ok(()),
        Ok(resp) => {
            let got = resp.status().as_u16();
            Err(ProbeError::new(
                format!("HTTP_{got}"),
                format!("answered {got}, expected {expect}"),
            ))
        }
        // ureq's message may quote the URL; the code is enough.
        Err(ureq::Error::Timeout(_)) => Err(ProbeError::new("TIMEOUT", "no answer within 10 s")),
        Err(_) => Err(ProbeError::new(
            "UNREACHABLE",
            "the health URL could not be reached",
        )),
    }
}

/// `config check`: validates the file and prints what `serve` would run.
pub fn check(config: &Config, out: crate::output::Out) -> CliResult {
    if config.path.is_none() {
        return Err(Failure {
            code: "CONFIG_INVALID".into(),
            message: format!(
                "no config file: ./{DEFAULT_FILE} does not exist and --config was not given"
            ),
            exit: 2,
        });
    }
    if out.json {
        out.json(&config.summary());
        return Ok(());
    }
    let path = config
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("{path}: ok");
    println!(
        "http listen: {}",
        config
            .listen
            .as_deref()
            .unwrap_or("- (serve --http ADDR to serve the API)")
    );
    let mut t = crate::output::Table::new(&[
        "pipeline",
        "kind",
        "query",
        "account",
        "scope",
        "token_env",
        "token",
        "policy",
    ]);
    for p in &config.pipelines {
        let s = &p.summary;
        let policy = if p.flex.policy == SectionPolicy::activity() {
            "activity".to_string()
        } else if p.flex.policy.required.is_empty() {
            "none".to_string()
        } else {
            format!("require {}", p.flex.policy.required.join(","))
        };
        t.row(vec![
            p.name.clone(),
            "flex".into(),
            p.flex.query_id.clone(),
            crate::output::opt(p.account.as_deref()),
            p.scope().to_string(),
            p.token_env.clone(),
            if s["tokenSet"] == true {
                "set"
            } else {
                "NOT SET"
            }
            .into(),
            policy,
        ]);
    }
    print!("{}", t.render(out.color));
    let mut t =
        crate::output::Table::new(&["schedule", "pipeline", "scope", "rule", "zone", "misfire"]);
    for s in &config.schedules {
        t.row(vec![
            s.name.clone(),
            s.pipeline.clone(),
            s.scope.clone(),
            s.rule.clone(),
            s.zone.clone(),
            s.misfire.to_string(),
        ]);
    }
    print!("{}", t.render(out.color));
    if !config.modules.is_empty() {
        let mut t = crate::output::Table::new(&["module", "scopes", "url", "expect"]);
        for m in &config.modules {
            let scopes: Vec<&str> = m.module.scopes.iter().map(|s| s.as_str()).collect();
            t.row(vec![
                m.module.module.clone(),
                scopes.join(","),
                m.url.clone(),
                m.expect_status.to_string(),
            ]);
        }
        print!("{}", t.render(out.color));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse(Path::new("runledger.toml"), src).map_err(|f| f.message)
    }

    const GOOD: &str = r#"
[http]
listen = "127.0.0.1:8750"

[[pipeline]]
name = "flex-main"
kind = "flex"
query_id = "123456"
account = "U1234567"
token_env = "IBKR_FLEX_TOKEN"
require = ["Trades", "CashReport"]
reconcile = ["ChangeInNAV"]
base_url = "http://127.0.0.1:9/FlexWebService"

[[schedule]]
name = "flex-daily"
pipeline = "flex-main"
rule = "daily 06:00"
zone = "Asia/Shanghai"
misfire = "latest_only"

[[module]]
name = "broker"
scope = "targets"
url = "https://example.com/health"
expect_status = 204
"#;

    #[test]
    fn the_issue_shape_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:8750"));
        let p = &c.pipelines[0];
        assert_eq!(p.flex.policy.required, ["Trades", "CashReport"]);
        assert_eq!(p.flex.policy.reconcile, ["ChangeInNAV"]);
        assert_eq!(p.account.as_deref(), Some("U1234567"));
        assert_eq!(c.schedules[0].scope, "targets");
        assert_eq!(c.modules[0].expect_status, 204);
    }

    #[test]
    fn a_token_pasted_anywhere_is_refused_with_its_line_and_column() {
        let src = GOOD.replace("IBKR_FLEX_TOKEN", "123456789012345678901234");
        let e = parse(&src).unwrap_err();
        assert!(e.starts_with("runledger.toml:10:13: "), "{e}");
        assert!(e.contains("looks like a token"), "{e}");
        let src = GOOD.replace("U1234567", "0123456789abcdef0123");
        assert!(parse(&src).unwrap_err().contains("looks like a token"));
        let src = GOOD.replace(
            "/FlexWebService",
            "/FlexWebService?t=aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3",
        );
        assert!(parse(&src).unwrap_err().contains("looks like a token"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_place() {
        let e = parse(&GOOD.replace("misfire = ", "misfyre = ")).unwrap_err();
        assert!(e.starts_with("runledger.toml:20:1: "), "{e}");
        assert!(e.contains("misfyre"), "{e}");
        let e =
            parse(&GOOD.replace("pipeline = \"flex-main\"", "pipeline = \"nope\"")).unwrap_err();
        assert!(e.starts_with("runledger.toml:17:12: "), "{e}");
        assert!(e.contains("no [[pipeline]] is named \"nope\""), "{e}");
        let e = parse(&GOOD.replace("daily 06:00", "daily 25:00")).unwrap_err();
        assert!(e.starts_with("runledger.toml:18:8: "), "{e}");
        let e = parse(&GOOD.replace("https://example.com", "http://example.com")).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let e = parse(&GOOD.replace("name = \"flex-main\"", "name = \"flex main\"")).unwrap_err();
        assert!(e.contains("[A-Za-z0-9_.-]"), "{e}");
        let e = parse(&GOOD.replace(
            "require = [\"Trades\", \"CashReport\"]",
            "require = [\"Trades\"]\npolicy = \"none\"",
        ))
        .unwrap_err();
        assert!(e.contains("either require or policy"), "{e}");
    }

    #[test]
    fn tokens_look_like_tokens_and_names_do_not() {
        for t in [
            "123456789012345678901234",
            "deadbeefdeadbeef",
            "x=0123456789ABCDEF",
        ] {
            assert!(looks_like_token(t), "{t}");
        }
        for s in [
            "IBKR_FLEX_TOKEN",
            "U1234567",
            "123456",
            "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService",
            "Asia/Shanghai",
        ] {
            assert!(!looks_like_token(s), "{s}");
        }
    }

    #[test]
    fn periods() {
        assert_eq!(parse_period("query").unwrap(), StatementPeriod::Query);
        assert_eq!(
            parse_period("last 7 days").unwrap(),
            StatementPeriod::Days { days: 7 }
        );
        assert!(parse_period("20260101-20260131").is_ok());
        assert!(parse_period("yesterday").is_err());
    }
}
