//! `raw list` and `raw export`: the stored raw payloads (downloaded statements), accepted
//! or rejected, over `engine.runs()`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use runledger::run::raw::sha256_hex;
use runledger::run::RawFilter;
use runledger::Engine;
use serde_json::json;

use crate::output::{opt, CliResult, Failure, Out, Table};

/// Stored raw payloads (downloaded statements), kept even when rejected.
#[derive(Debug, Subcommand)]
pub enum RawCmd {
    /// List raw records, newest first.
    List(ListArgs),
    /// Write a record's bytes, exactly as downloaded, to a new file (mode 0600).
    Export(ExportArgs),
}

/// `raw list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only the records of this run.
    #[arg(long)]
    run: Option<i64>,
    /// Only rejected records (statements that failed validation or their check).
    #[arg(long)]
    rejected: bool,
    /// At most this many (1..=1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// `raw export` arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The raw record's id.
    id: i64,
    /// The file to create (refused when it exists).
    #[arg(long)]
    out: PathBuf,
}

pub fn raw(engine: &Engine, out: Out, cmd: RawCmd) -> CliResult {
    match cmd {
        RawCmd::List(args) => list(engine, out, args),
        RawCmd::Export(args) => export(engine, out, args),
    }
}

fn list(engine: &Engine, out: Out, args: ListArgs) -> CliResult {
    let records = engine.runs().raw_list(&RawFilter {
        run_id: args.run,
        rejected_only: args.rejected,
        limit: args.limit,
    })?;
    let mut t = Table::new(&[
        "id", "run", "source", "ref", "bytes", "sha256", "stored", "rejected",
    ]);
    for r in &records {
        t.row(vec![
            r.id.to_string(),
            r.run_id.to_string(),
            r.source.clone(),
            opt(r.upstream_ref.as_deref()),
            r.size.to_string(),
            r.sha256[..12].to_string(),
            r.created_at.to_string(),
            opt(r.rejected.as_ref().map(|x| x.code.as_str())),
        ]);
    }
    out.listing(&t, &records);
    Ok(())
}

fn export(engine: &Engine, out: Out, args: ExportArgs) -> CliResult {
    let record = engine.runs().raw_record(args.id)?;
    let bytes = engine.runs().raw_payload(&record.sha256)?;
    if sha256_hex(&bytes) != record.sha256 {
        return Err(Failure::new(
            "CORRUPT_ROW",
            format!(
                "raw record {}: the payload does not hash to its key",
                record.id
            ),
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let path = &args.out;
    let io =
        |e: std::io::Error| Failure::new("IO", format!("cannot write {}: {e}", path.display()));
    let mut file = options.open(path).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    if out.json {
        out.json(&json!({"record": record, "out": path, "bytes": bytes.len()}));
    } else {
        println!(
            "raw record {} ({} bytes, sha256 {}) written to {}",
            record.id,
            bytes.len(),
            record.sha256,
            path.display()
        );
    }
    Ok(())
}
