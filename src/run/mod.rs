//! Ingestion runs: pipelines with gates and stages, one active run per lock, a JSON stage
//! timeline per run, probes and readiness, and immutable raw payloads.
//!
//! The entry point is [`Engine::runs`](crate::Engine::runs), which returns [`Runs`].

/// Implements text conversions (`as_str`, `ALL`, `Display`, `FromStr`, SQL) for a unit enum.
macro_rules! text_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The text stored in the database and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = crate::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| crate::error::Error::invalid($what, format!("unknown {} {s:?}", $what)))
            }
        }

        impl rusqlite::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str()?
                    .parse()
                    .map_err(|e: crate::error::Error| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

pub mod orchestrator;
pub mod pipeline;
pub mod probe;
pub mod raw;
pub mod scheduled;
pub mod state;
pub(crate) mod store;
pub mod timeline;

pub use orchestrator::{RunOutcome, Runs, TriggerOptions};
pub use pipeline::{
    Gate, Pipeline, PipelineBuilder, RetryPolicy, Sleeper, StageContext, StageError, StageFn,
    StageOutput,
};
pub use probe::{
    Module, ModuleReadiness, PreflightConfig, PreflightPolicy, ProbeError, ProbeFn, ProbeRecord,
    ProbeSet, ProbeStatus, ReadinessSnapshot,
};
pub use raw::{PruneReport, RawInput, RawRecord};
pub use scheduled::ScheduledRuns;
pub use state::{RunStatus, Scope, ScopeSelector, TriggerKind};
pub use store::{Run, RunFilter};
pub use timeline::{StageKind, StageStatus, TimelineEntry, TIMELINE_VERSION};
