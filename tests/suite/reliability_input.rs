//! Bad input: every public entry point given empty, oversized, non-UTF-8, invalid JSON,
//! unknown ids and wrong states answers with a typed error of a stable code and leaves the
//! database unchanged; seeded mutations of job records never panic the validator.

use runledger::job::record::JobRecord;
use runledger::run::probe::{Module, ProbeError};
use runledger::run::{Pipeline, StageOutput, TriggerKind, TriggerOptions};
use runledger::schedule::{NewSchedule, ScheduleEdit};
use runledger::{Engine, Error, JobState, NewJob, Supervisor, SupervisorOptions};
use serde_json::{json, Value};

use crate::common::*;
use crate::doctor::populate;
use crate::reliability::{count, seed, Rng};

fn id_in(engine: &Engine, state: &str) -> i64 {
    engine
        .with_connection(|c| {
            Ok(c.query_row(
                "select id from jobs where state = ?1 order by id limit 1",
                [state],
                |r| r.get(0),
            )?)
        })
        .unwrap()
}

type Case<'a> = (
    &'static str,
    &'static [&'static str],
    Box<dyn Fn() -> runledger::Result<()> + 'a>,
);

fn unit<T>(r: runledger::Result<T>) -> runledger::Result<()> {
    r.map(|_| ())
}

