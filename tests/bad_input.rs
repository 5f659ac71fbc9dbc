//! Bad input gets a clear JSON error and changes nothing.
#![allow(clippy::unwrap_used)]

use buildr_e2e::server::{run_binary, ADMIN_TOKEN};
use buildr_e2e::{Receiver, Server};
use serde_json::{json, Value};

fn snapshot(s: &Server) -> (Value, Value) {
    (
        s.call("GET", "/webhooks?limit=250", None).1,
        s.call("GET", "/events?limit=1000", None).1,
    )
}

#[test]
fn bad_requests_get_their_documented_error_and_store_nothing() {
    let s = Server::start();
    let rx = Receiver::start();
    let url = rx.url("/x");
    let (st, _) = s.call("POST", "/webhooks", Some(json!({"webhook": {"url": url}})));
    assert_eq!(st, 201);
    let before = snapshot(&s);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let json_ct = ("Content-Type", "application/json");
    let big = format!(
        r#"{{"webhook": {{"url": "{url}", "description": "{}"}}}}"#,
        "a".repeat(300 * 1024)
    );

    // (method, path, body, headers, status, code, field)
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let wh = |w: Value| json!({"webhook": w}).to_string();
    let cases: Vec<Case> = vec![
        ("GET", "/api/2023-01/webhooks", String::new(), vec![], 401, "unauthorized", None),
        ("GET", "/api/2023-01/webhooks", String::new(), vec![("Authorization", "Bearer wrong")], 401, "unauthorized", None),
        ("GET", "/api/2023-01/webhooks", String::new(), vec![("Authorization", ADMIN_TOKEN)], 401, "unauthorized", None),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url})), vec![json_ct], 401, "unauthorized", None),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "filter_type": ["contact.create"]})), vec![json_ct], 400, "invalid_request", Some("webhook.filter_type")),
        ("POST", "/api/2023-01/webhooks", "{\"webhook\": {".into(), vec![json_ct], 400, "invalid_request", None),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "filter_types": ["contact.created"]})), vec![json_ct], 400, "invalid_request", Some("webhook.filter_types[0]")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "rate_limit": 0})), vec![json_ct], 400, "invalid_request", Some("webhook.rate_limit")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "rate_limit": "100"})), vec![json_ct], 400, "invalid_request", Some("webhook.rate_limit")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": "not a url"})), vec![json_ct], 400, "invalid_request", Some("webhook.url")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": "ftp://example.com/x"})), vec![json_ct], 400, "invalid_request", Some("webhook.url")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": "https://u:p@example.com/x"})), vec![json_ct], 400, "invalid_request", Some("webhook.url")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"description": "no url"})), vec![json_ct], 400, "invalid_request", Some("webhook.url")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "secret": "whsec_!!"})), vec![json_ct], 400, "invalid_request", Some("webhook.secret")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "filter_types": []})), vec![json_ct], 400, "invalid_request", Some("webhook.filter_types")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url})), vec![("Content-Type", "text/plain")], 415, "unsupported_media_type", None),
        ("POST", "/api/2023-01/webhooks", big, vec![json_ct], 413, "payload_too_large", None),
        ("POST", "/api/2023-01/events", json!({"event": {"type": "deal.create", "data": {"id": 1, "url": "https://x.example/1"}}}).to_string(), vec![json_ct], 400, "invalid_request", Some("event.type")),
        ("POST", "/api/2023-01/events", json!({"event": {"type": "contact.create", "data": {"id": 1, "url": "https://x.example/1", "name": "x"}}}).to_string(), vec![json_ct], 400, "invalid_request", Some("event.data.name")),
        ("POST", "/api/2023-01/events", json!({"event": {"type": "contact.create", "data": {"id": 1.5, "url": "https://x.example/1"}}}).to_string(), vec![json_ct], 400, "invalid_request", Some("event.data.id")),
        ("POST", "/api/2023-01/events", json!({"event": {"type": "contact.create", "data": {"id": 1, "url": "relative/1"}}}).to_string(), vec![json_ct], 400, "invalid_request", Some("event.data.url")),
        ("POST", "/api/2023-01/events/batch", json!({"events": []}).to_string(), vec![json_ct], 400, "invalid_request", Some("events")),
        ("POST", "/api/2023-01/events/batch", json!({"events": [{"type": "contact.create", "data": {"id": 1, "url": "https://x.example/1"}}, {"type": "nope", "data": {"id": 2, "url": "https://x.example/2"}}]}).to_string(), vec![json_ct], 400, "invalid_request", Some("events[1].type")),
        ("GET", "/api/2023-01/webhooks?limit=0", String::new(), vec![], 400, "invalid_request", Some("limit")),
        ("GET", "/api/2023-01/webhooks?limit=251", String::new(), vec![], 400, "invalid_request", Some("limit")),
        ("GET", "/api/2023-01/webhooks?cursor=nonsense", String::new(), vec![], 400, "invalid_request", Some("cursor")),
        ("GET", "/api/2023-01/events?limit=1001", String::new(), vec![], 400, "invalid_request", Some("limit")),
        ("GET", "/api/2023-01/webhooks/wh_doesnotexist", String::new(), vec![], 404, "not_found", None),
        ("PATCH", "/api/2023-01/webhooks/wh_doesnotexist", wh(json!({"rate_limit": 5})), vec![json_ct], 404, "not_found", None),
        ("DELETE", "/api/2023-01/webhooks/wh_doesnotexist", String::new(), vec![], 404, "not_found", None),
    ];
    for (i, (method, path, body, headers, status, code, field)) in cases.iter().enumerate() {
        let mut h: Vec<(&str, &str)> = headers.clone();
        if *status != 401 {
            h.push(("Authorization", &auth));
        }
        let body = (!body.is_empty()).then_some(body.as_str());
        let (got, text) = s.raw(method, path, body, &h);
        assert_eq!(got, *status, "case {i}: {method} {path}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("case {i}: not JSON: {text}"));
        assert_eq!(v["error"]["code"], *code, "case {i}: {text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "case {i}"
        );
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], *f, "case {i}: {text}");
        }
    }
    assert_eq!(before, snapshot(&s), "no bad request changed stored state");
}

