//! FIFO ordering per webhook: one attempt in flight, deliveries in publish (log) order, a failing delivery
//! holds the later ones back, replays go after what is already due; the order holds across kill -9; a
//! parallel webhook beside a FIFO one is not slowed by it.
#![allow(clippy::unwrap_used)]

use buildr_e2e::receiver::{Received, Reply};
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn object_ids(received: &[Received]) -> Vec<i64> {
    received
        .iter()
        .map(|r| r.json()["id"].as_i64().unwrap())
        .collect()
}

fn distinct(rx: &Receiver, path: &str) -> usize {
    object_ids(&rx.at(path))
        .into_iter()
        .collect::<BTreeSet<_>>()
        .len()
}

fn webhook(s: &Server, id: &str) -> Value {
    s.call("GET", &format!("/webhooks/{id}"), None).1["webhook"].clone()
}

fn slow(ms: u64) -> Reply {
    Reply {
        status: 200,
        retry_after: None,
        delay: Some(Duration::from_millis(ms)),
    }
}

fn publish_range(s: &Server, ids: std::ops::RangeInclusive<i64>) {
    for i in ids {
        s.publish("contact.update", json!(i));
    }
}

#[test]
fn fifo_delivers_500_events_in_publish_order_through_random_delays_and_two_kill_9s() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/fifo"), json!({"ordering": "fifo"}));
    rx.delay_randomly("/fifo", Duration::from_millis(50));

    publish_range(&s, 1..=200);
    assert!(wait_until(Duration::from_secs(60), || rx.count("/fifo") >= 80));
    s.kill9();
    // The killed process's last request may still be in the receiver's random delay; the next process
    // would send that event again while it is: two at once at the receiver, from two processes.
    assert!(wait_until(Duration::from_secs(5), || rx.open_now("/fifo") == 0));
    s.start_again();
    assert_eq!(webhook(&s, &id)["ordering"], "fifo");
    publish_range(&s, 201..=500);
    assert!(wait_until(Duration::from_secs(60), || distinct(
        &rx, "/fifo"
    ) >= 300));
    s.kill9();
    assert!(wait_until(Duration::from_secs(5), || rx.open_now("/fifo") == 0));
    s.start_again();
    assert!(
        wait_until(Duration::from_secs(120), || distinct(&rx, "/fifo") == 500),
        "{} of 500 delivered",
        distinct(&rx, "/fifo")
    );
    std::thread::sleep(Duration::from_millis(300));

    // In publish order; the only repeats are an event sent again right after itself (its outcome was
    // not yet recorded when the process died), never an earlier event after a later one.
    let got = object_ids(&rx.at("/fifo"));
    assert_eq!((got[0], *got.last().unwrap()), (1, 500));
    for w in got.windows(2) {
        assert!(
            w[1] == w[0] || w[1] == w[0] + 1,
            "{} came after {}: {got:?}",
            w[1],
            w[0]
        );
    }
    assert!(
        got.len() <= 502,
        "at most one repeat per kill: {}",
        got.len()
    );
    assert_eq!(rx.most_at_once("/fifo"), 1, "one attempt in flight");
}

#[test]
fn a_failing_fifo_delivery_holds_the_next_ones_until_it_succeeds_or_finally_fails() {
    // config/test.toml retries after 100ms, 200ms and 300ms: four attempts in all.
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/hold"), json!({"ordering": "fifo"}));
    rx.script(json!(1), vec![Reply::status(500); 3]);
    publish_range(&s, 1..=3);
    assert!(wait_until(Duration::from_secs(15), || rx.count("/hold") >= 6));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(object_ids(&rx.at("/hold")), vec![1, 1, 1, 1, 2, 3]);

    // A delivery that fails every attempt is finally failed; then the next one starts.
    rx.script(json!(4), vec![Reply::status(500); 4]);
    publish_range(&s, 4..=5);
    assert!(wait_until(Duration::from_secs(15), || rx.count("/hold") >= 11));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        object_ids(&rx.at("/hold"))[6..].to_vec(),
        vec![4, 4, 4, 4, 5]
    );
    let (_, v) = s.call(
        "GET",
        &format!("/webhooks/{id}/deliveries?status=failed"),
        None,
    );
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn a_parallel_webhook_is_not_slowed_by_a_fifo_one_on_the_same_server() {
    let s = Server::start();
    let rx = Receiver::start();
    s.create_webhook(&rx.url("/fifo"), json!({"ordering": "fifo"}));
    s.create_webhook(&rx.url("/par"), json!({}));
    rx.answer_path("/fifo", slow(300));
    rx.answer_path("/par", slow(300));
    publish_range(&s, 1..=20);
    assert!(wait_until(Duration::from_secs(30), || rx.count("/par") == 20));
    let fifo_then = rx.count("/fifo");
    assert!(
        fifo_then < 20,
        "the parallel webhook had all 20 while the FIFO one had {fifo_then}"
    );
    assert!(rx.most_at_once("/par") > 1, "parallel sends side by side");
    assert!(wait_until(Duration::from_secs(60), || rx.count("/fifo") == 20));
    assert_eq!(object_ids(&rx.at("/fifo")), (1..=20).collect::<Vec<_>>());
    assert_eq!(rx.most_at_once("/fifo"), 1);
}

