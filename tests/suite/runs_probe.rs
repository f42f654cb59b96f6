//! Module catalog, probes, readiness and preflight; raw records and retention.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runledger::run::{
    Gate, Module, Pipeline, PreflightConfig, PreflightPolicy, ProbeError, ProbeSet, RawInput,
    RunStatus, Scope, ScopeSelector, StageOutput, StageStatus, TriggerKind,
};
use runledger::{Clock, Engine, ManualClock};
use serde_json::json;

use crate::common::*;
use crate::snap_json;

fn catalog(engine: &Engine) {
    let runs = engine.runs();
    for (module, domain, scopes) in [
        ("ib_flex", "broker", vec![Scope::Targets, Scope::Universe]),
        ("quotes", "market_data", vec![Scope::Targets]),
        ("fundamentals", "research", vec![Scope::Universe]),
    ] {
        runs.upsert_module(&Module {
            module: module.into(),
            domain: domain.into(),
            scopes,
            enabled: true,
        })
        .unwrap();
    }
}

fn counting_probes(calls: &Arc<AtomicUsize>, clock: &ManualClock, quotes_fail: bool) -> ProbeSet {
    let (c1, c2, k1, k2) = (calls.clone(), calls.clone(), clock.clone(), clock.clone());
    ProbeSet::new()
        .with("ib_flex", move || {
            c1.fetch_add(1, Ordering::SeqCst);
            k1.advance(Duration::from_millis(120));
            Ok(())
        })
        .with("quotes", move || {
            c2.fetch_add(1, Ordering::SeqCst);
            k2.advance(Duration::from_millis(30));
            if quotes_fail {
                Err(ProbeError::new("HTTP_503", "quotes service unavailable"))
            } else {
                Ok(())
            }
        })
}

#[test]
fn catalog_crud_and_errors() {
    let (engine, _clock) = mem_engine();
    catalog(&engine);
    let runs = engine.runs();
    runs.set_module_enabled("quotes", false).unwrap();
    let mods = runs.modules().unwrap();
    assert_eq!(
        mods.iter()
            .map(|m| (m.module.as_str(), m.enabled))
            .collect::<Vec<_>>(),
        [("fundamentals", true), ("ib_flex", true), ("quotes", false)]
    );
    let before = dump(&engine);
    assert_eq!(
        runs.set_module_enabled("nope", true).unwrap_err().code(),
        "NOT_FOUND"
    );
    assert_eq!(
        runs.record_probe("nope", &Ok(()), 1).unwrap_err().code(),
        "NOT_FOUND"
    );
    let bad = Module {
        module: String::new(),
        domain: "d".into(),
        scopes: vec![],
        enabled: true,
    };
    assert_eq!(
        runs.upsert_module(&bad).unwrap_err().code(),
        "INVALID_INPUT"
    );
    assert_eq!(dump(&engine), before);
    runs.delete_module("quotes").unwrap();
    assert_eq!(runs.modules().unwrap().len(), 2);
    assert_eq!(
        runs.delete_module("quotes").unwrap_err().code(),
        "NOT_FOUND"
    );
}

#[test]
fn readiness_reports_untested_stale_failed_and_fresh_modules() {
    let (engine, clock) = mem_engine();
    catalog(&engine);
    let runs = engine.runs();
    let config = PreflightConfig {
        policy: PreflightPolicy::CheckOnly,
        fresh_for: Duration::from_secs(600),
    };
    runs.record_probe("ib_flex", &Ok(()), 85).unwrap();
    runs.record_probe(
        "quotes",
        &Err(ProbeError::new("TIMEOUT", "no answer in 5 s")),
        5_000,
    )
    .unwrap();
    clock.advance(Duration::from_secs(300));
    let snap = runs.readiness(Scope::Targets, &config).unwrap();
    assert!(!snap.ready);
    clock.advance(Duration::from_secs(301));
    let later = runs.readiness(Scope::Targets, &config).unwrap();
    assert!(!later.modules[0].fresh, "ib_flex went stale");
    let universe = runs.readiness(Scope::Universe, &config).unwrap();
    assert_eq!(
        universe
            .modules
            .iter()
            .map(|m| m.reason.clone())
            .collect::<Vec<_>>(),
        [
            Some("UNTESTED".to_string()),
            Some("STALE since 2026-11-22T11:30:00.000Z".to_string())
        ]
    );
    snap_json!(
        "readiness_targets",
        json!({"after_5_min": snap, "after_10_min": later})
    );
}