#[test]
fn patch_changes_only_what_it_names_and_delete_removes() {
    let s = Server::start();
    let rx = Receiver::start();
    let (_, v) = s.call(
        "POST",
        "/webhooks",
        Some(json!({"webhook": {"url": rx.url("/p"), "filter_types": ["company.create"], "rate_limit": 10}})),
    );
    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
    let (st, v) = s.call(
        "PATCH",
        &format!("/webhooks/{id}"),
        Some(json!({"webhook": {"description": "hello"}})),
    );
    assert_eq!(st, 200);
    assert_eq!(v["webhook"]["description"], "hello");
    assert_eq!(
        v["webhook"]["filter_types"],
        json!(["company.create"]),
        "omitted filter_types is kept"
    );
    assert_eq!(v["webhook"]["rate_limit"], 10);
    assert!(
        v["webhook"].get("secret").is_none(),
        "only create and /secret show the secret"
    );
    let (_, v) = s.call(
        "PATCH",
        &format!("/webhooks/{id}"),
        Some(json!({"webhook": {"filter_types": null, "disabled": true}})),
    );
    assert_eq!(v["webhook"]["filter_types"], Value::Null);
    assert_eq!(v["webhook"]["disabled"], true);
    assert_eq!(v["webhook"]["disabled_reason"], "manual");
    let (st, v) = s.call(
        "PATCH",
        &format!("/webhooks/{id}"),
        Some(json!({"webhook": {"url": null}})),
    );
    assert_eq!(
        (st, v["error"]["field"].clone()),
        (400, json!("webhook.url"))
    );
    let (st, _) = s.call("DELETE", &format!("/webhooks/{id}"), None);
    assert_eq!(st, 204);
    let (st, _) = s.call("GET", &format!("/webhooks/{id}"), None);
    assert_eq!(st, 404);
}

#[test]
fn private_targets_are_refused_unless_allowed() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__ALLOW_PRIVATE_TARGETS", "false")
        .start();
    for url in [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest",
    ] {
        let (st, v) = s.call("POST", "/webhooks", Some(json!({"webhook": {"url": url}})));
        assert_eq!(st, 422, "{url}: {v}");
        assert_eq!(v["error"]["code"], "unprocessable");
        assert_eq!(v["error"]["field"], "webhook.url");
    }
    assert_eq!(s.call("GET", "/webhooks", None).1["webhooks"], json!([]));
}

#[test]
fn pagination_walks_every_webhook_once() {
    let s = Server::start();
    let rx = Receiver::start();
    for i in 0..5 {
        let (st, _) = s.call(
            "POST",
            "/webhooks",
            Some(json!({"webhook": {"url": rx.url(&format!("/{i}"))}})),
        );
        assert_eq!(st, 201);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, v) = s.call("GET", &format!("/webhooks?limit=2&cursor={cursor}"), None);
        seen.extend(
            v["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in creation order, no repeats");
}

#[test]
fn idempotency_key_returns_the_first_answer_and_conflicts_on_a_different_body() {
    let s = Server::start();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "k-1"),
    ];
    let body = json!({"event": {"type": "contact.create", "data": {"id": 7, "url": "https://x.example/7"}}}).to_string();
    let (st1, a) = s.raw("POST", "/api/2023-01/events", Some(&body), &h);
    let (st2, b) = s.raw("POST", "/api/2023-01/events", Some(&body), &h);
    assert_eq!((st1, st2), (202, 202));
    assert_eq!(
        serde_json::from_str::<Value>(&a).unwrap(),
        serde_json::from_str::<Value>(&b).unwrap()
    );
    let other = json!({"event": {"type": "contact.create", "data": {"id": 8, "url": "https://x.example/8"}}}).to_string();
    let (st3, c) = s.raw("POST", "/api/2023-01/events", Some(&other), &h);
    assert_eq!(st3, 409, "{c}");
    assert_eq!(
        s.call("GET", "/events", None).1["events"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "stored once"
    );
}

#[test]
fn generated_admin_token_is_private_and_works() {
    let s = Server::builder().without_admin_token().start();
    let path = s.data_dir.join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let shown = path.display().to_string();
    assert!(
        buildr_e2e::wait_until(std::time::Duration::from_secs(5), || s
            .stdout_lines
            .lock()
            .iter()
            .any(|l| l.contains(&shown))),
        "start-up prints the path"
    );
    assert_eq!(s.call("GET", "/event-types", None).0, 200);
    let (_, v) = s.call("GET", "/event-types", None);
    assert_eq!(v["event_types"].as_array().unwrap().len(), 6);
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, out) = run_binary(
        &["serve"],
        &[
            ("BUILDR_STORAGE__PATH", data),
            ("BUILDR_DELIVERY__TIMEOUT", "fast"),
        ],
    );
    assert_ne!(code, 0);
    assert!(out.to_lowercase().contains("delivery.timeout"), "{out}");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[delivery]\nretry_shedule = [\"1s\"]\n").unwrap();
    let (code, out) = run_binary(
        &["serve", "--config", cfg.to_str().unwrap()],
        &[("BUILDR_STORAGE__PATH", data)],
    );
    assert_ne!(code, 0);
    assert!(out.contains("retry_shedule"), "{out}");
}
