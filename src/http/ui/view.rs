//! What each page shows, computed from the engine (blocking calls; run on tokio's blocking
//! pool). Each function returns the template's context as JSON.

use serde_json::{json, Value};

use super::guide;
use super::queries::{self, COUNT_CAP, JOB_WINDOW};
use super::HttpOptions;
use crate::clock::Timestamp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::job::JobState;
use crate::run::{RunFilter, RunStatus, Scope, StageKind, TimelineEntry};

/// Runs shown per list page.
pub const RUNS_PER_PAGE: u32 = 50;
/// Jobs shown in the live list.
pub const JOBS_PER_PAGE: u32 = 100;
/// Failed runs on the overview.
const FAILED_ON_OVERVIEW: i64 = 10;

fn names<T: Copy>(all: &[T], f: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|&x| f(x)).collect()
}

/// `1.234 s`, `250 ms`, `2 min 5 s`.
pub fn duration_text(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// The overview.
pub fn overview(e: &Engine) -> Result<Value> {
    let o = queries::overview(e, FAILED_ON_OVERVIEW)?;
    let health: Vec<Value> = o
        .runs
        .iter()
        .map(|(scope, counts)| json!({"scope": scope.as_str(), "counts": counts}))
        .collect();
    let (failed, jobs, supervisors, last_slot) = (o.failed, o.jobs, o.supervisors, o.last_slot);
    let now = e.now();
    let schedules: Vec<Value> = e
        .schedules()
        .list()?
        .iter()
        .map(|s| schedule_times(s, now))
        .collect();
    Ok(json!({
        "run_statuses": names(&RunStatus::ALL, RunStatus::as_str),
        "health": health,
        "cap": COUNT_CAP,
        "failed": failed,
        "jobs": jobs,
        "job_window": jobs.window,
        "job_window_size": JOB_WINDOW,
        "supervisors": supervisors,
        "last_slot": last_slot,
        "schedules": schedules,
    }))
}

fn schedule_times(s: &crate::schedule::Schedule, _now: Timestamp) -> Value {
    let next_zone = s.next_due_at.map(|t| in_zone(t, s.zone.name()));
    json!({
        "name": s.name,
        "pipeline": s.pipeline,
        "scope": s.scope,
        "rule": s.rule.to_string(),
        "zone": s.zone.name(),
        "misfire": s.misfire.as_str(),
        "enabled": s.enabled,
        "next_utc": s.next_due_at,
        "next_zone": next_zone,
    })
}

/// `t` as wall time in the IANA zone `zone`: `2026-11-22 19:30 Asia/Shanghai (+08:00)`.
pub fn in_zone(t: Timestamp, zone: &str) -> String {
    let Ok(z) = crate::schedule::Zone::new(zone) else {
        return format!("{t} (UTC)");
    };
    let off =
        time::UtcOffset::from_whole_seconds(z.offset_seconds_at(t)).unwrap_or(time::UtcOffset::UTC);
    let local = t.to_offset_datetime().to_offset(off);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} {zone} ({}{:02}:{:02})",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        if off.is_negative() { '-' } else { '+' },
        off.whole_hours().unsigned_abs(),
        off.minutes_past_hour().unsigned_abs(),
    )
}

/// A query field left empty in a filter form means "any".
fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The runs list.
pub fn runs(
    e: &Engine,
    pipeline: Option<String>,
    scope: Option<String>,
    status: Option<String>,
    before: Option<i64>,
) -> Result<Value> {
    let (pipeline, scope, status) = (nonempty(pipeline), nonempty(scope), nonempty(status));
    let filter = RunFilter {
        pipeline: pipeline.clone(),
        scope: scope.as_deref().map(str::parse).transpose()?,
        status: status.as_deref().map(str::parse).transpose()?,
        before_id: before,
        limit: RUNS_PER_PAGE,
        ..RunFilter::default()
    };
    let list = e.runs().list(&filter)?;
    let next_href = (list.len() == RUNS_PER_PAGE as usize)
        .then(|| list.last().map(|r| r.id))
        .flatten()
        .map(|last| {
            let mut q = format!("/ui/runs?before={last}");
            for (k, v) in [
                ("pipeline", &pipeline),
                ("scope", &scope),
                ("status", &status),
            ] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", urlencode(v)));
                }
            }
            q
        });
    let rows: Vec<Value> = list
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "pipeline": r.pipeline, "scope": r.scope, "status": r.status,
                "trigger": r.trigger, "started_at": r.started_at,
                "duration": r.duration_ms.map(duration_text), "error_code": r.error_code,
            })
        })
        .collect();
    Ok(json!({
        "runs": rows,
        "filter": {"pipeline": pipeline, "scope": scope, "status": status},
        "scopes": names(&Scope::ALL, Scope::as_str),
        "run_statuses": names(&RunStatus::ALL, RunStatus::as_str),
        "next_href": next_href,
    }))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Chart geometry: the label column ends at `LEFT`, bars span `LEFT..RIGHT` of a 1000-wide
