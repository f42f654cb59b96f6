//! `schedule list|add|enable|disable|delete|tick`, on the configured pipelines.

use clap::Subcommand;
use runledger::schedule::{Misfire, PIPELINE_NOT_HERE};
use runledger::{Engine, NewSchedule, Schedule, ScopeSelector, SlotStatus};

use crate::config::Config;
use crate::output::{opt, ts, CliResult, Out, Table};

/// The zone of a schedule that names none.
pub const DEFAULT_ZONE: &str = "Asia/Shanghai";

/// The actor of the audit rows of schedule changes made from the shell.
pub const ACTOR: &str = "cli";

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
        #[arg(long, default_value = DEFAULT_ZONE)]
        zone: String,
        /// The pipeline it triggers: a configured one [default: the only configured one].
        #[arg(long)]
        pipeline: Option<String>,
        /// The scope it triggers (targets, universe, both) [default: the pipeline's].
        #[arg(long)]
        scope: Option<ScopeSelector>,
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
    /// Delete a schedule and its slot history.
    Delete {
        /// The schedule's name.
        name: String,
    },
    /// Fire every due slot once, now, with the configured pipelines (a slot of a pipeline
    /// not configured here is left pending for a process that has it).
    Tick,
}

pub fn schedule(
    engine: &Engine,
    out: Out,
    cmd: ScheduleCmd,
    load: &dyn Fn() -> CliResult<Config>,
) -> CliResult {
    let schedules = engine.schedules().by(ACTOR);
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
            let config = load()?;
            let p = config.pick(pipeline.as_deref())?;
            let scope = scope.unwrap_or_else(|| p.scope().into());
            if !scope.scopes().iter().all(|s| *s == p.scope()) {
                return Err(crate::output::Failure {
                    code: "INVALID_INPUT".into(),
                    message: format!("pipeline {:?} runs in scope {} only", p.name, p.scope()),
                    exit: 2,
                });
            }
            let mut new =
                NewSchedule::new(&name, &p.name, scope.as_str(), &rule, &zone).misfire(misfire);
            new.enabled = !disabled;
            schedules.create(&new)?
        }
        ScheduleCmd::Enable { name } => schedules.enable(&name)?,
        ScheduleCmd::Disable { name } => schedules.disable(&name)?,
        ScheduleCmd::Delete { name } => {
            schedules.delete(&name)?;
            if out.json {
                out.json(&serde_json::json!({"deleted": name}));
            } else {
                println!("deleted schedule {name}");
            }
            return Ok(());
        }
        ScheduleCmd::Tick => {
            let fire = load()?.scheduled_runs(engine)?;
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
                for s in &report.slots {
                    if s.status == SlotStatus::Pending
                        && s.code.as_deref() == Some(PIPELINE_NOT_HERE)
                    {
                        println!(
                            "left pending: slot {} of {}: its pipeline is not configured here",
                            s.slot_id, s.schedule
                        );
                    }
                }
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
