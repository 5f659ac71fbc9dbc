//! Record format 1: the shapes records had before webhooks gained `ordering` (format 2). Logs written by
//! older versions hold these; they are decoded here and brought to today's [`Record`] (a webhook of format
//! 1 delivers in parallel, as every webhook then did). Only the shapes that changed are copied; the rest
//! are today's types, unchanged since format 1. When one of those changes, copy its format-1 shape here.

use buildr_core::{
    AccountId, AttemptRecord, DeliveryOrder, DisabledReason, EventRecord, EventType,
    IdempotencyRecord, Record, ReplayId, Secret, Timestamp, Webhook, WebhookChanges, WebhookId,
};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct WebhookV1 {
    id: WebhookId,
    account: AccountId,
    url: String,
    description: String,
    filter_types: Option<Vec<EventType>>,
    rate_limit: u32,
    secret: Secret,
    previous_secret: Option<(Secret, Timestamp)>,
    disabled: bool,
    disabled_reason: Option<DisabledReason>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

#[derive(Deserialize)]
pub(crate) struct WebhookChangesV1 {
    url: Option<String>,
    description: Option<String>,
    filter_types: Option<Option<Vec<EventType>>>,
    rate_limit: Option<u32>,
    secret: Option<Secret>,
    disabled: Option<(bool, Option<DisabledReason>)>,
}

/// Format 1's variants, in their order (the encoding numbers them).
#[derive(Deserialize)]
pub(crate) enum RecordV1 {
    AccountCreated {
        id: AccountId,
        name: String,
        at: Timestamp,
    },
    WebhookCreated(WebhookV1),
    WebhookUpdated {
        id: WebhookId,
        changes: WebhookChangesV1,
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
    IdempotencyKeyUsed(IdempotencyRecord),
    DeliveryAttempted(AttemptRecord),
    ReplayRequested {
        id: ReplayId,
        webhook: WebhookId,
        seqs: Vec<u64>,
        at: Timestamp,
    },
    ApiKeyCreated {
        account: AccountId,
        prefix: String,
        hash: [u8; 32],
        at: Timestamp,
    },
    ApiKeyRevoked {
        account: AccountId,
        prefix: String,
        at: Timestamp,
    },
    DeliveryRestarted {
        webhook: WebhookId,
        seq: u64,
        replay: u64,
        at: Timestamp,
    },
    ReplaysExpired {
        ids: Vec<ReplayId>,
        at: Timestamp,
    },
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        match r {
            RecordV1::AccountCreated { id, name, at } => Record::AccountCreated { id, name, at },
            RecordV1::WebhookCreated(w) => Record::WebhookCreated(Webhook {
                id: w.id,
                account: w.account,
                url: w.url,
                description: w.description,
                filter_types: w.filter_types,
                rate_limit: w.rate_limit,
                secret: w.secret,
                previous_secret: w.previous_secret.map(Box::new),
                disabled: w.disabled,
                disabled_reason: w.disabled_reason,
                created_at: w.created_at,
                updated_at: w.updated_at,
                ordering: DeliveryOrder::Parallel,
            }),
            RecordV1::WebhookUpdated { id, changes: c, at } => Record::WebhookUpdated {
                id,
                changes: WebhookChanges {
                    url: c.url,
                    description: c.description,
                    filter_types: c.filter_types,
                    rate_limit: c.rate_limit,
                    secret: c.secret,
                    disabled: c.disabled,
                    ordering: None,
                },
                at,
            },
            RecordV1::WebhookDeleted { id, at } => Record::WebhookDeleted { id, at },
            RecordV1::SecretRotated {
                id,
                secret,
                previous_until,
                at,
            } => Record::SecretRotated {
                id,
                secret,
                previous_until,
                at,
            },
            RecordV1::EventPublished(e) => Record::EventPublished(e),
            RecordV1::IdempotencyKeyUsed(i) => Record::IdempotencyKeyUsed(i),
            RecordV1::DeliveryAttempted(a) => Record::DeliveryAttempted(a),
            RecordV1::ReplayRequested {
                id,
                webhook,
                seqs,
                at,
            } => Record::ReplayRequested {
                id,
                webhook,
                seqs,
                at,
            },
            RecordV1::ApiKeyCreated {
                account,
                prefix,
                hash,
                at,
            } => Record::ApiKeyCreated {
                account,
                prefix,
                hash,
                at,
            },
            RecordV1::ApiKeyRevoked {
                account,
                prefix,
                at,
            } => Record::ApiKeyRevoked {
                account,
                prefix,
                at,
            },
            RecordV1::ReplaysExpired { ids, at } => Record::ReplaysExpired { ids, at },
            RecordV1::DeliveryRestarted {
                webhook,
                seq,
                replay,
                at,
            } => Record::DeliveryRestarted {
                webhook,
                seq,
                replay,
                at,
            },
        }
    }
}
