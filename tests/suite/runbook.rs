//! runbook.sql: every query runs against a populated database, here and in the sqlite3 shell.

use std::time::Duration;

use runledger::run::{
    Gate, Module, Pipeline, ProbeError, Scope, ScopeSelector, StageError, StageOutput, TriggerKind,
};
use runledger::schedule::NewSchedule;
use runledger::{runbook, Clock, Engine, ManualClock, ScheduledRuns};
use serde_json::{json, Value};

use crate::common::*;
use crate::snap_json;

/// Columns whose value depends on the wall clock of the moment the query runs.
const AGE_COLUMNS: &[&str] = &["running_s", "lease_left_s", "silent_s"];

fn populate(engine: &Engine, clock: &ManualClock) {
    let c = clock.clone();
    let tick = move |n: u64| {
        let c = c.clone();
        move |_: &mut runledger::run::StageContext<'_>| {
            c.advance(Duration::from_millis(n));
            Ok(StageOutput::done())
        }
    };
    // Probes at t0, so stale by any later wall clock: one ok, one failed; one module untested.
    let runs = engine.runs();
    for (m, d, s) in [
        ("ib_flex", "broker", vec![Scope::Targets, Scope::Universe]),
        ("quotes", "market_data", vec![Scope::Targets]),
        ("fundamentals", "research", vec![Scope::Universe]),
    ] {
        runs.upsert_module(&Module {
            module: m.into(),
            domain: d.into(),
            scopes: s,
            enabled: true,
        })
        .unwrap();
    }
    runs.record_probe("ib_flex", &Ok(()), 120).unwrap();
    runs.record_probe(
        "quotes",
        &Err(ProbeError::new("HTTP_503", "unavailable")),
        30,
    )
    .unwrap();
    let flex = Pipeline::builder("flex")
        .gate(Gate::Token, |ctx| match ctx.scope() {
            Scope::Universe => Err(StageError::fatal(
                "TOKEN_MISSING",
                "no Flex token configured",
            )),
            Scope::Targets => Ok(StageOutput::done()),
        })
        .stage("request", tick(700))
        .stage("poll", tick(2_500))
        .stage("download", tick(900))
        .stage("persist", tick(100))
        .build()
        .unwrap();
    let prices = Pipeline::builder("prices")
        .stage("fetch", |_| {
            Err(StageError::fatal("HTTP_502", "bad gateway"))
        })
        .build()
        .unwrap();
    for _ in 0..2 {
        engine
            .runs()
            .trigger(&flex, ScopeSelector::Both, TriggerKind::Schedule)
            .unwrap();
        clock.advance(Duration::from_secs(86_400));
    }
    engine
        .runs()
        .trigger(&prices, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    // A crashed holder (abandoned by the next trigger) and a live holder with a turned-away trigger.
    engine
        .with_connection(|c| {
            c.execute_batch(
                "insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at, timeline)
                 values ('prices', 'universe', 'schedule', 'prices:universe', '2026-11-23T09:00:00.000Z', '2026-11-23T09:05:00.000Z',
                         json_array(json_object('v', 1, 'stage', 'fetch', 'kind', 'runner', 'attempt', 1, 'status', 'started',
                           'started_at', '2026-11-23T09:00:01.000Z', 'finished_at', null, 'duration_ms', null,
                           'error_code', null, 'message', null, 'detail', null)));
                 insert into ingest_runs (pipeline, scope, trigger, lock_key, started_at, lease_expires_at)
                 values ('flex', 'targets', 'manual', 'flex:targets', '2026-11-24T11:40:00.000Z', '2026-11-24T11:45:00.000Z');",
            )?;
            Ok(())
        })
        .unwrap();
    engine
        .runs()
        .trigger(&prices, ScopeSelector::Universe, TriggerKind::Schedule)
        .unwrap();
    engine
        .runs()
        .trigger(&flex, ScopeSelector::Targets, TriggerKind::Manual)
        .unwrap();
    // Schedules: an hourly one that fired and then missed slots (latest-only policy), and the
    // default daily one, not yet due.
    let schedules = engine.schedules();
    schedules.ensure_default().unwrap();
    schedules
        .create(&NewSchedule::new(
            "hourly-prices",
            "prices",
            "targets",
            "every 60m",
            "UTC",
        ))
        .unwrap();
    let fire = ScheduledRuns::new(engine.clone()).register(noop_pipeline("prices", "fetch"));
    clock.advance(Duration::from_secs(3_600));
    schedules.tick(clock.now(), &fire).unwrap();
    clock.advance(Duration::from_secs(3 * 3_600));
    schedules.tick(clock.now(), &fire).unwrap();
    // A ticker that crashed after claiming the next slot (as raw SQL: the slot stays claimed).
    engine
        .with_connection(|c| {
            c.execute_batch(
                "insert into due_runs (schedule_id, due_at, status, created_at)
                   select id, strftime('%Y-%m-%dT%H:%M:%fZ', last_due_at, '+1 hour'), 'pending',
                          strftime('%Y-%m-%dT%H:%M:%fZ', last_due_at, '+1 hour')
                   from schedules where name = 'hourly-prices';
                 update due_runs set status = 'claimed', claimed_by = 'crashed-ticker', claimed_at = created_at
                   where id = (select max(id) from due_runs);",
            )?;
            Ok(())
        })
        .unwrap();
    // A stuck job (the jobs table of V1).
    engine
        .with_connection(|c| {
            c.execute_batch(
                "insert into jobs (user_id, kind, created_at, updated_at) values ('u1', 'research', '2026-11-22T11:00:00.000Z', '2026-11-22T11:00:00.000Z');
                 update jobs set state = 'running', attempt = 1, worker_id = 'w1', started_at = '2026-11-22T11:01:00.000Z',
                   heartbeat_at = '2026-11-22T11:02:00.000Z', progress = 40, step = 'fetching' where id = 1;",
            )?;
            Ok(())
        })
        .unwrap();
}

