//! The `runledger` command-line tool: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runledger::Engine;

/// Durable background work in one SQLite file.
#[derive(Debug, Parser)]
#[command(name = "runledger", version, about)]
struct Cli {
    /// The database file.
    #[arg(
        long,
        global = true,
        env = "RUNLEDGER_DB",
        default_value = "./runledger.db"
    )]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or migrate the database; print its path and schema version.
    Init,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init => init(&cli.db),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::from(1)
        }
    }
}

fn init(db: &std::path::Path) -> runledger::Result<()> {
    let engine = Engine::open(db)?;
    println!("database: {}", db.display());
    println!("schema version: {}", engine.schema_version()?);
    Ok(())
}
