//! Domain of Buildr Webhooks: ids, event types, webhooks, secrets and signing, retry policy and the
//! records of the event log. Pure logic, no I/O: everything here is unit-testable without a disk or a socket.
#![forbid(unsafe_code)]

pub mod api_key;
pub mod delivery;
pub mod duration;
pub mod event;
pub mod ids;
pub mod record;
pub mod retry;
pub mod secret;
pub mod signing;
pub mod target;
pub mod time;
pub mod validate;
pub mod webhook;

pub use api_key::NewApiKey;
pub use delivery::{Delivery, DeliveryStatus};
pub use duration::HumanDuration;
pub use event::{Event, EventData, EventType, ObjectId};
pub use ids::{AccountId, EventId, IdError, ReplayId, WebhookId};
pub use record::{
    AttemptOutcome, AttemptRecord, EventRecord, IdempotencyRecord, Record, WebhookChanges,
};
pub use retry::RetryPolicy;
pub use secret::{Secret, SecretError};
pub use time::Timestamp;
pub use validate::FieldError;
pub use webhook::{DeliveryOrder, DisabledReason, Webhook};

/// The product version, sent in `User-Agent: Buildr-Webhooks/<version>`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
