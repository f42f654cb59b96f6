//! The guide: a quick start and one page per concept, every code block a doctest.
//!
//! - [`quickstart`]: open a database, run a job, trigger a pipeline, tick a schedule.
//! - [`jobs`]: the job life cycle, claims and fencing, the worker, the supervisor and its
//!   recovery policies, recovery tools, the versioned job record.
//! - [`runs`]: pipelines, gates and stages, retries, timelines, scopes, locks, leases,
//!   probes and readiness, raw records and retention.
//! - [`schedules`]: rules, zones and DST, misfire policies, ticks that fire each slot once,
//!   [`ScheduledRuns`](crate::ScheduledRuns), the background loop.
//! - [`flex`]: the ready-made Interactive Brokers Flex pipeline, the token, polling and rate
//!   limits, the section policy.
//! - [`events`]: the per-job event log, resync after a reconnect, subscriptions, polling
//!   across processes.
//! - [`operations`]: `runbook.sql` in the `sqlite3` shell, `doctor`, durability, several
//!   processes on one file.
//! - [`errors`]: every error code runledger returns or records, what it means and what to do.

#[doc = include_str!("../docs/quickstart.md")]
pub mod quickstart {}

#[doc = include_str!("../docs/jobs.md")]
pub mod jobs {}

#[doc = include_str!("../docs/runs.md")]
pub mod runs {}

#[doc = include_str!("../docs/schedules.md")]
pub mod schedules {}

#[doc = include_str!("../docs/flex.md")]
pub mod flex {}

#[doc = include_str!("../docs/events.md")]
pub mod events {}

#[doc = include_str!("../docs/operations.md")]
pub mod operations {}

#[doc = include_str!("../docs/errors.md")]
pub mod errors {}
