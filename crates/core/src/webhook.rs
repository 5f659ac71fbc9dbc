//! A webhook (subscription): where to deliver, which events, how fast, and with which key.

use crate::event::EventType;
use crate::ids::{AccountId, WebhookId};
use crate::record::WebhookChanges;
use crate::secret::Secret;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisabledReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// Every attempt failed for `delivery.disable_after`.
    Failing,
    /// Disabled by the customer.
    Manual,
}

impl DisabledReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
            DisabledReason::Manual => "manual",
        }
    }
}

/// How a webhook's deliveries are sent: side by side, or one at a time in log order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryOrder {
    /// Up to `delivery.max_in_flight` attempts at once; a failing event never blocks the next.
    #[default]
    Parallel,
    /// One attempt in flight; deliveries start in the order they were queued (log order), and a failing
    /// delivery holds the later ones back until it succeeds or is finally failed.
    Fifo,
}

impl DeliveryOrder {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryOrder::Parallel => "parallel",
            DeliveryOrder::Fifo => "fifo",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "parallel" => Some(DeliveryOrder::Parallel),
            "fifo" => Some(DeliveryOrder::Fifo),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub account: AccountId,
    pub url: String,
    pub description: String,
    /// `None`: all event types.
    pub filter_types: Option<Vec<EventType>>,
    /// Deliveries per minute.
    pub rate_limit: u32,
    pub secret: Secret,
    /// The key before the last rotation and when it stops signing. Boxed: most webhooks have none, and
    /// inline it made every webhook 56 bytes larger (6 MB over 100,000 webhooks); encoded the same.
    pub previous_secret: Option<Box<(Secret, Timestamp)>>,
    pub disabled: bool,
    pub disabled_reason: Option<DisabledReason>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Added in record format 2 (a webhook of an older log is `Parallel`).
    pub ordering: DeliveryOrder,
}

impl Webhook {
    pub fn wants(&self, t: EventType) -> bool {
        self.filter_types.as_ref().is_none_or(|f| f.contains(&t))
    }

    /// The keys that sign a message sent at `now`: the current one, and the previous one during the
    /// rotation overlap.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&Secret> {
        let mut v = vec![&self.secret];
        if let Some((old, until)) = self.previous_secret.as_deref() {
            if now < *until {
                v.push(old);
            }
        }
        v
    }

    /// Applies a change set (a `WebhookUpdated` record).
    pub fn apply(&mut self, c: &WebhookChanges, at: Timestamp) {
        if let Some(u) = &c.url {
            self.url.clone_from(u);
        }
        if let Some(d) = &c.description {
            self.description.clone_from(d);
        }
        if let Some(f) = &c.filter_types {
            self.filter_types.clone_from(f);
        }
        if let Some(r) = c.rate_limit {
            self.rate_limit = r;
        }
        if let Some(s) = &c.secret {
            self.secret = s.clone();
            self.previous_secret = None;
        }
        if let Some(o) = c.ordering {
            self.ordering = o;
        }
        if let Some((disabled, reason)) = c.disabled {
            self.disabled = disabled;
            self.disabled_reason = if disabled { reason } else { None };
        }
        self.updated_at = at;
    }

    /// Rotates the key: the old one keeps signing until `previous_until`. A second rotation inside the
    /// overlap keeps only the newest key and the one before it.
    pub fn rotate(&mut self, new: Secret, previous_until: Timestamp, at: Timestamp) {
        let old = std::mem::replace(&mut self.secret, new);
        self.previous_secret = Some(Box::new((old, previous_until)));
        self.updated_at = at;
    }
}
