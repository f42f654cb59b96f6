//! The tables SQLite had alone, on PostgreSQL (schema version 3): the module catalog and
//! its probes, raw payloads and records, and the supervisors' bookkeeping answer the same
//! calls as on SQLite with the same results (values, ids, error codes); raw SQL that breaks
//! a rule of one of the five tables is refused by PostgreSQL itself, TRUNCATE included.

use std::fmt::Debug;
use std::time::Duration;

use runledger::pg::PgEngine;
use runledger::run::{
    Module, Pipeline, PreflightConfig, PreflightPolicy, ProbeError, ProbeSet, RawFilter, RawInput,
    StageError, StageOutput,
};
use runledger::{
    Engine, EngineOptions, ManualClock, NewJob, RunStatus, Scope, Supervisor, SupervisorOptions,
    Timestamp, TriggerKind,
};
use serde_json::json;

use crate::common::TestDb;

const T0: &str = "2026-11-20T10:00:00.000Z";

/// A SQLite ledger in memory on a manual clock at [`T0`].
fn sqlite_at_t0() -> (Engine, ManualClock) {
    let clock = ManualClock::new(Timestamp::parse(T0).unwrap());
    let engine =
        Engine::open_in_memory_with(EngineOptions::default().with_clock(clock.clone())).unwrap();
    (engine, clock)
}

/// Both answers the same: equal values, or errors with equal codes.
#[track_caller]
fn same<T: PartialEq + Debug>(pg: runledger::Result<T>, lite: runledger::Result<T>, what: &str) {
    match (pg, lite) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
        (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{what}: {a} / {b}"),
        (a, b) => panic!("{what}: PostgreSQL {a:?}, SQLite {b:?}"),
    }
}

fn module(name: &str, domain: &str, scopes: &[Scope]) -> Module {
    Module {
        module: name.into(),
        domain: domain.into(),
        scopes: scopes.to_vec(),
        enabled: true,
    }
}

#[test]
fn pg_modules_probes_readiness_and_preflight_answer_as_on_sqlite() {
    let Some(db) = TestDb::new("twins_modules") else {
        return;
    };
    let (pg, pg_clock) = db.engine_at(T0);
    let (lite, clock) = sqlite_at_t0();
    let (p, l) = (pg.runs(), lite.runs());
    let advance = |d: Duration| {
        pg_clock.advance(d);
        clock.advance(d);
    };

    // the catalog: scopes sorted and deduplicated, names checked, upsert replaces
    for m in [
        module(
            "quotes",
            "market_data",
            &[Scope::Universe, Scope::Targets, Scope::Universe],
        ),
        module("ib_flex", "broker", &[Scope::Targets]),
        module("fx", "market_data", &[Scope::Universe]),
        module("", "broker", &[Scope::Targets]),
        module("x", &"d".repeat(65), &[Scope::Targets]),
        module("ib_flex", "broker-v2", &[Scope::Targets, Scope::Universe]),
    ] {
        same(p.upsert_module(&m), l.upsert_module(&m), "upsert_module");
    }
    same(p.modules(), l.modules(), "modules");
    assert_eq!(p.modules().unwrap().len(), 3);
    same(
        p.set_module_enabled("fx", false),
        l.set_module_enabled("fx", false),
        "disable",
    );
    same(
        p.set_module_enabled("nope", true),
        l.set_module_enabled("nope", true),
        "enable a module that does not exist",
    );
    same(
        p.delete_module("nope"),
        l.delete_module("nope"),
        "delete nothing",
    );

    // probes: ok, failed, an unknown module, a code too long, a latency past a day
    let fail = |code: &str| Err(ProbeError::new(code, "upstream said no"));
    for (module, outcome, latency) in [
        ("quotes", Ok(()), 12),
        ("ib_flex", fail("HTTP_503"), 250),
        ("nope", Ok(()), 1),
        ("ib_flex", fail(&"X".repeat(65)), 1),
        ("fx", Ok(()), 90_000_000),
    ] {
        same(
            p.record_probe(module, &outcome, latency),
            l.record_probe(module, &outcome, latency),
            &format!("record_probe {module}"),
        );
    }
    let config = PreflightConfig::default();
    for scope in [Scope::Targets, Scope::Universe] {
        same(
            p.readiness(scope, &config),
            l.readiness(scope, &config),
            "readiness",
        );
    }
    // later: the ok probe is stale; preflight probes what is stale or untested
    advance(Duration::from_secs(20 * 60));
    let probes = || {
        ProbeSet::new()
            .with("quotes", || Ok(()))
            .with("ib_flex", || -> Result<(), ProbeError> { panic!("boom") })
    };
    for policy in [
        PreflightPolicy::CheckOnly,
        PreflightPolicy::Off,
        PreflightPolicy::ProbeThenCheck,
    ] {
        let config = PreflightConfig {
            policy,
            ..PreflightConfig::default()
        };
        for scope in [Scope::Targets, Scope::Universe] {
            same(
                p.preflight(scope, &probes(), &config),
                l.preflight(scope, &probes(), &config),
                &format!("preflight {policy:?} {scope:?}"),
            );
        }
    }
    let after = p.readiness(Scope::Targets, &config).unwrap();
    assert_eq!(
        after.modules[0].reason.as_deref(),
        Some("PROBE_FAILED PROBE_PANIC (probe panicked)"),
        "{after:?}"
    );
    assert!(after.modules[1].ready, "{after:?}");
    // deleting a module takes its probe history with it
    same(
        p.delete_module("ib_flex"),
        l.delete_module("ib_flex"),
        "delete",
    );
    same(p.modules(), l.modules(), "modules after delete");
    same(
        p.record_probe("quotes", &Ok(()), 3),
        l.record_probe("quotes", &Ok(()), 3),
        "the next probe id",
    );
    // a code the table refuses (Rust checks its length only): refused by both databases
    // (last: PostgreSQL's identity value of a refused insert is not handed out again)
    same(
        p.record_probe("quotes", &fail("bad code!"), 1),
        l.record_probe("quotes", &fail("bad code!"), 1),
        "a code outside [A-Za-z0-9_.:-]",
    );
    let mut db = db;
    assert_eq!(
        db.query_i64("select count(*) from ingest_probes where module = 'ib_flex'"),
        0
    );
}

