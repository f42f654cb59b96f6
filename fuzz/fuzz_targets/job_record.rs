//! The job-record validator on arbitrary bytes parsed as JSON: never a panic; a record it
//! accepts round-trips; every refusal is INVALID_RECORD (naming its fields) or
//! UNSUPPORTED_VERSION.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runledger::job::record::JobRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    match JobRecord::from_json(&value) {
        Ok(record) => {
            let again = JobRecord::from_json(&record.to_json()).expect("accepted records round-trip");
            assert_eq!(again, record);
        }
        Err(e) => assert!(matches!(e.code(), "INVALID_RECORD" | "UNSUPPORTED_VERSION")),
    }
});
