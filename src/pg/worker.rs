//! [`PgWorker`]: a minimal worker loop on PostgreSQL, woken by NOTIFY instead of polling.
//!
//! One thread with an engine (one connection) and a [`PgListener`] (another): it claims a
//! job of its kinds (`FOR UPDATE SKIP LOCKED`), runs the handler while a heartbeat thread
//! beats every [`PgWorker::heartbeat_every`], then completes the job with the handler's
//! result or fails it with the handler's [`JobFailure`] (a panic fails it `PANIC`), as the
//! SQLite [`Worker`](crate::Worker) does. With nothing to claim it waits for a
//! notification of its kinds, at most [`PgWorker::idle_poll`] (a missed notification costs
//! one poll interval, never a job). A job cancelled or taken from the worker meanwhile
//! (its heartbeat answers `JOB_NOT_RUNNING` or `STALE_ATTEMPT`) counts as stopped and its
//! result is discarded. While the server is away the loop retries every poll interval, and
//! so does the final write of a job whose handler finished meanwhile (the claim survives the
//! connection: the fence accepts the retried write).
//!
//! Not yet, where the SQLite worker has them: concurrency above one per worker (start
//! several), the handler's progress/checkpoint context, timeouts, graceful shutdown with a
//! deadline (a stop waits for the running handler).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::engine::PgEngine;
use super::listener::PgListener;
use crate::error::{Error, Result};
use crate::job::state::JobState;
use crate::job::types::{Claim, Job};
use crate::job::validate;
use crate::job::worker::{JobFailure, WorkerReport};

/// The longest a stop waits for an idle worker's wait to end.
const STOP_SLICE: Duration = Duration::from_millis(100);

/// A worker loop's settings; see docs/postgres.md.
#[derive(Debug, Clone)]
pub struct PgWorker {
    url: String,
    id: String,
    kinds: Vec<String>,
    heartbeat_every: Duration,
    idle_poll: Duration,
}

/// A running [`PgWorker`]; [`PgWorkerHandle::stop`] ends it.
#[derive(Debug)]
pub struct PgWorkerHandle {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<WorkerReport>>,
    thread: Option<JoinHandle<()>>,
}

impl PgWorker {
    /// A worker `id` for jobs of `kinds` (any kind if empty) of the ledger at `url`;
    /// heartbeat every 10 s, poll at most every 5 s when no notification comes.
    pub fn new(url: &str, id: &str, kinds: &[&str]) -> Result<Self> {
        validate::name("worker", id)?;
        for kind in kinds {
            validate::identifier("kind", kind)?;
        }
        Ok(Self {
            url: url.to_string(),
            id: id.to_string(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            heartbeat_every: Duration::from_secs(10),
            idle_poll: Duration::from_secs(5),
        })
    }

    /// Sets the heartbeat interval (keep it well under the supervisor's `stale_after`).
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat_every = every.max(Duration::from_millis(10));
        self
    }

