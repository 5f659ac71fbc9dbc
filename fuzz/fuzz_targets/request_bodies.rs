//! Every request body decoder of the API (`buildr_api::json::decode` with each route's body type), then
//! the field validators the handlers run on what decoded. Errors are fine; a panic is a finding.
#![no_main]

use buildr_api::json::decode;
use buildr_api::routes::{accounts, deliveries, events, webhooks};
use buildr_core::validate;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let _ = decode::<webhooks::CreateBody>(data);
    let _ = decode::<webhooks::PatchBody>(data);
    let _ = decode::<webhooks::RotateBody>(data);
    let _ = decode::<events::PublishBody>(data);
    let _ = decode::<events::BatchBody>(data);
    let _ = decode::<accounts::CreateBody>(data);
    let _ = decode::<accounts::NewKeyBody>(data);
    let _ = decode::<deliveries::ReplayBody>(data);
    // The validators, on whatever strings and numbers the body holds.
    if let Ok(v) = decode::<Value>(data) {
        visit(&v);
    }
});

fn visit(v: &Value) {
    match v {
        Value::String(s) => {
            let _ = validate::target_url("f", s);
            let _ = validate::object_url("f", s);
            let _ = validate::description("f", s);
            let _ = validate::account_name("f", s);
            let _ = validate::secret("f", s);
            let _ = s.parse::<buildr_core::EventType>();
            let _ = s.parse::<buildr_core::AccountId>();
            let _ = s.parse::<buildr_core::WebhookId>();
            if let Some(t) = buildr_core::Timestamp::parse_rfc3339(s) {
                // What the API shows parses back to the same instant.
                assert_eq!(buildr_core::Timestamp::parse_rfc3339(&t.to_string()), Some(t));
            }
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = validate::rate_limit("f", i);
            }
        }
        Value::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect();
            let _ = validate::filter_types("f", &names);
            items.iter().for_each(visit);
        }
        Value::Object(map) => map.values().for_each(visit),
        Value::Bool(_) | Value::Null => {}
    }
}
