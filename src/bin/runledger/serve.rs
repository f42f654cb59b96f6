//! `serve`: the scheduler and the supervisor in the foreground until Ctrl-C; the built-in
//! pipelines the scheduler fires; waiting for a stop signal.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use crate::provider::{self as demo, ProviderOptions};
use clap::Args;
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
    #[command(flatten)]
    supervisor: SuperviseArgs,
}

/// The pipelines the CLI can run: the simulated market-data provider `ingest`
/// (`provider.rs`).
pub fn built_in_pipelines(engine: &Engine) -> CliResult<ScheduledRuns> {
    demo::install(engine)?;
    let ingest = demo::pipeline(&ProviderOptions::default())?;
    Ok(ScheduledRuns::new(engine.clone()).register(ingest))
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
    scheduler.stop();
    supervisor.stop();
    println!("stopped");
    Ok(())
}