    /// Sets the longest idle wait between claims when no notification arrives.
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every.max(Duration::from_millis(10));
        self
    }

    /// Connects (engine and listener) and starts the loop on a thread of its own; the
    /// handler returns the job's result or its failure.
    pub fn spawn<H>(self, handler: H) -> Result<PgWorkerHandle>
    where
        H: Fn(&Job) -> std::result::Result<Value, JobFailure> + Send + 'static,
    {
        let engine = PgEngine::open(&self.url)?;
        let listener = PgListener::open_for_work(&self.url)?;
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(WorkerReport::default()));
        let (s, r) = (stop.clone(), report.clone());
        let thread = std::thread::Builder::new()
            .name("runledger-pg-worker".into())
            .spawn(move || self.run(&engine, listener, &handler, &s, &r))
            .map_err(|e| Error::thread_spawn("runledger-pg-worker", e))?;
        Ok(PgWorkerHandle {
            stop,
            report,
            thread: Some(thread),
        })
    }

    fn run<H>(
        &self,
        engine: &PgEngine,
        mut listener: PgListener,
        handler: &H,
        stop: &AtomicBool,
        report: &Mutex<WorkerReport>,
    ) where
        H: Fn(&Job) -> std::result::Result<Value, JobFailure>,
    {
        let kinds: Vec<&str> = self.kinds.iter().map(String::as_str).collect();
        while !stop.load(Ordering::SeqCst) {
            match engine.jobs().claim(&self.id, &kinds) {
                Ok(Some(claim)) => {
                    let outcome = self.work(engine, &claim, handler, stop);
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Outcome::Completed => r.completed += 1,
                        Outcome::Failed => r.failed += 1,
                        Outcome::Stopped => r.stopped += 1,
                    }
                    continue;
                }
                Ok(None) => {}
                // the server away or a conflict: the wait below paces the retry
                Err(_) => {}
            }
            // wait for a notification in slices, so a stop is seen soon
            let mut left = self.idle_poll;
            while !left.is_zero() && !stop.load(Ordering::SeqCst) {
                let slice = left.min(STOP_SLICE);
                match listener.wait_for_work(&kinds, slice) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(_) => std::thread::sleep(slice),
                }
                left = left.saturating_sub(slice);
            }
        }
    }

    /// Runs the handler on one claimed job with a heartbeat beside it; writes its outcome.
    fn work<H>(&self, engine: &PgEngine, claim: &Claim, handler: &H, stop: &AtomicBool) -> Outcome
    where
        H: Fn(&Job) -> std::result::Result<Value, JobFailure>,
    {
        let done = AtomicBool::new(false);
        let lost = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut waited = Duration::ZERO;
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(STOP_SLICE.min(self.heartbeat_every));
                    waited += STOP_SLICE.min(self.heartbeat_every);
                    if waited < self.heartbeat_every {
                        continue;
                    }
                    waited = Duration::ZERO;
                    if let Err(e) = engine.jobs().heartbeat(claim) {
                        if matches!(e.code(), "STALE_ATTEMPT" | "JOB_NOT_RUNNING" | "NOT_FOUND") {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
            let result = catch_unwind(AssertUnwindSafe(|| handler(&claim.job)));
            done.store(true, Ordering::SeqCst);
            result
        });
        if lost.load(Ordering::SeqCst) {
            return Outcome::Stopped;
        }
        let last = match result {
            Ok(Ok(value)) => Last::Complete(value),
            Ok(Err(failure)) => Last::Fail(failure.code, failure.message),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the handler panicked".into());
                Last::Fail("PANIC".into(), message)
            }
        };
        let mut retried = false;
        loop {
            let written = match &last {
                Last::Complete(value) => engine
                    .jobs()
                    .complete(claim, value)
                    .map(|_| Outcome::Completed),
                Last::Fail(code, message) => engine
                    .jobs()
                    .fail(claim, code, message)
                    .map(|_| Outcome::Failed),
            };
            match written {
                Ok(outcome) => return outcome,
                // The server away (a restart, a failover): the claim outlives the connection,
                // so the write is retried every poll interval until it goes through, the fence
                // refuses it, or the worker is stopped (the job then stays running for a
                // supervisor to recover).
                Err(Error::Unreachable { .. }) if !stop.load(Ordering::SeqCst) => {
                    retried = true;
                    let mut left = self.idle_poll;
                    while !left.is_zero() && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(left.min(STOP_SLICE));
                        left = left.saturating_sub(STOP_SLICE);
                    }
                }
                // after a lost connection, a refusal may mean the first try committed but its
                // answer was lost: the job as written tells
                Err(_) if retried => return written_before(engine, claim, &last),
                // refused by the fence: the job was cancelled or recovered meanwhile
                Err(_) => return Outcome::Stopped,
            }
        }
    }
}

/// The final write of a job's attempt.
enum Last {
    Complete(Value),
    Fail(String, String),
}

/// Whether `last` is already in the job (written by a try whose answer the lost connection
/// swallowed): its outcome if so, else [`Outcome::Stopped`].
fn written_before(engine: &PgEngine, claim: &Claim, last: &Last) -> Outcome {
    let Ok(job) = engine.jobs().get(claim.id()) else {
        return Outcome::Stopped;
    };
    if job.attempt != claim.attempt {
        return Outcome::Stopped;
    }
    match last {
        Last::Complete(value)
            if job.state == JobState::Completed && job.result.as_ref() == Some(value) =>
        {
            Outcome::Completed
        }
        Last::Fail(code, _)
            if job.state == JobState::Failed && job.error_code.as_deref() == Some(code) =>
        {
            Outcome::Failed
        }
        _ => Outcome::Stopped,
    }
}

enum Outcome {
    Completed,
    Failed,
    Stopped,
}

impl PgWorkerHandle {
    /// Stops claiming, waits for the running handler (if any) and returns what the worker
    /// did.
    pub fn stop(mut self) -> WorkerReport {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for PgWorkerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
