//! runledger: durable background work in one SQLite file.
#![warn(missing_docs)]

pub mod clock;
pub mod db;
mod engine;
pub mod error;
pub mod events;
pub mod job;
mod looping;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use db::{DbOptions, Durability};
pub use engine::{Engine, EngineOptions};
pub use error::{Error, FieldError, Result};
pub use events::{Event, EventKind, Events};
pub use job::supervisor::{RecoveryPolicy, Supervisor, SupervisorOptions};
pub use job::worker::{JobContext, JobFailure, StopReason, Worker, WorkerOptions, WorkerReport};
pub use job::{Claim, Job, JobState, JobStats, Jobs, NewJob};
pub use looping::LoopHandle;
