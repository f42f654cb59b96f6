//! `--db postgres://...`: the commands that work on a PostgreSQL ledger (feature
//! `postgres`): `doctor`, `init` and `runbook` (runbook.pg.sql) (`runledger::pg`), and `jobs`, `runs`, `preflight`,
//! `probes`, `raw`, `flex`, `supervise`, `schedule` and `serve` (the same handlers as on a
//! file, through `Engine::open` on the URL: a subcommand whose call PostgreSQL does not serve
//! answers `UNSUPPORTED_BACKEND`). Any other command is refused with the list, never run on
//! a file named like the URL.

use crate::output::{CliResult, Failure};

/// What `--db postgres://...` supports.
pub const SUPPORTED: &str =
    "doctor, init, jobs, runs, preflight, probes, raw, flex, supervise, schedule, serve, runbook (runbook.pg.sql) (and copy --to)";

/// Whether `--db` names a PostgreSQL ledger rather than a file.
pub fn is_postgres(db: &std::path::Path) -> bool {
    let s = db.to_string_lossy();
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// An `INVALID_INPUT` failure (exit 2, a usage error).
pub fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: "INVALID_INPUT".into(),
        message: message.into(),
        exit: crate::output::exit_code("INVALID_INPUT"),
    }
}

/// The refusal of a command that does not run on PostgreSQL.
pub fn unsupported(command: &str) -> Failure {
    crate::pg_cmd::usage(
        format!("`{command}` does not run on a PostgreSQL ledger yet; with --db postgres://... runledger supports: {SUPPORTED}"),
    )
}

#[cfg(not(feature = "postgres"))]
pub(crate) fn run(
    _url: &str,
    command: crate::Command,
    _out: crate::output::Out,
    _config: Option<&std::path::Path>,
) -> CliResult {
    if !matches!(
        command,
        crate::Command::Doctor(_)
            | crate::Command::Init
            | crate::Command::Jobs { .. }
            | crate::Command::Runs { .. }
            | crate::Command::Raw { .. }
            | crate::Command::Supervise(_)
            | crate::Command::Schedule { .. }
            | crate::Command::Preflight(_)
            | crate::Command::Probes { .. }
            | crate::Command::Flex { .. }
            | crate::Command::Runbook(_)
            | crate::Command::Serve(_)
    ) {
        return Err(unsupported(command_name(&command)));
    }
    Err(crate::pg_cmd::usage(
        format!("this runledger was built without the `postgres` feature: --db postgres://... is not available (built with it, runledger supports: {SUPPORTED})"),
    ))
}

#[cfg(feature = "postgres")]
pub(crate) fn run(
    url: &str,
    command: crate::Command,
    out: crate::output::Out,
    config: Option<&std::path::Path>,
) -> CliResult {
    use crate::Command;
    use runledger::pg::PgEngine;

    let name = command_name(&command);
    let load = || crate::config::Config::load(config);
    match command {
        Command::Runs { cmd } => {
            let engine = runledger::Engine::open(url)?;
            return crate::runs::runs(&engine, out, cmd, &load);
        }
        Command::Raw { cmd } => {
            return crate::raw_cmd::raw(&runledger::Engine::open(url)?, out, cmd);
        }
        Command::Supervise(args) => {
            let engine = runledger::Engine::open(url)?;
            return crate::jobs::supervise(&engine, out, args, &load()?.supervisor);
        }
        Command::Jobs { cmd } => {
            return crate::jobs::jobs(&runledger::Engine::open(url)?, out, cmd);
        }
        Command::Schedule { cmd } => {
            let engine = runledger::Engine::open(url)?;
            return crate::schedule::schedule(&engine, out, cmd, &load);
        }
        Command::Serve(args) => {
            let engine = runledger::Engine::open(url)?;
            return crate::serve::serve(&engine, args, &load()?);
        }
        Command::Preflight(args) => {
            let engine = runledger::Engine::open(url)?;
            return crate::runs::preflight(&engine, out, args, &load()?);
        }
        Command::Probes { cmd } => {
            let engine = runledger::Engine::open(url)?;
            return crate::runs::probes(&engine, out, cmd, &load()?);
        }
        // the Flex commands open the ledger themselves, by `Engine::open`, which takes a URL
        Command::Flex { cmd } => {
            return crate::flex_cmd::flex(std::path::Path::new(url), out, cmd);
        }
        _ => {}
    }
    let engine = match command {
        Command::Doctor(_) | Command::Init | Command::Runbook(_) => PgEngine::open(url)?,
        _ => return Err(unsupported(name)),
    };
    match command {
        Command::Doctor(_) => crate::doctor::print(
            runledger::pg::doctor::check(&engine, &runledger::doctor::DoctorOptions::default())?,
            out,
        ),
        Command::Runbook(args) => {
            use runledger::pg::runbook;
            crate::runbook_cmd::show(runbook::queries(), out, args, |name| {
                runbook::run(&engine, name)
            })
        }
        Command::Init => {
            let version = engine.schema_version()?;
            if out.json {
                out.json(&serde_json::json!({"database": "postgres", "schemaVersion": version}));
            } else {
                println!("database: postgres");
                println!("schema version: {version}");
            }
            Ok(())
        }
        _ => Err(unsupported(name)),
    }
}

/// The command's name as typed.
fn command_name(command: &crate::Command) -> &'static str {
    use crate::Command;
    match command {
        Command::Init => "init",
        Command::Doctor(_) => "doctor",
        Command::Jobs { .. } => "jobs",
        Command::Runs { .. } => "runs",
        Command::Preflight(_) => "preflight",
        Command::Probes { .. } => "probes",
        Command::Supervise(_) => "supervise",
        Command::Schedule { .. } => "schedule",
        Command::Serve(_) => "serve",
        Command::Runbook(_) => "runbook",
        Command::Backup(_) => "backup",
        Command::Raw { .. } => "raw",
        Command::Demo(_) => "demo",
        Command::Flex { .. } => "flex",
        Command::Config { .. } => "config",
        Command::Copy(_) => "copy",
    }
}