#[test]
fn switching_to_fifo_with_a_backlog_sends_the_rest_one_at_a_time_in_order() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/sw"), json!({}));
    rx.answer_path("/sw", slow(150));
    // The first wave (up to `max_in_flight`, 32) is answered after 1 s, so the switch lands while a
    // backlog is still waiting however long the PATCH takes (a three-node cluster's can take longer than
    // one 150 ms wave: everything had arrived before it, and nothing was left to send in order).
    for i in 1..=32 {
        rx.script(json!(i), vec![slow(1000)]);
    }
    let events: Vec<Value> = (1..=60)
        .map(|i| json!({"type": "company.update", "data": {"id": i, "url": format!("https://x.example/{i}")}}))
        .collect();
    let (st, v) = s.call("POST", "/events/batch", Some(json!({ "events": events })));
    assert_eq!(st, 202, "{v}");
    assert!(wait_until(Duration::from_secs(10), || rx.count("/sw") >= 1));
    let (st, v) = s.call(
        "PATCH",
        &format!("/webhooks/{id}"),
        Some(json!({"webhook": {"ordering": "fifo"}})),
    );
    assert_eq!(
        (st, v["webhook"]["ordering"].clone()),
        (200, json!("fifo")),
        "{v}"
    );
    let switched = Instant::now();
    assert!(wait_until(Duration::from_secs(60), || distinct(&rx, "/sw") == 60));

    let all = rx.at("/sw");
    let (before, after): (Vec<Received>, Vec<Received>) = all
        .into_iter()
        .partition(|r| r.at < switched + Duration::from_millis(100));
    assert!(before.len() > 1, "parallel before the switch");
    assert!(!after.is_empty());
    let first_after = object_ids(&after)[0];
    let expected: Vec<i64> = (first_after..=60).collect();
    assert_eq!(object_ids(&after), expected, "in order after the switch");
    let mut sent = object_ids(&before);
    sent.sort_unstable();
    assert_eq!(sent, (1..first_after).collect::<Vec<_>>());
    for w in after.windows(2) {
        assert!(
            w[1].at.duration_since(w[0].at) >= Duration::from_millis(150),
            "one at a time"
        );
    }
}

#[test]
fn a_fifo_replay_goes_after_what_is_already_due_in_seq_order() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/rp"), json!({"ordering": "fifo"}));
    rx.script(json!(1), vec![slow(1000)]);
    let first = s.publish("opportunity.create", json!(1));
    let second = s.publish("contact.update", json!(2));
    publish_range(&s, 3..=5);
    assert!(wait_until(Duration::from_secs(10), || rx.count("/rp") == 1));
    // Events 1 (in flight) and 2 (queued behind it) are replayed (seqs increase, not always by one: a
    // cluster's are not consecutive).
    let from = first["seq"].as_u64().unwrap();
    let to = second["seq"].as_u64().unwrap() + 1;
    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/replay"),
        Some(json!({"from_seq": from, "to_seq": to})),
    );
    assert_eq!((st, v["replay"]["events"].clone()), (202, json!(2)), "{v}");
    let rp = v["replay"]["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(20), || {
        s.call("GET", &format!("/webhooks/{id}/replays/{rp}"), None)
            .1["replay"]["done"]
            == 2
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(object_ids(&rx.at("/rp")), vec![1, 2, 3, 4, 5, 1, 2]);
}

#[test]
fn ordering_is_a_webhook_field_and_a_bad_value_changes_nothing() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let count = |s: &Server| {
        s.call("GET", "/webhooks", None).1["webhooks"]
            .as_array()
            .unwrap()
            .len()
    };
    let plain = s.create_webhook(&rx.url("/a"), json!({}));
    assert_eq!(webhook(&s, &plain)["ordering"], "parallel", "the default");
    for bad in [json!("lifo"), json!("FIFO"), json!(1), json!(null)] {
        let (st, v) = s.call(
            "POST",
            "/webhooks",
            Some(json!({"webhook": {"url": rx.url("/b"), "ordering": bad}})),
        );
        if bad.is_null() {
            // `null` is the same as leaving it out on create.
            assert_eq!(st, 201, "{v}");
            assert_eq!(v["webhook"]["ordering"], "parallel");
            s.call(
                "DELETE",
                &format!("/webhooks/{}", v["webhook"]["id"].as_str().unwrap()),
                None,
            );
            continue;
        }
        assert_eq!(
            (st, v["error"]["field"].clone()),
            (400, json!("webhook.ordering")),
            "{bad}: {v}"
        );
    }
    assert_eq!(count(&s), 1, "nothing stored");

    let fifo = s.create_webhook(&rx.url("/c"), json!({"ordering": "fifo"}));
    let before = webhook(&s, &fifo);
    assert_eq!(before["ordering"], "fifo");
    for bad in [json!("sideways"), json!(null), json!(true)] {
        let (st, v) = s.call(
            "PATCH",
            &format!("/webhooks/{fifo}"),
            Some(json!({"webhook": {"ordering": bad, "rate_limit": 5}})),
        );
        assert_eq!(
            (st, v["error"]["field"].clone()),
            (400, json!("webhook.ordering")),
            "{bad}: {v}"
        );
    }
    assert_eq!(webhook(&s, &fifo), before, "a bad PATCH changes nothing");
    let (st, v) = s.call(
        "PATCH",
        &format!("/webhooks/{plain}"),
        Some(json!({"webhook": {"ordering": "fifo"}})),
    );
    assert_eq!((st, v["webhook"]["ordering"].clone()), (200, json!("fifo")));
    s.restart();
    assert_eq!(
        webhook(&s, &plain)["ordering"],
        "fifo",
        "kept across a restart"
    );
    assert_eq!(webhook(&s, &fifo)["ordering"], "fifo");
}
