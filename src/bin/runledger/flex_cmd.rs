//! `flex check FILE`: the section report of a statement file against a section policy,
//! with the library's pure parsers (`runledger::flex`); `flex run`: one run of the Flex Web
//! Service pipeline (`runledger::flex::run_once`), its timeline printed.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Args, Subcommand};
use runledger::flex::{
    self, FlexConfig, Pacer, PolicyPreset, SectionPolicy, StatementPeriod, TokenSource, Wait,
};
use runledger::run::{RunFilter, RunStatus};
use runledger::{Clock, Engine, SystemClock, Timestamp};
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
    #[command(flatten)]
    policy: PolicyArgs,
    /// No progress line on a terminal: one line per long wait instead (as when stderr is
    /// not a terminal).
    #[arg(long)]
    quiet: bool,
}

/// The section policy flags of `flex run` and `flex check`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Required sections, comma-separated (names trimmed; replaces the preset's list).
    #[arg(long, value_delimiter = ',')]
    require: Option<Vec<String>>,
    /// Reconcile sections (warnings only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    reconcile: Option<Vec<String>>,
    /// Start from a preset: `activity` (the default when no section flag is given) or
    /// `none` (nothing required).
    #[arg(long)]
    policy: Option<String>,
}

impl PolicyArgs {
    /// The policy, after warning on stderr about names that are not IB section names.
    fn build(&self) -> Result<SectionPolicy, Failure> {
        let preset = self
            .policy
            .as_deref()
            .map(str::parse::<PolicyPreset>)
            .transpose()?;
        let policy =
            SectionPolicy::from_parts(preset, self.require.as_deref(), self.reconcile.as_deref())?;
        let unknown = policy.unknown_sections();
        if !unknown.is_empty() {
            eprintln!(
                "warning: not IB Flex section names (check the spelling): {}",
                unknown.join(", ")
            );
        }
        Ok(policy)
    }
}

/// `flex check` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["file", "raw"])))]
pub struct CheckArgs {
    /// The statement (FlexQueryResponse XML).
    file: Option<PathBuf>,
    /// Re-check a stored statement: the raw record with this id (see `raw list`).
    #[arg(long, value_name = "ID")]
    raw: Option<i64>,
    /// Check only this account's statement.
    #[arg(long)]
    account: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

pub fn flex(db: &Path, out: Out, cmd: FlexCmd) -> CliResult {
    match cmd {
        FlexCmd::Check(args) => check(db, out, args),
        FlexCmd::Run(args) => run(db, out, args),
    }
}

/// The exit status of a run ended by Ctrl-C / SIGTERM (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: u8 = 130;

/// The wait in progress, for the terminal's progress line: what, and when it began.
type CurrentWait = Arc<Mutex<Option<(Wait, Timestamp)>>>;

fn run(db: &Path, out: Out, args: RunArgs) -> CliResult {
    let policy = args.policy.build()?;
    let engine = Engine::open(db)?;
    let mut config = FlexConfig::new(&args.query_id);
    config.token = TokenSource::Env(args.token_env);
    config.policy = policy;
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        config.period = StatementPeriod::range(from, to)?;
    }
    if let Some(url) = args.base_url {
        config.client.base_url = url;
    }
    // Ctrl-C / SIGTERM: the run stops waiting, ends failed INTERRUPTED and frees its lock
    // at once; a second one exits without waiting.
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            // Never a panic from a closed stderr inside the signal handler's thread.
            let _ = writeln!(
                std::io::stderr(),
                "\ninterrupted: ending the run (Ctrl-C again to quit at once)"
            );
        });
    }
    let live = !out.json && !args.quiet && std::io::stderr().is_terminal();
    let current: CurrentWait = Arc::default();
    let shown = current.clone();
    config.pacer = Pacer::system()
        .with_interrupt(interrupt)
        .observe_waits(move |w: &Wait| {
            if live {
                *shown.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((w.clone(), SystemClock.now()));
            } else {
                let _ = writeln!(std::io::stderr(), "flex run: {}", describe_wait(w));
            }
        });
    let progress = live.then(|| Progress::start(db, current));
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
            let exit = match code.as_str() {
                "INTERRUPTED" => EXIT_INTERRUPTED,
                c => exit_code(c),
            };
            Err(Failure {
                exit,
                code,
                message,
            })
        }
    }
}

/// `waiting 60s: throttled by IB (1018): backing off (FLEX_1018, retry 1)`.
fn describe_wait(w: &Wait) -> String {
    let after = match &w.code {
        Some(code) => format!(" ({code}, retry {})", w.retry),
        None => String::new(),
    };
    format!(
        "waiting {}s: {}{after}",
        w.planned.as_secs_f64().round(),
        w.reason.describe()
    )
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
    fn start(db: &Path, current: CurrentWait) -> Progress {
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
                    let now = engine.now();
                    let secs = now.millis_since(run.started_at) / 1000;
                    let wait = current
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                        .filter(|(w, began)| {
                            now.millis_since(*began) < w.planned.as_millis() as i64
                        });
                    let waiting = match wait {
                        Some((w, began)) => {
                            let left = (w.planned.as_millis() as i64 - now.millis_since(began))
                                .max(0)
                                / 1000;
                            format!("{} ({left}s left)", w.reason.describe())
                        }
                        None => String::new(),
                    };
                    bar.set_message(format!(
                        "flex run {}: {stage:<20} {secs:>4}s {waiting}",
                        run.id
                    ));
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

fn check(db: &Path, out: Out, args: CheckArgs) -> CliResult {
    let policy = args.policy.build()?;
    let scanned = match (&args.file, args.raw) {
        (Some(path), _) => {
            let file = File::open(path)
                .map_err(|e| Failure::new("IO", format!("cannot open {}: {e}", path.display())))?;
            flex::scan(BufReader::new(file))
        }
        (None, Some(id)) => {
            // Only a stored statement needs the database; a file is checked without one.
            let engine = Engine::open(db)?;
            let record = engine.runs().raw_record(id)?;
            let bytes = engine.runs().raw_payload(&record.sha256)?;
            flex::scan_bytes(&bytes)
        }
        (None, None) => return Err(Failure::new("INVALID_INPUT", "give a FILE or --raw ID")),
    };
    let report = match scanned {
        Ok(r) => r,
        Err(e) => {
            if out.json {
                let position = match &e {
                    flex::ParseError::Malformed { position, .. }
                    | flex::ParseError::Truncated { position, .. } => Some(*position),
                    _ => None,
                };
                out.json(&json!({"error": {
                    "code": e.code(),
                    "message": e.to_string(),
                    "position": position,
                }}));
            }
            return Err(flex::FlexError::from(e).into());
        }
    };
    let outcome = flex::check_account(&report, &policy, args.account.as_deref());

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
