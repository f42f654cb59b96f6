//! runledger's integration tests: one binary, one module per area.

mod common;
mod engine;
mod flex_gen;
mod flex_parse;
