//! The versioned JSON job record: the contract a UI or another service reads.
//!
//! Version 2 is current. Version 1 lacked `tags`, `parent_id`, `timeout_ms` and
//! `max_retries`; [`migrate`] upgrades it. Readers refuse versions they do not know.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::state::JobState;
use super::types::Job;
use crate::clock::Timestamp;
use crate::error::{Error, FieldError, Result};

/// The record version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

/// A job's error, when it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordError {
    /// Stable code.
    pub code: String,
    /// Message.
    pub message: Option<String>,
}

/// The job record, version [`SCHEMA_VERSION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Always [`SCHEMA_VERSION`] once read.
    pub schema_version: i64,
    /// Job id.
    pub id: i64,
    /// Owner.
    pub user_id: String,
    /// Kind.
    pub kind: String,
    /// State.
    pub state: JobState,
    /// 0..=100.
    pub progress: u8,
    /// Current step.
    pub step: Option<String>,
    /// Input document.
    pub input: Value,
    /// Result, when completed.
    pub result: Option<Value>,
    /// Error, when failed.
    pub error: Option<RecordError>,
    /// Whether a checkpoint is saved (the checkpoint itself is not part of the record).
    pub has_checkpoint: bool,
    /// Labels (v2).
    pub tags: Vec<String>,
    /// Parent job (v2).
    pub parent_id: Option<i64>,
    /// Per-attempt timeout in ms (v2).
    pub timeout_ms: Option<i64>,
    /// Retry budget (v2).
    pub max_retries: i64,
    /// Current attempt.
    pub attempt: i64,
    /// Created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Current attempt's start.
    pub started_at: Option<Timestamp>,
    /// Last heartbeat.
    pub heartbeat_at: Option<Timestamp>,
    /// Terminal time.
    pub finished_at: Option<Timestamp>,
}

impl From<&Job> for JobRecord {
    fn from(j: &Job) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            id: j.id,
            user_id: j.user_id.clone(),
            kind: j.kind.clone(),
            state: j.state,
            progress: j.progress,
            step: j.step.clone(),
            input: j.input.clone(),
            result: j.result.clone(),
            error: j.error_code.as_ref().map(|code| RecordError {
                code: code.clone(),
                message: j.error_message.clone(),
            }),
            has_checkpoint: j.checkpoint.is_some(),
            tags: j.tags.clone(),
            parent_id: j.parent_id,
            timeout_ms: j.timeout_ms,
            max_retries: j.max_retries,
            attempt: j.attempt,
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            heartbeat_at: j.heartbeat_at,
            finished_at: j.finished_at,
        }
    }
}

impl JobRecord {
    /// The record as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("records serialize")
    }

    /// Reads a record of any known version: migrates v1, validates, and refuses unknown
    /// versions with [`Error::UnsupportedVersion`].
    pub fn from_json(value: &Value) -> Result<Self> {
        let current = migrate(value)?;
        validate(&current)
    }
}

fn version_of(value: &Value) -> Result<i64> {
    let obj = value.as_object().ok_or_else(|| Error::InvalidRecord {
        what: "job record",
        errors: vec![fe("", "must be an object")],
    })?;
    match obj.get("schema_version") {
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
        _ => Err(Error::InvalidRecord {
            what: "job record",
            errors: vec![fe("/schema_version", "must be an integer")],
        }),
    }
}

/// Upgrades a record of any known version to the current one (v1 gets empty tags, no
/// parent, no timeout, no retries). The current version is returned unchanged.
pub fn migrate(value: &Value) -> Result<Value> {
    match version_of(value)? {
        1 => {
            let mut obj: Map<String, Value> = value.as_object().cloned().unwrap_or_default();
            obj.insert("schema_version".into(), Value::from(SCHEMA_VERSION));
            obj.entry("tags").or_insert_with(|| Value::Array(vec![]));
            obj.entry("parent_id").or_insert(Value::Null);
            obj.entry("timeout_ms").or_insert(Value::Null);
            obj.entry("max_retries").or_insert(Value::from(0));
            Ok(Value::Object(obj))
        }
        SCHEMA_VERSION => Ok(value.clone()),
        found => Err(Error::UnsupportedVersion {
            what: "job record",
            found,
            known: SCHEMA_VERSION,
        }),
    }
}