#[test]
fn every_entry_point_refuses_bad_input_typed_and_changes_nothing() {
    let (engine, clock, _dir) = file_engine();
    populate(&engine, &clock);
    let jobs = engine.jobs();
    let (created, running, paused, completed, failed, cancelled) = (
        id_in(&engine, "created"),
        id_in(&engine, "running"),
        id_in(&engine, "paused"),
        id_in(&engine, "completed"),
        id_in(&engine, "failed"),
        id_in(&engine, "cancelled"),
    );
    let run_attempt = jobs.get(running).unwrap().attempt;
    let huge = "x".repeat(100_000);
    let deep = (0..200).fold(json!(1), |v, _| json!([v]));
    let big_doc = json!({ "blob": "z".repeat(5 << 20) });
    let noop = noop_pipeline("noop", "s");
    let cases: Vec<Case<'_>> = vec![
        // jobs: creation
        (
            "create: empty user",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.create(&NewJob::new("", "research", json!({}))))),
        ),
        (
            "create: oversized user",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.create(&NewJob::new(huge.as_str(), "research", json!({}))))),
        ),
        (
            "create: empty kind",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.create(&NewJob::new("alice", "", json!({}))))),
        ),
        (
            "create: kind with NUL",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.create(&NewJob::new("alice", "re\0search", json!({}))))),
        ),
        (
            "create: oversized input",
            &["TOO_LARGE", "INVALID_INPUT"],
            Box::new(|| unit(jobs.create(&NewJob::new("alice", "research", big_doc.clone())))),
        ),
        (
            "create: empty tag",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.create(&NewJob::new("alice", "research", json!({})).tags([""])))),
        ),
        (
            "create: unknown parent",
            &["NOT_FOUND", "INVALID_INPUT", "CONSTRAINT_VIOLATION"],
            Box::new(|| {
                unit(jobs.create(&NewJob::new("alice", "research", json!({})).parent(999_999)))
            }),
        ),
        (
            "create: zero timeout",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(jobs.create(
                    &NewJob::new("alice", "research", json!({})).timeout(std::time::Duration::ZERO),
                ))
            }),
        ),
        (
            "parse_json: invalid",
            &["INVALID_INPUT"],
            Box::new(|| unit(runledger::job::parse_json("input", "{not json"))),
        ),
        (
            "parse_json: empty",
            &["INVALID_INPUT"],
            Box::new(|| unit(runledger::job::parse_json("input", ""))),
        ),
        // jobs: unknown ids and wrong states
        (
            "get: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(jobs.get(999_999))),
        ),
        (
            "claim: empty worker",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.claim("", &[]))),
        ),
        (
            "claim: empty kind filter",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.claim("w", &[""]))),
        ),
        (
            "heartbeat: unknown",
            &["NOT_FOUND"],
            Box::new(|| jobs.heartbeat(&claim_at(&jobs, 999_999, 1))),
        ),
        (
            "heartbeat: stale attempt",
            &["STALE_ATTEMPT"],
            Box::new(|| jobs.heartbeat(&claim_at(&jobs, running, run_attempt + 5))),
        ),
        (
            "heartbeat: not running",
            &["JOB_NOT_RUNNING", "STALE_ATTEMPT"],
            Box::new(|| jobs.heartbeat(&claim_at(&jobs, paused, 1))),
        ),
        (
            "progress: over 100",
            &["INVALID_INPUT"],
            Box::new(|| jobs.progress(&claim_at(&jobs, running, run_attempt), 101, None)),
        ),
        (
            "progress: oversized step",
            &["INVALID_INPUT"],
            Box::new(|| {
                jobs.progress(
                    &claim_at(&jobs, running, run_attempt),
                    10,
                    Some(huge.as_str()),
                )
            }),
        ),
        (
            "checkpoint: oversized",
            &["TOO_LARGE"],
            Box::new(|| jobs.checkpoint(&claim_at(&jobs, running, run_attempt), &big_doc)),
        ),
        (
            "checkpoint: too deep",
            &["INVALID_INPUT", "TOO_LARGE"],
            Box::new(|| jobs.checkpoint(&claim_at(&jobs, running, run_attempt), &deep)),
        ),
        (
            "complete: completed job",
            &["JOB_NOT_RUNNING", "STALE_ATTEMPT", "ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.complete(&claim_at(&jobs, completed, 1), &json!({})))),
        ),
        (
            "fail: empty code",
            &["INVALID_INPUT"],
            Box::new(|| unit(jobs.fail(&claim_at(&jobs, running, run_attempt), "", "m"))),
        ),
        (
            "cancel: completed",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.cancel(completed, "op", None))),
        ),
        (
            "cancel: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(jobs.cancel(999_999, "op", None))),
        ),
        (
            "pause: created",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.pause(created, "op"))),
        ),
        (
            "resume: running",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.resume(running, "op"))),
        ),
        (
            "resume_on: completed",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.resume_on(completed, "w", "op"))),
        ),
        (
            "mark_failed: cancelled",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.mark_failed(cancelled, "op", "X", "m"))),
        ),
        (
            "restart: running",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| unit(jobs.restart(running, "op", None))),
        ),
        (
            "restart: oversized input",
            &["TOO_LARGE", "INVALID_INPUT"],
            Box::new(|| unit(jobs.restart(failed, "op", Some(&big_doc)))),
        ),
        (
            "delete: running",
            &["ILLEGAL_TRANSITION"],
            Box::new(|| jobs.delete(running, "op")),
        ),
        (
            "delete: empty actor",
            &["INVALID_INPUT"],
            Box::new(|| jobs.delete(completed, "")),
        ),
        (
            "recovery_options: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(jobs.recovery_options(999_999, 3))),
        ),
        // events
        (
            "events since: unknown job",
            &["NOT_FOUND"],
            Box::new(|| unit(engine.events().since(999_999, 0, 10))),
        ),
        // supervisor
        (
            "supervisor: zero stale_after",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(Supervisor::new(
                    engine.clone(),
                    SupervisorOptions {
                        stale_after: std::time::Duration::ZERO,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "recover_now: unknown",
            &["NOT_FOUND"],
            Box::new(|| {
                unit(
                    Supervisor::new(engine.clone(), SupervisorOptions::default())?
                        .recover_now(999_999, "op"),
                )
            }),
        ),
        (
            "recover_now: completed",
            &["ILLEGAL_TRANSITION", "JOB_NOT_RUNNING"],
            Box::new(|| {
                unit(
                    Supervisor::new(engine.clone(), SupervisorOptions::default())?
                        .recover_now(completed, "op"),
                )
            }),
        ),
        // runs
        (
            "runs get: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(engine.runs().get(999_999))),
        ),
        (
            "trigger: invalid account",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(engine.runs().trigger_with(
                    &noop,
                    runledger::ScopeSelector::Targets,
                    TriggerKind::Manual,
                    &TriggerOptions {
                        account_id: Some(String::new()),
                    },
                ))
            }),
        ),
        (
            "pipeline: no stages",
            &["INVALID_INPUT"],
            Box::new(|| unit(Pipeline::builder("empty").build())),
        ),
        (
            "pipeline: empty name",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(
                    Pipeline::builder("")
                        .stage("s", |_| Ok(StageOutput::done()))
                        .build(),
                )
            }),
        ),
        (
            "raw_payload: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(engine.runs().raw_payload(&"0".repeat(64)))),
        ),
        (
            "raw_payload: not a sha",
            &["INVALID_INPUT", "NOT_FOUND"],
            Box::new(|| unit(engine.runs().raw_payload("../etc/passwd"))),
        ),
        (
            "record_probe: unknown module",
            &["NOT_FOUND"],
            Box::new(|| {
                unit(
                    engine
                        .runs()
                        .record_probe("ghost", &Err(ProbeError::new("DOWN", "x")), 5),
                )
            }),
        ),
        (
            "record_probe: negative latency",
            &["INVALID_INPUT", "NOT_FOUND"],
            Box::new(|| unit(engine.runs().record_probe("ghost", &Ok(()), -1))),
        ),
        (
            "set_module_enabled: unknown",
            &["NOT_FOUND"],
            Box::new(|| engine.runs().set_module_enabled("ghost", false)),
        ),
        (
            "upsert_module: empty name",
            &["INVALID_INPUT"],
            Box::new(|| {
                engine.runs().upsert_module(&Module {
                    module: String::new(),
                    ..sample_module()
                })
            }),
        ),
        // schedules
        (
            "schedule: empty name",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(engine.schedules().create(&NewSchedule::new(
                    "",
                    "ingest",
                    "targets",
                    "daily 19:30",
                    "UTC",
                )))
            }),
        ),
        (
            "schedule: bad rule",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(engine.schedules().create(&NewSchedule::new(
                    "s",
                    "ingest",
                    "targets",
                    "daily 25:99",
                    "UTC",
                )))
            }),
        ),
        (
            "schedule: empty rule",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(
                    engine
                        .schedules()
                        .create(&NewSchedule::new("s", "ingest", "targets", "", "UTC")),
                )
            }),
        ),
        (
            "schedule: unknown zone",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(engine.schedules().create(&NewSchedule::new(
                    "s",
                    "ingest",
                    "targets",
                    "daily 19:30",
                    "Mars/Olympus",
                )))
            }),
        ),
        (
            "schedule: duplicate name",
            &["INVALID_INPUT", "CONSTRAINT_VIOLATION", "ALREADY_EXISTS"],
            Box::new(|| {
                unit(engine.schedules().create(&NewSchedule::new(
                    "quarterly",
                    "ingest",
                    "targets",
                    "every 15m",
                    "UTC",
                )))
            }),
        ),
        (
            "schedule: oversized pipeline",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(engine.schedules().create(&NewSchedule::new(
                    "s",
                    huge.as_str(),
                    "targets",
                    "every 15m",
                    "UTC",
                )))
            }),
        ),
        (
            "schedule get: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(engine.schedules().get("ghost"))),
        ),
        (
            "schedule enable: unknown",
            &["NOT_FOUND"],
            Box::new(|| unit(engine.schedules().enable("ghost"))),
        ),
        (
            "schedule edit: bad rule",
            &["INVALID_INPUT"],
            Box::new(|| {
                unit(engine.schedules().edit(
                    "quarterly",
                    &ScheduleEdit {
                        rule: Some("every 0m".into()),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "schedule delete: unknown",
            &["NOT_FOUND"],
            Box::new(|| engine.schedules().delete("ghost")),
        ),
        // the versioned record
        (
            "record: not an object",
            &["INVALID_RECORD"],
            Box::new(|| unit(JobRecord::from_json(&json!([1, 2])))),
        ),
        (
            "record: future version",
            &["UNSUPPORTED_VERSION"],
            Box::new(|| unit(JobRecord::from_json(&json!({"schema_version": 99})))),
        ),
        (
            "record: empty object",
            &["INVALID_RECORD"],
            Box::new(|| unit(JobRecord::from_json(&json!({})))),
        ),
    ];
    let before = dump(&engine);
    let mut tried = 0;
    for (name, codes, call) in &cases {
        let err = match call() {
            Ok(()) => panic!("{name}: accepted"),
            Err(e) => e,
        };
        assert!(
            codes.contains(&err.code()),
            "{name}: got {} ({err}), expected one of {codes:?}",
            err.code()
        );
        assert!(
            !matches!(err, Error::Database(_)),
            "{name}: untyped {err:?}"
        );
        assert!(dump(&engine) == before, "{name} changed the database");
        tried += 1;
    }
    // Flex parsers take bytes: empty, non-UTF-8, oversized garbage. Pure, typed, FLEX_*.
    #[cfg(feature = "flex")]
    {
        let mut flex_inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff, 0xfe, 0x00, 0x80],
            b"<FlexStatementResponse><Status>".to_vec(),
            vec![b'<'; 1 << 20],
        ];
        flex_inputs.push(
            [
                b"<FlexQueryResponse>".as_slice(),
                &[0xc3, 0x28],
                b"</FlexQueryResponse>",
            ]
            .concat(),
        );
        for bytes in &flex_inputs {
            let e = runledger::flex::parse_envelope(bytes).unwrap_err();
            assert!(e.code().starts_with("FLEX_"), "{}", e.code());
            if let Err(e) = runledger::flex::scan_bytes(bytes) {
                assert!(e.code().starts_with("FLEX_"), "{}", e.code());
            }
            tried += 2;
        }
    }
    eprintln!("bad input sweep: {tried} refused calls, database unchanged after each");
    // The sweep changed nothing, including the rows the refused calls were aimed at.
    assert_eq!(jobs.get(running).unwrap().state, JobState::Running);
}

fn sample_module() -> Module {
    Module {
        module: "m".into(),
        domain: "d".into(),
        scopes: vec![runledger::run::Scope::Targets],
        enabled: true,
    }
}

/// A valid v2 record, as the API writes it.
fn valid_record() -> Value {
    let (engine, _clock) = mem_engine();
    let job = engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({"q": [1, 2]})).tags(["a"]))
        .unwrap();
    let v = JobRecord::from(&job).to_json();
    JobRecord::from_json(&v).expect("a record the API wrote validates");
    v
}

