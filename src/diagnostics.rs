//! What the diagnostics shapes of a run ([`RunDiagnostics`](crate::run::RunDiagnostics))
//! and of a job ([`JobDiagnostics`](crate::job::JobDiagnostics)) share: their version,
//! relative times, and the redaction of volatile values, so that a host can pin them in a
//! snapshot test ([guide](crate::guide::snapshot_testing)).
//!
//! Volatile values are the ones that differ between two runs of the same test:
//! - row ids: not in the shape at all; inside host JSON (meta, details, event payloads,
//!   inputs and results), an integer under a key `id`, `*_id`, `*Id` (or a list of them
//!   under `*_ids`, `*Ids`) becomes `"[id]"`;
//! - wall-clock instants: each becomes milliseconds relative to the subject's own start
//!   (a run's `started_at`, a job's `created_at`), as a number in the shape's own fields
//!   and as `"t0+1500ms"` in a string of host JSON or of a message.
//!
//! Durations come from the engine's clock: on a [`ManualClock`](crate::ManualClock) they are
//! exact, so a snapshot test runs the host's pipeline on one.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock::Timestamp;

/// The version of the diagnostics shapes (`version` in each). A change to a field's name or
/// meaning gets a new version; a new field may be added within a version.
pub const DIAGNOSTICS_VERSION: u32 = 1;

/// What a redacted id reads as.
pub const REDACTED_ID: &str = "[id]";

/// A failure in a diagnostics shape: its stable code and message (timestamps in it made
/// relative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDiagnostics {
    /// The stable code.
    pub code: String,
    /// The message.
    pub message: Option<String>,
}

/// Relative times and redaction against one base instant (`t0`).
#[derive(Debug, Clone, Copy)]
pub struct Redactor {
    base: Timestamp,
}

impl Redactor {
    /// Times relative to `base`.
    pub fn new(base: Timestamp) -> Self {
        Self { base }
    }

    /// Milliseconds from the base to `t` (negative before it).
    pub fn ms(&self, t: Timestamp) -> i64 {
        t.millis_since(self.base)
    }

    /// [`Redactor::ms`] of an optional instant.
    pub fn opt_ms(&self, t: Option<Timestamp>) -> Option<i64> {
        t.map(|t| self.ms(t))
    }

    /// `t0+1500ms` / `t0-20ms` for `t`.
    pub fn label(&self, t: Timestamp) -> String {
        let ms = self.ms(t);
        if ms < 0 {
            format!("t0{ms}ms")
        } else {
            format!("t0+{ms}ms")
        }
    }

    /// `text` with every stored-form timestamp in it replaced by its [`Redactor::label`].
    pub fn text(&self, text: &str) -> String {
        const WIDTH: usize = 24; // 2026-11-22T11:30:00.000Z
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while !rest.is_empty() {
            let found = rest.char_indices().find_map(|(i, _)| {
                let candidate = rest.get(i..i + WIDTH)?;
                Timestamp::parse_canonical(candidate).ok().map(|t| (i, t))
            });
            match found {
                Some((i, t)) => {
                    out.push_str(&rest[..i]);
                    out.push_str(&self.label(t));
                    rest = &rest[i + WIDTH..];
                }
                None => {
                    out.push_str(rest);
                    break;
                }
            }
        }
        out
    }

    /// Host JSON with its volatile values redacted (see the module docs).
    pub fn json(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.field(k, v)))
                    .collect::<Map<_, _>>(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            Value::String(s) => Value::String(self.text(s)),
            other => other.clone(),
        }
    }

    fn field(&self, key: &str, value: &Value) -> Value {
        let one_id = key == "id" || key.ends_with("_id") || key.ends_with("Id");
        let many_ids = key.ends_with("_ids") || key.ends_with("Ids");
        match value {
            Value::Number(n) if one_id && n.is_i64() => REDACTED_ID.into(),
            Value::Array(items) if many_ids && items.iter().all(Value::is_i64) => {
                Value::Array(items.iter().map(|_| REDACTED_ID.into()).collect())
            }
            other => self.json(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn ids_and_instants_in_host_json_are_redacted_and_the_rest_kept() {
        let r = Redactor::new(t("2026-11-22T11:30:00.000Z"));
        let v = json!({
            "id": 7, "rawRecordId": 12, "job_ids": [1, 2], "account_id": "U1234567",
            "at": "2026-11-22T11:30:01.500Z", "note": "lease until 2026-11-22T11:29:59.000Z.",
            "rows": 3, "nested": [{"run_id": 4, "ok": true}]
        });
        assert_eq!(
            r.json(&v),
            json!({
                "id": "[id]", "rawRecordId": "[id]", "job_ids": ["[id]", "[id]"],
                "account_id": "U1234567", "at": "t0+1500ms",
                "note": "lease until t0-1000ms.", "rows": 3,
                "nested": [{"run_id": "[id]", "ok": true}]
            })
        );
        assert_eq!(r.text("héllo 2026-11-22T11:30:00.000Z"), "héllo t0+0ms");
    }
}
