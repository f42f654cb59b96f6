//! Durable jobs: the state machine, the store, and the versioned JSON record.

pub mod state;