const A: &[u8] = b"<FlexQueryResponse queryName=\"daily\">\x00\xff</FlexQueryResponse>";
const B: &[u8] = b"<FlexQueryResponse queryName=\xe2\x80\x9cbroken\"/>";
const C: &[u8] = b"";

fn input(bytes: &'static [u8], upstream: Option<&'static str>) -> RawInput<'static> {
    RawInput {
        source: "ib_flex",
        upstream_ref: upstream,
        content_type: "application/xml",
        bytes,
    }
}

/// SQLite: run 1 keeps A twice and B rejected, then fails; run 2 keeps C and succeeds.
fn sqlite_raw(lite: &Engine) {
    let keep = Pipeline::builder("keep")
        .stage("fetch", |ctx| {
            ctx.store_raw(&input(A, Some("ref-1")))
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            ctx.store_raw(&input(A, None))
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            ctx.store_rejected_raw(&input(B, Some("ref-2")), "FLEX_MALFORMED_XML", "byte 29")
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            Err(StageError::fatal("FLEX_MALFORMED_XML", "byte 29"))
        })
        .build()
        .unwrap();
    let empty = Pipeline::builder("empty")
        .stage("fetch", |ctx| {
            ctx.store_raw(&input(C, None))
                .map_err(|e| StageError::fatal(e.code(), e.to_string()))?;
            Ok(StageOutput::with_detail(json!({})))
        })
        .build()
        .unwrap();
    for p in [&keep, &empty] {
        lite.runs()
            .trigger(p, Scope::Targets.into(), TriggerKind::Manual)
            .unwrap();
    }
}

