//! The JSON shapes of responses (API.md). Domain types never go out as they are. Every shape derives
//! its OpenAPI schema here, so the published spec is the code.

use buildr_core::{AttemptRecord, Delivery, Event, EventType, ObjectId, Webhook};
use buildr_engine::Account;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    #[schema(example = "wh_01j9z8x7k2m3n4p5q6r7s8t9v0")]
    pub id: String,
    pub url: String,
    pub description: String,
    /// `null`: all event types.
    pub filter_types: Option<Vec<&'static str>>,
    /// Deliveries per minute.
    pub rate_limit: u32,
    pub disabled: bool,
    /// `gone`, `failing` or `manual`.
    pub disabled_reason: Option<&'static str>,
    #[schema(value_type = OrderingName)]
    pub ordering: &'static str,
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
            ordering: w.ordering.as_str(),
            created_at: w.created_at.to_string(),
            updated_at: w.updated_at.to_string(),
            secret: None,
        }
    }

    pub fn with_secret(w: &Webhook) -> Self {
        Self {
            secret: Some(w.secret.text()),
            ..Self::new(w)
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    pub webhook: WebhookView,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SecretResponse {
    pub secret: String,
}

/// An integer or a string.
pub(crate) fn object_id_schema() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            )
            .item(ObjectBuilder::new().schema_type(Type::String))
            .build(),
    )
}

#[derive(Serialize, ToSchema)]
pub struct DataView {
    #[schema(schema_with = object_id_schema)]
    pub id: Value,
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub account: String,
    pub data: DataView,
    pub created_at: String,
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

#[derive(Serialize, ToSchema)]
pub struct EventResponse {
    pub event: EventView,
}

#[derive(Serialize, ToSchema)]
pub struct EventsResponse {
    pub events: Vec<EventView>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// The last seq returned (or `after_seq` when none): pass it back as `after_seq`.
    pub next_seq: u64,
}

/// One of the six event types.
#[derive(ToSchema)]
#[schema(as = EventTypeName)]
#[allow(dead_code)] // a schema only: requests carry the name as a string
pub enum EventTypeName {
    #[schema(rename = "contact.create")]
    ContactCreate,
    #[schema(rename = "contact.update")]
    ContactUpdate,
    #[schema(rename = "opportunity.create")]
    OpportunityCreate,
    #[schema(rename = "opportunity.update")]
    OpportunityUpdate,
    #[schema(rename = "company.create")]
    CompanyCreate,
    #[schema(rename = "company.update")]
    CompanyUpdate,
}

/// How a webhook's deliveries are sent.
#[derive(ToSchema)]
#[schema(as = OrderingName)]
#[allow(dead_code)] // a schema only: requests carry the name as a string
pub enum OrderingName {
    /// Side by side (up to `delivery.max_in_flight`); a failing event never blocks the next.
    #[schema(rename = "parallel")]
    Parallel,
    /// One attempt in flight, in log order; a failing delivery holds the later ones back.
    #[schema(rename = "fifo")]
    Fifo,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeView {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema (2020-12) of the body a receiver gets for this type.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// An example of that body.
    #[schema(value_type = Object)]
    pub example: Value,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub event_types: Vec<EventTypeView>,
}

impl EventTypeList {
    pub fn all() -> Self {
        Self {
            event_types: EventType::ALL
                .iter()
                .map(|t| EventTypeView {
                    name: t.as_str(),
                    description: t.description(),
                    schema: t.body_schema(),
                    example: t.example_body(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub event_id: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub status: &'static str,
    pub attempts: u32,
    pub last_attempt_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub response_status: Option<u16>,
    /// The first 1 KiB of the last response.
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

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
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

#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayCreatedView {
    pub id: String,
    /// How many events were queued again.
    pub events: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayCreated {
    pub replay: ReplayCreatedView,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayView {
    pub id: String,
    pub events: u64,
    /// Events delivered (or finally failed) so far.
    pub done: u64,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReplayResponse {
    pub replay: ReplayView,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, ToSchema)]
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

/// `POST /accounts`: the account and its first key (the only time the key is shown).
#[derive(Serialize, ToSchema)]
pub struct AccountCreated {
    pub account: AccountView,
    /// `bk_…`: shown once, stored only as a hash.
    pub api_key: String,
    /// The key's first 11 characters: names it (e.g. to revoke it); not secret.
    pub key_prefix: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// `POST /accounts/{id}/keys`.
#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    pub api_key: String,
    pub key_prefix: String,
}

/// The width of a statistics bucket.
#[derive(ToSchema)]
#[schema(as = StatsBucketName)]
#[allow(dead_code)] // a schema only: the query carries the name as a string
pub enum StatsBucketName {
    #[schema(rename = "1m")]
    Minute,
    #[schema(rename = "1h")]
    Hour,
}

/// Attempts in one bucket.
#[derive(Serialize, ToSchema)]
pub struct StatsBucketView {
    /// When the bucket starts (RFC 3339).
    pub start: String,
    pub attempts: u64,
    pub succeeded: u64,
    /// Attempts that did not succeed.
    pub failed: u64,
    /// Median attempt duration (within 6 %); `null` in an empty bucket.
    pub latency_p50_ms: Option<u64>,
    /// 99th percentile attempt duration (within 6 %); `null` in an empty bucket.
    pub latency_p99_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct StatsView {
    /// `1m` or `1h`.
    pub bucket: &'static str,
    /// Oldest first, empty buckets included.
    pub buckets: Vec<StatsBucketView>,
}

impl StatsView {
    pub fn new(bucket: buildr_engine::StatsBucket, points: &[buildr_engine::StatsPoint]) -> Self {
        Self {
            bucket: bucket.as_str(),
            buckets: points
                .iter()
                .map(|(start, row)| StatsBucketView {
                    start: start.to_string(),
                    attempts: row.attempts,
                    succeeded: row.succeeded,
                    failed: row.failed(),
                    latency_p50_ms: row.percentile(0.5),
                    latency_p99_ms: row.percentile(0.99),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct StatsResponse {
    pub stats: StatsView,
}

/// `GET /cluster`: the cluster as the answering node sees it.
#[derive(Serialize, ToSchema)]
pub struct ClusterResponse {
    pub cluster: ClusterView,
}

#[derive(Serialize, ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    pub node_id: String,
    /// Every live node.
    pub nodes: Vec<ClusterNodeView>,
    pub stream: ClusterStreamView,
}

#[derive(Serialize, ToSchema)]
pub struct ClusterNodeView {
    pub node_id: String,
    /// Shards whose lease it holds.
    pub shards: u32,
    /// Stream messages (each a batch of records) it has still to apply.
    pub lag: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ClusterStreamView {
    pub name: String,
    /// The stream's last message seq.
    pub last_seq: u64,
}

impl ClusterResponse {
    pub fn new(s: buildr_engine::ClusterStatus) -> Self {
        Self {
            cluster: ClusterView {
                node_id: s.node_id,
                nodes: s
                    .nodes
                    .into_iter()
                    .map(|n| ClusterNodeView {
                        node_id: n.node_id,
                        shards: n.shards,
                        lag: n.lag,
                    })
                    .collect(),
                stream: ClusterStreamView {
                    name: s.stream,
                    last_seq: s.stream_last_seq,
                },
            },
        }
    }
}
