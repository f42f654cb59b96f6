//! runledger: durable background work in one SQLite file.
//!
//! An [`Engine`] opens (creating and migrating) one SQLite file and exposes:
//! - [`Engine::jobs`]: durable jobs with claims, heartbeats, progress, checkpoints and
//!   operator controls, fenced by an attempt number ([`job`]);
//! - [`Supervisor`] and [`Worker`]: rescue of stalled jobs and a worker runtime;
//! - [`Engine::events`]: the per-job event log for UIs that resync ([`events`]);
//! - with the cargo feature `http` (on in the CLI), `http`: the JSON API and live
//!   event stream for hosts in any language (`runledger serve --http ADDR`).
//!
//! Every state transition is checked by a Rust state machine and again by the database's
//! CHECK constraints and triggers; see ARCHITECTURE.md for the invariants.
//!
//! **The [`guide`]**: [quick start](guide::quickstart), [jobs](guide::jobs),
//! [runs](guide::runs), [schedules](guide::schedules), Flex (`guide::flex`, with the `flex` feature),
//! [events](guide::events), [operations](guide::operations), and
//! [every error code](guide::errors).
//!
//! ```
//! use runledger::{Engine, JobState, NewJob};
//! use serde_json::json;
//!
//! let engine = Engine::open_in_memory()?;
//! let job = engine.jobs().create(&NewJob::new("alice", "research", json!({"q": 1})))?;
//! let claim = engine.jobs().claim("worker-1", &[])?.unwrap();
//! assert_eq!(claim.id(), job.id);
//! let done = engine.jobs().complete(&claim, &json!({"ok": true}))?;
//! assert_eq!(done.state, JobState::Completed);
//! # Ok::<(), runledger::Error>(())
//! ```
#![warn(missing_docs)]

#[macro_use]
mod text_enum;

mod backend;
pub mod backup;
pub mod clock;
mod db;
pub mod diagnostics;
pub mod doctor;
mod engine;
mod engine_open;
pub mod error;
pub mod events;
mod file_identity;
#[cfg(feature = "flex")]
pub mod flex;
pub mod guide;
#[cfg(feature = "http")]
pub mod http;
pub mod integrity;
pub mod job;
#[cfg(test)]
mod layering;
mod looping;
mod machine;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod run;
pub mod runbook;
pub mod schedule;
mod storage;
pub mod wal;

pub use clock::{Clock, ManualClock, ParseTimestampError, SystemClock, Timestamp};
pub use db::{known_schema_version, DbOptions, Durability};
pub use doctor::damage;
pub use engine::{Engine, EngineOptions};
pub use error::{Error, FieldError, Result};
pub use events::{Event, EventKind, EventPayload, FeedEvent, FeedFilter, FeedPage};
pub use job::supervisor::{RecoveryPolicy, Supervisor, SupervisorOptions};
pub use job::worker::{JobContext, JobFailure, StopReason, Worker, WorkerOptions, WorkerReport};
pub use job::Events;
pub use job::{Claim, Job, JobState, JobStats, Jobs, NewJob};
pub use looping::LoopHandle;
pub use run::{Pipeline, RunStatus, Runs, ScheduledRuns, Scope, ScopeSelector, TriggerKind};
pub use schedule::{
    Fire, FireOutcome, Misfire, NewSchedule, Schedule, ScheduleEdit, Schedules, Slot, SlotClaim,
    SlotStatus, TickOptions, TickReport,
};

/// The README's code blocks, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
