//! The facts of the event log. Everything the service knows is one of these, in order; every table it
//! serves from is a projection of them. New variants go at the end (the encoding numbers them in order);
//! a change to the shape of an existing one needs a new record format in `buildr-log`'s codec, which keeps
//! decoding the older ones.

use crate::event::{EventData, EventType};
use crate::ids::{AccountId, EventId, ReplayId, WebhookId};
use crate::secret::Secret;
use crate::time::Timestamp;
use crate::webhook::{DeliveryOrder, DisabledReason, Webhook};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    AccountCreated {
        id: AccountId,
        name: String,
        at: Timestamp,
    },
    WebhookCreated(Webhook),
    WebhookUpdated {
        id: WebhookId,
        changes: WebhookChanges,
        at: Timestamp,
    },
    WebhookDeleted {
        id: WebhookId,
        at: Timestamp,
    },
    SecretRotated {
        id: WebhookId,
        secret: Secret,
        previous_until: Timestamp,
        at: Timestamp,
    },
    EventPublished(EventRecord),
    /// Written in the same atomic batch right after the `count` events it answered for.
    IdempotencyKeyUsed(IdempotencyRecord),
    DeliveryAttempted(AttemptRecord),
    /// Queue these events again for the webhook (a replay), with their original ids.
    ReplayRequested {
        id: ReplayId,
        webhook: WebhookId,
        seqs: Vec<u64>,
        at: Timestamp,
    },
    /// An account API key: only its SHA-256 is stored; `prefix` (its first 11 characters) names it.
    ApiKeyCreated {
        account: AccountId,
        prefix: String,
        hash: [u8; 32],
        at: Timestamp,
    },
    /// The key is refused from this record on.
    ApiKeyRevoked {
        account: AccountId,
        prefix: String,
        at: Timestamp,
    },
    /// Finished replays older than the retention period: forgotten (their status is no longer served),
    /// so retention can remove their `ReplayRequested` records.
    ReplaysExpired {
        ids: Vec<ReplayId>,
        at: Timestamp,
    },
    /// A replay named this undelivered event while the webhook's subscription actor held it: its delivery
    /// starts again from the first attempt, queued at the replay. Written when the actor restarts it: at
    /// once when nothing was in flight (parallel order), else with the outcome of the attempt in flight
    /// (FIFO order: of the attempt that ends the delivery). `replay` is the seq of the `ReplayRequested`
    /// record it answers.
    DeliveryRestarted {
        webhook: WebhookId,
        seq: u64,
        replay: u64,
        at: Timestamp,
    },
}

/// A PATCH: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    /// `Some(None)`: all types.
    pub filter_types: Option<Option<Vec<EventType>>>,
    pub rate_limit: Option<u32>,
    pub secret: Option<Secret>,
    pub disabled: Option<(bool, Option<DisabledReason>)>,
    /// Added in record format 2.
    pub ordering: Option<DeliveryOrder>,
}

impl WebhookChanges {
    pub fn is_empty(&self) -> bool {
        *self == WebhookChanges::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: EventId,
    pub account: AccountId,
    pub event_type: EventType,
    pub data: EventData,
    pub created_at: Timestamp,
    /// A test event (`POST /webhooks/{id}/test`): delivered to this webhook only, whatever its filter, and
    /// never listed, replayed or delivered to any other.
    pub only_webhook: Option<WebhookId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub account: AccountId,
    pub key: String,
    /// SHA-256 of the request body, to tell a repeat from a conflicting reuse.
    pub request_hash: [u8; 32],
    /// The events of this request are the `count` records just before this one.
    pub count: u32,
    /// Whether it answered `/events/batch` (the response shape differs).
    pub batch: bool,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub webhook: WebhookId,
    pub seq: u64,
    pub event_id: EventId,
    pub attempt: u32,
    pub at: Timestamp,
    pub response_status: Option<u16>,
    /// The first 1 KiB of the response body.
    pub response_body: String,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub outcome: AttemptOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    Succeeded,
    /// Failed; tried again at `next_at`.
    Retrying {
        next_at: Timestamp,
    },
    /// Failed and the schedule is used up (or the webhook is gone): kept for replay.
    Failed,
}
