//! [feature `postgres`] The PostgreSQL backend: a first slice of issue 17.
//!
//! [`PgEngine::open`] connects to a PostgreSQL database, applies the embedded PostgreSQL
//! migrations (`migrations/postgres/`, refinery) and hands out facades with the SQLite
//! facades' method names and types ([`Job`](crate::Job), [`Claim`](crate::Claim),
//! [`Event`](crate::Event), [`Run`](crate::run::Run), [`Slot`](crate::schedule::Slot),
//! [`Error`](crate::Error) and its codes):
//!
//! - [`PgJobs`] (`engine.jobs()`): create, get, list, claim (`FOR UPDATE SKIP LOCKED`), heartbeat,
//!   progress, complete, fail, cancel; every write of a worker fenced by its attempt;
//! - [`PgEvents`] (`engine.events()`): the job's events after a `seq`;
//! - [`PgRuns`] (`engine.runs()`): start under the single-active-run lock (a partial unique
//!   index), lease renewal, finish, sweep of expired leases, get; the module catalog,
//!   probes, readiness and preflight; raw payloads and records (store, read, prune);
//! - [`PgSchedules`] (`engine.schedules()`): create, materialize a due slot, claim due slots
//!   (`SKIP LOCKED`) and record each slot's outcome exactly once across nodes; whole ticks
//!   through `Engine::open` on the URL (`Schedules::tick`);
//! - [`PgSupervisor`] (`engine.supervisor(opts)`): the SQLite supervisor's recovery of
//!   stalled jobs, safe on every node at once (`SKIP LOCKED`, updates fenced by attempt),
//!   with its `supervisor_state` bookkeeping;
//! - [`PgListener`]: waits on its own connection for the NOTIFYs of schema version 2 (a job
//!   became claimable, an event was appended), so workers wake instead of polling;
//!   [`PgWorker`] is a minimal worker loop built on it;
//! - [`doctor::check`]: every invariant re-checked from SQL and the catalog, in the same
//!   report as SQLite's doctor;
//! - [`copy_from_sqlite`]: a SQLite ledger moved into an empty PostgreSQL ledger in one
//!   transaction, verified by [`doctor`] before it commits;
//! - [`runbook`]: `runbook.pg.sql`'s named queries, run read-only.
//!
//! PostgreSQL enforces the same rules itself (CHECKs, PL/pgSQL trigger functions raising
//! `CODE: table: rule`, mapped to the same [`Error`](crate::Error)s). Pipelines, the Flex
//! pipeline and the full [`Worker`](crate::Worker) run on PostgreSQL through an
//! [`Engine`](crate::Engine) opened on the URL, as do schedule ticks and the global event
//! feed; what is not served is listed in docs/postgres.md.
//!
//! One [`PgEngine`] (and its clones) keeps up to 8 idle connections; each call runs on one
//! of them or on a new one, so threads may share an engine. [`Engine::open`](crate::Engine::open)
//! on a `postgres://` URL gives the same backend behind the SQLite engine's facades
//! (`src/pg/backend.rs`).
//!
//! ```no_run
//! # fn main() -> runledger::Result<()> {
//! use runledger::pg::PgEngine;
//! use runledger::NewJob;
//!
//! let engine = PgEngine::open("postgres://runledger@db.internal/ledger")?;
//! let job = engine.jobs().create(&NewJob::new("u1", "report", serde_json::json!({})))?;
//! if let Some(claim) = engine.jobs().claim("worker-1", &["report"])? {
//!     engine.jobs().complete(&claim, &serde_json::json!({"ok": true}))?;
//! }
//! # let _ = job; Ok(()) }
//! ```

pub(crate) mod backend;
pub mod copy;
mod db;
pub mod doctor;
mod engine;
mod error;
mod jobs;
mod listener;
mod probes;
mod raw;
pub mod runbook;
mod runs;
mod schedules;
mod storage;
mod supervisor;
mod worker;

pub use copy::{copy_from_sqlite, CopyOptions, CopyReport};
pub use db::known_schema_version;
pub use engine::PgEngine;
pub use jobs::{PgEvents, PgJobs};
pub use listener::{PgListener, Wake};
pub use runs::PgRuns;
pub use schedules::PgSchedules;
pub use supervisor::{PgSupervisor, TICK_BATCH};
pub use worker::{PgWorker, PgWorkerHandle};
