//! The stage timeline of a run: one [`TimelineEntry`] per stage attempt, stored as a JSON
//! array in `ingest_runs.timeline`.
//!
//! The entry shape is versioned ([`TIMELINE_VERSION`], field `v`); [`parse`] refuses
//! versions it does not know. Every key is always present (absent values are `null`), so
//! operators can `json_extract` any of them.

use serde_json::Value;

use crate::clock::Timestamp;
use crate::error::{Error, Result};

/// The version written in every entry's `v` field.
pub const TIMELINE_VERSION: i64 = 1;

/// Which part of a run an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// The single-active-run lock (only in the record of a turned-away trigger).
    Lock,
    /// A gate: preflight, readiness, token, analysis_init.
    Gate,
    /// A runner stage (request, poll, download, persist...).
    Runner,
}

serde_display!(StageKind);

/// How one stage attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Began and has not ended (in a terminal run only if its process died mid-stage and
    /// the sweep could not close it; the sweep closes it as failed `ABANDONED`).
    Started,
    /// Ended well.
    Success,
    /// Ended with an error (maybe retried in the next entry).
    Failed,
    /// Had nothing to do (for example preflight under policy `off`).
    Skipped,
}

serde_display!(StageStatus);

/// One stage attempt. Define-once shape of the JSON array elements of `ingest_runs.timeline`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// Shape version ([`TIMELINE_VERSION`]).
    pub v: i64,
    /// Stage name (`preflight`, `token`, `download`, `lock`...).
    pub stage: String,
    /// Gate, runner or lock.
    pub kind: StageKind,
    /// 1 for the first attempt, growing with each retry.
    pub attempt: u32,
    /// Outcome of this attempt.
    pub status: StageStatus,
    /// When the attempt began.
    pub started_at: Timestamp,
    /// When it ended (`null` while started).
    pub finished_at: Option<Timestamp>,
    /// `finished_at - started_at` in milliseconds.
    pub duration_ms: Option<i64>,
    /// The stage error's code when failed.
    pub error_code: Option<String>,
    /// The stage error's message, or a note.
    pub message: Option<String>,
    /// Optional JSON the stage returned (success) or attached to its error.
    pub detail: Option<Value>,
}

impl TimelineEntry {
    /// An open entry: the attempt has begun at `now`.
    pub fn started(stage: &str, kind: StageKind, attempt: u32, now: Timestamp) -> Self {
        Self {
            v: TIMELINE_VERSION,
            stage: stage.to_string(),
            kind,
            attempt,
            status: StageStatus::Started,
            started_at: now,
            finished_at: None,
            duration_ms: None,
            error_code: None,
            message: None,
            detail: None,
        }
    }

    /// This entry closed at `now` (never before it started) with `status`.
    pub fn close(mut self, status: StageStatus, now: Timestamp) -> Self {
        let end = now.max(self.started_at);
        self.status = status;
        self.finished_at = Some(end);
        self.duration_ms = Some(end.millis_since(self.started_at));
        self
    }

    /// This entry with an error code and message.
    pub fn with_error(mut self, code: &str, message: &str) -> Self {
        self.error_code = Some(code.to_string());
        self.message = Some(message.to_string());
        self
    }

    /// This entry with `detail`.
    pub fn with_detail(mut self, detail: Option<Value>) -> Self {
        self.detail = detail;
        self
    }

    /// The entry as JSON text (for the store).
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("timeline entries always serialize")
    }
}

/// Parses a stored timeline, refusing entry versions this build does not know.
pub fn parse(text: &str) -> Result<Vec<TimelineEntry>> {
    let values: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| Error::invalid("timeline", format!("not a JSON array: {e}")))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let version = v.get("v").and_then(Value::as_i64).unwrap_or(0);
            if version != TIMELINE_VERSION {
                return Err(Error::UnsupportedVersion {
                    what: "timeline entry",
                    found: version,
                    known: TIMELINE_VERSION,
                });
            }
            serde_json::from_value(v)
                .map_err(|e| Error::invalid(format!("timeline/{i}"), e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(1_795_000_000_000 + ms).unwrap()
    }

    #[test]
    fn entries_round_trip_and_keep_every_key() {
        let e = TimelineEntry::started("token", StageKind::Gate, 1, t(0))
            .close(StageStatus::Failed, t(250))
            .with_error("TOKEN_MISSING", "no token configured");
        let text = serde_json::to_string(&vec![e.clone()]).unwrap();
        assert!(text.contains("\"detail\":null"), "{text}");
        assert_eq!(parse(&text).unwrap(), vec![e.clone()]);
        assert_eq!(e.duration_ms, Some(250));
    }

    #[test]
    fn a_clock_that_went_back_gives_zero_duration_not_negative() {
        let e = TimelineEntry::started("poll", StageKind::Runner, 1, t(100))
            .close(StageStatus::Success, t(0));
        assert_eq!((e.finished_at, e.duration_ms), (Some(t(100)), Some(0)));
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let e = parse(r#"[{"v":2,"stage":"x"}]"#).unwrap_err();
        assert_eq!(e.code(), "UNSUPPORTED_VERSION");
        assert_eq!(parse("{}").unwrap_err().code(), "INVALID_INPUT");
        assert_eq!(
            parse(r#"[{"v":1,"stage":"x"}]"#).unwrap_err().code(),
            "INVALID_INPUT"
        );
    }
}
