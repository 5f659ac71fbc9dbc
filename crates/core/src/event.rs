//! Events: the six event types, an event's data (`id` and `url` of the CRM object) and the JSON body that
//! receivers get.

use crate::ids::{AccountId, EventId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Exactly the six event types of the Buildr platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    ContactCreate,
    ContactUpdate,
    OpportunityCreate,
    OpportunityUpdate,
    CompanyCreate,
    CompanyUpdate,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::ContactCreate,
        EventType::ContactUpdate,
        EventType::OpportunityCreate,
        EventType::OpportunityUpdate,
        EventType::CompanyCreate,
        EventType::CompanyUpdate,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::ContactCreate => "contact.create",
            EventType::ContactUpdate => "contact.update",
            EventType::OpportunityCreate => "opportunity.create",
            EventType::OpportunityUpdate => "opportunity.update",
            EventType::CompanyCreate => "company.create",
            EventType::CompanyUpdate => "company.update",
        }
    }

    pub const fn description(self) -> &'static str {
        match self {
            EventType::ContactCreate => "A contact was created.",
            EventType::ContactUpdate => "A contact was updated.",
            EventType::OpportunityCreate => "An opportunity was created.",
            EventType::OpportunityUpdate => "An opportunity was updated.",
            EventType::CompanyCreate => "A company was created.",
            EventType::CompanyUpdate => "A company was updated.",
        }
    }

    /// The example a test event and the event-type list use: object 2279 of this type's kind.
    pub fn example_data(self) -> EventData {
        let plural = match self {
            EventType::ContactCreate | EventType::ContactUpdate => "contacts",
            EventType::OpportunityCreate | EventType::OpportunityUpdate => "opportunities",
            EventType::CompanyCreate | EventType::CompanyUpdate => "companies",
        };
        EventData {
            id: ObjectId::Int(2279),
            url: format!("https://app.buildr.example/{plural}/2279"),
        }
    }

    /// An example of the body a receiver gets for this type (as JSON).
    pub fn example_body(self) -> serde_json::Value {
        let body = payload(
            self,
            Timestamp::from_millis(1_795_873_574_123),
            &self.example_data(),
        );
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON Schema (2020-12) of the body a receiver gets for this type.
    pub fn body_schema(self) -> serde_json::Value {
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.as_str(),
            "description": self.description(),
            "type": "object",
            "required": ["type", "timestamp", "id", "url"],
            "additionalProperties": false,
            "properties": {
                "type": {"const": self.as_str(), "description": "The event type."},
                "timestamp": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When it happened on the Buildr platform (RFC 3339, UTC, milliseconds); the same on every attempt."
                },
                "id": {
                    "description": "The id of the CRM object on the Buildr platform.",
                    "oneOf": [
                        {"type": "integer"},
                        {"type": "string", "minLength": 1, "maxLength": 255}
                    ]
                },
                "url": {
                    "type": "string",
                    "format": "uri",
                    "description": "The object's page on the Buildr platform."
                }
            }
        })
    }

    /// A dense index 0..6, for per-type tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`; known types are contact.create, contact.update, opportunity.create, opportunity.update, company.create, company.update")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, UnknownEventType> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The CRM object's id: the platform uses integers, but strings are accepted too.
/// (Encoded as a tagged enum in the log; shown as a bare number or string in JSON.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectId {
    Int(i64),
    Str(String),
}

impl ObjectId {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ObjectId::Int(i) => serde_json::Value::from(*i),
            ObjectId::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }
}

/// What happened to which object: exactly `id` and `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub id: ObjectId,
    pub url: String,
}

/// An event as it stands in the log, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub id: EventId,
    pub account: AccountId,
    pub event_type: EventType,
    pub data: EventData,
    pub created_at: Timestamp,
}

impl Event {
    /// The event a log record describes, at `seq`.
    pub fn from_record(seq: u64, e: crate::record::EventRecord) -> Self {
        Self {
            seq,
            id: e.id,
            account: e.account,
            event_type: e.event_type,
            data: e.data,
            created_at: e.created_at,
        }
    }

    /// The body every receiver gets: `{"type", "timestamp", "id", "url"}` in that order.
    /// The same bytes on every attempt and replay.
    pub fn payload(&self) -> Vec<u8> {
        payload(self.event_type, self.created_at, &self.data)
    }
}

/// The delivery body for an event.
pub fn payload(event_type: EventType, created_at: Timestamp, data: &EventData) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        event_type: &'static str,
        timestamp: String,
        id: serde_json::Value,
        url: &'a str,
    }
    let body = Body {
        event_type: event_type.as_str(),
        timestamp: created_at.to_string(),
        id: data.id.to_json(),
        url: &data.url,
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_their_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!("opportunity.created".parse::<EventType>().is_err());
        assert!("Contact.create".parse::<EventType>().is_err());
    }

    #[test]
    fn each_example_has_exactly_the_fields_its_schema_describes() {
        for t in EventType::ALL {
            let schema = t.body_schema();
            let example = t.example_body();
            let fields: Vec<&String> = example
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            let props: Vec<&String> = schema["properties"]
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            let mut f = fields.clone();
            let mut p = props.clone();
            f.sort();
            p.sort();
            assert_eq!(f, p, "{t}");
            assert_eq!(example["type"], schema["properties"]["type"]["const"]);
            assert!(
                example["id"].is_i64()
                    && example["url"].is_string()
                    && example["timestamp"].is_string()
            );
        }
    }

    #[test]
    fn payload_is_the_seed_shape_with_type_and_timestamp() {
        let data = EventData {
            id: ObjectId::Int(2279),
            url: "https://app.buildr.example/opportunities/2279".into(),
        };
        let body = payload(
            EventType::OpportunityCreate,
            Timestamp::from_millis(1_795_873_574_123),
            &data,
        );
        assert_eq!(
            std::str::from_utf8(&body).ok(),
            Some(
                r#"{"type":"opportunity.create","timestamp":"2026-11-28T13:46:14.123Z","id":2279,"url":"https://app.buildr.example/opportunities/2279"}"#
            )
        );
    }
}