fn mutate_value(rng: &mut Rng, v: &mut Value) {
    let Value::Object(map) = v else { return };
    let keys: Vec<String> = map.keys().cloned().collect();
    let key = &keys[rng.below(keys.len() as u64) as usize];
    let pick = [
        Value::Null,
        json!(-1),
        json!(i64::MAX),
        json!(1.5),
        json!(""),
        json!("x".repeat(300)),
        json!([]),
        json!({}),
        json!(true),
        json!("running"),
        json!(["a", 1]),
    ];
    match rng.below(3) {
        0 => {
            map.remove(key);
        }
        1 => {
            map.insert(
                key.clone(),
                pick[rng.below(pick.len() as u64) as usize].clone(),
            );
        }
        _ => {
            map.insert(format!("extra{}", rng.below(3)), json!(1));
        }
    }
}

fn mutate_bytes(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            break;
        }
        let i = rng.below(out.len() as u64) as usize;
        match rng.below(4) {
            0 => out[i] = rng.next() as u8,
            1 => {
                out.remove(i);
            }
            2 => out.insert(i, b"{}[]\",:0\\"[rng.below(9) as usize]),
            _ => out.truncate(i),
        }
    }
    out
}

#[test]
fn seeded_mutations_of_job_records_never_panic_and_round_trip() {
    let n = count(5_000, 200_000);
    let seed = seed(0x004E_C04D);
    let mut rng = Rng::new(seed);
    let base = valid_record();
    let text = serde_json::to_vec(&base).unwrap();
    let mut v1 = base.clone();
    v1["schema_version"] = json!(1);
    for k in ["tags", "parent_id", "timeout_ms", "max_retries"] {
        v1.as_object_mut().unwrap().remove(k);
    }
    let (mut ok, mut invalid, mut unsupported, mut not_json) = (0, 0, 0, 0);
    for i in 0..n {
        let candidate: Option<Value> = if i % 2 == 0 {
            let mut v = if rng.below(3) == 0 {
                v1.clone()
            } else {
                base.clone()
            };
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut rng, &mut v);
            }
            Some(v)
        } else {
            serde_json::from_slice(&mutate_bytes(&mut rng, &text)).ok()
        };
        let Some(v) = candidate else {
            not_json += 1;
            continue;
        };
        match JobRecord::from_json(&v) {
            Ok(rec) => {
                ok += 1;
                let again =
                    JobRecord::from_json(&rec.to_json()).expect("a valid record round-trips");
                assert_eq!(again, rec);
            }
            Err(e) => match e.code() {
                "INVALID_RECORD" => {
                    invalid += 1;
                    let Error::InvalidRecord { errors, .. } = &e else {
                        unreachable!()
                    };
                    assert!(!errors.is_empty(), "an invalid record names its fields");
                }
                "UNSUPPORTED_VERSION" => unsupported += 1,
                other => panic!("unexpected code {other} for {v}"),
            },
        }
    }
    eprintln!(
        "job record mutations: seed {seed:#x}, {n} inputs: {ok} valid, {invalid} INVALID_RECORD, {unsupported} UNSUPPORTED_VERSION, {not_json} not JSON"
    );
    assert!(
        ok > 0 && invalid > 0 && unsupported > 0,
        "mutations reach every outcome"
    );
}