#[test]
fn manual_preflight_probes_only_stale_or_untested_modules_and_persists_results() {
    let (engine, clock) = mem_engine();
    catalog(&engine);
    let calls = Arc::new(AtomicUsize::new(0));
    let probes = counting_probes(&calls, &clock, false);
    let config = PreflightConfig::default();
    let before_runs = engine.runs().list(&Default::default()).unwrap();
    let snap = engine
        .runs()
        .preflight(Scope::Targets, &probes, &config)
        .unwrap();
    assert!(snap.ready, "{}", snap.why_not());
    assert_eq!(snap.probed, ["ib_flex", "quotes"]);
    assert_eq!(snap.modules[0].last_probe.as_ref().unwrap().latency_ms, 120);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Fresh now: a second preflight probes nothing.
    let again = engine
        .runs()
        .preflight(Scope::Targets, &probes, &config)
        .unwrap();
    assert!(again.probed.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        engine.runs().list(&Default::default()).unwrap(),
        before_runs,
        "no run started"
    );
    // Check-only never probes; universe's fundamentals has no probe function and stays untested.
    clock.advance(Duration::from_secs(3600));
    let check = PreflightConfig {
        policy: PreflightPolicy::CheckOnly,
        ..config
    };
    let stale = engine
        .runs()
        .preflight(Scope::Targets, &probes, &check)
        .unwrap();
    assert!(!stale.ready && stale.probed.is_empty());
    let universe = engine
        .runs()
        .preflight(Scope::Universe, &probes, &config)
        .unwrap();
    assert_eq!(universe.probed, ["ib_flex"]);
    assert_eq!(universe.why_not(), "not ready: fundamentals: UNTESTED");
}

