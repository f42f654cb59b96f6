//! Rejected raw records (V8, issue 14): a statement that failed its validation or check is
//! kept, marked rejected, linked to its failed run; the marker can neither be cleared nor
//! changed, and a run holding one never succeeds; from SQL and from Rust.

use runledger::run::{Pipeline, RawFilter, RawInput, StageError, StageOutput};
use runledger::{Engine, RunStatus, Scope, TriggerKind};
use serde_json::json;

use crate::common::*;

const BYTES: &[u8] = b"<FlexQueryResponse queryName=\xe2\x80\x9cbroken\"/>";

/// A stage that keeps the payload rejected, then fails (`then_ok`: claims success).
fn rejecting(then_ok: bool) -> Pipeline {
    Pipeline::builder("keep")
        .stage("check", move |ctx| {
            ctx.store_rejected_raw(
                &RawInput {
                    source: "ib_flex",
                    upstream_ref: Some("ref-1"),
                    content_type: "application/xml",
                    bytes: BYTES,
                },
                "FLEX_MALFORMED_XML",
                "malformed flex xml at byte 29",
            )
            .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            if then_ok {
                return Ok(StageOutput::with_detail(json!({"claims": "success"})));
            }
            Err(StageError::fatal(
                "FLEX_MALFORMED_XML",
                "malformed flex xml at byte 29",
            ))
        })
        .build()
        .unwrap()
}

fn trigger(engine: &Engine, p: &Pipeline) -> runledger::run::Run {
    engine
        .runs()
        .trigger(p, Scope::Targets.into(), TriggerKind::Manual)
        .unwrap()
        .pop()
        .unwrap()
        .result
        .unwrap()
}

#[test]
fn a_rejected_statement_is_kept_linked_to_its_failed_run_and_listed() {
    let (engine, _clock) = mem_engine();
    let run = trigger(&engine, &rejecting(false));
    assert_eq!(run.status, RunStatus::Failed);
    let records = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    let rejected = r.rejected.as_ref().unwrap();
    assert_eq!(rejected.code, "FLEX_MALFORMED_XML");
    assert_eq!(rejected.reason, "malformed flex xml at byte 29");
    assert_eq!(engine.runs().raw_payload(&r.sha256).unwrap(), BYTES);
    assert_eq!(engine.runs().raw_record(r.id).unwrap(), *r);
    let only_rejected = RawFilter {
        rejected_only: true,
        ..RawFilter::default()
    };
    assert_eq!(engine.runs().raw_list(&only_rejected).unwrap(), records);
    let of_other_run = RawFilter {
        run_id: Some(run.id + 1),
        ..RawFilter::default()
    };
    assert!(engine.runs().raw_list(&of_other_run).unwrap().is_empty());
    assert_eq!(
        engine.runs().raw_record(999).unwrap_err().code(),
        "NOT_FOUND"
    );
    let zero = RawFilter {
        limit: 0,
        ..RawFilter::default()
    };
    assert_eq!(
        engine.runs().raw_list(&zero).unwrap_err().code(),
        "INVALID_INPUT"
    );
    // serialized with its marker; accepted records carry none
    let v = serde_json::to_value(r).unwrap();
    assert_eq!(v["rejected"]["code"], "FLEX_MALFORMED_XML");
}

#[test]
fn a_run_holding_a_rejected_statement_never_ends_success_even_if_its_stage_says_so() {
    let (engine, _clock) = mem_engine();
    let run = trigger(&engine, &rejecting(true));
    assert_ne!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_code.as_deref(), Some("FLEX_MALFORMED_XML"));
    assert_eq!(run.meta["failedStage"], "check");
    assert_eq!(engine.runs().raw_records(run.id).unwrap().len(), 1);
}

#[test]
fn a_bad_rejection_code_is_refused_from_rust() {
    let (engine, _clock) = mem_engine();
    let p = Pipeline::builder("bad")
        .stage("check", |ctx| {
            let input = RawInput {
                source: "ib_flex",
                upstream_ref: None,
                content_type: "application/xml",
                bytes: b"x",
            };
            let e = ctx
                .store_rejected_raw(&input, "lower case", "why")
                .unwrap_err();
            Err(StageError::fatal(e.code(), e.to_string()))
        })
        .build()
        .unwrap();
    let run = trigger(&engine, &p);
    assert_eq!(run.error_code.as_deref(), Some("INVALID_INPUT"));
    assert!(engine.runs().raw_records(run.id).unwrap().is_empty());
}

#[test]
fn raw_sql_cannot_clear_change_or_forge_a_rejection_nor_finish_its_run_success() {
    let (engine, _clock) = mem_engine();
    let run = trigger(&engine, &rejecting(false));
    let id = engine.runs().raw_records(run.id).unwrap()[0].id;
    for sql in [
        format!(
            "update raw_records set rejected_code = null, rejected_reason = null where id = {id}"
        ),
        format!("update raw_records set rejected_reason = 'fine after all' where id = {id}"),
        format!("update raw_records set rejected_code = 'OK' where id = {id}"),
    ] {
        let e = exec(&engine, &sql).unwrap_err();
        assert_eq!(e.code(), "IMMUTABLE", "{sql}: {e}");
    }
    // A started run: records with a malformed marker are refused by the CHECKs; a run
    // holding a rejected record cannot be finished success.
    let holder = Pipeline::builder("holder")
        .stage("plant", |ctx| {
            let run = ctx.run_id();
            let sha: String = ctx
                .store_raw(&RawInput {
                    source: "s",
                    upstream_ref: None,
                    content_type: "text/plain",
                    bytes: b"payload",
                })
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?
                .sha256;
            let insert = |code: &str, reason: &str| {
                format!(
                    "insert into raw_records (run_id, source, content_type, size, sha256, created_at, rejected_code, rejected_reason)
                     values ({run}, 's', 'text/plain', 7, '{sha}', '2026-11-22T11:30:00.000Z', {code}, {reason})"
                )
            };
            let mut refused = Vec::new();
            for (code, reason) in [
                ("'FLEX_X'", "null"),
                ("null", "'why'"),
                ("'lower'", "'why'"),
                ("''", "'why'"),
                ("'FLEX_X'", "''"),
            ] {
                let e = exec(ctx.engine(), &insert(code, reason)).unwrap_err();
                refused.push(e.code().to_string());
            }
            exec(ctx.engine(), &insert("'FLEX_X'", "'why'"))
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            let finish = format!(
                "update ingest_runs set status = 'success', finished_at = started_at, duration_ms = 0, lease_expires_at = null where id = {run}"
            );
            let e = exec(ctx.engine(), &finish).unwrap_err();
            refused.push(e.code().to_string());
            Err(StageError::fatal("DONE", serde_json::to_string(&refused).unwrap()))
        })
        .build()
        .unwrap();
    let run = trigger(&engine, &holder);
    let refused: Vec<String> = serde_json::from_str(run.error_message.as_deref().unwrap()).unwrap();
    assert_eq!(
        refused,
        [
            "CONSTRAINT_VIOLATION",
            "CONSTRAINT_VIOLATION",
            "CONSTRAINT_VIOLATION",
            "CONSTRAINT_VIOLATION",
            "CONSTRAINT_VIOLATION",
            "ILLEGAL_TRANSITION",
        ],
        "{run:?}"
    );
}
