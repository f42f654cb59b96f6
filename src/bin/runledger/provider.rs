//! A simulated market-data provider: the `ingest` pipeline the CLI's `demo` runs (and
//! tests). It lives in the binary, not the library: a host brings its own pipelines, and
//! `serve`, `runs trigger`, `schedule tick` and `preflight` run those of `runledger.toml`.
//!
//! **A demo, not a data source.** Nothing here opens a socket: probes answer from a
//! configured list of failing modules, and the runner stages compute small deterministic
//! "bars" from the symbol names.
//!
//! The provider has four modules ([`modules`]): `quotes` and `calendar` serve both scopes,
//! `fundamentals` and `estimates` serve only `universe`. The pipeline ([`pipeline`]) has:
//! - gate `preflight`: probes every stale or untested module of the run's scope and records
//!   the results (it fails only if the probing itself fails);
//! - gate `readiness`: fails with `MODULE_NOT_READY` unless every enabled module of the
//!   scope has a fresh, successful probe — so a failing universe module blocks `universe`
//!   runs and never `targets` runs (pool isolation);
//! - runners `fetch` (bars for the scope's symbols), `normalize` (one CSV line per bar),
//!   `persist` (stores the CSV as a raw record of the run).
//!
//! [`ProviderOptions::latency`] is called with each stage's name and simulated latency: a
//! no-op by default; the `demo` command advances its manual clock so timelines show
//! durations (and triggers a second run from inside `fetch` to show the lock).
//!

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use runledger::run::{
    Gate, Module, Pipeline, PreflightConfig, ProbeError, ProbeSet, RawInput, Scope, StageError,
    StageOutput,
};
use runledger::{Engine, Result};

/// The simulated provider's pipeline name.
pub const PIPELINE: &str = "ingest";

/// The simulated provider's raw-record source.
pub const SOURCE: &str = "demo_provider";

/// See [`ProviderOptions::latency`].
pub type Latency = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// What the simulated provider does.
#[derive(Clone)]
pub struct ProviderOptions {
    /// Modules whose probe fails (with code `HTTP_503`).
    pub failing_probes: Vec<String>,
    /// Called at the start of each stage with the stage's name and its simulated latency
    /// (default: returns at once).
    pub latency: Latency,
    /// Preflight freshness threshold and policy.
    pub preflight: PreflightConfig,
}

impl std::fmt::Debug for ProviderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderOptions")
            .field("failing_probes", &self.failing_probes)
            .field("preflight", &self.preflight)
            .finish()
    }
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            failing_probes: Vec::new(),
            latency: Arc::new(|_, _| {}),
            preflight: PreflightConfig::default(),
        }
    }
}

/// The provider's module catalog.
pub fn modules() -> Vec<Module> {
    let m = |name: &str, domain: &str, scopes: &[Scope]| Module {
        module: name.into(),
        domain: domain.into(),
        scopes: scopes.to_vec(),
        enabled: true,
    };
    vec![
        m("calendar", "reference", &[Scope::Targets, Scope::Universe]),
        m("estimates", "research", &[Scope::Universe]),
        m("fundamentals", "research", &[Scope::Universe]),
        m("quotes", "market_data", &[Scope::Targets, Scope::Universe]),
    ]
}

/// Adds the provider's modules that are not in the catalog yet (an operator's changes to
/// existing ones, such as disabling a module, are kept).
pub fn install(engine: &Engine) -> Result<()> {
    let runs = engine.runs();
    let existing = runs.modules()?;
    for m in modules() {
        if !existing.iter().any(|e| e.module == m.module) {
            runs.upsert_module(&m)?;
        }
    }
    Ok(())
}

/// The provider's symbols for `scope`.
pub fn symbols(scope: Scope) -> &'static [&'static str] {
    match scope {
        Scope::Targets => &["AAPL", "MSFT", "NVDA"],
        Scope::Universe => &["AAPL", "AMZN", "GOOGL", "META", "MSFT", "NVDA", "TSLA"],
    }
}

/// Probe functions for every module; those in `failing` answer `HTTP_503`.
pub fn probes(failing: &[String]) -> ProbeSet {
    let mut set = ProbeSet::new();
    for m in modules() {
        let fails = failing.contains(&m.module);
        let name = m.module.clone();
        set = set.with(m.module, move || {
            if fails {
                Err(ProbeError::new(
                    "HTTP_503",
                    format!("{name}: service unavailable (simulated)"),
                ))
            } else {
                Ok(())
            }
        });
    }
    set
}

