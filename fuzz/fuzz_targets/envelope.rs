//! The envelope parser and the body classifier on arbitrary bytes: never a panic, every
//! error has a FLEX_ code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runledger::flex::{classify_body, parse_envelope};

fuzz_target!(|data: &[u8]| {
    let _ = classify_body(data);
    if let Err(e) = parse_envelope(data) {
        assert!(e.code().starts_with("FLEX_"));
    }
});
