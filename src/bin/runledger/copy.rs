//! `copy --from FILE.db --to postgres://...`: a SQLite ledger moved into an empty
//! PostgreSQL ledger (`runledger::pg::copy_from_sqlite`, feature `postgres`); progress per
//! table on stderr, the summary on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::output::{CliResult, Out};

/// `copy` arguments.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The SQLite ledger to copy (opened like any command: an older file is migrated first;
    /// refused when its doctor finds errors).
    #[arg(long, value_name = "FILE.db")]
    from: PathBuf,
    /// The PostgreSQL ledger to fill: a `postgres://` URL of an empty (or new) ledger.
    /// The role must be a superuser or be granted `session_replication_role`.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Obsolete, accepted for old scripts: leave the rows of SQLite tables without a
    /// PostgreSQL twin behind instead of refusing the source. Since PostgreSQL schema
    /// version 3 every table (modules, probes, raw data, supervisor bookkeeping) has one,
    /// so it changes nothing.
    #[arg(long)]
    skip_sqlite_only: bool,
}

#[cfg(not(feature = "postgres"))]
pub fn copy(_args: CopyArgs, _out: Out) -> CliResult {
    Err(crate::pg_cmd::usage(
        "this runledger was built without the `postgres` feature: copy is not available",
    ))
}

#[cfg(feature = "postgres")]
pub fn copy(args: CopyArgs, out: Out) -> CliResult {
    use crate::output::Table;
    use runledger::pg::{copy_from_sqlite, CopyOptions};

    if !args.from.exists() {
        return Err(crate::pg_cmd::usage(format!(
            "--from {}: no such file",
            args.from.display()
        )));
    }
    let source = runledger::Engine::open(&args.from)?;
    let opts = CopyOptions {
        skip_sqlite_only: args.skip_sqlite_only,
        ..CopyOptions::default()
    };
    let report = copy_from_sqlite(&source, &args.to, &opts, &mut |p| {
        if p.done {
            eprintln!("copy: {} {} rows", p.table, p.rows);
        } else {
            eprintln!("copy: {} {} rows...", p.table, p.rows);
        }
        Ok(())
    })?;
    if out.json {
        out.json(&report);
        return Ok(());
    }
    let mut t = Table::new(&["table", "rows"]);
    for c in &report.copied {
        t.row(vec![c.table.clone(), c.rows.to_string()]);
    }
    for c in &report.left_behind {
        t.row(vec![
            format!("{} (left behind)", c.table),
            c.rows.to_string(),
        ]);
    }
    print!("{}", t.render(out.color));
    let secs = report.elapsed.as_secs_f64();
    println!(
        "{} {} rows in {:.2} s ({:.0} rows/s); doctor on the copy: {} warning(s), 0 errors",
        out.bold("copied:"),
        report.rows(),
        secs,
        report.rows() as f64 / secs.max(1e-9),
        report.target.warnings().count()
    );
    Ok(())
}
