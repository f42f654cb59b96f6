//! runledger's integration tests: one binary, one module per area.

mod common;
mod doctor;
mod engine;
mod flex_client;
mod flex_gen;
mod flex_mock;
mod flex_parse;
mod flex_pipeline;
mod jobs;
mod reliability;
mod reliability_contention;
mod reliability_crash;
mod reliability_faults;
mod reliability_files;
mod reliability_input;
mod reliability_slots;
mod runbook;
mod runs;
mod runs_probe;
mod schedule;
mod scheduled_runs;
mod supervision;
