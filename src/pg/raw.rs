//! Raw payloads and records on a [`PgEngine`]: the SQLite [`Runs`](crate::Runs) reads of
//! the same names, retention ([`PgRuns::prune`]), and the stage step that keeps a
//! downloaded payload ([`PgRuns::store_raw`], [`PgRuns::store_rejected_raw`]; pipelines do
//! not run on PostgreSQL yet, so their steps are exposed, as [`PgRuns::start`] is). The
//! checks are the SQLite side's (`run::raw`).

use super::runs::PgRuns;
use super::storage::ingest_runs;
use super::storage::raw::{self as store, NewRaw};
use crate::error::Result;
use crate::run::raw::{self, PruneReport, RawFilter, RawInput, RawRecord, Rejection};
use crate::Timestamp;

impl PgRuns<'_> {
    /// The raw record `id` (`NOT_FOUND` when there is none).
    pub fn raw_record(&self, id: i64) -> Result<RawRecord> {
        self.engine.read(|tx| store::record(tx, id))
    }

    /// The raw records `filter` selects (a run's, rejected ones), newest first.
    pub fn raw_list(&self, filter: &RawFilter) -> Result<Vec<RawRecord>> {
        raw::check_filter(filter)?;
        self.engine.read(|tx| store::list(tx, filter))
    }

    /// The raw records of run `run_id`, oldest first.
    pub fn raw_records(&self, run_id: i64) -> Result<Vec<RawRecord>> {
        self.engine.read(|tx| store::records_of_run(tx, run_id))
    }

    /// The bytes of the payload with this SHA-256.
    pub fn raw_payload(&self, sha256: &str) -> Result<Vec<u8>> {
        self.engine.read(|tx| store::payload(tx, sha256))
    }

    /// Retention: deletes terminal runs that finished before `cutoff`, their raw records,
    /// and payloads no record references any more, in one transaction. Started runs stay.
    pub fn prune(&self, cutoff: Timestamp) -> Result<PruneReport> {
        self.engine.write(|tx, _| {
            let run_ids = ingest_runs::prune(tx, cutoff)?;
            let (records, payloads) = store::prune(tx, &run_ids)?;
            Ok(PruneReport {
                runs: run_ids.len(),
                records,
                payloads,
            })
        })
    }

    /// Stores a payload that started run `run_id` downloaded (once per SHA-256) and records
    /// it for the run: what a stage's `StageCtx::store_raw` does on SQLite. `NOT_FOUND` for
    /// no such run, `INVALID_INPUT` for a run that has ended.
    pub fn store_raw(&self, run_id: i64, input: &RawInput<'_>) -> Result<RawRecord> {
        self.store(run_id, input, None)
    }

    /// Stores a downloaded payload that failed validation or its check, marked rejected
    /// with the failure's `code` and `reason`, so it is never lost; the run can then only
    /// end failed (`StageCtx::store_rejected_raw` on SQLite).
    pub fn store_rejected_raw(
        &self,
        run_id: i64,
        input: &RawInput<'_>,
        code: &str,
        reason: &str,
    ) -> Result<RawRecord> {
        let rejection = raw::rejection(code, reason)?;
        self.store(run_id, input, Some(&rejection))
    }

    /// Stores a payload for run `run_id`, rejected when `rejected` says why.
    pub(crate) fn store(
        &self,
        run_id: i64,
        input: &RawInput<'_>,
        rejected: Option<&Rejection>,
    ) -> Result<RawRecord> {
        // checked and hashed before the transaction: nothing waits for it
        let checked = raw::check(input)?;
        self.engine.write(|tx, now| {
            raw::storing_run(run_id, ingest_runs::is_started(tx, run_id)?)?;
            store::insert(
                tx,
                &NewRaw {
                    run_id,
                    source: input.source,
                    upstream_ref: input.upstream_ref,
                    content_type: input.content_type,
                    sha256: checked.sha256(),
                    bytes: input.bytes,
                    rejected,
                },
                now,
            )
        })
    }
}
