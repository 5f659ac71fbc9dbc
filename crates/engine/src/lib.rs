//! The engine of Buildr Webhooks: the actors and the embeddable [`Engine`] handle.
//!
//! ```text
//! Engine (commands) ─► LogActor ── sled (group commit) ─► Projection ─► Router ─► SubscriptionActor × N ─► Dispatcher (awc)
//!                          ▲                                                              │ outcomes (facts)
//!                          └──────────────────────────────────────────────────────────────┘
//! ```
#![forbid(unsafe_code)]

mod accounts;
pub mod config;
pub mod dispatcher;
mod engine;
pub mod error;
pub mod log_actor;
pub mod projection;
pub mod router;
pub mod subscription;
pub mod target;

pub use accounts::CreatedKey;
pub use config::{DeliveryConfig, EngineConfig};
pub use engine::{
    rebuild as projection_rebuild, Engine, NewEvent, NewWebhook, Published, StartupReport,
};
pub use error::EngineError;
pub use projection::{Account, ApiKeyEntry, Pending, Projection, WebhookEntry};
