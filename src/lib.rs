//! runledger: durable background work in one SQLite file.
#![warn(missing_docs)]

pub mod clock;
pub mod db;
mod engine;
pub mod error;
pub mod flex;
pub mod job;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use db::{DbOptions, Durability};
pub use engine::{Engine, EngineOptions};
pub use error::{Error, FieldError, Result};
pub use job::state::JobState;
