//! The JSON shapes of responses (API.md). Domain types never go out as they are.

use buildr_core::{AttemptRecord, Delivery, Event, ObjectId, Webhook};
use buildr_engine::Account;
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub description: String,
    pub filter_types: Option<Vec<&'static str>>,
    pub rate_limit: u32,
    pub disabled: bool,
    pub disabled_reason: Option<&'static str>,
    pub created_at: String,
    pub updated_at: String,
    /// Only in the answer to a create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    pub fn new(w: &Webhook) -> Self {
        Self {
            id: w.id.to_string(),
            url: w.url.clone(),
            description: w.description.clone(),
            filter_types: w
                .filter_types
                .as_ref()
                .map(|f| f.iter().map(|t| t.as_str()).collect()),
            rate_limit: w.rate_limit,
            disabled: w.disabled,
            disabled_reason: w.disabled_reason.map(|r| r.as_str()),
            created_at: w.created_at.to_string(),
            updated_at: w.updated_at.to_string(),
            secret: None,
        }
    }

    pub fn with_secret(w: &Webhook) -> Self {
        Self {
            secret: Some(w.secret.as_str().to_owned()),
            ..Self::new(w)
        }
    }
}

#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub account: String,
    pub data: DataView,
    pub created_at: String,
}

#[derive(Serialize)]
pub struct DataView {
    pub id: Value,
    pub url: String,
}

impl EventView {
    pub fn new(e: &Event) -> Self {
        Self {
            id: e.id.to_string(),
            seq: e.seq,
            event_type: e.event_type.as_str(),
            account: e.account.to_string(),
            data: DataView {
                id: match &e.data.id {
                    ObjectId::Int(i) => Value::from(*i),
                    ObjectId::Str(s) => Value::from(s.as_str()),
                },
                url: e.data.url.clone(),
            },
            created_at: e.created_at.to_string(),
        }
    }
}

#[derive(Serialize)]
pub struct DeliveryView {
    pub event_id: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub status: &'static str,
    pub attempts: u32,
    pub last_attempt_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
}

impl DeliveryView {
    pub fn new(seq: u64, d: &Delivery) -> Self {
        Self {
            event_id: d.event_id.to_string(),
            seq,
            event_type: d.event_type.as_str(),
            status: d.status.as_str(),
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at.map(|t| t.to_string()),
            next_attempt_at: d.next_attempt_at.map(|t| t.to_string()),
            response_status: d.response_status,
            response_body: d.last_attempt_at.map(|_| d.response_body.clone()),
            error: d.error.clone(),
            duration_ms: d.duration_ms,
        }
    }
}

#[derive(Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub attempted_at: String,
    pub response_status: Option<u16>,
    pub response_body: String,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl AttemptView {
    pub fn new(n: u32, a: &AttemptRecord) -> Self {
        Self {
            attempt: n,
            attempted_at: a.at.to_string(),
            response_status: a.response_status,
            response_body: a.response_body.clone(),
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Serialize)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Only in `GET /accounts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefixes: Option<Vec<String>>,
}

impl AccountView {
    pub fn new(a: &Account) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name.clone(),
            created_at: a.created_at.to_string(),
            key_prefixes: None,
        }
    }

    pub fn with_keys(a: &Account) -> Self {
        Self {
            key_prefixes: Some(a.key_prefixes.clone()),
            ..Self::new(a)
        }
    }
}
