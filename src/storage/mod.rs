//! The storage layer: the only place in `src/` where SQL names a table.
//!
//! One module per table, or per tight group of tables that are written together. Each
//! module holds its DML as named constants (lower-case SQL, named parameters, run through
//! `prepare_cached`), one column list per row type, one row mapper that reads columns by
//! name, and the doctor checks of its rows ([`crate::doctor`] collects them). Domain
//! modules (`job`, `run`, `schedule`, `flex`) call these functions and hold no SQL;
//! `tests::one_owner_per_table` fails when a table's name appears in SQL anywhere else.
//!
//! | module | tables |
//! |---|---|
//! | [`jobs`] | `jobs`, `audit_log` |
//! | [`job_events`] | `job_events` |
//! | [`supervisor_state`] | `supervisor_state` |
//! | [`ingest_runs`] | `ingest_runs` |
//! | [`modules`] | `ingest_modules`, `ingest_probes` |
//! | [`schedules`] | `schedules`, `due_runs` |
//! | [`raw`] | `raw_payloads`, `raw_records` |

pub(crate) mod check;
pub(crate) mod ingest_runs;
pub(crate) mod job_events;
pub(crate) mod jobs;
pub(crate) mod modules;
pub(crate) mod raw;
pub(crate) mod schedules;
pub(crate) mod supervisor_state;

/// Every table's doctor checks, table module by table module.
pub(crate) fn checks() -> impl Iterator<Item = &'static check::Check> {
    [
        jobs::CHECKS,
        ingest_runs::CHECKS,
        schedules::CHECKS,
        job_events::CHECKS,
        modules::CHECKS,
        raw::CHECKS,
    ]
    .into_iter()
    .flatten()
}
