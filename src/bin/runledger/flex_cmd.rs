//! `flex check FILE`: the section report of a statement file against a section policy,
//! with the library's pure parsers (`runledger::flex`); `flex run`: one run of the Flex Web
//! Service pipeline (`runledger::flex::run_once`), its timeline printed.

use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use clap::{Args, Subcommand};
use runledger::flex::{self, FlexConfig, SectionPolicy, StatementPeriod, TokenSource};
use runledger::run::{RunFilter, RunStatus};
use runledger::Engine;
use serde_json::json;

use crate::output::{exit_code, opt, CliResult, Failure, Out, Table};
use crate::runs::print_run;

/// Interactive Brokers Flex statements.
#[derive(Debug, Subcommand)]
pub enum FlexCmd {
    /// Scan a statement file and check its sections (exit 3 when a required one is missing).
    Check(CheckArgs),
    /// Request, poll, download, check and persist one statement; print the run's timeline
    /// (non-zero exit with the error code when the run fails).
    Run(RunArgs),
}

/// `flex run` arguments. The token is read from the environment, never from the command line.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The Flex query id.
    #[arg(long)]
    query_id: String,
    /// The account the statement is for (part of the run's lock key).
    #[arg(long)]
    account: Option<String>,
    /// First day, yyyymmdd (with --to: overrides the query's dates).
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Last day, yyyymmdd.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// The environment variable holding the token.
    #[arg(long, default_value = flex::DEFAULT_TOKEN_ENV)]
    token_env: String,
    /// The service's base URL (a proxy, or a loopback mock); https, or http to loopback.
    #[arg(long)]
    base_url: Option<String>,
}

/// `flex check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The statement (FlexQueryResponse XML).
    file: PathBuf,
    /// Required sections, comma-separated (default with neither flag: the activity policy).
    #[arg(long, value_delimiter = ',')]
    require: Option<Vec<String>>,
    /// Reconcile sections (warnings only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    reconcile: Option<Vec<String>>,
}

pub fn flex(db: &Path, out: Out, cmd: FlexCmd) -> CliResult {
    match cmd {
        FlexCmd::Check(args) => check(out, args),
        FlexCmd::Run(args) => run(db, out, args),
    }
}

fn run(db: &Path, out: Out, args: RunArgs) -> CliResult {
    let engine = Engine::open(db)?;
    let mut config = FlexConfig::new(&args.query_id);
    config.token = TokenSource::Env(args.token_env);
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        config.period = StatementPeriod::range(from, to)?;
    }
    if let Some(url) = args.base_url {
        config.client.base_url = url;
    }
    let progress = (!out.json && std::io::stderr().is_terminal()).then(|| Progress::start(db));
    let result = flex::run_once(&engine, &config, args.account.as_deref());
    drop(progress);
    let run = result?;
    if out.json {
        out.json(&run);
    } else {
        print_run(out, &run);
    }
    match run.status {
        RunStatus::Success => Ok(()),
        _ => {
            let code = run
                .error_code
                .clone()
                .unwrap_or_else(|| "RUN_FAILED".into());
            let message = run.error_message.clone().unwrap_or_default();
            Err(Failure {
                exit: exit_code(&code),
                code,
                message,
            })
        }
    }
}

/// A one-line progress display on a terminal while a run waits on the service: the stage
/// in progress and how long it has been running, read from the run's own timeline. Drawn
/// by indicatif's spinner on stderr (hidden when stderr is not a terminal), cleared when
/// done.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(db: &Path) -> Progress {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let db = db.to_path_buf();
        let thread = std::thread::spawn(move || {
            let Ok(engine) = Engine::open(&db) else {
                return;
            };
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(250)) {
                let active = engine.runs().list(&RunFilter {
                    status: Some(RunStatus::Started),
                    limit: 1,
                    ..Default::default()
                });
                if let Some(run) = active.ok().and_then(|r| r.into_iter().next()) {
                    let stage = run
                        .timeline
                        .last()
                        .map(|e| e.stage.clone())
                        .unwrap_or_default();
                    let secs = engine.now().millis_since(run.started_at) / 1000;
                    bar.set_message(format!("flex run {}: {stage:<20} {secs:>4}s", run.id));
                    bar.tick();
                }
            }
            bar.finish_and_clear();
        });
        Progress {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn check(out: Out, args: CheckArgs) -> CliResult {
    let policy = if args.require.is_none() && args.reconcile.is_none() {
        SectionPolicy::activity()
    } else {
        SectionPolicy {
            required: args.require.unwrap_or_default(),
            reconcile: args.reconcile.unwrap_or_default(),
            ..SectionPolicy::none()
        }
    };
    let file = File::open(&args.file)
        .map_err(|e| Failure::new("IO", format!("cannot open {}: {e}", args.file.display())))?;
    let report = flex::scan(BufReader::new(file)).map_err(flex::FlexError::from)?;
    let outcome = flex::check(&report, &policy);
    if out.json {
        out.json(&json!({"report": report, "policy": policy, "check": outcome}));
    } else {
        println!(
            "{} root {}, {} statement(s), {} bytes",
            out.bold("statement"),
            report.root_type.as_str(),
            report.statements.len(),
            report.bytes
        );
        let mut t = Table::new(&["account", "from", "to", "period", "section", "rows"]);
        for st in &report.statements {
            for s in &st.sections {
                t.row(vec![
                    opt(st.account_id.as_deref()),
                    opt(st.from_date.as_deref()),
                    opt(st.to_date.as_deref()),
                    opt(st.period.as_deref()),
                    s.name.clone(),
                    s.rows.to_string(),
                ]);
            }
        }
        print!("{}", t.render(out.color));
        let mut c = Table::new(&["account", "section", "policy", "missing", "verdict"]);
        let mut add = |list: &[flex::MissingSection], policy: &str, verdict: &str| {
            for m in list {
                let missing = serde_json::to_value(m.missing)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                c.row(vec![
                    m.account.clone(),
                    m.section.clone(),
                    policy.into(),
                    missing,
                    verdict.into(),
                ]);
            }
        };
        add(&outcome.missing_required, "required", "error");
        add(&outcome.empty_required, "required", "error");
        add(&outcome.missing_reconcile, "reconcile", "warning");
        if c.is_empty() {
            println!("sections: every required and reconcile section present");
        } else {
            print!("{}", c.render(out.color));
        }
    }
    outcome.into_result()?;
    Ok(())
}
