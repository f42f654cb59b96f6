//! The `runledger` command-line tool.
fn main() {}