/// A deterministic price in cents for `symbol` (the simulated "market").
fn price_cents(symbol: &str) -> u64 {
    symbol
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % 90_000
        + 5_000
}

/// The `fetch` stage's bars as CSV text (`symbol,close` and one line per bar).
fn to_csv(fetched: Option<&serde_json::Value>) -> String {
    let mut csv = String::from("symbol,close\n");
    let bars = fetched.and_then(|d| d["bars"].as_array());
    for b in bars.into_iter().flatten() {
        let cents = b["close_cents"].as_u64().unwrap_or(0);
        let symbol = b["symbol"].as_str().unwrap_or("?");
        csv.push_str(&format!("{symbol},{}.{:02}\n", cents / 100, cents % 100));
    }
    csv
}

/// The simulated provider's `ingest` pipeline; see the module docs.
pub fn pipeline(opts: &ProviderOptions) -> Result<Pipeline> {
    let probes = probes(&opts.failing_probes);
    let config = opts.preflight;
    let wait = |stage: &'static str, ms: u64| {
        let latency = opts.latency.clone();
        move || latency(stage, Duration::from_millis(ms))
    };
    let (w_pre, w_ready, w_fetch, w_norm, w_persist) = (
        wait("preflight", 120),
        wait("readiness", 5),
        wait("fetch", 420),
        wait("normalize", 35),
        wait("persist", 15),
    );
    Pipeline::builder(PIPELINE)
        .gate(Gate::Preflight, move |ctx| {
            w_pre();
            let snap = ctx
                .engine()
                .runs()
                .preflight(ctx.scope(), &probes, &config)?;
            Ok(StageOutput::with_detail(json!({"probed": snap.probed})))
        })
        .gate(Gate::Readiness, move |ctx| {
            w_ready();
            let snap = ctx.engine().runs().readiness(ctx.scope(), &config)?;
            if snap.ready {
                Ok(StageOutput::with_detail(snap.summary()))
            } else {
                Err(StageError::fatal("MODULE_NOT_READY", snap.why_not())
                    .with_detail(snap.summary()))
            }
        })
        .stage("fetch", move |ctx| {
            w_fetch();
            let bars: Vec<_> = symbols(ctx.scope())
                .iter()
                .map(|s| json!({"symbol": s, "close_cents": price_cents(s)}))
                .collect();
            Ok(StageOutput::with_detail(json!({"bars": bars})))
        })
        .stage("normalize", move |ctx| {
            w_norm();
            let csv = to_csv(ctx.output("fetch"));
            let rows = csv.lines().count().saturating_sub(1);
            Ok(StageOutput::with_detail(
                json!({"rows": rows, "format": "csv"}),
            ))
        })
        .stage("persist", move |ctx| {
            w_persist();
            let csv = to_csv(ctx.output("fetch"));
            let upstream = format!("bars/{}", ctx.scope());
            let rec = ctx.store_raw(&RawInput {
                source: SOURCE,
                upstream_ref: Some(&upstream),
                content_type: "text/csv",
                bytes: csv.as_bytes(),
            })?;
            Ok(StageOutput::with_detail(
                json!({"rawRecordId": rec.id, "bytes": rec.size}),
            ))
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_universe_probe_blocks_universe_runs_only() {
        use runledger::{ScopeSelector, TriggerKind};

        let engine = Engine::open_in_memory().unwrap();
        install(&engine).unwrap();
        let opts = ProviderOptions {
            failing_probes: vec!["fundamentals".into()],
            ..Default::default()
        };
        let pipeline = pipeline(&opts).unwrap();
        let out = engine
            .runs()
            .trigger(&pipeline, ScopeSelector::Both, TriggerKind::Manual)
            .unwrap();
        let targets = out[0].result.as_ref().unwrap();
        let universe = out[1].result.as_ref().unwrap();
        assert_eq!(targets.status.as_str(), "success");
        assert_eq!(universe.error_code.as_deref(), Some("MODULE_NOT_READY"));
        assert_eq!(universe.meta["blockedStage"], "readiness");
    }

    #[test]
    fn prices_are_deterministic_and_in_range() {
        assert_eq!(price_cents("AAPL"), price_cents("AAPL"));
        assert_ne!(price_cents("AAPL"), price_cents("MSFT"));
        for s in symbols(Scope::Universe) {
            assert!((5_000..95_000).contains(&price_cents(s)), "{s}");
        }
    }
}
