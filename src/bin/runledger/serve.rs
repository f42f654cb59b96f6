//! `serve`: the scheduler (firing the configured pipelines) and the supervisor in the
//! foreground until Ctrl-C; the config's schedules written to the database; waiting for a
//! stop signal.

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use runledger::schedule::LoopOptions;
use runledger::{Engine, Error, ScheduleEdit, Supervisor};

use crate::config::{self, Config};
use crate::jobs::SuperviseArgs;
use crate::output::{ts, CliResult, Failure};

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Longest sleep of the scheduler between ticks, in seconds [default: the config's
    /// `[supervisor] poll`, else 30].
    #[arg(long)]
    poll: Option<u64>,
    /// Also serve the HTTP API and event stream on this address (e.g. 127.0.0.1:8750)
    /// [default: the config's `[http] listen`, when set]. Mutations need
    /// `Authorization: Bearer $RUNLEDGER_API_TOKEN` when that is set; a non-loopback
    /// address is refused without it.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    #[command(flatten)]
    supervisor: SuperviseArgs,
}

/// The HTTP API over `engine` with the configured pipelines and probes and the tokens of
/// the environment, bound to `addr`.
pub fn start_http(
    engine: &Engine,
    addr: &str,
    config: &Config,
) -> CliResult<runledger::http::Server> {
    let mut opts = runledger::http::HttpOptions::default()
        .auth_from_env()
        .probes(config.probes(), runledger::run::PreflightConfig::default());
    for p in &config.pipelines {
        opts = opts.pipeline(config.build(p)?);
    }
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

/// Writes the config's schedules: a missing one is created, one whose pipeline, scope,
/// rule, zone or misfire policy differs is edited (both audited as actor `config`).
/// Schedules not in the file are left alone. Returns how many were created or edited.
pub fn sync_schedules(engine: &Engine, config: &Config) -> CliResult<usize> {
    let schedules = engine.schedules().by(config::ACTOR);
    let mut changed = 0;
    for new in &config.schedules {
        match schedules.get(&new.name) {
            Err(Error::NotFound { .. }) => {
                schedules.create(new)?;
                changed += 1;
            }
            Err(e) => return Err(e.into()),
            Ok(cur) => {
                let differs = |a: &str, b: &str| (a != b).then(|| b.to_string());
                let edit = ScheduleEdit {
                    pipeline: differs(&cur.pipeline, &new.pipeline),
                    scope: differs(&cur.scope, &new.scope),
                    rule: differs(&cur.rule.to_string(), &new.rule),
                    zone: differs(&cur.zone.to_string(), &new.zone),
                    misfire: (cur.misfire != new.misfire).then_some(new.misfire),
                };
                if edit != ScheduleEdit::default() {
                    schedules.edit(&new.name, &edit)?;
                    changed += 1;
                }
            }
        }
    }
    Ok(changed)
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

pub fn serve(engine: &Engine, args: ServeArgs, config: &Config) -> CliResult {
    let stop = stop_signal()?;
    // On the first signal, the runs in progress (scheduled or triggered over HTTP) stop
    // waiting and end failed INTERRUPTED, freeing their locks at once.
    let interrupt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = &config.interruptible(&interrupt);
    let swept = engine.runs().sweep()?;
    let fire = config.scheduled_runs(engine)?;
    let synced = sync_schedules(engine, config)?;
    let names = fire.names().join(", ");
    let poll = args.poll.or(config.supervisor.poll).unwrap_or(30).max(1);
    let scheduler = engine.schedules().spawn(
        Arc::new(fire),
        LoopOptions {
            poll: Duration::from_secs(poll),
            fire_threads: config.supervisor.fire_threads.unwrap_or(4).max(1),
            ..Default::default()
        },
    )?;
    let supervisor = Supervisor::new(
        engine.clone(),
        args.supervisor.options_with(&config.supervisor),
    )?
    .spawn()?;
    let listen = args.http.as_deref().or(config.listen.as_deref());
    let http = listen
        .map(|addr| start_http(engine, addr, config))
        .transpose()?;
    let schedules = engine.schedules().list()?;
    println!(
        "serving {}: scheduler ({} schedules, next due {}; pipelines: {}) and supervisor; {} abandoned runs swept; Ctrl-C to stop",
        engine
            .path()
            .map(|p| p.display().to_string())
            // never the URL: it may carry a password
            .unwrap_or_else(|| "the PostgreSQL ledger".into()),
        schedules.len(),
        ts(engine.schedules().next_due()?),
        if names.is_empty() { "none configured" } else { &names },
        swept.len()
    );
    if synced > 0 {
        println!("{synced} schedules written from the config");
    }
    let _ = stop.recv();
    // Runs in progress end INTERRUPTED (their waits end within ~100 ms); the scheduler's
    // stop then lets the firing threads record them. A second signal exits at once,
    // leaving any run still going to its lease.
    interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "stopping: runs in progress end INTERRUPTED and free their locks (Ctrl-C again to exit now)"
    );
    std::thread::spawn(move || {
        if stop.recv().is_ok() {
            eprintln!(
                "exiting now: runs in progress end ABANDONED when their lease expires \
                 (or at once with `runledger runs abandon ID --reason R`)"
            );
            std::process::exit(130);
        }
    });
    if let Some(server) = http {
        server.stop();
    }
    scheduler.stop();
    supervisor.stop();
    println!("stopped");
    Ok(())
}
