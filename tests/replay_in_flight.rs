//! A replay never swallows an event whose delivery is in flight: the event is sent once more after the
//! attempt in flight ends (once, however many replays name it meanwhile), and the replay's `done` reaches
//! its `events` — live, and after a kill -9 in the middle.
#![allow(clippy::unwrap_used)]

use buildr_e2e::receiver::Reply;
use buildr_e2e::server::run_binary;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::time::Duration;

/// The receiver holds the first request for this long before answering 200.
const HOLD: Duration = Duration::from_millis(1500);

fn held_then_ok() -> Vec<Reply> {
    vec![Reply {
        status: 200,
        retry_after: None,
        delay: Some(HOLD),
    }]
}

fn replay(s: &Server, webhook: &str, seq: &Value) -> (u16, Value) {
    s.call(
        "POST",
        &format!("/webhooks/{webhook}/replay"),
        Some(json!({"from_seq": seq, "to_seq": seq.as_u64().unwrap() + 1})),
    )
}

fn replay_state(s: &Server, webhook: &str, rp: &str) -> Value {
    s.call("GET", &format!("/webhooks/{webhook}/replays/{rp}"), None)
        .1["replay"]
        .clone()
}

fn deliveries(s: &Server, id: &str) -> Vec<Value> {
    let (st, v) = s.call("GET", &format!("/webhooks/{id}/deliveries"), None);
    assert_eq!(st, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

fn verify(s: &Server) -> (i32, String) {
    let env = s.command_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cfg = buildr_e2e::repo_root().join("config/test.toml");
    run_binary(&["log", "verify", "--config", cfg.to_str().unwrap()], &env)
}

#[test]
fn an_event_replayed_while_in_flight_is_sent_again_once_after_the_attempt() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/slow"), json!({}));
    rx.script(json!(1), held_then_ok());
    let e = s.publish("contact.create", json!(1));
    assert!(
        wait_until(Duration::from_secs(10), || rx.count("/slow") == 1),
        "the receiver holds the first request"
    );

    // A replay of an unknown webhook meanwhile is refused and changes nothing.
    let (st, v) = replay(&s, "wh_01JDNOTAREALWEBHOOK0000000", &e["seq"]);
    assert_eq!(
        (st, v["error"]["code"].clone()),
        (404, json!("not_found")),
        "{v}"
    );

    // Three replays name the event while its first attempt is still held by the receiver.
    let mut replays = Vec::new();
    for _ in 0..3 {
        let (st, v) = replay(&s, &id, &e["seq"]);
        assert_eq!((st, v["replay"]["events"].clone()), (202, json!(1)), "{v}");
        replays.push(v["replay"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        rx.count("/slow"),
        1,
        "nothing more while the attempt is in flight"
    );

    assert!(
        wait_until(Duration::from_secs(15), || replays
            .iter()
            .all(|rp| replay_state(&s, &id, rp)["done"] == 1)),
        "every replay finishes: {:?}",
        replays
            .iter()
            .map(|rp| replay_state(&s, &id, rp))
            .collect::<Vec<_>>()
    );
    // Once more, and only once, however many replays named it; after the held attempt ended.
    std::thread::sleep(Duration::from_millis(700));
    let got = rx.at("/slow");
    assert_eq!(got.len(), 2, "sent again exactly once");
    assert!(got.iter().all(|r| r.header("webhook-id") == e["id"]));
    assert!(
        got[1].at.duration_since(got[0].at) >= HOLD,
        "the second request starts after the first attempt ended"
    );
    // (The delivery records follow the log within moments.)
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = deliveries(&s, &id);
            (d.len(), d[0]["status"].clone(), d[0]["attempts"].clone())
                == (1, json!("succeeded"), json!(2))
        }),
        "{:?}",
        deliveries(&s, &id)
    );

    // The same state after a restart, and the log's projections agree with a full replay.
    s.restart();
    assert!(replays
        .iter()
        .all(|rp| replay_state(&s, &id, rp)["done"] == 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count("/slow"), 2, "nothing sent again by a restart");
    s.stop();
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_replay_of_an_event_in_flight_survives_a_kill_9_before_the_attempt_ends() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/slow"), json!({}));
    rx.script(json!(7), held_then_ok());
    let e = s.publish("contact.update", json!(7));
    assert!(wait_until(Duration::from_secs(10), || rx.count("/slow") == 1));
    let (st, v) = replay(&s, &id, &e["seq"]);
    assert_eq!(st, 202, "{v}");
    let rp = v["replay"]["id"].as_str().unwrap().to_owned();

    // The attempt in flight dies with the process; the replay is a fact in the log.
    s.kill9();
    s.start_again();
    assert!(
        wait_until(Duration::from_secs(15), || replay_state(&s, &id, &rp)
            ["done"]
            == 1),
        "{}",
        replay_state(&s, &id, &rp)
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = rx.at("/slow");
    assert_eq!(got.len(), 2, "sent once after the restart");
    assert!(got.iter().all(|r| r.header("webhook-id") == e["id"]));
    assert!(wait_until(Duration::from_secs(5), || deliveries(&s, &id)
        [0]["status"]
        == "succeeded"));
    s.stop();
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_replay_of_an_event_waiting_for_its_retry_sends_it_at_once() {
    let mut s = Server::builder()
        .env("BUILDR_DELIVERY__RETRY_SCHEDULE", "1h,1h")
        .start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/later"), json!({}));
    rx.script(json!(3), vec![Reply::status(500)]);
    let e = s.publish("company.create", json!(3));
    assert!(wait_until(Duration::from_secs(10), || deliveries(&s, &id)
        .first()
        .is_some_and(|d| d["status"] == "retrying")));

    // Its next attempt is an hour away; the replay starts its delivery again now.
    let (st, v) = replay(&s, &id, &e["seq"]);
    assert_eq!(st, 202, "{v}");
    let rp = v["replay"]["id"].as_str().unwrap().to_owned();
    assert!(
        wait_until(Duration::from_secs(10), || replay_state(&s, &id, &rp)
            ["done"]
            == 1),
        "{}",
        replay_state(&s, &id, &rp)
    );
    assert_eq!(rx.count("/later"), 2);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = deliveries(&s, &id);
            (d[0]["status"].clone(), d[0]["attempts"].clone()) == (json!("succeeded"), json!(2))
        }),
        "{:?}",
        deliveries(&s, &id)
    );
    s.restart();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count("/later"), 2, "a restart sends nothing more");
    s.stop();
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
}
