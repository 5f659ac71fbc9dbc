//! `make bench`: drives the real `buildr-webhooks` binary through its public HTTP API and measures it
//! against the limits of the machine it runs on (L-http, L-disk), measured in the same run.
//!
//! - [`procs`] starts and stops the server and the counting receiver (each its own process).
//! - [`api`] is the HTTP client (awc, the same library the server delivers with).
//! - [`load`] runs bounded concurrent loops; [`baseline`] measures the machine's limits.
//! - [`scenarios`] holds S1–S8; [`report`] prints rows and writes `target/bench/results.json`.
//! - [`cluster`] holds `make bench-cluster`'s rows (cluster mode over a real JetStream cluster, L-nats).
#![forbid(unsafe_code)]

pub mod api;
pub mod baseline;
pub mod clock;
pub mod cluster;
pub mod load;
pub mod machine;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod stats;
