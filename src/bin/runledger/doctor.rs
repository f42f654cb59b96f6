//! `doctor`: every invariant of the database checked from SQL (`runledger::doctor`); each
//! anomaly printed; exit 1 when any is an error (warnings alone exit 0).

use clap::Args;
use runledger::doctor::{self, DoctorOptions, Severity};
use runledger::Engine;

use crate::output::{opt, CliResult, Failure, Out, Table};

/// `doctor` arguments.
#[derive(Debug, Args)]
pub struct DoctorArgs {}

/// Whether `doctor` should still run (read-only) on a file that failed to open with `e`.
pub fn read_only_worthy(e: &runledger::Error) -> bool {
    matches!(
        e.code(),
        "MIGRATION_HISTORY" | "MIGRATION_REFUSED" | "MIGRATION_FAILED" | "UNSUPPORTED_VERSION"
    )
}

/// `doctor` on a file [`Engine::open`] refused with `why`: opened read-only, reported, and
/// the refusal itself printed first.
pub fn doctor_read_only(
    path: &std::path::Path,
    out: Out,
    _args: DoctorArgs,
    why: runledger::Error,
) -> CliResult {
    eprintln!(
        "doctor: the file does not open ([{}] {why}); checking it read-only",
        why.code()
    );
    let report = doctor::check_path(path, &DoctorOptions::default())?;
    print_report(&report, out)
}

pub fn doctor(engine: &Engine, out: Out, _args: DoctorArgs) -> CliResult {
    let report = doctor::check(engine, &DoctorOptions::default())?;
    print_report(&report, out)
}

fn print_report(report: &doctor::DoctorReport, out: Out) -> CliResult {
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    if out.json {
        out.json(report);
    } else {
        let mut t = Table::new(&["severity", "check", "table", "row", "detail"]);
        for a in &report.anomalies {
            t.row(vec![
                match a.severity {
                    Severity::Error => "error".to_string(),
                    _ => "warning".to_string(),
                },
                a.check.to_string(),
                if a.table.is_empty() {
                    "-".into()
                } else {
                    a.table.clone()
                },
                opt(a.row_id.as_deref()),
                a.detail.clone(),
            ]);
        }
        println!(
            "{} schema v{}, {} checks: {errors} error(s), {warnings} warning(s)",
            out.bold("doctor:"),
            report.schema_version,
            report.checks.len()
        );
        if !report.anomalies.is_empty() {
            print!("{}", t.render(out.color));
        }
    }
    if errors > 0 {
        return Err(Failure::new(
            "DOCTOR_ANOMALIES",
            format!("{errors} invariant violation(s) found"),
        ));
    }
    Ok(())
}
