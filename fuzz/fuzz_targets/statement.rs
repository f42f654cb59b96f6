//! The statement scanner on arbitrary bytes: never a panic, and streaming through a tiny
//! buffer gives the same outcome as scanning the slice.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use runledger::flex::{scan, scan_bytes, ScanLimits};

fuzz_target!(|data: &[u8]| {
    let whole = scan_bytes(data);
    let chunked = scan(BufReader::with_capacity(7, data));
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.code(), b.code()),
        _ => panic!("slice and stream disagree: {whole:?} vs {chunked:?}"),
    }
    // Small limits must fail cleanly too.
    let tight = ScanLimits {
        max_element_bytes: 64,
        max_depth: 4,
        max_statements: 2,
        max_sections: 3,
        max_section_name_bytes: 8,
    };
    let _ = runledger::flex::scan_with(data, &tight);
});
