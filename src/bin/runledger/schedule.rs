//! `schedule list|add|enable|disable|tick`.

use clap::Subcommand;
use runledger::schedule::Misfire;
use runledger::{Engine, NewSchedule, Schedule};

use crate::output::{opt, ts, CliResult, Out, Table};
use crate::serve::built_in_pipelines;

/// Schedules.
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Every schedule with its next due instant.
    List,
    /// Create a schedule.
    Add {
        /// Its unique name.
        name: String,
        /// When it fires: `daily 19:30`, `daily 19:30 mon-fri`, `every 15m`.
        #[arg(long)]
        rule: String,
        /// The IANA zone the rule's times are read in.
        #[arg(long, default_value = "Asia/Shanghai")]
        zone: String,
        /// The pipeline it triggers.
        #[arg(long, default_value = "ingest")]
        pipeline: String,
        /// The scope it triggers (targets, universe, both).
        #[arg(long, default_value = "both")]
        scope: String,
        /// What to do with slots missed during downtime: latest_only, all, skip.
        #[arg(long, default_value = "latest_only")]
        misfire: Misfire,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Enable a schedule (its next slot is the first after now).
    Enable {
        /// The schedule's name.
        name: String,
    },
    /// Disable a schedule (its pending slots are skipped).
    Disable {
        /// The schedule's name.
        name: String,
    },
    /// Fire every due slot once, now, with the built-in pipelines.
    Tick,
}

pub fn schedule(engine: &Engine, out: Out, cmd: ScheduleCmd) -> CliResult {
    let schedules = engine.schedules();
    let changed = match cmd {
        ScheduleCmd::List => {
            let list = schedules.list()?;
            out.listing(&schedules_table(&list), &list);
            return Ok(());
        }
        ScheduleCmd::Add {
            name,
            rule,
            zone,
            pipeline,
            scope,
            misfire,
            disabled,
        } => {
            let mut new = NewSchedule::new(&name, &pipeline, &scope, &rule, &zone).misfire(misfire);
            new.enabled = !disabled;
            schedules.create(&new)?
        }
        ScheduleCmd::Enable { name } => schedules.enable(&name)?,
        ScheduleCmd::Disable { name } => schedules.disable(&name)?,
        ScheduleCmd::Tick => {
            let fire = built_in_pipelines(engine)?;
            let report = schedules.tick(engine.now(), &fire)?;
            let mut t = Table::new(&["slot", "schedule", "due_at", "status", "runs", "code"]);
            for s in &report.slots {
                let runs: Vec<String> = s.run_ids.iter().map(i64::to_string).collect();
                t.row(vec![
                    s.slot_id.to_string(),
                    s.schedule.clone(),
                    s.due_at.to_string(),
                    s.status.to_string(),
                    if runs.is_empty() {
                        "-".into()
                    } else {
                        runs.join(",")
                    },
                    opt(s.code.as_deref()),
                ]);
            }
            if out.json {
                out.json(&report);
            } else {
                print!("{}", t.render(out.color));
                println!("next due: {}", ts(report.next_due));
            }
            return Ok(());
        }
    };
    out.listing(&schedules_table(std::slice::from_ref(&changed)), &changed);
    Ok(())
}

/// One row per schedule.
pub fn schedules_table(list: &[Schedule]) -> Table {
    let mut t = Table::new(&[
        "name",
        "pipeline",
        "scope",
        "rule",
        "zone",
        "enabled",
        "misfire",
        "next_due_at",
        "last_due_at",
    ]);
    for s in list {
        t.row(vec![
            s.name.clone(),
            s.pipeline.clone(),
            s.scope.clone(),
            s.rule.to_string(),
            s.zone.to_string(),
            if s.enabled { "yes" } else { "no" }.into(),
            s.misfire.to_string(),
            ts(s.next_due_at),
            ts(s.last_due_at),
        ]);
    }
    t
}
