//! `flex check FILE`: the section report of a statement file against a section policy,
//! with the library's pure parsers (`runledger::flex`).
//!
//! `flex run` (the Flex Web Service pipeline) is added here once that pipeline lands in
//! the library.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use runledger::flex::{self, SectionPolicy};
use serde_json::json;

use crate::output::{opt, CliResult, Failure, Out, Table};

/// Interactive Brokers Flex statements.
#[derive(Debug, Subcommand)]
pub enum FlexCmd {
    /// Scan a statement file and check its sections (exit 3 when a required one is missing).
    Check(CheckArgs),
}

/// `flex check` arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The statement (FlexQueryResponse XML).
    file: PathBuf,
    /// Required sections, comma-separated (default with neither flag: the activity policy).
    #[arg(long, value_delimiter = ',')]
    require: Option<Vec<String>>,
    /// Reconcile sections (warnings only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    reconcile: Option<Vec<String>>,
}

pub fn flex(out: Out, cmd: FlexCmd) -> CliResult {
    let FlexCmd::Check(args) = cmd;
    check(out, args)
}

fn check(out: Out, args: CheckArgs) -> CliResult {
    let policy = if args.require.is_none() && args.reconcile.is_none() {
        SectionPolicy::activity()
    } else {
        SectionPolicy {
            required: args.require.unwrap_or_default(),
            reconcile: args.reconcile.unwrap_or_default(),
            ..SectionPolicy::none()
        }
    };
    let file = File::open(&args.file)
        .map_err(|e| Failure::new("IO", format!("cannot open {}: {e}", args.file.display())))?;
    let report = flex::scan(BufReader::new(file)).map_err(runledger::Error::from)?;
    let outcome = flex::check(&report, &policy);
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
