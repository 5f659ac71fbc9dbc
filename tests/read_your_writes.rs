//! Deliveries read their own writes: every event acknowledged before a request is in the delivery list
//! (at least as `pending`), and an attempt shows as soon as its outcome is recorded, although the
//! delivery index writes in batches behind the log.
#![allow(clippy::unwrap_used)]

use buildr_e2e::receiver::Reply;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

fn listed(s: &Server, webhook: &str) -> Vec<Value> {
    let (st, v) = s.call(
        "GET",
        &format!("/webhooks/{webhook}/deliveries?limit=250"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

fn slow_receiver(path: &str) -> Receiver {
    let rx = Receiver::start();
    rx.answer_path(
        path,
        Reply {
            status: 200,
            retry_after: None,
            delay: Some(Duration::from_millis(300)),
        },
    );
    rx
}

#[test]
fn a_batch_is_listed_at_once_while_its_receiver_is_still_answering() {
    let s = Server::start();
    let rx = slow_receiver("/slow");
    let id = s.create_webhook(&rx.url("/slow"), json!({}));
    let events: Vec<Value> = (0..50)
        .map(|n| json!({"type": "contact.create", "data": {"id": n, "url": format!("https://x.example/{n}")}}))
        .collect();
    let (st, v) = s.call("POST", "/events/batch", Some(json!({ "events": events })));
    assert_eq!(st, 202, "{v}");
    let published: HashSet<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let rows = listed(&s, &id);
    let got: HashSet<String> = rows
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, published, "every acknowledged event is listed at once");
    assert!(
        rx.count("/slow") < 50,
        "the receiver was still answering while the list was read (else this test proves nothing)"
    );
    // Each attempt shows once its outcome is recorded: when all 50 are answered, all 50 succeed.
    assert!(wait_until(Duration::from_secs(60), || listed(&s, &id)
        .iter()
        .all(|d| d["status"] == "succeeded" && d["attempts"] == 1)));
}

#[test]
fn each_single_publish_is_found_right_after_its_202() {
    let s = Server::start();
    let rx = slow_receiver("/one");
    let id = s.create_webhook(&rx.url("/one"), json!({}));
    for n in 0..20 {
        let event = s.publish("contact.update", json!(n));
        let event_id = event["id"].as_str().unwrap();
        let rows = listed(&s, &id);
        let row = rows
            .iter()
            .find(|d| d["event_id"] == event_id)
            .unwrap_or_else(|| panic!("event {n} ({event_id}) is not listed right after its 202"));
        assert!(
            ["pending", "succeeded"].contains(&row["status"].as_str().unwrap()),
            "{row}"
        );
        let (st, v) = s.call(
            "GET",
            &format!("/webhooks/{id}/deliveries/{event_id}/attempts"),
            None,
        );
        assert_eq!(st, 200, "attempts of a just-published event: {v}");
        assert!(v["attempts"].is_array(), "{v}");
    }
}

#[test]
fn an_attempt_shows_a_moment_after_the_receiver_answered() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/quick"), json!({}));
    for n in 0..10 {
        let event = s.publish("company.create", json!(n));
        let event_id = event["id"].as_str().unwrap().to_owned();
        assert!(wait_until(Duration::from_secs(10), || rx
            .all()
            .iter()
            .any(|r| r.header("webhook-id") == event_id)));
        // The outcome goes to the log a moment after the answer (no reply is awaited); once it is
        // recorded, the very next read shows it: never a 50 ms lag of the index on top.
        assert!(
            wait_until(Duration::from_secs(5), || {
                let (_, v) = s.call(
                    "GET",
                    &format!("/webhooks/{id}/deliveries/{event_id}/attempts"),
                    None,
                );
                v["attempts"].as_array().is_some_and(|a| a.len() == 1)
            }),
            "the attempt of event {n} is listed"
        );
    }
}
