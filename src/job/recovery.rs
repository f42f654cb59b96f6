//! Recovery tools for an operator or a UI: what can be done with a job, and what its
//! checkpoint holds. Resume and restart themselves are [`Jobs::resume`](super::Jobs::resume),
//! [`Jobs::resume_on`](super::Jobs::resume_on) and [`Jobs::restart`](super::Jobs::restart),
//! each audited with its actor.

use serde::Serialize;
use serde_json::Value;

use super::state::JobState;
use super::types::Job;
use super::Jobs;
use crate::clock::Timestamp;
use crate::error::Result;

/// How many checkpoint keys (or array items) [`CheckpointDetails::sample`] shows at most.
pub const SAMPLE_KEYS: usize = 10;
/// How many bytes of each sampled value are shown at most.
pub const SAMPLE_VALUE_BYTES: usize = 120;

/// What can be done with a job now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryOptions {
    /// The job.
    pub job_id: i64,
    /// Its state.
    pub state: JobState,
    /// Paused with a checkpoint: `resume` continues from it.
    pub resumable: bool,
    /// Failed or cancelled: `restart` runs it again from scratch.
    pub restartable: bool,
    /// Size of the saved checkpoint in bytes, if any.
    pub checkpoint_bytes: Option<usize>,
    /// Last heartbeat of the current or last attempt.
    pub last_heartbeat: Option<Timestamp>,
    /// Supervisor recoveries left before the job fails for good.
    pub recoveries_left: i64,
}

/// A bounded look at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointDetails {
    /// The job.
    pub job_id: i64,
    /// When it was saved.
    pub saved_at: Option<Timestamp>,
    /// JSON type of the checkpoint (`object`, `array`...).
    pub json_type: String,
    /// Top-level keys of an object (all of them, sorted).
    pub keys: Vec<String>,
    /// Size in bytes of its JSON text.
    pub bytes: usize,
    /// At most [`SAMPLE_KEYS`] top-level entries, each cut to [`SAMPLE_VALUE_BYTES`].
    pub sample: Vec<(String, String)>,
}

/// The result of checking a checkpoint's integrity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointCheck {
    /// The job.
    pub job_id: i64,
    /// No problems found.
    pub valid: bool,
    /// Every problem, in lower case.
    pub problems: Vec<String>,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn cut(text: String) -> String {
    if text.len() <= SAMPLE_VALUE_BYTES {
        return text;
    }
    let mut end = SAMPLE_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Jobs<'_> {
    /// What can be done with a job now (resume? restart? how many recoveries left?).
    pub fn recovery_options(&self, id: i64, max_recoveries: u32) -> Result<RecoveryOptions> {
        let job = self.get(id)?;
        Ok(RecoveryOptions {
            job_id: id,
            state: job.state,
            resumable: job.state == JobState::Paused && job.checkpoint.is_some(),
            restartable: matches!(job.state, JobState::Failed | JobState::Cancelled),
            checkpoint_bytes: job.checkpoint.as_ref().map(|c| c.to_string().len()),
            last_heartbeat: job.heartbeat_at,
            recoveries_left: (i64::from(max_recoveries) - job.recovery_count).max(0),
        })
    }

    /// Keys, size and a bounded sample of a job's checkpoint (`None` without one).
    pub fn checkpoint_details(&self, id: i64) -> Result<Option<CheckpointDetails>> {
        let job = self.get(id)?;
        Ok(job.checkpoint.as_ref().map(|cp| details(&job, cp)))
    }

    /// Checks a job's checkpoint: JSON, within the engine's size limit, consistent with the
    /// job's state (a checkpoint has a save time; a created job that was resumed keeps it).
    pub fn validate_checkpoint(&self, id: i64) -> Result<CheckpointCheck> {
        let job = self.get(id)?;
        let limit = self.engine_options().max_checkpoint_bytes;
        let mut problems = Vec::new();
        match &job.checkpoint {
            None => problems.push("job has no checkpoint".to_owned()),
            Some(cp) => {
                let bytes = cp.to_string().len();
                if bytes > limit {
                    problems.push(format!(
                        "checkpoint is {bytes} bytes, over the limit of {limit}"
                    ));
                }
                if job.checkpoint_at.is_none() {
                    problems.push("checkpoint has no save time".into());
                }
                if let Some(at) = job.checkpoint_at {
                    let start = job.created_at;
                    if at < start {
                        problems.push("checkpoint is older than the job".into());
                    }
                }
                if job.state == JobState::Completed {
                    problems.push("job is completed; its checkpoint is no longer used".into());
                }
            }
        }
        Ok(CheckpointCheck {
            job_id: id,
            valid: problems.is_empty(),
            problems,
        })
    }
}

fn details(job: &Job, cp: &Value) -> CheckpointDetails {
    let (keys, sample) = match cp {
        Value::Object(map) => {
            let mut keys: Vec<String> = map.keys().cloned().collect();
            keys.sort();
            let sample = keys
                .iter()
                .take(SAMPLE_KEYS)
                .map(|k| (k.clone(), cut(map[k].to_string())))
                .collect();
            (keys, sample)
        }
        Value::Array(items) => (
            Vec::new(),
            items
                .iter()
                .take(SAMPLE_KEYS)
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), cut(v.to_string())))
                .collect(),
        ),
        other => (Vec::new(), vec![(String::new(), cut(other.to_string()))]),
    };
    CheckpointDetails {
        job_id: job.id,
        saved_at: job.checkpoint_at,
        json_type: json_type(cp).into(),
        keys,
        bytes: cp.to_string().len(),
        sample,
    }
}
