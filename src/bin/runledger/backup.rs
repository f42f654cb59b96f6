//! `backup FILE`: a consistent copy of the live database (`Engine::backup`, SQLite's
//! `VACUUM INTO` on one read snapshot), verified by doctor; exit 1 when the copy (and so the
//! live file) has doctor errors.

use std::path::PathBuf;

use clap::Args;
use runledger::Engine;

use crate::output::{CliResult, Failure, Out};

/// `backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy; must not exist.
    pub file: PathBuf,
}

pub fn backup(engine: &Engine, out: Out, args: BackupArgs) -> CliResult {
    let report = engine.backup(&args.file)?;
    let errors = report.doctor.errors().count();
    let warnings = report.doctor.warnings().count();
    if out.json {
        out.json(&report);
    } else {
        println!("backup: {}", report.path.display());
        println!("bytes: {}", report.bytes);
        println!(
            "doctor: schema v{}, {} checks: {errors} error(s), {warnings} warning(s)",
            report.doctor.schema_version,
            report.doctor.checks.len()
        );
    }
    if errors > 0 {
        return Err(Failure::new(
            "DOCTOR_ANOMALIES",
            format!("the copy has {errors} invariant violation(s); run `runledger doctor`"),
        ));
    }
    Ok(())
}
