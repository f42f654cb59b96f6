//! `doctor`: every invariant of the database checked from SQL (`runledger::doctor`); each
//! anomaly printed; exit 1 when any is an error (warnings alone exit 0).

use std::path::Path;

use clap::Args;
use runledger::doctor::{self, DoctorOptions, DoctorReport, Severity};
use runledger::{damage, Clock, Engine, SystemClock};

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

/// Doctor on the file at `path`: through the engine; when the engine cannot open it because
/// it is damaged, through a read-only connection (a report, never a bare error); when the
/// migrations refuse it (an edited history, a row a newer migration refuses), read-only too,
/// the refusal printed first.
pub fn doctor_at(path: &Path, out: Out, args: DoctorArgs) -> CliResult {
    match Engine::open(path) {
        Ok(engine) => doctor(&engine, out, args),
        Err(e) if damage::is_damage(&e) => {
            let opts = DoctorOptions::default();
            print(doctor::check_file(path, SystemClock.now(), &opts)?, out)
        }
        Err(e) if read_only_worthy(&e) => doctor_read_only(path, out, args, e),
        // What doctor can see of a deleted -wal: the frames its index still records. The
        // file is left untouched (opening it would erase that evidence).
        Err(e @ runledger::Error::WalMissing { .. }) => {
            eprintln!("doctor: nothing else was checked: the file was not opened");
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `doctor` on a file [`Engine::open`] refused with `why`: opened read-only, reported, and
/// the refusal itself printed first.
fn doctor_read_only(path: &Path, out: Out, _args: DoctorArgs, why: runledger::Error) -> CliResult {
    eprintln!(
        "doctor: the file does not open ([{}] {why}); checking it read-only",
        why.code()
    );
    print(doctor::check_path(path, &DoctorOptions::default())?, out)
}

pub fn doctor(engine: &Engine, out: Out, _args: DoctorArgs) -> CliResult {
    print(doctor::check(engine, &DoctorOptions::default())?, out)
}

pub fn print(report: DoctorReport, out: Out) -> CliResult {
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    if out.json {
        out.json(&report);
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
            "{} schema v{}, {}, {} checks: {errors} error(s), {warnings} warning(s)",
            out.bold("doctor:"),
            report.schema_version,
            report.tzdb,
            report.checks.len()
        );
        if !report.anomalies.is_empty() {
            print!("{}", t.render(out.color));
        }
        if let Some(d) = &report.damage {
            println!("{} {}", out.bold("damaged:"), d.cause);
            let mut t = Table::new(&["table", "rows read", "readable", "error"]);
            for r in &d.tables {
                t.row(vec![
                    r.table.to_string(),
                    r.rows.to_string(),
                    if r.readable { "yes" } else { "no" }.to_string(),
                    opt(r.error.as_deref()),
                ]);
            }
            print!("{}", t.render(out.color));
            println!("{} {}", out.bold("what to do:"), d.advice);
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
