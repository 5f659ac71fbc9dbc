//! Accounts and API keys, end to end: every account sees, changes and receives only its own webhooks and
//! events; another account's object is 404; admin-only routes are 403 to an account key; a revoked key
//! is 401 at once and after a restart; repeated failed authentication is rate-limited.
#![allow(clippy::unwrap_used)]

use buildr_e2e::server::ADMIN_TOKEN;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

struct Account {
    id: String,
    key: String,
    prefix: String,
}

fn create_account(s: &Server, name: &str) -> Account {
    let (st, v) = s.call(
        "POST",
        "/accounts",
        Some(json!({"account": {"name": name}})),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["account"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("acc_"));
    assert_eq!(v["account"]["name"], name);
    assert!(v["account"]["created_at"].as_str().is_some());
    let key = v["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("bk_") && key.len() >= 46, "{key}");
    assert_eq!(v["key_prefix"], key[..11]);
    Account {
        id,
        prefix: key[..11].to_owned(),
        key,
    }
}

/// A request with an account key.
fn as_key(s: &Server, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    s.call_with(key, &[], method, path, body)
}

fn publish(s: &Server, key: &str, body: Value) -> Value {
    let (st, v) = as_key(s, key, "POST", "/events", Some(json!({ "event": body })));
    assert_eq!(st, 202, "{v}");
    v["event"].clone()
}

fn ev(id: i64) -> Value {
    json!({"type": "contact.create", "data": {"id": id, "url": format!("https://app.buildr.example/c/{id}")}})
}

fn ids_at(rx: &Receiver, path: &str) -> BTreeSet<i64> {
    rx.at(path)
        .iter()
        .map(|r| r.json()["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn accounts_are_isolated_from_each_other() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let a = create_account(&s, "Acme");
    let b = create_account(&s, "Bolt");
    let admin = ADMIN_TOKEN;

    let hook = |key: &str, path: &str| {
        let (st, v) = as_key(
            &s,
            key,
            "POST",
            "/webhooks",
            Some(json!({"webhook": {"url": rx.url(path)}})),
        );
        assert_eq!(st, 201, "{v}");
        v["webhook"]["id"].as_str().unwrap().to_owned()
    };
    let wa = hook(&a.key, "/a");
    let wb = hook(&b.key, "/b");
    let wd = hook(admin, "/d");

    // Events of every account, published with its key, the admin token + Buildr-Account, or an explicit
    // account in the body.
    publish(&s, &a.key, ev(1));
    publish(&s, &a.key, ev(2));
    publish(&s, &b.key, ev(3));
    let (st, v) = s.call_with(
        admin,
        &[("Buildr-Account", &b.id)],
        "POST",
        "/events",
        Some(json!({"event": ev(4)})),
    );
    assert_eq!(
        (st, v["event"]["account"].as_str()),
        (202, Some(b.id.as_str())),
        "{v}"
    );
    publish(&s, admin, ev(5));
    let mut six = ev(6);
    six["account"] = json!(a.id);
    publish(&s, admin, six);

    assert!(wait_until(Duration::from_secs(20), || {
        rx.count("/a") >= 3 && rx.count("/b") >= 2 && rx.count("/d") >= 1
    }));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ids_at(&rx, "/a"),
        BTreeSet::from([1, 2, 6]),
        "A gets only A's events"
    );
    assert_eq!(
        ids_at(&rx, "/b"),
        BTreeSet::from([3, 4]),
        "B gets only B's events"
    );
    assert_eq!(
        ids_at(&rx, "/d"),
        BTreeSet::from([5]),
        "acc_default gets only its own"
    );

    // Reading: each key lists only its own.
    let (_, v) = as_key(&s, &a.key, "GET", "/events?limit=1000", None);
    let seen: BTreeSet<i64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, BTreeSet::from([1, 2, 6]));
    assert!(v["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["account"] == json!(a.id)));
    let (_, v) = as_key(&s, &a.key, "GET", "/webhooks", None);
    let listed: Vec<&str> = v["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![wa.as_str()]);

    // Key A on B's webhook: 404 for every verb, and nothing changes.
    let b_before = s.call_with(
        admin,
        &[("Buildr-Account", &b.id)],
        "GET",
        &format!("/webhooks/{wb}"),
        None,
    );
    let b_secret = s.call_with(&b.key, &[], "GET", &format!("/webhooks/{wb}/secret"), None);
    assert_eq!(b_before.0, 200);
    for (method, path, body) in [
        ("GET", format!("/webhooks/{wb}"), None),
        ("GET", format!("/webhooks/{wb}/secret"), None),
        (
            "PATCH",
            format!("/webhooks/{wb}"),
            Some(json!({"webhook": {"disabled": true, "rate_limit": 1}})),
        ),
        ("POST", format!("/webhooks/{wb}/secret/rotate"), None),
        (
            "POST",
            format!("/webhooks/{wb}/replay"),
            Some(json!({"since": "2020-01-01T00:00:00.000Z"})),
        ),
        ("GET", format!("/webhooks/{wb}/deliveries"), None),
        ("DELETE", format!("/webhooks/{wb}"), None),
        ("GET", format!("/webhooks/{wd}"), None),
        ("DELETE", format!("/webhooks/{wd}"), None),
    ] {
        let (st, v) = as_key(&s, &a.key, method, &path, body);
        assert_eq!(st, 404, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "not_found", "{method} {path}");
    }
    let b_after = s.call_with(
        admin,
        &[("Buildr-Account", &b.id)],
        "GET",
        &format!("/webhooks/{wb}"),
        None,
    );
    assert_eq!(b_before, b_after, "B's webhook is unchanged");
    assert_eq!(
        b_secret,
        s.call_with(&b.key, &[], "GET", &format!("/webhooks/{wb}/secret"), None)
    );
    assert_eq!(s.call("GET", &format!("/webhooks/{wd}"), None).0, 200);

    // Publishing into another account, naming another account, admin-only routes: 403.
    let mut into_b = ev(7);
    into_b["account"] = json!(b.id);
    let forbidden = [
        as_key(
            &s,
            &a.key,
            "POST",
            "/events",
            Some(json!({"event": into_b})),
        ),
        as_key(
            &s,
            &a.key,
            "POST",
            "/events/batch",
            Some(json!({"events": [ev(8), into_b]})),
        ),
        s.call_with(
            &a.key,
            &[("Buildr-Account", &b.id)],
            "GET",
            "/webhooks",
            None,
        ),
        as_key(&s, &a.key, "GET", "/accounts", None),
        as_key(
            &s,
            &a.key,
            "POST",
            "/accounts",
            Some(json!({"account": {"name": "Mine"}})),
        ),
        as_key(
            &s,
            &a.key,
            "POST",
            &format!("/accounts/{}/keys", a.id),
            None,
        ),
        as_key(
            &s,
            &a.key,
            "DELETE",
            &format!("/accounts/{}/keys/{}", a.id, a.prefix),
            None,
        ),
    ];
    for (i, (st, v)) in forbidden.iter().enumerate() {
        assert_eq!(
            (*st, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "case {i}: {v}"
        );
    }
    let (st, v) = s.call_with(
        admin,
        &[("Buildr-Account", "acc_nope")],
        "GET",
        "/webhooks",
        None,
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );

    // The admin lists every account with its key prefixes.
    let (st, v) = s.call("GET", "/accounts", None);
    assert_eq!(st, 200);
    let accounts = v["accounts"].as_array().unwrap();
    let find = |id: &str| accounts.iter().find(|x| x["id"] == id).cloned().unwrap();
    assert_eq!(find("acc_default")["key_prefixes"], json!([]));
    assert_eq!(find(&a.id)["key_prefixes"], json!([a.prefix]));
    assert_eq!(find(&b.id)["name"], "Bolt");

    // A second key for A; revoking the first refuses it at once, the second still works.
    let (st, v) = s.call("POST", &format!("/accounts/{}/keys", a.id), None);
    assert_eq!(st, 201, "{v}");
    let a2 = v["api_key"].as_str().unwrap().to_owned();
    assert_eq!(v["key_prefix"], a2[..11]);
    let (st, _) = s.call(
        "DELETE",
        &format!("/accounts/{}/keys/{}", b.id, a.prefix),
        None,
    );
    assert_eq!(st, 404, "a key is revoked only under its own account");
    let (st, _) = s.call(
        "DELETE",
        &format!("/accounts/{}/keys/{}", a.id, a.prefix),
        None,
    );
    assert_eq!(st, 204);
    let (st, v) = as_key(&s, &a.key, "GET", "/webhooks", None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    assert_eq!(
        as_key(&s, &a2, "GET", &format!("/webhooks/{wa}"), None).0,
        200
    );
    let (st, _) = s.call(
        "DELETE",
        &format!("/accounts/{}/keys/{}", a.id, a.prefix),
        None,
    );
    assert_eq!(st, 404, "already revoked");

    // All of it is facts in the log: after a restart the same accounts, keys and refusals.
    let listed_before = s.call("GET", "/accounts", None).1;
    s.restart();
    assert_eq!(s.call("GET", "/accounts", None).1, listed_before);
    assert_eq!(as_key(&s, &a.key, "GET", "/webhooks", None).0, 401);
    assert_eq!(
        as_key(&s, &a2, "GET", &format!("/webhooks/{wa}"), None).0,
        200
    );
    assert_eq!(
        as_key(&s, &b.key, "GET", &format!("/webhooks/{wa}"), None).0,
        404
    );
    publish(&s, &b.key, ev(9));
    assert!(wait_until(Duration::from_secs(20), || ids_at(&rx, "/b").contains(&9)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ids_at(&rx, "/a").contains(&9));
}

#[test]
fn repeated_failed_authentication_is_rate_limited_and_success_is_not() {
    let s = Server::start();
    let acme = create_account(&s, "Acme");
    let mut statuses = Vec::new();
    for i in 0..40 {
        let bad = format!("Bearer bk_wrong{i:040}");
        let (st, text) = s.raw(
            "GET",
            "/api/2023-01/webhooks",
            None,
            &[("Authorization", &bad)],
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        let code = v["error"]["code"].as_str().unwrap().to_owned();
        statuses.push((st, code));
    }
    assert!(
        statuses[..5]
            .iter()
            .all(|(st, c)| *st == 401 && c == "unauthorized"),
        "{statuses:?}"
    );
    let limited = statuses
        .iter()
        .filter(|(st, c)| *st == 429 && c == "rate_limited")
        .count();
    assert!(
        limited >= 20,
        "most of 40 quick failures are refused with 429: {statuses:?}"
    );
    // A valid token from the same address is never limited.
    for _ in 0..20 {
        assert_eq!(s.call("GET", "/webhooks", None).0, 200);
        assert_eq!(as_key(&s, &acme.key, "GET", "/webhooks", None).0, 200);
    }
    // A request with no token at all counts as a failure too.
    let (st, _) = s.raw("GET", "/api/2023-01/webhooks", None, &[]);
    assert_eq!(st, 429);
}

/// 40 quick failed authentications from one address: their statuses.
fn fail_40_times(s: &Server) -> Vec<u16> {
    (0..40)
        .map(|i| {
            let bad = format!("Bearer bk_wrong{i:040}");
            s.raw(
                "GET",
                "/api/2023-01/webhooks",
                None,
                &[("Authorization", &bad)],
            )
            .0
        })
        .collect()
}

#[test]
fn the_failed_authentication_limit_is_a_config_key_and_zero_turns_it_off() {
    let off = Server::builder()
        .env("BUILDR_AUTH__FAILED_PER_MINUTE", "0")
        .start();
    let statuses = fail_40_times(&off);
    assert!(statuses.iter().all(|st| *st == 401), "{statuses:?}");

    let three = Server::builder()
        .env("BUILDR_AUTH__FAILED_PER_MINUTE", "3")
        .start();
    let statuses = fail_40_times(&three);
    assert_eq!(&statuses[..3], &[401, 401, 401], "a burst of 3");
    assert!(
        statuses[3..].iter().filter(|st| **st == 429).count() >= 30,
        "then 429: {statuses:?}"
    );
    let (st, text) = three.raw("GET", "/api/2023-01/webhooks", None, &[]);
    assert_eq!(st, 429, "{text}");
    assert_eq!(
        three.call("GET", "/webhooks", None).0,
        200,
        "success is never limited"
    );
}