#[test]
fn preflight_gate_blocks_a_run_and_records_the_snapshot() {
    let (engine, clock) = mem_engine();
    catalog(&engine);
    let calls = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let r2 = ran.clone();
    let p = Pipeline::builder("flex")
        .preflight(
            counting_probes(&calls, &clock, true),
            PreflightConfig::default(),
        )
        .stage("request", move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&p, ScopeSelector::Both, TriggerKind::Schedule)
        .unwrap();
    let targets = out[0].result.as_ref().unwrap();
    assert_eq!(targets.status, RunStatus::Failed);
    assert_eq!(targets.meta["blockedStage"], "preflight");
    assert_eq!(targets.error_code.as_deref(), Some("PREFLIGHT_NOT_READY"));
    let universe = out[1].result.as_ref().unwrap();
    assert_eq!(
        universe.error_message.as_deref(),
        Some("not ready: fundamentals: UNTESTED")
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    snap_json!("preflight_blocked_run", targets);

    // Policy off: the gate is recorded as skipped and the runner goes ahead.
    let r3 = ran.clone();
    let off = Pipeline::builder("flex")
        .preflight(
            ProbeSet::new(),
            PreflightConfig {
                policy: PreflightPolicy::Off,
                ..Default::default()
            },
        )
        .stage("request", move |_| {
            r3.fetch_add(1, Ordering::SeqCst);
            Ok(StageOutput::done())
        })
        .build()
        .unwrap();
    let out = engine
        .runs()
        .trigger(&off, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    let run = out[0].result.as_ref().unwrap();
    assert_eq!(run.status, RunStatus::Success);
    assert_eq!(run.timeline[0].status, StageStatus::Skipped);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------- raw records

fn downloader(bodies: Vec<&'static [u8]>) -> Pipeline {
    Pipeline::builder("flex")
        .gate(Gate::Token, |_| Ok(StageOutput::done()))
        .stage("download", move |ctx| {
            let mut shas = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                let reference = format!("ref-{i}");
                let rec = ctx.store_raw(&RawInput {
                    source: "ib_flex",
                    upstream_ref: Some(&reference),
                    content_type: "application/xml",
                    bytes: b,
                })?;
                shas.push(rec.sha256);
            }
            Ok(StageOutput::with_detail(json!({"sha256": shas})))
        })
        .build()
        .unwrap()
}

fn count(engine: &Engine, table: &str) -> i64 {
    let sql = match table {
        "raw_payloads" => "select count(*) from raw_payloads",
        "raw_records" => "select count(*) from raw_records",
        _ => "select count(*) from ingest_runs",
    };
    query_i64(engine, sql, []).unwrap()
}

#[test]
fn identical_payloads_are_stored_once_and_stay_immutable() {
    let (engine, _clock) = mem_engine();
    let p = downloader(vec![
        b"<FlexQueryResponse/>",
        b"<FlexQueryResponse/>",
        b"other",
    ]);
    let run = engine
        .runs()
        .trigger(&p, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    assert_eq!(run.status, RunStatus::Success);
    let recs = engine.runs().raw_records(run.id).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].sha256, recs[1].sha256);
    assert_eq!(
        recs[0].sha256,
        runledger::run::raw::sha256_hex(b"<FlexQueryResponse/>")
    );
    assert_eq!(
        runledger::run::raw::sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        (
            count(&engine, "raw_payloads"),
            count(&engine, "raw_records")
        ),
        (2, 3)
    );
    assert_eq!(
        engine.runs().raw_payload(&recs[2].sha256).unwrap(),
        b"other"
    );
    assert_eq!(
        engine.runs().raw_payload("00").unwrap_err().code(),
        "NOT_FOUND"
    );

    let before = dump(&engine);
    for sql in [
        "update raw_payloads set payload = x'00', size = 1",
        "delete from raw_payloads",
        "update raw_records set source = 'x'",
        "delete from raw_records",
        "insert into raw_records (run_id, source, content_type, size, sha256, created_at) select run_id, source, content_type, size, sha256, created_at from raw_records limit 1",
    ] {
        let e = engine.with_connection(|c| Ok(c.execute(sql, [])?)).unwrap_err();
        assert_eq!(e.code(), "IMMUTABLE", "{sql}: {e}");
        assert_eq!(dump(&engine), before, "{sql}");
    }
}

#[test]
fn retention_prunes_old_terminal_runs_and_unreferenced_payloads_never_a_started_run() {
    let (engine, clock) = mem_engine();
    let old = engine
        .runs()
        .trigger(
            &downloader(vec![b"shared", b"old only"]),
            ScopeSelector::Targets,
            TriggerKind::Schedule,
        )
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    clock.advance(Duration::from_secs(40 * 86_400));
    let new = engine
        .runs()
        .trigger(
            &downloader(vec![b"shared"]),
            ScopeSelector::Targets,
            TriggerKind::Schedule,
        )
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    // A started run older than the cutoff (its holder still works) is kept.
    engine.with_connection(|c| Ok(c.execute("insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
        values ('slow', 'universe', 'manual', 'slow:universe', '2026-01-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z')", [])?)).unwrap();
    let cutoff = clock.now() - Duration::from_secs(30 * 86_400);
    let report = engine.runs().prune(cutoff).unwrap();
    assert_eq!((report.runs, report.records, report.payloads), (1, 2, 1));
    assert_eq!(engine.runs().get(old.id).unwrap_err().code(), "NOT_FOUND");
    assert_eq!(engine.runs().raw_records(new.id).unwrap().len(), 1);
    assert_eq!(
        engine
            .runs()
            .raw_payload(&runledger::run::raw::sha256_hex(b"shared"))
            .unwrap(),
        b"shared"
    );
    assert_eq!(count(&engine, "ingest_runs"), 2);
    assert_eq!(
        engine.runs().prune(cutoff).unwrap(),
        Default::default(),
        "idempotent"
    );

    // Deleting a run with records, without its records, fails at commit (deferred FK).
    let e = engine.with_connection(|c| {
        c.execute_batch("begin; delete from ingest_runs where pipeline = 'flex'; commit;")?;
        Ok(())
    });
    assert!(e.is_err());
    engine
        .with_connection(|c| Ok(c.execute_batch("rollback")?))
        .ok();
    assert_eq!(engine.runs().raw_records(new.id).unwrap().len(), 1);
}

#[test]
fn a_finished_run_cannot_store_payloads() {
    let (engine, _clock) = mem_engine();
    let run = engine
        .runs()
        .trigger(
            &downloader(vec![]),
            ScopeSelector::Targets,
            TriggerKind::Schedule,
        )
        .unwrap()
        .remove(0)
        .result
        .unwrap();
    let before = dump(&engine);
    let e = engine.with_connection(|c| Ok(c.execute(
        "insert into raw_payloads (sha256, size, payload) values ('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 3, x'616263')", [])?));
    assert!(e.is_ok());
    let e = engine.with_connection(|c| Ok(c.execute(
        "insert into raw_records (run_id, source, content_type, size, sha256, created_at) values (?1, 's', 't', 3, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', '2026-11-22T11:30:00.000Z')", [run.id])?)).unwrap_err();
    assert_eq!(e.code(), "IMMUTABLE");
    engine
        .with_connection(|c| Ok(c.execute("delete from raw_payloads", [])?))
        .unwrap();
    assert_eq!(dump(&engine), before);
}
