//! [`Worker`]: runs a host's handler on claimed jobs, heartbeating while it works.
//!
//! The worker's threads (one per slot of [`WorkerOptions::concurrency`]) share a queue of
//! claimed jobs: a thread that finds it empty claims as many jobs as there are idle slots in
//! one statement ([`Jobs::claim_many`](crate::Jobs::claim_many)), keeps one and queues the
//! rest for the other idle slots. One heartbeat thread per worker beats every job it holds
//! (each [`WorkerOptions::heartbeat_every`] after its claim or last beat). Each thread calls
//! the handler with a [`JobContext`]; completions and failures go through the engine's
//! shared commits.
//! The handler reports progress, saves checkpoints and checks [`JobContext::should_stop`];
//! a cancel or pause by an operator is seen at the next heartbeat or write. When the
//! handler returns `Ok(result)` the job completes; `Err(failure)` fails it with the
//! failure's code; a panic fails it with code `PANIC` and the panic message, and the worker
//! keeps going.
//!
//! A job created with a timeout ([`NewJob::timeout`](crate::NewJob::timeout)) is failed
//! with code `TIMEOUT` by the first heartbeat past `started_at + timeout`; the handler sees
//! [`StopReason::TimedOut`] (so the timeout's resolution is the heartbeat interval).
//!
//! Once a job is stopped (cancelled, paused, lost, timed out, shut down), the handler's
//! return value is discarded: neither its result nor its failure is written, the job keeps
//! the state the stop gave it, and it counts in [`WorkerReport::stopped`].
//!
//! [`Worker::shutdown`] stops claiming and waits for running handlers up to a deadline;
//! jobs still running then are *abandoned*: their heartbeats stop and their context refuses
//! further writes, so the supervisor recovers them from their last checkpoint. Dropping a
//! [`Worker`] is a shutdown without the wait: it stops claiming before the drop returns,
//! tells running handlers to stop, and its threads end (releasing the database file) as soon
//! as their handlers return.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::state::JobState;
use super::types::{Claim, Job};
use super::validate;
use crate::clock::{Deadline, Timestamp};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The worker's name, stored as the job's `worker_id`.
    pub id: String,
    /// Kinds it serves (empty: every kind).
    pub kinds: Vec<String>,
    /// Jobs it runs at once (threads). Default 1.
    pub concurrency: usize,
    /// Heartbeat interval while a handler runs. Default 5 s (keep it well under the
    /// supervisor's stale threshold).
    pub heartbeat_every: Duration,
    /// Pause between claims when no job is waiting. Default 250 ms.
    pub idle_poll: Duration,
}

impl WorkerOptions {
    /// Options for worker `id` serving `kinds`, other settings default.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        id: impl Into<String>,
        kinds: I,
    ) -> Self {
        Self {
            id: id.into(),
            kinds: kinds.into_iter().map(Into::into).collect(),
            concurrency: 1,
            heartbeat_every: Duration::from_secs(5),
            idle_poll: Duration::from_millis(250),
        }
    }
}

pub use super::types::StopReason;

/// A handler's failure: fails the job with this code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// Stable code (`[A-Za-z0-9_.:-]`, at most 64 bytes).
    pub code: String,
    /// Message.
    pub message: String,
}

impl JobFailure {
    /// A failure with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// `CODE: message`.
impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for JobFailure {}

/// The error's stable [`code`](Error::code) and its message, so a handler can use `?` on
/// the library's calls (`ctx.checkpoint(..)?`). If the error says the job was stopped
/// (`JOB_STOPPED`, `JOB_NOT_RUNNING`...), the worker discards the failure anyway (see the
/// module docs).
impl From<Error> for JobFailure {
    fn from(e: Error) -> Self {
        JobFailure::new(e.code(), e.to_string())
    }
}

/// What a handler sees of its job.
#[derive(Debug)]
pub struct JobContext {
    engine: Engine,
    claim: Claim,
    stop: Arc<AtomicU8>,
}

impl JobContext {
    /// The job as claimed.
    pub fn job(&self) -> &Job {
        &self.claim.job
    }

    /// The job's input.
    pub fn input(&self) -> &Value {
        &self.claim.job.input
    }

    /// The checkpoint an earlier attempt saved, to resume from.
    pub fn resume_from(&self) -> Option<&Value> {
        self.claim.checkpoint()
    }