fn fe(field: &str, reason: &str) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Validates a current-version record field by field, reporting every failing field.
pub fn validate(value: &Value) -> Result<JobRecord> {
    let version = version_of(value)?;
    if version != SCHEMA_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "job record",
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    let obj = value.as_object().expect("version_of checked the object");
    let mut errors = Vec::new();
    let mut need = |name: &str, ok: fn(&Value) -> bool, reason: &str| match obj.get(name) {
        None => errors.push(fe(&format!("/{name}"), "is required")),
        Some(v) if !ok(v) => errors.push(fe(&format!("/{name}"), reason)),
        Some(_) => {}
    };
    let ts = |v: &Value| {
        v.as_str()
            .is_some_and(|s| Timestamp::parse_canonical(s).is_ok())
    };
    let opt_ts = |v: &Value| {
        v.is_null()
            || v.as_str()
                .is_some_and(|s| Timestamp::parse_canonical(s).is_ok())
    };
    need(
        "id",
        |v| v.as_i64().is_some_and(|n| n > 0),
        "must be a positive integer",
    );
    need(
        "user_id",
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
        "must be a non-empty string",
    );
    need(
        "kind",
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
        "must be a non-empty string",
    );
    need(
        "state",
        |v| v.as_str().is_some_and(|s| s.parse::<JobState>().is_ok()),
        "must be a job state",
    );
    need(
        "progress",
        |v| v.as_u64().is_some_and(|n| n <= 100),
        "must be an integer in 0..=100",
    );
    need(
        "step",
        |v| v.is_null() || v.is_string(),
        "must be a string or null",
    );
    need("input", |_| true, "");
    need("result", |_| true, "");
    need(
        "error",
        |v| v.is_null() || v.get("code").is_some_and(Value::is_string),
        "must be null or an object with a code",
    );
    need("has_checkpoint", Value::is_boolean, "must be a boolean");
    need(
        "tags",
        |v| v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "must be an array of strings",
    );
    need(
        "parent_id",
        |v| v.is_null() || v.as_i64().is_some_and(|n| n > 0),
        "must be null or a positive integer",
    );
    need(
        "timeout_ms",
        |v| v.is_null() || v.as_i64().is_some_and(|n| n > 0),
        "must be null or a positive integer",
    );
    need(
        "max_retries",
        |v| v.as_i64().is_some_and(|n| n >= 0),
        "must be a non-negative integer",
    );
    need(
        "attempt",
        |v| v.as_i64().is_some_and(|n| n >= 0),
        "must be a non-negative integer",
    );
    need(
        "created_at",
        ts,
        "must be a UTC timestamp like 2026-11-22T11:30:00.000Z",
    );
    need(
        "updated_at",
        ts,
        "must be a UTC timestamp like 2026-11-22T11:30:00.000Z",
    );
    need("started_at", opt_ts, "must be null or a UTC timestamp");
    need("heartbeat_at", opt_ts, "must be null or a UTC timestamp");
    need("finished_at", opt_ts, "must be null or a UTC timestamp");
    if errors.is_empty() {
        let state = obj["state"]
            .as_str()
            .and_then(|s| s.parse::<JobState>().ok());
        if let Some(state) = state {
            if state.is_terminal() == obj["finished_at"].is_null() {
                errors.push(fe(
                    "/finished_at",
                    "must be set exactly when the state is terminal",
                ));
            }
            if (state == JobState::Failed) == obj["error"].is_null() {
                errors.push(fe("/error", "must be set exactly when the state is failed"));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::InvalidRecord {
            what: "job record",
            errors,
        });
    }
    serde_json::from_value(value.clone()).map_err(|e| Error::InvalidRecord {
        what: "job record",
        errors: vec![fe("", &e.to_string())],
    })
}