/// Regression: a checkpoint (or input, or result) nested deeper than serde_json's recursion
/// limit was written, after which every read of the job failed with an untyped DATABASE
/// error. Such documents are now refused up front with INVALID_INPUT.
#[test]
fn regression_a_document_nested_deeper_than_serde_reads_made_the_job_unreadable() {
    let (engine, _clock) = mem_engine();
    let jobs = engine.jobs();
    let deep = (0..200).fold(json!(1), |v, _| json!([v]));
    let err = jobs
        .create(&NewJob::new("alice", "research", deep.clone()))
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    jobs.create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    let c = jobs.claim("w", &[]).unwrap().unwrap();
    let before = dump(&engine);
    assert_eq!(
        jobs.checkpoint(&c, &deep).unwrap_err().code(),
        "INVALID_INPUT"
    );
    assert_eq!(
        jobs.complete(&c, &deep).unwrap_err().code(),
        "INVALID_INPUT"
    );
    assert_eq!(dump(&engine), before);
    // A document 100 levels deep (the limit) is accepted and reads back.
    let ok = (0..99).fold(json!(1), |v, _| json!([v]));
    jobs.checkpoint(&c, &ok).unwrap();
    assert_eq!(jobs.get(c.id()).unwrap().checkpoint, Some(ok));
}

/// Regression: a manual recovery that recovered nothing (unknown job, or a job that is not
/// running) was refused but still counted a supervisor tick in `supervisor_state`.
#[test]
fn regression_a_refused_recover_now_still_recorded_a_supervisor_tick() {
    let (engine, _clock) = mem_engine();
    let job = engine
        .jobs()
        .create(&NewJob::new("alice", "research", json!({})))
        .unwrap();
    let supervisor = Supervisor::new(engine.clone(), SupervisorOptions::default()).unwrap();
    let before = dump(&engine);
    assert_eq!(
        supervisor.recover_now(999_999, "op").unwrap_err().code(),
        "NOT_FOUND"
    );
    assert_eq!(
        supervisor.recover_now(job.id, "op").unwrap_err().code(),
        "ILLEGAL_TRANSITION"
    );
    assert_eq!(dump(&engine), before);
    assert!(supervisor.status().unwrap().is_none());
}
