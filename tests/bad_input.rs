//! Bad input gets a clear JSON error and changes nothing.
#![allow(clippy::unwrap_used)]

use buildr_e2e::server::{run_binary, ADMIN_TOKEN};
use buildr_e2e::{Receiver, Server};
use serde_json::{json, Value};

/// Everything stored, as every account sees it: webhooks (with the admin's secret), events, accounts.
fn snapshot(s: &Server, key_b: &str, webhook: &str) -> Vec<Value> {
    vec![
        s.call("GET", "/webhooks?limit=250", None).1,
        s.call("GET", "/events?limit=1000", None).1,
        s.call("GET", &format!("/webhooks/{webhook}/secret"), None)
            .1,
        s.call("GET", "/accounts", None).1,
        s.call_with(key_b, &[], "GET", "/webhooks?limit=250", None)
            .1,
        s.call_with(key_b, &[], "GET", "/events?limit=1000", None).1,
    ]
}

#[test]
fn bad_requests_get_their_documented_error_and_store_nothing() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let url = rx.url("/x");
    let (st, v) = s.call("POST", "/webhooks", Some(json!({"webhook": {"url": url}})));
    assert_eq!(st, 201);
    let wh_id = v["webhook"]["id"].as_str().unwrap().to_owned();
    // A second account with a webhook, an event and a revoked key.
    let (st, v) = s.call(
        "POST",
        "/accounts",
        Some(json!({"account": {"name": "Bolt"}})),
    );
    assert_eq!(st, 201, "{v}");
    let acc_b = v["account"]["id"].as_str().unwrap().to_owned();
    let key_b = v["api_key"].as_str().unwrap().to_owned();
    let (_, v) = s.call("POST", &format!("/accounts/{acc_b}/keys"), None);
    let revoked = v["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        s.call(
            "DELETE",
            &format!("/accounts/{acc_b}/keys/{}", &revoked[..11]),
            None
        )
        .0,
        204
    );
    let (st, _) = s.call_with(
        &key_b,
        &[],
        "POST",
        "/webhooks",
        Some(json!({"webhook": {"url": rx.url("/b")}})),
    );
    assert_eq!(st, 201);
    let event = |id: i64| json!({"event": {"type": "contact.create", "data": {"id": id, "url": "https://x.example/1"}}});
    assert_eq!(s.call("POST", "/events", Some(event(1))).0, 202);
    assert_eq!(
        s.call_with(&key_b, &[], "POST", "/events", Some(event(2)))
            .0,
        202
    );
    assert!(buildr_e2e::wait_until(
        std::time::Duration::from_secs(20),
        || rx.count("/x") == 1 && rx.count("/b") == 1
    ));
    // Private targets refused from here on (the saved loopback URLs stay as they are).
    s.restart_with_env("BUILDR_DELIVERY__ALLOW_PRIVATE_TARGETS", "false");

    let before = snapshot(&s, &key_b, &wh_id);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let auth_b = format!("Bearer {key_b}");
    let auth_revoked = format!("Bearer {revoked}");
    let as_b = ("Authorization", auth_b.as_str());
    let wh_path = format!("/api/2023-01/webhooks/{wh_id}");
    let rotate_path = format!("{wh_path}/secret/rotate");
    let keys_b = format!("/api/2023-01/accounts/{acc_b}/keys");
    let revoked_path = format!("{keys_b}/{}", &revoked[..11]);
    let secret_path = format!("{wh_path}/secret");
    let json_ct = ("Content-Type", "application/json");
    let big = format!(
        r#"{{"webhook": {{"url": "{url}", "description": "{}"}}}}"#,
        "a".repeat(300 * 1024)
    );
    let ev = |e: Value| json!({ "event": e }).to_string();
    let ok_event =
        json!({"type": "contact.create", "data": {"id": 1, "url": "https://x.example/1"}});
    let big_event = ev(
        json!({"type": "contact.create", "data": {"id": "x".repeat(300 * 1024), "url": "https://x.example/1"}}),
    );
    let huge_batch = json!({"events": vec![json!({"type": "contact.create", "data": {"id": "y".repeat(1000), "url": "https://x.example/1"}}); 4200]}).to_string();
    let long_batch = json!({"events": vec![ok_event.clone(); 1001]}).to_string();
    let long_key = "k".repeat(256);
    let acc = |a: Value| json!({ "account": a }).to_string();

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
        // Oversize strings, duplicates, private targets (422), on create and on patch.
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "description": "d".repeat(1025)})), vec![json_ct], 400, "invalid_request", Some("webhook.description")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "filter_types": ["contact.create", "company.create", "contact.create"]})), vec![json_ct], 400, "invalid_request", Some("webhook.filter_types[2]")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": format!("https://example.com/{}", "p".repeat(2048))})), vec![json_ct], 400, "invalid_request", Some("webhook.url")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "secret": "short"})), vec![json_ct], 400, "invalid_request", Some("webhook.secret")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": url, "rate_limit": 1_000_001})), vec![json_ct], 400, "invalid_request", Some("webhook.rate_limit")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": "http://10.0.0.8/x"})), vec![json_ct], 422, "unprocessable", Some("webhook.url")),
        ("POST", "/api/2023-01/webhooks", wh(json!({"url": "http://localhost:9/x"})), vec![json_ct], 422, "unprocessable", Some("webhook.url")),
        ("PATCH", &wh_path, wh(json!({"url": "http://169.254.169.254/latest"})), vec![json_ct], 422, "unprocessable", Some("webhook.url")),
        ("PATCH", &wh_path, wh(json!({"rate_limit": 0, "description": "changed"})), vec![json_ct], 400, "invalid_request", Some("webhook.rate_limit")),
        ("PATCH", &wh_path, wh(json!({"disabled": true, "filter_type": null})), vec![json_ct], 400, "invalid_request", Some("webhook.filter_type")),
        ("PATCH", &wh_path, wh(json!({"rate_limit": 5})), vec![("Content-Type", "text/plain")], 415, "unsupported_media_type", None),
        ("POST", &rotate_path, json!({"secret": "short"}).to_string(), vec![json_ct], 400, "invalid_request", Some("secret")),
        ("POST", &rotate_path, json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}).to_string(), vec![("Content-Type", "text/plain")], 415, "unsupported_media_type", None),
        ("POST", &rotate_path, json!({"secrets": "x"}).to_string(), vec![json_ct], 400, "invalid_request", Some("secrets")),
        // Bad cursors and query parameters.
        ("GET", "/api/2023-01/webhooks?cursor=wh_!!", String::new(), vec![], 400, "invalid_request", Some("cursor")),
        ("GET", "/api/2023-01/webhooks?limit=ten", String::new(), vec![], 400, "invalid_request", Some("limit")),
        ("GET", "/api/2023-01/events?after_seq=-1", String::new(), vec![], 400, "invalid_request", Some("after_seq")),
        ("GET", "/api/2023-01/events?limit=0", String::new(), vec![], 400, "invalid_request", Some("limit")),
        // Events: oversize bodies and fields, content type, idempotency key, accounts.
        ("POST", "/api/2023-01/events", big_event, vec![json_ct], 413, "payload_too_large", None),
        ("POST", "/api/2023-01/events/batch", huge_batch, vec![json_ct], 413, "payload_too_large", None),
        ("POST", "/api/2023-01/events/batch", long_batch, vec![json_ct], 400, "invalid_request", Some("events")),
        ("POST", "/api/2023-01/events", ev(ok_event.clone()), vec![], 415, "unsupported_media_type", None),
        ("POST", "/api/2023-01/events", ev(ok_event.clone()), vec![json_ct, ("Idempotency-Key", &long_key)], 400, "invalid_request", Some("Idempotency-Key")),
        ("POST", "/api/2023-01/events", ev(json!({"type": "contact.create", "data": {"id": "i".repeat(256), "url": "https://x.example/1"}})), vec![json_ct], 400, "invalid_request", Some("event.data.id")),
        ("POST", "/api/2023-01/events", ev(json!({"type": "contact.create", "account": "nope", "data": {"id": 1, "url": "https://x.example/1"}})), vec![json_ct], 400, "invalid_request", Some("event.account")),
        ("POST", "/api/2023-01/events", ev(json!({"type": "contact.create", "account": "acc_nope", "data": {"id": 1, "url": "https://x.example/1"}})), vec![json_ct], 422, "unprocessable", Some("event.account")),
        // Across accounts: another account's webhook is not found; admin-only routes are forbidden.
        ("GET", &wh_path, String::new(), vec![as_b], 404, "not_found", None),
        ("PATCH", &wh_path, wh(json!({"rate_limit": 5})), vec![as_b, json_ct], 404, "not_found", None),
        ("DELETE", &wh_path, String::new(), vec![as_b], 404, "not_found", None),
        ("POST", &rotate_path, String::new(), vec![as_b], 404, "not_found", None),
        ("GET", &secret_path, String::new(), vec![as_b], 404, "not_found", None),
        ("POST", "/api/2023-01/events", ev(json!({"type": "contact.create", "account": "acc_default", "data": {"id": 1, "url": "https://x.example/1"}})), vec![as_b, json_ct], 403, "forbidden", None),
        ("GET", "/api/2023-01/accounts", String::new(), vec![as_b], 403, "forbidden", None),
        ("POST", &keys_b, String::new(), vec![as_b], 403, "forbidden", None),
        ("GET", "/api/2023-01/webhooks", String::new(), vec![as_b, ("Buildr-Account", "acc_default")], 403, "forbidden", None),
        ("GET", "/api/2023-01/webhooks", String::new(), vec![("Authorization", &auth_revoked)], 401, "unauthorized", None),
        ("GET", "/api/2023-01/webhooks", String::new(), vec![("Buildr-Account", "acc_nope")], 404, "not_found", None),
        ("GET", "/api/2023-01/webhooks", String::new(), vec![("Buildr-Account", "default")], 400, "invalid_request", Some("Buildr-Account")),
        // Accounts and keys.
        ("POST", "/api/2023-01/accounts", acc(json!({"name": ""})), vec![json_ct], 400, "invalid_request", Some("account.name")),
        ("POST", "/api/2023-01/accounts", acc(json!({"name": "n".repeat(257)})), vec![json_ct], 400, "invalid_request", Some("account.name")),
        ("POST", "/api/2023-01/accounts", acc(json!({"nam": "Acme"})), vec![json_ct], 400, "invalid_request", Some("account.nam")),
        ("POST", "/api/2023-01/accounts", acc(json!({"name": 5})), vec![json_ct], 400, "invalid_request", Some("account.name")),
        ("POST", "/api/2023-01/accounts", acc(json!({"name": "Acme"})), vec![("Content-Type", "text/plain")], 415, "unsupported_media_type", None),
        ("POST", &keys_b, json!({"scope": "all"}).to_string(), vec![json_ct], 400, "invalid_request", Some("scope")),
        ("POST", "/api/2023-01/accounts/acc_nope/keys", String::new(), vec![], 404, "not_found", None),
        ("DELETE", "/api/2023-01/accounts/acc_default/keys/bk_nothere1", String::new(), vec![], 404, "not_found", None),
        ("DELETE", &revoked_path, String::new(), vec![], 404, "not_found", None),
    ];
    assert!(cases.len() >= 30);
    for (i, (method, path, body, headers, status, code, field)) in cases.iter().enumerate() {
        let mut h: Vec<(&str, &str)> = headers.clone();
        if *status != 401 && !h.iter().any(|(k, _)| *k == "Authorization") {
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
    assert_eq!(
        before,
        snapshot(&s, &key_b, &wh_id),
        "no bad request changed stored state"
    );
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
    let (code, out) = run_binary(
        &["serve"],
        &[
            ("BUILDR_STORAGE__PATH", data),
            ("BUILDR_STORAGE__CACHE_MB", "1"),
        ],
    );
    assert_ne!(code, 0);
    assert!(out.contains("storage.cache_mb"), "{out}");
    for (key, env, bad) in [
        (
            "auth.failed_per_minute",
            "BUILDR_AUTH__FAILED_PER_MINUTE",
            "-1",
        ),
        (
            "auth.failed_per_minute",
            "BUILDR_AUTH__FAILED_PER_MINUTE",
            "ten",
        ),
        ("server.keep_alive", "BUILDR_SERVER__KEEP_ALIVE", "forever"),
        (
            "server.client_request_timeout",
            "BUILDR_SERVER__CLIENT_REQUEST_TIMEOUT",
            "-5s",
        ),
        (
            "delivery.max_connections_per_host",
            "BUILDR_DELIVERY__MAX_CONNECTIONS_PER_HOST",
            "0",
        ),
        (
            "delivery.max_connections_per_host",
            "BUILDR_DELIVERY__MAX_CONNECTIONS_PER_HOST",
            "many",
        ),
        (
            "delivery.max_in_flight_total",
            "BUILDR_DELIVERY__MAX_IN_FLIGHT_TOTAL",
            "0",
        ),
        (
            "delivery.max_in_flight_total",
            "BUILDR_DELIVERY__MAX_IN_FLIGHT_TOTAL",
            "-3",
        ),
    ] {
        let (code, out) = run_binary(&["serve"], &[("BUILDR_STORAGE__PATH", data), (env, bad)]);
        assert_ne!(code, 0, "{key} = {bad}: {out}");
        assert!(out.contains(key), "{key} = {bad}: {out}");
    }
}
