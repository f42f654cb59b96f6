//! The `runledger` command-line tool: a thin shell over the library. Each command group
//! lives in its own module; `output` owns tables, JSON, colour and exit codes.

// Every `print!`/`println!` of the CLI goes through `output::write_stdout`, which survives
// a closed stdout (`runledger jobs list | head -1`): these shadow std's macros in every
// module declared below.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

macro_rules! println {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod backup;
mod config;
mod copy;
mod demo;
mod doctor;
mod flex_cmd;
mod flex_mock;
mod jobs;
mod output;
mod pg_cmd;
mod provider;
mod raw_cmd;
mod runbook_cmd;
mod runs;
mod schedule;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runledger::Engine;

use output::{CliResult, Out};

/// Durable background work in one SQLite file: jobs, ingestion runs, schedules.
///
/// Exit codes: 0 ok, 1 error, 2 usage (or an argument the library rejected),
/// 3 validation failure (MISSING_REQUIRED_SECTION, unreadable statement), 4 RUN_ALREADY_ACTIVE.
#[derive(Debug, Parser)]
#[command(name = "runledger", version, about)]
struct Cli {
    /// The database file [default: ./runledger.db; for `demo`: ./runledger-demo.db].
    #[arg(long, global = true, env = "RUNLEDGER_DB")]
    db: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The config file: pipelines, schedules, modules, supervisor, HTTP listen address
    /// [default: ./runledger.toml when present]. See docs/config.md.
    #[arg(long, global = true, env = "RUNLEDGER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or migrate the database; print its path and schema version.
    Init,
    /// Show runledger's whole job, end to end, on a fresh database (./runledger-demo.db).
    Demo(demo::DemoArgs),
    /// The config file: check it and print what `serve` would run (exit 2 when invalid).
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Ingestion runs: list, show, sweep, trigger, abandon.
    Runs {
        #[command(subcommand)]
        cmd: runs::RunsCmd,
    },
    /// Probe a scope's configured modules now and print its readiness.
    Preflight(runs::PreflightArgs),
    /// Module probes.
    Probes {
        #[command(subcommand)]
        cmd: runs::ProbesCmd,
    },
    /// Durable jobs: list, show, events, pause, resume, cancel, restart.
    Jobs {
        #[command(subcommand)]
        cmd: jobs::JobsCmd,
    },
    /// Rescue jobs whose worker stopped heartbeating (once, or until Ctrl-C).
    Supervise(jobs::SuperviseArgs),
    /// Schedules: list, add, enable, disable, tick.
    Schedule {
        #[command(subcommand)]
        cmd: schedule::ScheduleCmd,
    },
    /// Run the scheduler (the configured pipelines) and the supervisor until Ctrl-C.
    Serve(serve::ServeArgs),
    /// List the operator queries of runbook.sql, or run one by name.
    Runbook(runbook_cmd::RunbookArgs),
    /// Check every invariant of the database from SQL; print each anomaly (exit 1 on errors).
    Doctor(doctor::DoctorArgs),
    /// Move a SQLite ledger into an empty PostgreSQL ledger (feature `postgres`):
    /// `copy --from FILE.db --to postgres://...`; verified by doctor before it commits.
    Copy(copy::CopyArgs),
    /// Write a consistent copy of the live database to FILE, verified by doctor.
    Backup(backup::BackupArgs),
    /// Stored raw payloads (downloaded statements, rejected ones too): list, export.
    Raw {
        #[command(subcommand)]
        cmd: raw_cmd::RawCmd,
    },
    /// Interactive Brokers Flex statements.
    Flex {
        #[command(subcommand)]
        cmd: flex_cmd::FlexCmd,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validate the file and print the pipelines, schedules and modules `serve` would run.
    Check,
}

fn main() -> ExitCode {
    let cli = parse();
    let out = Out::new(cli.json);
    match run(cli, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error [{}]: {}", f.code, f.message);
            ExitCode::from(f.exit)
        }
    }
}

/// The command line, with `--version` saying which tz database schedules use
/// (`runledger 0.1.0 (tzdb 2025b (system, /usr/share/zoneinfo))`).
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let version = format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        runledger::schedule::tzdb()
    );
    // Built once per process: the leak is the one version string.
    let version: &'static str = Box::leak(version.into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn run(cli: Cli, out: Out) -> CliResult {
    let db = |default: &str| cli.db.clone().unwrap_or_else(|| PathBuf::from(default));
    if let Command::Copy(args) = cli.command {
        return copy::copy(args, out);
    }
    // A PostgreSQL ledger: the commands runledger::pg supports, never a file named like it.
    if let Some(url) = cli.db.as_deref().filter(|d| pg_cmd::is_postgres(d)) {
        if !matches!(cli.command, Command::Config { .. }) {
            return pg_cmd::run(
                &url.to_string_lossy(),
                cli.command,
                out,
                cli.config.as_deref(),
            );
        }
    }
    if let Command::Demo(args) = cli.command {
        return demo::demo(&db(demo::DEFAULT_DEMO_DB), out, args);
    }
    if let Command::Flex { cmd } = cli.command {
        return flex_cmd::flex(&db("./runledger.db"), out, cmd);
    }
    let load = || config::Config::load(cli.config.as_deref());
    if let Command::Config {
        cmd: ConfigCmd::Check,
    } = cli.command
    {
        return config::check(&load()?, out);
    }
    let path = db("./runledger.db");
    if let Command::Doctor(args) = cli.command {
        return doctor::doctor_at(&path, out, args);
    }
    let engine = Engine::open(&path)?;
    match cli.command {
        Command::Init => init(&engine, &path, out),
        Command::Runs { cmd } => runs::runs(&engine, out, cmd, &load),
        Command::Preflight(args) => runs::preflight(&engine, out, args, &load()?),
        Command::Probes { cmd } => runs::probes(&engine, out, cmd, &load()?),
        Command::Jobs { cmd } => jobs::jobs(&engine, out, cmd),
        Command::Supervise(args) => jobs::supervise(&engine, out, args, &load()?.supervisor),
        Command::Schedule { cmd } => schedule::schedule(&engine, out, cmd, &load),
        Command::Serve(args) => serve::serve(&engine, args, &load()?),
        Command::Runbook(args) => runbook_cmd::runbook(&engine, out, args),
        Command::Backup(args) => backup::backup(&engine, out, args),
        Command::Raw { cmd } => raw_cmd::raw(&engine, out, cmd),
        Command::Demo(_)
        | Command::Flex { .. }
        | Command::Doctor(_)
        | Command::Config { .. }
        | Command::Copy(_) => {
            unreachable!("handled above")
        }
    }
}

fn init(engine: &Engine, path: &Path, out: Out) -> CliResult {
    let version = engine.schema_version()?;
    if out.json {
        out.json(&serde_json::json!({"database": path, "schemaVersion": version}));
    } else {
        println!("database: {}", path.display());
        println!("schema version: {version}");
    }
    Ok(())
}
