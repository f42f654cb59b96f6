//! The PostgreSQL suite (feature `postgres`): runs against the server of
//! `RUNLEDGER_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/test`), each test in a
//! schema of its own. Without a server each test prints SKIPPED and passes, unless
//! `RUNLEDGER_TEST_PG` is set (CI), where it fails.
//!
//! Built without the `postgres` feature (a bare `cargo test`), the binary holds only
//! [`skipped_the_postgresql_half_needs_feature_postgres`], whose name is the notice.

#[cfg(feature = "postgres")]
mod attacks;
/// The behavioural suite of tests/suite, the same file, run here on PostgreSQL (`both.rs`).
#[cfg(feature = "postgres")]
#[path = "../suite/behaviour.rs"]
pub mod behaviour;
#[cfg(feature = "postgres")]
mod both;
#[cfg(feature = "postgres")]
mod cli;
#[cfg(feature = "postgres")]
mod cluster;
#[cfg(feature = "postgres")]
mod common;
#[cfg(feature = "postgres")]
mod copy;
/// The CLI's simulated provider (the demo's pipeline), for the UI pages of [`http`].
#[cfg(all(feature = "postgres", feature = "http", feature = "flex"))]
#[path = "../../src/bin/runledger/provider.rs"]
#[allow(dead_code)]
pub mod demo;
#[cfg(feature = "postgres")]
mod doctor;
#[cfg(feature = "postgres")]
mod faults;
#[cfg(feature = "postgres")]
mod feed;
/// The suite's Flex Web Service mock, for the Flex scenarios of [`behaviour`].
#[cfg(all(feature = "postgres", feature = "flex"))]
#[path = "../suite/flex_mock.rs"]
#[allow(dead_code)]
pub mod flex_mock;
#[cfg(all(feature = "postgres", feature = "http", feature = "flex"))]
mod http;
/// The API tests' HTTP client (tests/suite), shared by [`http`].
#[cfg(all(feature = "postgres", feature = "http", feature = "flex"))]
#[path = "../suite/http_client.rs"]
#[allow(dead_code)]
pub mod http_client;
#[cfg(feature = "postgres")]
mod jobs;
#[cfg(feature = "postgres")]
mod nodes;
#[cfg(feature = "postgres")]
mod notify;
#[cfg(feature = "postgres")]
mod restart;
#[cfg(feature = "postgres")]
mod runbook;
#[cfg(feature = "postgres")]
mod runs_slots;
#[cfg(feature = "postgres")]
mod supervisor;
#[cfg(feature = "postgres")]
mod twins;

/// Without the feature there is nothing to run: this test's name (printed by `cargo test`)
/// and its output say so and how to run the half.
#[cfg(not(feature = "postgres"))]
#[test]
fn skipped_the_postgresql_half_needs_feature_postgres() {
    println!(
        "SKIPPED: the PostgreSQL half needs the `postgres` feature: \
         RUNLEDGER_TEST_PG=postgres://USER@HOST/DB cargo test --features postgres --test pg"
    );
}