/// view box, one row of `ROW` units per stage attempt.
const LEFT: f64 = 200.0;
const RIGHT: f64 = 990.0;
const ROW: i64 = 24;

/// The bars of a run's timeline chart.
pub fn bars(timeline: &[TimelineEntry], run_end: Option<Timestamp>) -> (Vec<Value>, i64) {
    let Some(start) = timeline.iter().map(|t| t.started_at).min() else {
        return (Vec::new(), 0);
    };
    let end_of = |t: &TimelineEntry| t.finished_at.or(run_end).unwrap_or(t.started_at);
    let end = timeline.iter().map(end_of).max().unwrap_or(start);
    let total = end.millis_since(start).max(1);
    let scale = (RIGHT - LEFT) / total as f64;
    let bars = timeline
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let x = LEFT + t.started_at.millis_since(start) as f64 * scale;
            let ms = end_of(t).millis_since(t.started_at);
            let w = (ms as f64 * scale).max(3.0);
            let label_end = x + w > RIGHT - 160.0;
            let kind = match t.kind {
                StageKind::Lock => "lock",
                StageKind::Gate => "gate",
                StageKind::Runner => "runner",
            };
            json!({
                "stage": t.stage, "kind": kind, "attempt": t.attempt, "status": t.status,
                "error_code": t.error_code,
                "x": format!("{x:.1}"), "w": format!("{w:.1}"), "y": 4 + i as i64 * ROW,
                "duration": t.duration_ms.map(duration_text).unwrap_or_else(|| "open".into()),
                "label_x": format!("{:.1}", if label_end { x - 4.0 } else { x + w + 4.0 }),
                "label_end": label_end,
            })
        })
        .collect();
    (bars, total)
}

/// A run's page.
pub fn run(e: &Engine, id: i64) -> Result<Value> {
    let run = e.runs().get(id)?;
    let raw = e.runs().raw_records(id)?;
    let (bars, total) = bars(&run.timeline, run.finished_at);
    let explanation = run.error_code.as_deref().and_then(guide::explain);
    let meta: Vec<(String, String)> = run
        .meta
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    let chart_height = 4 + bars.len() as i64 * ROW + 20;
    Ok(json!({
        "blocked_stage": run.meta.get("blockedStage").and_then(Value::as_str),
        "duration": run.duration_ms.map(duration_text),
        "run": run,
        "raw": raw,
        "bars": bars,
        "total_text": duration_text(total),
        "chart_height": chart_height,
        "explanation": explanation,
        "meta": meta,
    }))
}

/// The file extension a download of `content_type` gets.
pub fn extension(content_type: &str) -> &'static str {
    let base = content_type.split(';').next().unwrap_or("").trim();
    match base {
        "application/xml" | "text/xml" => "xml",
        "application/json" => "json",
        "text/csv" => "csv",
        "text/plain" => "txt",
        "text/html" => "html",
        _ => "bin",
    }
}

/// The jobs list.
pub fn jobs(
    e: &Engine,
    user: Option<String>,
    state: Option<String>,
    kind: Option<String>,
) -> Result<Value> {
    let (user, state, kind) = (nonempty(user), nonempty(state), nonempty(kind));
    let parsed: Option<JobState> = state.as_deref().map(str::parse).transpose()?;
    let list = e
        .jobs()
        .list(user.as_deref(), parsed, kind.as_deref(), JOBS_PER_PAGE)?;
    Ok(json!({
        "jobs": list,
        "filter": {"user": user, "state": state, "kind": kind},
        "job_states": names(&JobState::ALL, JobState::as_str),
    }))
}

/// Which operator actions a job in `state` allows (the buttons shown).
pub fn actions(state: JobState, resumable: bool) -> Value {
    use JobState::*;
    json!({
        "pause": state == Running,
        "resume": state == Paused,
        "cancel": matches!(state, Created | Running | Paused),
        "restart": matches!(state, Failed | Cancelled),
        "resumable": resumable,
    })
}

fn recovery_text(o: &crate::job::recovery::RecoveryOptions) -> String {
    use JobState::*;
    match o.state {
        Paused if o.resumable => "Paused with a checkpoint: resume continues from it.".into(),
        Paused => "Paused without a checkpoint: resume starts the work again.".into(),
        Failed | Cancelled => "Finished without success: restart runs it again from scratch (the checkpoint is cleared).".into(),
        Running => format!(
            "Running. If its worker dies, the supervisor recovers it ({} recoveries left).",
            o.recoveries_left
        ),
        Created => "Waiting for a worker.".into(),
        Completed => "Completed: nothing to recover.".into(),
    }
}