    /// This attempt's fencing token.
    pub fn attempt(&self) -> i64 {
        self.claim.attempt
    }

    /// Why the handler should stop, if it should.
    pub fn stop_reason(&self) -> Option<StopReason> {
        StopReason::from_u8(self.stop.load(Ordering::SeqCst))
    }

    /// Whether the handler should stop now (cancelled, paused, lost or shut down).
    pub fn should_stop(&self) -> bool {
        self.stop_reason().is_some()
    }

    fn guard(&self, res: Result<()>) -> Result<()> {
        if let Err(e) = &res {
            note_stop(&self.stop, e);
        }
        res
    }

    /// Reports progress (0..=100) and a step; an error means the job is no longer this
    /// attempt's to run ([`JobContext::should_stop`] is then true).
    pub fn progress(&self, pct: u8, step: Option<&str>) -> Result<()> {
        if let Some(reason) = self.stop_reason() {
            return Err(stopped(self.claim.id(), reason));
        }
        let res = self.engine.jobs().progress(&self.claim, pct, step);
        self.guard(res)
    }

    /// Saves a checkpoint for a later attempt to resume from.
    pub fn checkpoint(&self, checkpoint: &Value) -> Result<()> {
        if let Some(reason) = self.stop_reason() {
            return Err(stopped(self.claim.id(), reason));
        }
        let res = self.engine.jobs().checkpoint(&self.claim, checkpoint);
        self.guard(res)
    }
}

fn stopped(job_id: i64, reason: StopReason) -> Error {
    Error::JobStopped { job_id, reason }
}

fn note_stop(stop: &AtomicU8, e: &Error) {
    let reason = match e {
        Error::JobNotRunning {
            state: JobState::Cancelled,
            ..
        } => StopReason::Cancelled,
        Error::JobNotRunning {
            state: JobState::Paused,
            ..
        } => StopReason::Paused,
        Error::JobNotRunning { .. } | Error::StaleAttempt { .. } | Error::NotFound { .. } => {
            StopReason::Lost
        }
        _ => return,
    };
    let _ = stop.compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
}

type Handler = dyn Fn(&JobContext) -> std::result::Result<Value, JobFailure> + Send + Sync;

/// What a worker did, for its owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed by their handler (including panics).
    pub failed: u64,
    /// Jobs that stopped early (cancelled, paused or lost).
    pub stopped: u64,
    /// Jobs still running at the shutdown deadline, left for the supervisor.
    pub abandoned: Vec<i64>,
}

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    /// Held (read) by a slot while it checks `stopping` and claims; taken (write) to stop.
    claim_gate: std::sync::RwLock<()>,
    report: Mutex<WorkerReport>,
    in_flight: Mutex<BTreeMap<usize, (i64, Arc<AtomicU8>)>>,
    /// Jobs claimed for idle slots and not yet started.
    ready: Mutex<VecDeque<(Claim, Arc<AtomicU8>)>>,
    /// Slots looking for a job.
    idle: AtomicUsize,
    /// Every job this worker holds (claimed, queued or running), by id: the heartbeat
    /// thread's work list.
    beats: Mutex<BTreeMap<i64, Beat>>,
}

/// One held job, as the heartbeat thread sees it.
struct Beat {
    attempt: i64,
    next: Deadline,
    /// The job's per-attempt timeout, as an instant.
    timeout_at: Option<Timestamp>,
    stop: Arc<AtomicU8>,
}

/// A running pool of job threads; see the module docs. Dropping it stops it (without
/// waiting); [`Worker::shutdown`] waits for running handlers and reports.
#[must_use = "a Worker stops when dropped; keep it, and call shutdown to stop it cleanly"]
pub struct Worker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    done: std::sync::mpsc::Receiver<usize>,
}

