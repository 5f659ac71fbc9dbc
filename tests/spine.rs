//! The spine, end to end: the real binary on a real sled dir, a real receiver on 127.0.0.1, signatures
//! checked by the svix npm package.
#![allow(clippy::unwrap_used)]

use buildr_e2e::receiver::Reply;
use buildr_e2e::verifier::{hmac_matches, svix_verify};
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use buildr_e2e::EVENT_TYPES as TYPES;

fn create_webhook(s: &Server, body: Value) -> Value {
    let (status, v) = s.call("POST", "/webhooks", Some(body));
    assert_eq!(status, 201, "{v}");
    v["webhook"].clone()
}

#[test]
fn seed_webhook_gets_only_its_types_signed_so_svix_verifies() {
    let s = Server::start();
    let rx = Receiver::start();
    // The seed's request body, exactly (with a real URL): a raw secret and one filter type.
    let seed = create_webhook(
        &s,
        json!({"webhook": {"url": rx.url("/seed"), "description": "Webhook for CRM sync",
            "filter_types": ["opportunity.create"], "secret": "secret", "rate_limit": 100}}),
    );
    assert_eq!(seed["secret"], "secret");
    assert_eq!(seed["filter_types"], json!(["opportunity.create"]));
    assert_eq!(seed["rate_limit"], 100);
    assert_eq!(seed["disabled"], false);
    assert!(seed["id"].as_str().unwrap().starts_with("wh_"));
    // A second one with everything defaulted: all types, a generated whsec_ secret, 60/min.
    let all = create_webhook(&s, json!({"webhook": {"url": rx.url("/all")}}));
    assert_eq!(all["filter_types"], Value::Null);
    assert_eq!(all["rate_limit"], 60);
    let whsec = all["secret"].as_str().unwrap().to_owned();
    assert!(whsec.starts_with("whsec_"));

    let mut published = HashMap::new();
    for (i, t) in TYPES.iter().enumerate() {
        let e = s.publish(t, json!(2279 + i));
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        published.insert(e["id"].as_str().unwrap().to_owned(), e);
    }
    assert!(wait_until(Duration::from_secs(20), || rx.count("/all")
        >= 6
        && rx.count("/seed") >= 1));
    std::thread::sleep(Duration::from_millis(300));

    let seed_got = rx.at("/seed");
    assert_eq!(
        seed_got.len(),
        1,
        "the filtered webhook gets only opportunity.create"
    );
    let body = seed_got[0].json();
    assert_eq!(body["type"], "opportunity.create");
    let obj: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        obj.len(),
        4,
        "body is exactly type, timestamp, id, url: {body}"
    );
    assert_eq!(body["id"], 2281);
    assert_eq!(body["url"], "https://app.buildr.example/objects/2281");
    let ev = &published[seed_got[0].header("webhook-id")];
    assert_eq!(body["timestamp"], ev["created_at"]);
    assert_eq!(
        seed_got[0].header("svix-id"),
        seed_got[0].header("webhook-id")
    );
    assert_eq!(seed_got[0].header("content-type"), "application/json");
    assert!(seed_got[0]
        .header("user-agent")
        .starts_with("Buildr-Webhooks/"));

    let all_got = rx.at("/all");
    assert_eq!(all_got.len(), 6);
    let types: HashSet<String> = all_got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.len(), 6);
    for r in &all_got {
        assert!(published.contains_key(r.header("webhook-id")));
    }

    // The seed's Node snippet (svix), unchanged for whsec_; with {format: "raw"} for the raw secret.
    assert!(
        svix_verify(&whsec, false, &all_got)
            .iter()
            .all(Result::is_ok),
        "{:?}",
        svix_verify(&whsec, false, &all_got)
    );
    assert!(svix_verify("secret", true, &seed_got)
        .iter()
        .all(Result::is_ok));
    // And it does catch a wrong secret (so the check above can fail).
    assert!(svix_verify("not-the-secret", true, &seed_got)
        .iter()
        .all(Result::is_err));
    // An independent raw HMAC check of the raw secret.
    assert!(hmac_matches(b"secret", &seed_got[0]));
    assert!(!hmac_matches(b"secreT", &seed_got[0]));
}

#[test]
fn failures_are_retried_with_the_same_id_and_do_not_hold_back_the_next_event() {
    let s = Server::start();
    let rx = Receiver::start();
    let wh = create_webhook(
        &s,
        json!({"webhook": {"url": rx.url("/r"), "rate_limit": 6000}}),
    );
    let secret = wh["secret"].as_str().unwrap().to_owned();
    // The first failure is slow: the next attempt waits the schedule's step after its answer, not after
    // it was sent.
    let slow_failure = Reply {
        delay: Some(Duration::from_millis(300)),
        ..Reply::status(500)
    };
    rx.script(
        json!(1),
        vec![slow_failure, Reply::status(500), Reply::status(200)],
    );
    let first = s.publish("contact.create", json!(1));
    let second = s.publish("contact.create", json!(2));
    assert!(wait_until(Duration::from_secs(20), || rx.count("/r") >= 4));
    std::thread::sleep(Duration::from_millis(800));
    let got = rx.at("/r");
    let of = |e: &Value| {
        got.iter()
            .filter(|r| r.header("webhook-id") == e["id"].as_str().unwrap())
            .cloned()
            .collect::<Vec<_>>()
    };
    let a = of(&first);
    let b = of(&second);
    assert_eq!(
        a.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200],
        "retried until it landed, then stopped"
    );
    assert_eq!(b.len(), 1);
    assert!(
        b[0].at < a[2].at,
        "the second event did not wait for the first one's retries"
    );
    assert!(
        a[1].at.duration_since(a[0].at) >= Duration::from_millis(390),
        "the schedule's first step (100ms) was waited after the slow (300ms) failure's answer"
    );
    assert!(
        a[2].at.duration_since(a[1].at) >= Duration::from_millis(180),
        "the second step (200ms) was waited"
    );
    assert!(
        svix_verify(&secret, false, &a).iter().all(Result::is_ok),
        "every retry is signed afresh and verifies"
    );
}

