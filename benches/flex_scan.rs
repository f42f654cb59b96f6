//! Section-scan throughput and peak memory on a generated ~100 MB Flex statement, beside a
//! baseline quick-xml event loop that only counts elements over the same bytes.
//!
//! Run: `cargo bench --bench flex_scan`. Prints MB/s (10^6 bytes per second) and the peak
//! resident set (VmHWM from /proc/self/status) after each phase.

use std::hint::black_box;
use std::io::{BufReader, Read};
use std::time::Instant;

use quick_xml::events::Event;
use quick_xml::Reader;

#[path = "../tests/suite/flex_gen.rs"]
mod flex_gen;

use flex_gen::FlexGen;

/// Peak resident set size in KiB so far (Linux only; 0 elsewhere).
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The baseline: a plain quick-xml loop counting start and empty elements.
fn count_elements<R: std::io::BufRead>(reader: R) -> u64 {
    let mut xml = Reader::from_reader(reader);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut n = 0;
    loop {
        buf.clear();
        match xml.read_event_into(&mut buf).unwrap() {
            Event::Start(_) | Event::Empty(_) => n += 1,
            Event::Eof => return n,
            _ => {}
        }
    }
}

fn report(label: &str, bytes: u64, secs: f64, detail: &str) {
    println!(
        "{label:<44} {:>8.1} MB/s  {:>7.3} s  peak RSS {:>7.1} MiB  {detail}",
        bytes as f64 / 1e6 / secs,
        secs,
        vm_hwm_kib() as f64 / 1024.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let mb = 100;
    println!("start: peak RSS {:.1} MiB", vm_hwm_kib() as f64 / 1024.0);

    // 1. Streamed: the statement is generated while it is read, never held in memory.
    let gen = FlexGen::of_size(mb, 2);
    let len = gen.len();
    let (trades, _) = gen.rows();
    let t = Instant::now();
    let r = runledger::flex::scan(BufReader::with_capacity(64 * 1024, gen)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.statements[0].rows("Trades"), Some(trades));
    report(
        "scan, streamed from a generator",
        len,
        secs,
        &format!("({len} bytes, {} trade rows/account)", trades),
    );
    let gen = FlexGen::of_size(mb, 2);
    let t = Instant::now();
    let n = count_elements(BufReader::with_capacity(64 * 1024, gen));
    report(
        "baseline count, streamed from a generator",
        len,
        t.elapsed().as_secs_f64(),
        &format!("({n} elements)"),
    );

    // 2. In memory: the same bytes as one slice (peak RSS now includes the 100 MB buffer).
    let mut bytes = Vec::with_capacity(len as usize);
    FlexGen::of_size(mb, 2).read_to_end(&mut bytes).unwrap();
    for round in 1..=3 {
        let t = Instant::now();
        let r = black_box(runledger::flex::scan_bytes(black_box(&bytes)).unwrap());
        report(
            &format!("scan_bytes, in memory (round {round})"),
            len,
            t.elapsed().as_secs_f64(),
            &format!("({} statements)", r.statements.len()),
        );
        let t = Instant::now();
        let n = black_box(count_elements(black_box(&bytes[..])));
        report(
            &format!("baseline count, in memory (round {round})"),
            len,
            t.elapsed().as_secs_f64(),
            &format!("({n} elements)"),
        );
    }
}
