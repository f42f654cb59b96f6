//! `serve`: the scheduler and the supervisor in the foreground until Ctrl-C; the built-in
//! pipelines the scheduler fires; waiting for a stop signal.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use runledger::demo::{self, ProviderOptions};
use runledger::schedule::LoopOptions;
use runledger::{Engine, ScheduledRuns, Supervisor};

use crate::jobs::SuperviseArgs;
use crate::output::{ts, CliResult, Failure};

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Longest sleep of the scheduler between ticks, in seconds.
    #[arg(long, default_value_t = 30)]
    poll: u64,
    /// Also serve the HTTP API and event stream on this address (e.g. 127.0.0.1:8750).
    /// Mutations need `Authorization: Bearer $RUNLEDGER_API_TOKEN` when that is set; a
    /// non-loopback address is refused without it.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    #[command(flatten)]
    supervisor: SuperviseArgs,
}

/// The pipelines the CLI can run: the simulated market-data provider `ingest`
/// (`runledger::demo`).
pub fn built_in_pipelines(engine: &Engine) -> CliResult<ScheduledRuns> {
    demo::install(engine)?;
    let ingest = demo::pipeline(&ProviderOptions::default())?;
    Ok(ScheduledRuns::new(engine.clone()).register(ingest))
}

/// The HTTP API over `engine` with the built-in pipelines and probes and the tokens of the
/// environment, bound to `addr`.
pub fn start_http(engine: &Engine, addr: &str) -> CliResult<runledger::http::Server> {
    let provider = ProviderOptions::default();
    let opts = runledger::http::HttpOptions::default()
        .auth_from_env()
        .pipeline(demo::pipeline(&provider)?)
        .probes(demo::probes(&provider.failing_probes), provider.preflight);
    let open = opts.auth.is_open();
    let server = runledger::http::Server::start(engine.clone(), opts, addr)?;
    println!(
        "http API on http://{} ({})",
        server.addr(),
        if open {
            "open: no RUNLEDGER_API_TOKEN set, loopback only"
        } else {
            "bearer token required"
        }
    );
    Ok(server)
}

/// Installs the Ctrl-C (SIGINT) and SIGTERM handler; the receiver gets a message on the
/// first signal. Install it before announcing readiness, so no early signal is lost.
pub fn stop_signal() -> CliResult<Receiver<()>> {
    let (tx, rx) = channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| Failure::new("SIGNAL", format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(rx)
}

pub fn serve(engine: &Engine, args: ServeArgs) -> CliResult {
    let stop = stop_signal()?;
    let swept = engine.runs().sweep()?;
    let fire = Arc::new(built_in_pipelines(engine)?);
    let scheduler = engine.schedules().spawn(
        fire,
        LoopOptions {
            poll: Duration::from_secs(args.poll.max(1)),
            ..Default::default()
        },
    )?;
    let supervisor = Supervisor::new(engine.clone(), args.supervisor.options())?.spawn()?;
    let http = args
        .http
        .as_deref()
        .map(|addr| start_http(engine, addr))
        .transpose()?;
    let schedules = engine.schedules().list()?;
    println!(
        "serving {}: scheduler ({} schedules, next due {}) and supervisor; {} abandoned runs swept; Ctrl-C to stop",
        engine
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        schedules.len(),
        ts(engine.schedules().next_due()?),
        swept.len()
    );
    let _ = stop.recv();
    if let Some(server) = http {
        server.stop();
    }
    scheduler.stop();
    supervisor.stop();
    println!("stopped");
    Ok(())
}
