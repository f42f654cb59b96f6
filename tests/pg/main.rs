//! The PostgreSQL suite (feature `postgres`): runs against the server of
//! `RUNLEDGER_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/test`), each test in a
//! schema of its own. Without a server each test prints SKIPPED and passes, unless
//! `RUNLEDGER_TEST_PG` is set (CI), where it fails.

mod attacks;
mod cli;
mod common;
mod copy;
mod doctor;
mod jobs;
mod nodes;
mod runs_slots;
