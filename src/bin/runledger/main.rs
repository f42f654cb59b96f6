//! The `runledger` command-line tool: a thin shell over the library. Each command group
//! lives in its own module; `output` owns tables, JSON, colour and exit codes.

mod backup;
mod demo;
mod doctor;
mod flex_cmd;
mod flex_mock;
mod jobs;
mod output;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or migrate the database; print its path and schema version.
    Init,
    /// Show runledger's whole job, end to end, on a fresh database (./runledger-demo.db).
    Demo(demo::DemoArgs),
    /// Ingestion runs: list, show, sweep, trigger.
    Runs {
        #[command(subcommand)]
        cmd: runs::RunsCmd,
    },
    /// Probe a scope's modules now (simulated provider) and print its readiness.
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
    /// Run the scheduler and the supervisor in the foreground until Ctrl-C.
    Serve(serve::ServeArgs),
    /// List the operator queries of runbook.sql, or run one by name.
    Runbook(runbook_cmd::RunbookArgs),
    /// Check every invariant of the database from SQL; print each anomaly (exit 1 on errors).
    Doctor(doctor::DoctorArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out::new(cli.json);
    match run(cli, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error [{}]: {}", f.code, f.message);
            ExitCode::from(f.exit)
        }
    }
}

fn run(cli: Cli, out: Out) -> CliResult {
    let db = |default: &str| cli.db.clone().unwrap_or_else(|| PathBuf::from(default));
    if let Command::Demo(args) = cli.command {
        return demo::demo(&db(demo::DEFAULT_DEMO_DB), out, args);
    }
    if let Command::Flex { cmd } = cli.command {
        return flex_cmd::flex(&db("./runledger.db"), out, cmd);
    }
    let path = db("./runledger.db");
    if let Command::Doctor(args) = cli.command {
        return doctor::doctor_at(&path, out, args);
    }
    let engine = Engine::open(&path)?;
    match cli.command {
        Command::Init => init(&engine, &path, out),
        Command::Runs { cmd } => runs::runs(&engine, out, cmd),
        Command::Preflight(args) => runs::preflight(&engine, out, args),
        Command::Probes { cmd } => runs::probes(&engine, out, cmd),
        Command::Jobs { cmd } => jobs::jobs(&engine, out, cmd),
        Command::Supervise(args) => jobs::supervise(&engine, out, args),
        Command::Schedule { cmd } => schedule::schedule(&engine, out, cmd),
        Command::Serve(args) => serve::serve(&engine, args),
        Command::Runbook(args) => runbook_cmd::runbook(&engine, out, args),
        Command::Backup(args) => backup::backup(&engine, out, args),
        Command::Raw { cmd } => raw_cmd::raw(&engine, out, cmd),
        Command::Demo(_) | Command::Flex { .. } | Command::Doctor(_) => {
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