fn redact(mut r: runbook::QueryResult) -> runbook::QueryResult {
    for (i, col) in r.columns.iter().enumerate() {
        if AGE_COLUMNS.contains(&col.as_str()) {
            for row in &mut r.rows {
                assert!(row[i].is_number(), "{col} is a number");
                row[i] = json!("[age]");
            }
        }
    }
    r
}

#[test]
fn every_runbook_query_runs_against_a_populated_database() {
    let (engine, clock, dir) = file_engine();
    populate(&engine, &clock);
    let queries = runbook::queries();
    assert!(queries.len() >= 10);
    let mut all = serde_json::Map::new();
    for q in queries {
        let r = engine
            .with_connection(|c| runbook::run(c, &q.name))
            .unwrap();
        assert!(
            !r.rows.is_empty(),
            "{} returned no rows on the populated database",
            q.name
        );
        all.insert(
            q.name.clone(),
            json!({"comment": q.comment, "result": redact(r)}),
        );
    }
    snap_json!("runbook_results", Value::Object(all));

    // The same text through the stock sqlite3 shell, when it is installed.
    let path = dir.path().join("runledger.db");
    match std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
    {
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("sqlite3 must be installed in CI (.ci/run installs it): invariant 8 is tested there")
        }
        Err(_) => eprintln!("sqlite3 is not installed: skipping the shell half of this test"),
        Ok(v) => {
            let version = String::from_utf8_lossy(&v.stdout).to_string();
            for q in queries {
                let out = std::process::Command::new("sqlite3")
                    .args(["-bail", "-readonly", "-json"])
                    .arg(&path)
                    .arg(&q.sql)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{} failed in sqlite3 {version}: {}",
                    q.name,
                    String::from_utf8_lossy(&out.stderr)
                );
                let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let ours = engine
                    .with_connection(|c| runbook::run(c, &q.name))
                    .unwrap();
                assert_eq!(
                    rows.len(),
                    ours.rows.len(),
                    "{} row count in sqlite3 {version}",
                    q.name
                );
            }
        }
    }
}

#[test]
fn unknown_query_names_are_not_found() {
    let (engine, _clock) = mem_engine();
    let e = engine
        .with_connection(|c| runbook::run(c, "drop_everything"))
        .unwrap_err();
    assert_eq!(e.code(), "NOT_FOUND");
}