/// PostgreSQL: the same through the run steps.
fn pg_raw(pg: &PgEngine) {
    let runs = pg.runs();
    let lease = Duration::from_secs(300);
    let one = runs
        .start("keep", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    runs.store_raw(one, &input(A, Some("ref-1"))).unwrap();
    runs.store_raw(one, &input(A, None)).unwrap();
    runs.store_rejected_raw(
        one,
        &input(B, Some("ref-2")),
        "FLEX_MALFORMED_XML",
        "byte 29",
    )
    .unwrap();
    // a run holding a rejected record never ends success
    let e = runs
        .finish(one, RunStatus::Success, None, &json!({}))
        .unwrap_err();
    assert_eq!(e.code(), "ILLEGAL_TRANSITION", "{e}");
    runs.finish(
        one,
        RunStatus::Failed,
        Some(("FLEX_MALFORMED_XML", "byte 29")),
        &json!({}),
    )
    .unwrap();
    let two = runs
        .start("empty", Scope::Targets, TriggerKind::Manual, None, lease)
        .unwrap();
    runs.store_raw(two, &input(C, None)).unwrap();
    runs.finish(two, RunStatus::Success, None, &json!({}))
        .unwrap();
}

#[test]
fn pg_raw_records_payloads_and_prune_answer_as_on_sqlite() {
    let Some(mut db) = TestDb::new("twins_raw") else {
        return;
    };
    let (pg, pg_clock) = db.engine_at(T0);
    let (lite, clock) = sqlite_at_t0();
    sqlite_raw(&lite);
    pg_raw(&pg);
    let (p, l) = (pg.runs(), lite.runs());

    let filters = [
        RawFilter::default(),
        RawFilter {
            rejected_only: true,
            ..RawFilter::default()
        },
        RawFilter {
            run_id: Some(1),
            limit: 2,
            ..RawFilter::default()
        },
        RawFilter {
            run_id: Some(99),
            ..RawFilter::default()
        },
        RawFilter {
            limit: 0,
            ..RawFilter::default()
        },
        RawFilter {
            limit: 1001,
            ..RawFilter::default()
        },
    ];
    for f in &filters {
        same(p.raw_list(f), l.raw_list(f), &format!("raw_list {f:?}"));
    }
    let all = l.raw_list(&RawFilter::default()).unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    for id in 0..=5 {
        same(
            p.raw_record(id),
            l.raw_record(id),
            &format!("raw_record {id}"),
        );
    }
    for run in 0..=3 {
        same(
            p.raw_records(run),
            l.raw_records(run),
            &format!("raw_records {run}"),
        );
    }
    for bytes in [A, B, C, b"never stored".as_slice()] {
        let sha = runledger::run::raw::sha256_hex(bytes);
        same(p.raw_payload(&sha), l.raw_payload(&sha), "raw_payload");
    }
    same(
        p.raw_payload("not a hash"),
        l.raw_payload("not a hash"),
        "bad key",
    );
    assert_eq!(db.query_i64("select count(*) from raw_payloads"), 3);

    // storing for a run that ended, or that does not exist
    let e = p.store_raw(1, &input(A, None)).unwrap_err();
    assert_eq!(e.code(), "INVALID_INPUT", "{e}");
    let e = p.store_raw(99, &input(A, None)).unwrap_err();
    assert_eq!(e.code(), "NOT_FOUND", "{e}");
    // the SQLite checks, before any write: field sizes, rejection codes
    let long = RawInput {
        source: "s",
        upstream_ref: Some(""),
        content_type: "t",
        bytes: b"x",
    };
    let three = p
        .start(
            "late",
            Scope::Universe,
            TriggerKind::Manual,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        p.store_raw(three, &long).unwrap_err().code(),
        "INVALID_INPUT"
    );
    assert_eq!(
        p.store_rejected_raw(three, &input(B, None), "lower", "why")
            .unwrap_err()
            .code(),
        "INVALID_INPUT"
    );
    assert!(p.raw_records(three).unwrap().is_empty());

    // retention: both finished runs go with their records and payloads; the started one stays
    let hour = Duration::from_secs(3600);
    pg_clock.advance(hour);
    clock.advance(hour);
    let cutoff = pg.now();
    same(p.prune(cutoff), l.prune(cutoff), "prune");
    assert_eq!(
        p.prune(cutoff).unwrap(),
        runledger::run::PruneReport::default()
    );
    same(
        p.raw_list(&RawFilter::default()),
        l.raw_list(&RawFilter::default()),
        "after prune",
    );
    assert_eq!(db.query_i64("select count(*) from raw_payloads"), 0);
    assert_eq!(db.query_i64("select count(*) from ingest_runs"), 1);
}

#[test]
fn pg_supervisor_bookkeeping_answers_as_on_sqlite() {
    let Some(mut db) = TestDb::new("twins_supervisor") else {
        return;
    };
    let (pg, pg_clock) = db.engine_at(T0);
    let (lite, clock) = sqlite_at_t0();
    let opts = SupervisorOptions {
        name: "node-a/supervisor".into(),
        stale_after: Duration::from_secs(30),
        ..SupervisorOptions::default()
    };
    let ps = pg.supervisor(opts.clone()).unwrap();
    let ls = Supervisor::new(lite.clone(), opts).unwrap();
    same(ps.status(), ls.status(), "before the first tick");
    same(ps.cleanup(), ls.cleanup(), "cleanup of nothing");
    // job 1 stalls without a checkpoint (failed), job 2 with one (paused)
    for i in 1..=2 {
        let pj = pg.jobs().create(&NewJob::new("u", "k", json!({}))).unwrap();
        let lj = lite
            .jobs()
            .create(&NewJob::new("u", "k", json!({})))
            .unwrap();
        assert_eq!(pj.id, lj.id);
        pg.jobs().claim("w", &["k"]).unwrap().unwrap();
        let lc = lite.jobs().claim("w", &["k"]).unwrap().unwrap();
        if i == 2 {
            lite.jobs().checkpoint(&lc, &json!({"page": 2})).unwrap();
            // (PgJobs has no checkpoint yet: the row as SQLite's checkpoint leaves it)
            db.exec(&format!(
                "update jobs set checkpoint = '{{\"page\": 2}}', checkpoint_at = '{T0}' where id = {}",
                pj.id
            ))
            .unwrap();
        }
    }
    for _ in 0..3 {
        pg_clock.advance(Duration::from_secs(60));
        clock.advance(Duration::from_secs(60));
        ps.tick(pg.now()).unwrap();
        ls.tick(lite.now()).unwrap();
    }
    let status = ps.status().unwrap().unwrap();
    assert_eq!(
        (status.ticks, status.jobs_recovered, status.jobs_failed),
        (3, 1, 1)
    );
    same(Ok(Some(status)), ls.status(), "after three ticks");
    same(ps.cleanup(), ls.cleanup(), "cleanup");
    same(ps.status(), ls.status(), "after cleanup");
}

/// The server's message for `sql`, which must fail.
#[track_caller]
fn refused(db: &mut TestDb, sql: &str) -> String {
    match db.exec(sql) {
        Ok(n) => panic!("{sql}: accepted ({n} rows)"),
        Err(e) => e,
    }
}

#[track_caller]
fn refused_with(db: &mut TestDb, sql: &str, expected: &str) {
    let message = refused(db, sql);
    assert!(
        message.starts_with(expected) || message.contains(expected),
        "{sql}: {message}"
    );
}

const CHECK: &str = "violates check constraint";

#[test]
fn pg_raw_sql_cannot_break_the_rules_of_the_five_tables() {
    let Some(mut db) = TestDb::new("twins_attacks") else {
        return;
    };
    let (pg, _clock) = db.engine_at(T0);
    let runs = pg.runs();
    runs.upsert_module(&module("quotes", "market_data", &[Scope::Targets]))
        .unwrap();
    runs.record_probe("quotes", &Ok(()), 5).unwrap();
    pg.supervisor(SupervisorOptions::default())
        .unwrap()
        .tick(pg.now())
        .unwrap();
    pg_raw(&pg);
    let open = runs
        .start(
            "open",
            Scope::Universe,
            TriggerKind::Manual,
            None,
            Duration::from_secs(60),
        )
        .unwrap();
    let sha_a = runledger::run::raw::sha256_hex(A);
    let sha_c = runledger::run::raw::sha256_hex(C);

    // supervisor_state: the name is fixed, counters only grow, never replaced or emptied
    for sql in [
        "update supervisor_state set ticks = ticks - 1",
        "update supervisor_state set jobs_recovered = jobs_recovered - 1, ticks = ticks + 1",
        "update supervisor_state set name = 'other'",
        "update supervisor_state set last_tick_at = null",
    ] {
        refused_with(
            &mut db,
            sql,
            "IMMUTABLE: supervisor_state: the name is fixed and counters only grow",
        );
    }
    refused_with(
        &mut db,
        "insert into supervisor_state (name) values ('supervisor')",
        "duplicate key",
    );
    for sql in [
        "insert into supervisor_state (name, last_tick_at) values ('b', '2026-11-20 10:00:00')",
        "insert into supervisor_state (name, ticks) values ('c', -1)",
        "insert into supervisor_state (name) values (E'tab\\there')",
        "insert into supervisor_state (name) values ('')",
    ] {
        refused_with(&mut db, sql, CHECK);
    }

    // ingest_modules: scopes among targets, universe; never renamed; shapes
    refused_with(
        &mut db,
        "insert into ingest_modules (module, domain, scopes, updated_at) values ('m', 'd', '[\"targets\", \"everything\"]', '2026-11-20T10:00:00.000Z')",
        "INVALID_SHAPE: ingest_modules: scopes are among targets, universe",
    );
    refused_with(
        &mut db,
        "update ingest_modules set scopes = '[1]'",
        "INVALID_SHAPE: ingest_modules",
    );
    refused_with(
        &mut db,
        "update ingest_modules set module = 'renamed'",
        "IMMUTABLE: ingest_modules: a module is never renamed",
    );
    for sql in [
        "update ingest_modules set scopes = '\"targets\"'",
        "update ingest_modules set updated_at = 'yesterday'",
        "update ingest_modules set updated_at = '2026-02-30T10:00:00.000Z'",
        "insert into ingest_modules (module, domain, updated_at) values (repeat('m', 65), 'd', '2026-11-20T10:00:00.000Z')",
    ] {
        refused_with(&mut db, sql, CHECK);
    }

    // ingest_probes: history; with a module that exists; shapes
    refused_with(
        &mut db,
        "update ingest_probes set latency_ms = 1",
        "IMMUTABLE: ingest_probes",
    );
    refused_with(
        &mut db,
        "delete from ingest_probes",
        "IMMUTABLE: ingest_probes",
    );
    refused_with(
        &mut db,
        "insert into ingest_probes (module, status, latency_ms, tested_at) values ('ghost', 'ok', 1, '2026-11-20T10:00:00.000Z')",
        "MISSING_REFERENCE: ingest_probes: module names no module",
    );
    for sql in [
        "insert into ingest_probes (module, status, latency_ms, tested_at) values ('quotes', 'failed', 1, '2026-11-20T10:00:00.000Z')",
        "insert into ingest_probes (module, status, code, latency_ms, tested_at) values ('quotes', 'ok', 'X', 1, '2026-11-20T10:00:00.000Z')",
        "insert into ingest_probes (module, status, latency_ms, tested_at) values ('quotes', 'ok', 86400001, '2026-11-20T10:00:00.000Z')",
        "insert into ingest_probes (module, status, code, latency_ms, tested_at) values ('quotes', 'failed', 'has space', 1, '2026-11-20T10:00:00.000Z')",
    ] {
        refused_with(&mut db, sql, CHECK);
    }

    // raw_payloads: the key is the bytes' sha-256; immutable; referenced ones stay
    refused_with(
        &mut db,
        &format!(
            "insert into raw_payloads (sha256, size, payload) values ('{}', 1, '\\x41')",
            "0".repeat(64)
        ),
        CHECK,
    );
    refused_with(
        &mut db,
        "insert into raw_payloads (sha256, size, payload) values (encode(sha256('\\x41'::bytea), 'hex'), 2, '\\x41')",
        CHECK,
    );
    refused_with(
        &mut db,
        "insert into raw_payloads (sha256, size, payload) values (upper(encode(sha256('\\x41'::bytea), 'hex')), 1, '\\x41')",
        CHECK,
    );
    refused_with(
        &mut db,
        &format!("update raw_payloads set payload = '\\x41', size = 1, sha256 = encode(sha256('\\x41'::bytea), 'hex') where sha256 = '{sha_a}'"),
        "IMMUTABLE: raw_payloads",
    );
    refused_with(
        &mut db,
        &format!("delete from raw_payloads where sha256 = '{sha_a}'"),
        "IMMUTABLE: raw_payloads",
    );
    refused_with(
        &mut db,
        &format!("insert into raw_payloads (sha256, size, payload) values ('{sha_c}', 0, '\\x')"),
        "duplicate key",
    );
    // an unreferenced payload may go
    db.exec("insert into raw_payloads (sha256, size, payload) values (encode(sha256('\\x41'::bytea), 'hex'), 1, '\\x41')")
        .unwrap();
    assert_eq!(
        db.exec("delete from raw_payloads where sha256 = encode(sha256('\\x41'::bytea), 'hex')"),
        Ok(1)
    );

    // raw_records: added by a started run for a stored payload, with its size; immutable;
    // a rejection is final; gone only with the run
    let record = |run: i64, size: usize, extra: &str| {
        format!(
            "insert into raw_records (run_id, source, content_type, size, sha256, created_at{}) values ({run}, 'ib_flex', 'application/xml', {size}, '{sha_a}', '2026-11-20T10:00:00.000Z'{})",
            if extra.is_empty() { "" } else { ", rejected_code, rejected_reason" },
            extra
        )
    };
    let added = "IMMUTABLE: raw_records: records are added by a started run for a stored payload";
    refused_with(&mut db, &record(1, A.len(), ""), added);
    refused_with(&mut db, &record(open, A.len() + 1, ""), added);
    refused_with(&mut db, &record(999, A.len(), ""), added);
    for extra in [
        ", 'lower', 'why'",
        ", 'CODE', null",
        ", null, 'why'",
        ", 'CODE', ''",
    ] {
        refused_with(&mut db, &record(open, A.len(), extra), CHECK);
    }
    db.exec(&record(open, A.len(), "")).unwrap();
    for sql in [
        "update raw_records set source = 'other'",
        "update raw_records set rejected_code = null, rejected_reason = null where rejected_code is not null",
        "update raw_records set rejected_reason = 'fine after all' where rejected_code is not null",
    ] {
        refused_with(&mut db, sql, "IMMUTABLE: raw_records");
    }
    refused_with(
        &mut db,
        "delete from raw_records where run_id = 1",
        "IMMUTABLE: raw_records",
    );
    refused_with(
        &mut db,
        "update ingest_runs set status = 'failed', error_code = 'X' where id = 1",
        "ILLEGAL_TRANSITION: ingest_runs: terminal runs are immutable",
    );

    // a run holding a rejected record never ends success, from SQL either
    db.exec(&record(open, A.len(), ", 'FLEX_MALFORMED_XML', 'byte 29'"))
        .unwrap();
    refused_with(
        &mut db,
        &format!("update ingest_runs set status = 'success', finished_at = started_at, duration_ms = 0 where id = {open}"),
        "ILLEGAL_TRANSITION: ingest_runs: a run that rejected its statement cannot succeed",
    );
    // a run with records cannot be deleted out from under them (the deferred foreign key)
    let message = refused(&mut db, "delete from ingest_runs where id = 2");
    assert!(message.contains("foreign key"), "{message}");

    // TRUNCATE skips row rules: refused on every one of the five tables
    for table in [
        "supervisor_state",
        "ingest_modules",
        "ingest_probes",
        "raw_payloads",
        "raw_records",
    ] {
        refused_with(
            &mut db,
            &format!("truncate {table} cascade"),
            &format!("IMMUTABLE: {table}: truncate would skip the row rules"),
        );
    }

    // the facades map the same refusals to typed errors, and doctor finds nothing wrong
    let e = runs
        .finish(open, RunStatus::Success, None, &json!({}))
        .unwrap_err();
    assert_eq!(e.code(), "ILLEGAL_TRANSITION", "{e}");
    let report =
        runledger::pg::doctor::check(&pg, &runledger::doctor::DoctorOptions::default()).unwrap();
    assert!(report.errors().next().is_none(), "{report:#?}");
}