fn checkpoint_text(c: Option<&crate::job::recovery::CheckpointDetails>) -> String {
    match c {
        Some(c) => format!(
            "{} bytes, a JSON {}, saved {} · {} top-level keys",
            c.bytes,
            c.json_type,
            c.saved_at
                .map(|t| t.to_string())
                .unwrap_or_else(|| "—".into()),
            c.keys.len()
        ),
        None => "No checkpoint saved.".into(),
    }
}

/// A job's page; `max_recoveries` is the supervisor's limit ("recoveries left").
pub fn job(e: &Engine, id: i64, max_recoveries: u32) -> Result<Value> {
    let jobs = e.jobs();
    let job = jobs.get(id)?;
    let recovery = jobs.recovery_options(id, max_recoveries)?;
    let checkpoint = jobs.checkpoint_details(id)?;
    let validation = match checkpoint {
        Some(_) => Some(jobs.validate_checkpoint(id)?),
        None => None,
    };
    let (events, pruned) = match e.events().since(id, 0, 200) {
        Ok(ev) => (ev, false),
        Err(Error::EventsPruned { .. }) => (Vec::new(), true),
        Err(other) => return Err(other),
    };
    let events: Vec<Value> = events
        .iter()
        .map(|ev| json!({"seq": ev.seq, "kind": ev.kind, "at": ev.at, "payload_text": ev.payload.to_string()}))
        .collect();
    let audit = queries::job_audit(e, id, 50)?;
    let explanation = job.error_code.as_deref().and_then(guide::explain);
    let mut input_text = job.input.to_string();
    if input_text.len() > 2000 {
        let mut end = 2000;
        while !input_text.is_char_boundary(end) {
            end -= 1;
        }
        input_text.truncate(end);
        input_text.push('…');
    }
    Ok(json!({
        "actions": actions(job.state, recovery.resumable),
        "recovery_text": recovery_text(&recovery),
        "checkpoint_text": checkpoint_text(checkpoint.as_ref()),
        "job": job,
        "recovery": recovery,
        "checkpoint": checkpoint,
        "validation": validation,
        "events": events,
        "events_pruned": pruned,
        "audit": audit,
        "explanation": explanation,
        "input_text": input_text,
    }))
}

/// What the job page's script refreshes after a state change.
pub fn job_live(e: &Engine, id: i64, max_recoveries: u32) -> Result<Value> {
    let jobs = e.jobs();
    let job = jobs.get(id)?;
    let recovery = jobs.recovery_options(id, max_recoveries)?;
    let checkpoint = jobs.checkpoint_details(id)?;
    Ok(json!({
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "step": job.step,
        "resumable": recovery.resumable,
        "actions": actions(job.state, recovery.resumable),
        "recovery_text": recovery_text(&recovery),
        "checkpoint_text": checkpoint_text(checkpoint.as_ref()),
        "checkpoint": checkpoint,
        "error_code": job.error_code,
        "live": {
            "resumable": if recovery.resumable { "yes" } else { "no" },
            "restartable": if recovery.restartable { "yes" } else { "no" },
            "recoveries_left": recovery.recoveries_left.to_string(),
            "last_heartbeat": recovery.last_heartbeat.map(|t| t.to_string()).unwrap_or_else(|| "—".into()),
        },
        "audit": queries::job_audit(e, id, 50)?,
    }))
}

/// The schedules page.
pub fn schedules(e: &Engine) -> Result<Value> {
    let now = e.now();
    let list = e.schedules().list()?;
    let mut rows = Vec::with_capacity(list.len());
    for s in &list {
        let history = queries::schedule_history(e, s.id)?;
        let mut v = schedule_times(s, now);
        v["last"] = json!(history.last);
        v["missed"] = json!(history.missed);
        rows.push(v);
    }
    Ok(json!({"schedules": rows}))
}

/// The probes page.
pub fn probes(e: &Engine, opts: &HttpOptions) -> Result<Value> {
    let mut scopes = Vec::new();
    for scope in Scope::ALL {
        let snapshot = e.runs().readiness(scope, &opts.preflight)?;
        scopes.push(json!({"scope": scope.as_str(), "snapshot": snapshot}));
    }
    Ok(json!({"scopes": scopes, "can_preflight": opts.probes.is_some()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_text(250), "250 ms");
        assert_eq!(duration_text(1500), "1.5 s");
        assert_eq!(duration_text(125_000), "2 min 5 s");
    }

    #[test]
    fn zone_times_carry_the_offset() {
        let t = Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap();
        assert_eq!(
            in_zone(t, "Asia/Shanghai"),
            "2026-11-22 19:30 Asia/Shanghai (+08:00)"
        );
        assert_eq!(
            in_zone(t, "America/New_York"),
            "2026-11-22 06:30 America/New_York (-05:00)"
        );
    }

    #[test]
    fn downloads_get_an_extension_from_their_type() {
        assert_eq!(extension("text/csv; charset=utf-8"), "csv");
        assert_eq!(extension("application/xml"), "xml");
        assert_eq!(extension("x/unknown"), "bin");
    }
}