impl Drop for Worker {
    /// Stops claiming (no claim starts after this returns), tells running handlers to
    /// stop and abandons their jobs to the supervisor; does not wait for the handlers.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(Duration::ZERO);
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Worker {
    /// Starts `opts.concurrency` threads running `handler` on jobs claimed from `engine`.
    pub fn start<H>(engine: Engine, opts: WorkerOptions, handler: H) -> Result<Worker>
    where
        H: Fn(&JobContext) -> std::result::Result<Value, JobFailure> + Send + Sync + 'static,
    {
        validate::name("worker", &opts.id)?;
        for kind in &opts.kinds {
            validate::identifier("kind", kind)?;
        }
        if opts.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        let handler: Arc<Handler> = Arc::new(handler);
        let shared = Arc::new(Shared::default());
        let (done_tx, done) = channel();
        // The heartbeat thread ends when every slot thread (each holding a sender) has.
        let (alive_tx, alive_rx) = channel::<()>();
        {
            let (engine, shared, every) = (engine.clone(), shared.clone(), opts.heartbeat_every);
            std::thread::Builder::new()
                .name("runledger-heartbeat".into())
                .spawn(move || beat_loop(&engine, &shared, every, &alive_rx))
                .map_err(|e| Error::invalid("thread", e.to_string()))?;
        }
        let mut threads = Vec::new();
        for slot in 0..opts.concurrency {
            let (engine, opts, handler, shared, done_tx, alive) = (
                engine.clone(),
                opts.clone(),
                handler.clone(),
                shared.clone(),
                done_tx.clone(),
                alive_tx.clone(),
            );
            let name = format!("runledger-worker-{slot}");
            let t = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    run_slot(slot, &engine, &opts, &*handler, &shared);
                    drop(alive);
                    let _ = done_tx.send(slot);
                })
                .map_err(|e| Error::thread_spawn(name, e))?;
            threads.push(t);
        }
        Ok(Worker {
            shared,
            threads,
            done,
        })
    }

    /// Stops claiming, waits up to `deadline` for running handlers, abandons the rest to
    /// the supervisor, and returns what the worker did.
    pub fn shutdown(mut self, deadline: Duration) -> WorkerReport {
        self.stop(deadline)
    }

    fn stop(&mut self, deadline: Duration) -> WorkerReport {
        {
            // Claims happen under the read side: once this returns, none is under way and
            // none starts.
            let _no_claims = self
                .shared
                .claim_gate
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.shared.stopping.store(true, Ordering::SeqCst);
        }
        let deadline = Deadline::after(deadline);
        let mut finished = 0;
        while finished < self.threads.len() {
            match self.done.recv_timeout(deadline.remaining()) {
                Ok(_) => finished += 1,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut abandoned = Vec::new();
        let queued: Vec<_> = lock(&self.shared.ready)
            .drain(..)
            .map(|(c, stop)| (c.id(), stop))
            .collect();
        let running: Vec<_> = lock(&self.shared.in_flight).values().cloned().collect();
        for (job_id, stop) in running.into_iter().chain(queued) {
            let _ = stop.compare_exchange(
                0,
                StopReason::Shutdown as u8,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            lock(&self.shared.beats).remove(&job_id);
            abandoned.push(job_id);
        }
        abandoned.sort_unstable();
        for t in std::mem::take(&mut self.threads) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let mut report = lock(&self.shared.report).clone();
        report.abandoned = abandoned;
        report
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_slot(
    slot: usize,
    engine: &Engine,
    opts: &WorkerOptions,
    handler: &Handler,
    shared: &Shared,
) {
    let kinds: Vec<&str> = opts.kinds.iter().map(String::as_str).collect();
    shared.idle.fetch_add(1, Ordering::SeqCst);
    loop {
        let next = {
            let _gate = shared.claim_gate.read().unwrap_or_else(|p| p.into_inner());
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            next_job(engine, opts, &kinds, slot, shared)
        };
        let Some((claim, stop)) = next else {
            // Nothing to do: a quiet engine empties its WAL (a failure is retried next time);
            // on PostgreSQL the wait ends early when a job becomes claimable (NOTIFY).
            match engine.backend() {
                Some(b) => {
                    let _ = b.wait_for_work(&kinds, opts.idle_poll);
                }
                None => {
                    let _ = engine.checkpoint_when_idle();
                    std::thread::sleep(opts.idle_poll);
                }
            }
            continue;
        };
        let outcome = run_one(engine, handler, claim, stop, shared);
        lock(&shared.in_flight).remove(&slot);
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let mut report = lock(&shared.report);
        match outcome {
            Outcome::Completed => report.completed += 1,
            Outcome::Failed => report.failed += 1,
            Outcome::Stopped => report.stopped += 1,
        }
    }
}

/// A queued job, or else as many new claims as there are idle slots (one statement): this
/// slot keeps the first, the others wait in the queue. The job returned is registered
/// in flight for `slot` and no longer counted idle.
fn next_job(
    engine: &Engine,
    opts: &WorkerOptions,
    kinds: &[&str],
    slot: usize,
    shared: &Shared,
) -> Option<(Claim, Arc<AtomicU8>)> {
    let take = |shared: &Shared| {
        let mut ready = lock(&shared.ready);
        let job = ready.pop_front()?;
        lock(&shared.in_flight).insert(slot, (job.0.id(), job.1.clone()));
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        Some(job)
    };
    if let Some(job) = take(shared) {
        return Some(job);
    }
    let want = shared.idle.load(Ordering::SeqCst).clamp(1, 1000) as u32;
    let claims = engine.jobs().claim_many(&opts.id, kinds, want).ok()?;
    {
        let mut beats = lock(&shared.beats);
        let mut ready = lock(&shared.ready);
        for claim in claims {
            let stop = Arc::new(AtomicU8::new(0));
            beats.insert(
                claim.id(),
                Beat {
                    attempt: claim.attempt,
                    next: Deadline::after(opts.heartbeat_every),
                    timeout_at: claim
                        .job
                        .timeout_ms
                        .zip(claim.job.started_at)
                        .map(|(ms, start)| start + Duration::from_millis(ms.max(0) as u64)),
                    stop: stop.clone(),
                },
            );
            ready.push_back((claim, stop));
        }
    }
    take(shared)
}

enum Outcome {
    Completed,
    Failed,
    Stopped,
}

fn run_one(
    engine: &Engine,
    handler: &Handler,
    claim: Claim,
    stop: Arc<AtomicU8>,
    shared: &Shared,
) -> Outcome {
    let id = claim.id();
    let ctx = JobContext {
        engine: engine.clone(),
        claim,
        stop: stop.clone(),
    };
    let result = catch_unwind(AssertUnwindSafe(|| handler(&ctx)));
    // No heartbeat after this (the heartbeat thread beats with the list locked).
    lock(&shared.beats).remove(&id);
    if ctx.should_stop() {
        return Outcome::Stopped;
    }
    let jobs = engine.jobs();
    let written = match result {
        Ok(Ok(value)) => jobs
            .complete(&ctx.claim, &value)
            .map(|_| Outcome::Completed),
        Ok(Err(failure)) => {
            let code = if validate::identifier("code", &failure.code).is_ok() {
                failure.code.as_str()
            } else {
                "HANDLER_FAILED"
            };
            jobs.fail(&ctx.claim, code, &failure.message)
                .map(|_| Outcome::Failed)
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".into());
            jobs.fail(&ctx.claim, "PANIC", &message)
                .map(|_| Outcome::Failed)
        }
    };
    written.unwrap_or(Outcome::Stopped)
}

/// The worker's heartbeat thread: beats each held job `every` after its claim or last beat;
/// records a cancel, pause or loss in the job's stop flag; past a job's timeout it fails the
/// job with `TIMEOUT` instead. Ends when every slot thread has ended (`alive` disconnects).
fn beat_loop(
    engine: &Engine,
    shared: &Shared,
    every: Duration,
    alive: &std::sync::mpsc::Receiver<()>,
) {
    loop {
        let wait = lock(&shared.beats)
            .values()
            .map(|b| b.next.remaining())
            .min()
            .unwrap_or(every);
        match alive.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let due: Vec<i64> = lock(&shared.beats)
            .iter()
            .filter(|(_, b)| b.next.remaining().is_zero())
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let mut beats = lock(&shared.beats);
            let Some(b) = beats.get_mut(&id) else {
                continue;
            };
            b.next = Deadline::after(every);
            if b.stop.load(Ordering::SeqCst) != 0 {
                beats.remove(&id);
                continue;
            }
            if b.timeout_at.is_some_and(|d| engine.now() >= d) {
                let timed_out = StopReason::TimedOut as u8;
                if b.stop
                    .compare_exchange(0, timed_out, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    // A refusal means the job was cancelled, paused or recovered
                    // meanwhile: that state stands.
                    let message = "the attempt ran past the job's timeout";
                    let _ = engine.jobs().fail_fenced(id, b.attempt, "TIMEOUT", message);
                }
                beats.remove(&id);
                continue;
            }
            if let Err(e) = engine.jobs().heartbeat_fenced(id, b.attempt) {
                note_stop(&b.stop, &e);
                if b.stop.load(Ordering::SeqCst) != 0 {
                    beats.remove(&id);
                }
            }
        }
    }
}
