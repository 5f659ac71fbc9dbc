//! Cluster mode of Buildr Webhooks: the log on a NATS JetStream stream ([`JetStreamLog`]), behind the same
//! [`buildr_log::LogStore`] interface as the single-node sled log, so the engine runs unchanged on either.
#![forbid(unsafe_code)]

mod admin;
mod connect;
mod follower;
mod jetstream;
mod lease_view;
mod leases;
pub mod message;
mod retention;
mod sync;
#[doc(hidden)]
pub mod testkit;

pub use admin::ClusterAdmin;
pub use jetstream::{JetStreamConfig, JetStreamLog};
pub use leases::{shard_of, LeaseConfig, Leases, Membership};

/// Whether `url` is a NATS server address the client accepts (`nats://host:port`, `tls://…`, `host:port`).
pub fn check_server_url(url: &str) -> Result<(), String> {
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}
