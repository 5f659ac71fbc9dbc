//! The engine of Buildr Webhooks: the actors and the embeddable [`Engine`] handle.
//!
//! ```text
//! Engine (commands) ─► LogActor ── sled (group commit) ─► Projection ─► Router ─► SubscriptionActor × N ─► Dispatcher (awc)
//!                          ▲                                                              │ outcomes (facts)
//!                          └──────────────────────────────────────────────────────────────┘
//! ```
#![forbid(unsafe_code)]

mod backlog;
pub mod checkpoint;
pub mod config;
pub mod dispatcher;
mod engine;
pub mod error;
pub mod health;
pub mod indexer;
pub mod limiter;
pub mod log_actor;
pub mod metrics;
pub mod ownership;
mod pending;
pub mod permits;
pub mod projection;
pub mod replay;
pub mod retention;
pub mod router;
pub mod subscription;
pub mod target;

pub use buildr_log::{StatsBucket, StatsRow};
pub use checkpoint::full_replay;
pub use config::{DeliveryConfig, EngineConfig};
pub use engine::{
    CreatedKey, Engine, NewEvent, NewWebhook, Published, StartupReport, StatsPoint,
    MAX_STATS_BUCKETS, STATS_HISTORY,
};
pub use error::EngineError;
pub use ownership::{ClusterStatus, NodeStatus, Ownership, OwnsAll};
pub use projection::{Account, ApiKeyEntry, Pending, Projection, ReplayState, WebhookEntry};
pub use replay::ReplayRange;

/// The mailbox bound of the engine's actors. Their messages are facts and work that must not be dropped,
/// so it is effectively unbounded; not `usize::MAX`, which makes actix's sender accounting overflow once
/// an address is cloned.
pub(crate) const MAILBOX_CAPACITY: usize = 1 << 32;
