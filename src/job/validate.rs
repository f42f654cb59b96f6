//! Argument checks done before anything is written (the database repeats the ones it can).

use serde_json::Value;

use super::types::NewJob;
use crate::error::{Error, Result};

/// Largest input or result document, in bytes of JSON text.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
const MAX_TAGS: usize = 32;

/// Largest page a listing returns.
const MAX_LIST: u32 = 10_000;

/// A listing's page size: 1 to 10,000.
pub fn list_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_LIST {
        return Err(Error::invalid("limit", "must be 1..=10000"));
    }
    Ok(())
}

fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A kind or error code: 1..=64 bytes of `[A-Za-z0-9_.:-]`.
pub fn identifier(field: &str, value: &str) -> Result<()> {
    text(field, value, 64)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    {
        return Err(Error::invalid(
            field,
            "may only contain letters, digits and _ . : -",
        ));
    }
    Ok(())
}

/// A user, worker or actor name: 1..=256 bytes, no control characters.
pub fn name(field: &str, value: &str) -> Result<()> {
    text(field, value, 256)
}

/// Deepest nesting of arrays and objects a document may have: serde_json refuses to read
/// anything deeper (its recursion limit), so a deeper document would be written and then
/// make its job unreadable.
pub const MAX_DOCUMENT_DEPTH: usize = 100;

/// The nesting depth of `value` (a scalar is 0), counted without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// A JSON document's text, bounded by `limit` bytes and [`MAX_DOCUMENT_DEPTH`] levels.
pub fn document(field: &str, value: &Value, limit: usize) -> Result<String> {
    if depth(value) > MAX_DOCUMENT_DEPTH {
        return Err(Error::invalid(
            field,
            format!("nested deeper than {MAX_DOCUMENT_DEPTH} levels"),
        ));
    }
    let text = value.to_string();
    if text.len() > limit {
        return Err(Error::TooLarge {
            field: field.into(),
            size: text.len(),
            limit,
        });
    }
    Ok(text)
}

/// Parses host-supplied JSON text (for callers holding text rather than a value).
pub fn parse_document(field: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::invalid(field, format!("not valid JSON: {e}")))
}

/// The longest cancel reason, in bytes (the `jobs.cancel_reason` CHECK says the same).
pub const MAX_CANCEL_REASON_BYTES: usize = 1000;

/// A cancel's reason, trimmed: `None` when blank, else 1..=1000 bytes without NUL.
pub fn cancel_reason(reason: Option<&str>) -> Result<Option<&str>> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.len() > MAX_CANCEL_REASON_BYTES {
        return Err(Error::invalid(
            "reason",
            format!(
                "{} bytes, more than the {MAX_CANCEL_REASON_BYTES} a cancel reason may have",
                reason.len()
            ),
        ));
    }
    if reason.contains('\0') {
        return Err(Error::invalid("reason", "contains a NUL character"));
    }
    Ok(Some(reason))
}

/// Progress must be 0..=100.
pub fn progress(pct: u8) -> Result<()> {
    if pct > 100 {
        return Err(Error::invalid(
            "progress",
            format!("{pct} is outside 0..=100"),
        ));
    }
    Ok(())
}

/// A step description: at most 256 bytes.
pub fn step(step: Option<&str>) -> Result<()> {
    match step {
        Some(s) if s.len() > 256 => Err(Error::invalid("step", "longer than 256 bytes")),
        _ => Ok(()),
    }
}

/// Everything [`NewJob`] must satisfy.
pub fn new_job(new: &NewJob) -> Result<()> {
    name("user_id", &new.user_id)?;
    identifier("kind", &new.kind)?;
    document("input", &new.input, MAX_DOCUMENT_BYTES)?;
    if new.tags.len() > MAX_TAGS {
        return Err(Error::invalid("tags", format!("more than {MAX_TAGS} tags")));
    }
    for (i, tag) in new.tags.iter().enumerate() {
        text(&format!("tags[{i}]"), tag, 64)?;
    }
    if new.timeout.is_some_and(|t| t.as_millis() == 0) {
        return Err(Error::invalid("timeout", "must be positive"));
    }
    Ok(())
}

/// Every job of a batch ([`Jobs::create_many`](crate::Jobs::create_many)): the first bad
/// one is refused with its index in the field name (`jobs[2].kind`).
pub fn new_jobs(new: &[NewJob]) -> Result<()> {
    for (i, job) in new.iter().enumerate() {
        new_job(job).map_err(|e| match e {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field: format!("jobs[{i}].{field}"),
                reason,
            },
            other => other,
        })?;
    }
    Ok(())
}
