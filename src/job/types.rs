//! The values the job API takes and returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::state::JobState;
use crate::clock::Timestamp;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Unique id.
    pub id: i64,
    /// The user the job belongs to.
    pub user_id: String,
    /// What kind of work (`research`, `trade`, `analysis` or any host-defined kind).
    pub kind: String,
    /// Current state.
    pub state: JobState,
    /// The host's input document.
    pub input: Value,
    /// The result, once completed.
    pub result: Option<Value>,
    /// Stable error code, when failed.
    pub error_code: Option<String>,
    /// Error message, when failed.
    pub error_message: Option<String>,
    /// 0..=100.
    pub progress: u8,
    /// What the worker is doing now.
    pub step: Option<String>,
    /// The last checkpoint saved by a worker.
    pub checkpoint: Option<Value>,
    /// When the checkpoint was saved.
    pub checkpoint_at: Option<Timestamp>,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// The job that spawned this one.
    pub parent_id: Option<i64>,
    /// How long one attempt may run, in milliseconds.
    pub timeout_ms: Option<i64>,
    /// How many times the host may retry it.
    pub max_retries: i64,
    /// Claim counter: the fencing token a worker's writes must carry.
    pub attempt: i64,
    /// The worker holding the current attempt.
    pub worker_id: Option<String>,
    /// How many times the supervisor has recovered it.
    pub recovery_count: i64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When the current attempt started.
    pub started_at: Option<Timestamp>,
    /// Last sign of life of the current attempt.
    pub heartbeat_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// The operator's reason, when the job is cancelled and the cancel gave one (`None` in
    /// every other state: a restart clears it).
    pub cancel_reason: Option<String>,
}

/// What [`Jobs::create`](super::Jobs::create) takes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Owner; 1..=256 bytes.
    pub user_id: String,
    /// Kind; 1..=64 bytes of `[A-Za-z0-9_.:-]`.
    pub kind: String,
    /// Input document (any JSON value).
    pub input: Value,
    /// Labels; at most 32, each 1..=64 bytes.
    pub tags: Vec<String>,
    /// Parent job, which must exist.
    pub parent_id: Option<i64>,
    /// Per-attempt timeout, enforced by [`Worker`](crate::Worker): the first heartbeat past
    /// it fails the job with code `TIMEOUT`. (Jobs run without a `Worker` must enforce it
    /// themselves.)
    pub timeout: Option<Duration>,
    /// Retry budget for the host's own retry policy.
    pub max_retries: u32,
}

impl NewJob {
    /// A job of `kind` for `user_id` with `input` and no options.
    pub fn new(user_id: impl Into<String>, kind: impl Into<String>, input: Value) -> Self {
        Self {
            user_id: user_id.into(),
            kind: kind.into(),
            input,
            tags: Vec::new(),
            parent_id: None,
            timeout: None,
            max_retries: 0,
        }
    }

    /// With these tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// As a child of `parent`.
    pub fn parent(mut self, parent: i64) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// With a per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// With a retry budget.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
}

/// A job taken by a worker: the job as claimed and the attempt its writes must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The job, now running.
    pub job: Job,
    /// The fencing token for heartbeat, progress, checkpoint, complete and fail.
    pub attempt: i64,
}

impl Claim {
    /// The job's id.
    pub fn id(&self) -> i64 {
        self.job.id
    }

    /// The checkpoint a previous attempt left, to resume from.
    pub fn checkpoint(&self) -> Option<&Value> {
        self.job.checkpoint.as_ref()
    }
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// `created`.
    pub created: u64,
    /// `running`.
    pub running: u64,
    /// `paused`.
    pub paused: u64,
    /// `completed`.
    pub completed: u64,
    /// `failed`.
    pub failed: u64,
    /// `cancelled`.
    pub cancelled: u64,
}

impl StateCounts {
    pub(crate) fn add(&mut self, state: JobState, n: u64) {
        let slot = match state {
            JobState::Created => &mut self.created,
            JobState::Running => &mut self.running,
            JobState::Paused => &mut self.paused,
            JobState::Completed => &mut self.completed,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
}

/// Counts per state and per kind, and the oldest heartbeat among running jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobStats {
    /// Number of jobs counted.
    pub total: u64,
    /// Per state.
    pub by_state: StateCounts,
    /// Per kind, per state.
    pub by_kind: BTreeMap<String, StateCounts>,
    /// The stalest heartbeat of a running job, if any is running.
    pub oldest_running_heartbeat: Option<Timestamp>,
}

/// Why a handler should stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// An operator cancelled the job.
    Cancelled = 1,
    /// An operator paused the job (its checkpoint is kept for a resume).
    Paused = 2,
    /// The attempt no longer owns the job (recovered and re-claimed elsewhere).
    Lost = 3,
    /// The worker is shutting down and its deadline passed.
    Shutdown = 4,
    /// The attempt ran past the job's timeout ([`NewJob::timeout`](crate::NewJob::timeout));
    /// the worker failed the job with code `TIMEOUT`.
    TimedOut = 5,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Cancelled => "cancelled",
            StopReason::Paused => "paused",
            StopReason::Lost => "lost",
            StopReason::Shutdown => "shut down",
            StopReason::TimedOut => "timed out",
        })
    }
}

impl StopReason {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::Paused),
            3 => Some(StopReason::Lost),
            4 => Some(StopReason::Shutdown),
            5 => Some(StopReason::TimedOut),
            _ => None,
        }
    }
}

// The supervisor's values (crate::job::supervisor), here so that every backend names them.

/// What happens to a stale job that has a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryPolicy {
    /// Pause it: an operator resumes it. The default.
    #[default]
    Pause,
    /// Requeue it (`created`, checkpoint kept) for the next worker's claim.
    AutoResume,
}

serde_display!(RecoveryPolicy);

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Name of this supervisor's bookkeeping row. Default `supervisor`.
    pub name: String,
    /// A running job with no heartbeat for this long is stale. Default 30 s.
    pub stale_after: Duration,
    /// Recoveries before a job fails for good. Default 3.
    pub max_recoveries: u32,
    /// What to do with a stale job that has a checkpoint.
    pub policy: RecoveryPolicy,
    /// Interval of the [`Supervisor::spawn`](crate::Supervisor::spawn) loop. Default 10 s.
    pub poll_every: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            name: "supervisor".into(),
            stale_after: Duration::from_secs(30),
            max_recoveries: 3,
            policy: RecoveryPolicy::Pause,
            poll_every: Duration::from_secs(10),
        }
    }
}

/// One job the supervisor moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// The job.
    pub job_id: i64,
    /// The attempt that was abandoned.
    pub attempt: i64,
    /// Where the job went: paused, created or failed.
    pub to: JobState,
    /// `STALLED` or `RECOVERY_EXHAUSTED` when it failed.
    pub code: Option<String>,
    /// Recoveries counted so far, including this one.
    pub recovery_count: i64,
}

/// What one [`Supervisor::tick`](crate::Supervisor::tick) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// When the tick ran.
    pub at: Option<Timestamp>,
    /// Every job recovered, stalest first.
    pub recovered: Vec<Recovery>,
}
