//! The end-to-end harness: starts the real `buildr-webhooks` binary on a fresh sled directory, a real
//! HTTP receiver on 127.0.0.1, and the independent svix verifier (Node). Tests talk to the server only
//! through its public HTTP API.
#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test

pub mod cluster;
pub mod receiver;
pub mod server;
pub mod verifier;

pub use receiver::{Received, Receiver};
pub use server::{Server, ServerBuilder};

use std::time::{Duration, Instant};

/// The six event types' names.
pub const EVENT_TYPES: [&str; 6] = [
    "contact.create",
    "contact.update",
    "opportunity.create",
    "opportunity.update",
    "company.create",
    "company.update",
];

/// Polls `cond` every 20 ms until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repository root (the parent of `tests/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
