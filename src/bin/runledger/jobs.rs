//! `jobs list|show|events|pause|resume|cancel|restart` and `supervise`.

use std::time::Duration;

use clap::{Args, Subcommand};
use runledger::{Engine, Event, Job, JobState, RecoveryPolicy, Supervisor, SupervisorOptions};

use crate::output::{clip, opt, ts, CliResult, Out, Table};

/// Who the CLI's operator actions are recorded as (audit log, events).
const ACTOR: &str = "cli";

/// Durable jobs.
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// The newest jobs, filtered.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Only this state (created, running, paused, completed, failed, cancelled).
        #[arg(long)]
        state: Option<JobState>,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One job, with its input, checkpoint and result.
    Show {
        /// The job's id.
        id: i64,
    },
    /// A job's event log (what a UI resyncs from).
    Events {
        /// The job's id.
        id: i64,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many.
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// Pause a created or running job (its checkpoint is kept).
    Pause {
        /// The job's id.
        id: i64,
    },
    /// Resume a paused job (it is queued again).
    Resume {
        /// The job's id.
        id: i64,
    },
    /// Cancel a job that has not finished.
    Cancel {
        /// The job's id.
        id: i64,
        /// Why (recorded in the event log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Queue a failed or cancelled job again from scratch.
    Restart {
        /// The job's id.
        id: i64,
        /// A new input document (JSON); default: keep the old one.
        #[arg(long)]
        input: Option<String>,
    },
}

/// `supervise` arguments.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// Run one recovery pass and exit (default: loop until Ctrl-C).
    #[arg(long)]
    once: bool,
    /// A running job without heartbeat for this many seconds is stale [default: the
    /// config's `[supervisor] stale_after`, else 30].
    #[arg(long)]
    stale_after: Option<u64>,
    /// Requeue stale jobs that have a checkpoint instead of pausing them.
    #[arg(long)]
    auto_resume: bool,
}

impl SuperviseArgs {
    /// The options, the flags winning over the config's `[supervisor]`.
    pub fn options_with(&self, config: &crate::config::SupervisorConf) -> SupervisorOptions {
        let stale_after = self.stale_after.or(config.stale_after).unwrap_or(30);
        let auto_resume = self.auto_resume || config.auto_resume.unwrap_or(false);
        SupervisorOptions {
            stale_after: Duration::from_secs(stale_after.max(1)),
            policy: if auto_resume {
                RecoveryPolicy::AutoResume
            } else {
                RecoveryPolicy::Pause
            },
            ..Default::default()
        }
    }
}

pub fn jobs(engine: &Engine, out: Out, cmd: JobsCmd) -> CliResult {
    let jobs = engine.jobs();
    let changed = match cmd {
        JobsCmd::List {
            user,
            state,
            kind,
            limit,
        } => {
            let list = jobs.list(user.as_deref(), state, kind.as_deref(), limit)?;
            out.listing(&jobs_table(&list), &list);
            return Ok(());
        }
        JobsCmd::Show { id } => {
            show_job(out, &jobs.get(id)?);
            return Ok(());
        }
        JobsCmd::Events { id, after, limit } => {
            list_events(out, &engine.events().since(id, after, limit)?);
            return Ok(());
        }
        JobsCmd::Pause { id } => jobs.pause(id, ACTOR)?,
        JobsCmd::Resume { id } => jobs.resume(id, ACTOR)?,
        JobsCmd::Cancel { id, reason } => jobs.cancel(id, ACTOR, reason.as_deref())?,
        JobsCmd::Restart { id, input } => jobs.restart(id, ACTOR, new_input(input)?.as_ref())?,
    };
    if out.json {
        out.json(&changed);
    } else {
        println!("job {}: {}", changed.id, changed.state);
    }
    Ok(())
}

/// One row per job.
pub fn jobs_table(jobs: &[Job]) -> Table {
    let mut t = Table::new(&[
        "id",
        "user",
        "kind",
        "state",
        "progress",
        "step",
        "attempt",
        "worker",
        "updated_at",
        "error",
    ]);
    for j in jobs {
        t.row(vec![
            j.id.to_string(),
            j.user_id.clone(),
            j.kind.clone(),
            j.state.to_string(),
            format!("{}%", j.progress),
            clip(j.step.as_deref().unwrap_or("-"), 30),
            j.attempt.to_string(),
            opt(j.worker_id.as_deref()),
            j.updated_at.to_string(),
            opt(j.error_code.as_deref()),
        ]);
    }
    t
}

fn print_job(j: &Job) {
    let line = |k: &str, v: String| println!("{k:<14}{v}");
    line("id", j.id.to_string());
    line("user", j.user_id.clone());
    line("kind", j.kind.clone());
    line("state", j.state.to_string());
    line(
        "progress",
        format!("{}% {}", j.progress, opt(j.step.as_deref())),
    );
    line("attempt", j.attempt.to_string());
    line("worker", opt(j.worker_id.as_deref()));
    line("recoveries", j.recovery_count.to_string());
    line("created_at", j.created_at.to_string());
    line("started_at", ts(j.started_at));
    line("heartbeat_at", ts(j.heartbeat_at));
    line("finished_at", ts(j.finished_at));
    if let Some(code) = &j.error_code {
        line(
            "error",
            format!("[{code}] {}", opt(j.error_message.as_deref())),
        );
    }
    if let Some(reason) = &j.cancel_reason {
        line("reason", reason.clone());
    }
    line("input", j.input.to_string());
    line("checkpoint", opt(j.checkpoint.as_ref()));
    line("result", opt(j.result.as_ref()));
}

/// `supervise`: the flags win over the config's `[supervisor]`.
pub fn supervise(
    engine: &Engine,
    out: Out,
    args: SuperviseArgs,
    config: &crate::config::SupervisorConf,
) -> CliResult {
    let opts = args.options_with(config);
    let stale_after = opts.stale_after.as_secs();
    let supervisor = Supervisor::new(engine.clone(), opts)?;
    if !args.once {
        let stop = crate::serve::stop_signal()?;
        let handle = supervisor.spawn()?;
        println!(
            "supervising {} (stale after {}s); Ctrl-C to stop",
            engine.path().map_or_else(
                || "the PostgreSQL ledger".into(),
                |p| p.display().to_string()
            ),
            stale_after
        );
        let _ = stop.recv();
        handle.stop();
        println!("stopped");
        return Ok(());
    }
    let report = supervisor.tick(engine.now())?;
    let mut t = Table::new(&["job", "attempt", "to", "code", "recoveries"]);
    for r in &report.recovered {
        t.row(vec![
            r.job_id.to_string(),
            r.attempt.to_string(),
            r.to.to_string(),
            opt(r.code.as_deref()),
            r.recovery_count.to_string(),
        ]);
    }
    out.listing(&t, &report);
    Ok(())
}

/// `jobs restart --input JSON`: the new input document, if given.
fn new_input(text: Option<String>) -> Result<Option<serde_json::Value>, runledger::Error> {
    text.map(|t| runledger::job::parse_json("input", &t))
        .transpose()
}

/// `jobs show`: one job, as JSON or as text.
fn show_job(out: Out, job: &Job) {
    if out.json {
        out.json(job);
    } else {
        print_job(job);
    }
}

/// `jobs events`: a job's events, as a table or JSON.
fn list_events(out: Out, events: &[Event]) {
    let mut t = Table::new(&["seq", "at", "kind", "payload"]);
    for e in events {
        t.row(vec![
            e.seq.to_string(),
            e.at.to_string(),
            e.kind.as_str().into(),
            clip(&e.payload.to_string(), 90),
        ]);
    }
    out.listing(&t, events);
}
