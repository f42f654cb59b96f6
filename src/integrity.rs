//! Hash chains over the append-only logs (`audit_log`, `job_events`).
//!
//! SQLite cannot forbid DDL: a shell may drop a trigger, write, and recreate the trigger
//! word for word. The chains make such writes visible to `doctor` afterwards. Each audit row
//! carries `hash = SHA-256(domain, previous row's hash, its own content)`; each event carries
//! `prev_hash` (the hash of the same job's previous event, seq - 1) and its own `hash` over
//! `prev_hash` and its content. A row rewritten, re-inserted or removed from the middle of a
//! chain no longer matches. Rows written before migration V5 carry no hash and are listed in
//! `integrity_legacy`; a chain starts (at [`GENESIS`]) after them.
//!
//! The storage modules call these at insert (`storage::jobs::audit`,
//! `storage::job_events::append`); `doctor` (its `chains` module) verifies them.
//!
//! Rust computes every hash at insert (the stock shell has no SHA-256), so a row typed by
//! hand cannot carry a valid one. (On PostgreSQL, which has `sha256` built in, the events of
//! a create, a claim and a complete are hashed by the server in the job's own statement, to
//! the same bytes: `src/pg/storage/job_events.rs`, checked in tests/pg/jobs.rs.)

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first chained row of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"\n");
        }
        h.update(p);
    }
    hex(&h.finalize())
}

/// Lower-case hex of `bytes` (what the columns' CHECKs accept), without a `format!` per byte.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The hash of one audit row, chained on `prev` (the previous row's hash, or [`GENESIS`]).
/// `detail` is the JSON text exactly as stored.
pub fn audit_hash(
    prev: &str,
    entity: &str,
    entity_id: &str,
    action: &str,
    actor: &str,
    at: &str,
    detail: &str,
) -> String {
    digest(&[
        b"runledger-audit-v1",
        prev.as_bytes(),
        entity.as_bytes(),
        entity_id.as_bytes(),
        action.as_bytes(),
        actor.as_bytes(),
        at.as_bytes(),
        detail.as_bytes(),
    ])
}

/// The hash of one job event, chained on `prev` (the job's previous event's hash, or
/// [`GENESIS`]). `payload` is the JSON text exactly as stored.
pub fn event_hash(
    prev: &str,
    job_id: i64,
    seq: i64,
    kind: &str,
    at: &str,
    payload: &str,
) -> String {
    digest(&[
        b"runledger-event-v1",
        prev.as_bytes(),
        job_id.to_string().as_bytes(),
        seq.to_string().as_bytes(),
        kind.as_bytes(),
        at.as_bytes(),
        payload.as_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        // SHA-256 of the empty input, as the standard gives it.
        assert_eq!(
            hex(&Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let base = event_hash(GENESIS, 1, 1, "created", "2026-11-22T11:30:00.000Z", "{}");
        assert_eq!(base.len(), 64);
        assert_ne!(
            base,
            event_hash(&base, 1, 1, "created", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 2, 1, "created", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 1, 2, "created", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 1, 1, "claimed", "2026-11-22T11:30:00.000Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(GENESIS, 1, 1, "created", "2026-11-22T11:30:00.001Z", "{}")
        );
        assert_ne!(
            base,
            event_hash(
                GENESIS,
                1,
                1,
                "created",
                "2026-11-22T11:30:00.000Z",
                "{\"a\":1}"
            )
        );
        let a = audit_hash(
            GENESIS,
            "job",
            "1",
            "cancel",
            "cli",
            "2026-11-22T11:30:00.000Z",
            "{}",
        );
        assert_ne!(
            a,
            audit_hash(
                GENESIS,
                "job",
                "1",
                "cancel",
                "cli2",
                "2026-11-22T11:30:00.000Z",
                "{}"
            )
        );
        // field boundaries are unambiguous
        assert_ne!(
            audit_hash(GENESIS, "job", "1", "ab", "c", "t", "{}"),
            audit_hash(GENESIS, "job", "1", "a", "bc", "t", "{}")
        );
    }
}