#[test]
fn an_event_whose_retries_run_out_is_not_sent_again() {
    let s = Server::start();
    let rx = Receiver::start();
    create_webhook(
        &s,
        json!({"webhook": {"url": rx.url("/down"), "rate_limit": 6000}}),
    );
    rx.answer_path("/down", Reply::status(500));
    s.publish("company.update", json!("c-1"));
    // Schedule 100ms, 200ms, 300ms: 4 attempts in all.
    assert!(wait_until(Duration::from_secs(20), || rx.count("/down") >= 4));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.count("/down"), 4);
}

#[test]
fn rate_limit_spaces_deliveries_and_drops_none() {
    let s = Server::start();
    let rx = Receiver::start();
    create_webhook(
        &s,
        json!({"webhook": {"url": rx.url("/rl"), "rate_limit": 120}}),
    );
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"type": "contact.update", "data": {"id": i, "url": format!("https://x.example/{i}")}}))
        .collect();
    let (status, v) = s.call("POST", "/events/batch", Some(json!({"events": events})));
    assert_eq!(status, 202, "{v}");
    assert!(
        wait_until(Duration::from_secs(40), || rx.count("/rl") >= 20),
        "all 20 arrive"
    );
    let times: Vec<_> = rx.at("/rl").iter().map(|r| r.at).collect();
    let ids: HashSet<String> = rx
        .at("/rl")
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 20);
    // API.md: over any window of W seconds at most b + rate·W/60 start (b = ⌈120/60⌉ = 2). One extra
    // is allowed for the gap between the server starting a request and the receiver timing it.
    for i in 0..times.len() {
        for j in i..times.len() {
            let w = times[j].duration_since(times[i]).as_secs_f64();
            let n = (j - i + 1) as f64;
            assert!(n <= 2.0 + 2.0 * w + 1.0, "{n} deliveries within {w:.3}s");
        }
    }
}

#[test]
fn every_acknowledged_event_survives_kill_9() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let all = create_webhook(
        &s,
        json!({"webhook": {"url": rx.url("/all"), "rate_limit": 3000}}),
    );
    let some = create_webhook(
        &s,
        json!({"webhook": {"url": rx.url("/opp"), "filter_types": ["opportunity.create"], "secret": "raw-secret-1", "rate_limit": 3000}}),
    );
    // Each webhook as the API shows it, with its secret.
    let snapshot = |s: &Server| -> Vec<Value> {
        [&all, &some]
            .iter()
            .map(|w| {
                let id = w["id"].as_str().unwrap();
                json!([
                    s.call("GET", &format!("/webhooks/{id}"), None).1,
                    s.call("GET", &format!("/webhooks/{id}/secret"), None).1
                ])
            })
            .collect()
    };
    let before = snapshot(&s);

    // 500 events from 4 concurrent publishers; every 202 is remembered.
    let acked = std::sync::Mutex::new(Vec::<(String, String)>::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (s, acked) = (&s, &acked);
            scope.spawn(move || {
                for i in 0..125 {
                    let ty = if i % 2 == 0 {
                        "opportunity.create"
                    } else {
                        "contact.update"
                    };
                    let e = s.publish(ty, json!(t * 1000 + i));
                    acked
                        .lock()
                        .unwrap()
                        .push((e["id"].as_str().unwrap().to_owned(), ty.to_owned()));
                }
            });
        }
    });
    s.kill9();
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 500);
    let delivered_before = rx.all().len();
    s.restart();

    let want_all: HashSet<&str> = acked.iter().map(|(id, _)| id.as_str()).collect();
    let want_opp: HashSet<&str> = acked
        .iter()
        .filter(|(_, t)| t == "opportunity.create")
        .map(|(id, _)| id.as_str())
        .collect();
    let got = |path: &str| {
        rx.at(path)
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect::<HashSet<String>>()
    };
    let done = wait_until(Duration::from_secs(60), || {
        want_all.iter().all(|id| got("/all").contains(*id))
            && want_opp.iter().all(|id| got("/opp").contains(*id))
    });
    let missing = want_all
        .iter()
        .filter(|id| !got("/all").contains(**id))
        .count();
    assert!(done, "{missing} acknowledged events never reached /all (delivered before the kill: {delivered_before})");
    assert!(
        got("/opp").iter().all(|id| want_opp.contains(id.as_str())),
        "nothing unmatched reached the filtered webhook"
    );

    let after = snapshot(&s);
    assert_eq!(
        before, after,
        "webhooks and secrets are unchanged by the crash"
    );
}
