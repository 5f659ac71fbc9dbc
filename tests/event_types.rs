//! `GET /event-types` describes what a receiver gets: each type's JSON Schema and an example, checked
//! against real deliveries of test events.
#![allow(clippy::unwrap_used)]

use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The few JSON Schema keywords these schemas use, checked against a value.
fn conforms(schema: &Value, v: &Value) -> bool {
    if let Some(c) = schema.get("const") {
        return c == v;
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        return options.iter().filter(|o| conforms(o, v)).count() == 1;
    }
    match schema["type"].as_str() {
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("string") => v.as_str().is_some_and(|s| {
            let len = s.chars().count() as u64;
            schema["minLength"].as_u64().is_none_or(|m| len >= m)
                && schema["maxLength"].as_u64().is_none_or(|m| len <= m)
                && match schema["format"].as_str() {
                    Some("date-time") => buildr_core::Timestamp::parse_rfc3339(s).is_some(),
                    Some("uri") => s.starts_with("https://") || s.starts_with("http://"),
                    _ => true,
                }
        }),
        Some("object") => {
            let props = &schema["properties"];
            let required: BTreeSet<String> = schema["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            let o = v.as_object().unwrap();
            required.iter().all(|r| o.contains_key(r))
                && (schema["additionalProperties"] != false || keys(v) == keys(props))
                && o.iter().all(|(k, x)| conforms(&props[k], x))
        }
        _ => false,
    }
}

#[test]
fn each_event_type_has_a_schema_and_an_example_that_real_deliveries_match() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/t"), json!({"filter_types": ["company.update"]}));
    let (st, v) = s.call("GET", "/event-types", None);
    assert_eq!(st, 200, "{v}");
    let types = v["event_types"].as_array().unwrap();
    assert_eq!(types.len(), 6);
    for t in types {
        let name = t["name"].as_str().unwrap();
        assert!(!t["description"].as_str().unwrap().is_empty());
        assert_eq!(t["schema"]["properties"]["type"]["const"], name);
        assert!(
            conforms(&t["schema"], &t["example"]),
            "{name}: {}",
            t["example"]
        );
        // A test event of this type (whatever the webhook's filter) is delivered in that shape.
        let (st, v) = s.call(
            "POST",
            &format!("/webhooks/{id}/test"),
            Some(json!({"type": name})),
        );
        assert_eq!(st, 202, "{v}");
    }
    assert!(wait_until(Duration::from_secs(10), || rx.count("/t") == 6));
    for r in rx.at("/t") {
        let body = r.json();
        let t = types.iter().find(|t| t["name"] == body["type"]).unwrap();
        assert!(conforms(&t["schema"], &body), "{body}");
        assert_eq!(
            (body["id"].clone(), body["url"].clone()),
            (t["example"]["id"].clone(), t["example"]["url"].clone())
        );
    }
    // A body of another type, or with a field missing or added, does not conform.
    let schema = &types[0]["schema"];
    let mut wrong = types[0]["example"].clone();
    wrong["type"] = json!("contact.update");
    assert!(!conforms(schema, &wrong));
    let mut extra = types[0]["example"].clone();
    extra["name"] = json!("x");
    assert!(!conforms(schema, &extra));
}
