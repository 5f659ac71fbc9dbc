//! Crash-proof recovery: torn and corrupt records, checkpoints, `log verify`, and a kill -9 soak.
#![allow(clippy::unwrap_used)]

use buildr_core::{
    AccountId, EventData, EventId, EventRecord, EventType, ObjectId, Record, Timestamp,
};
use buildr_e2e::server::run_binary;
use buildr_e2e::{wait_until, Receiver, Server};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn publish(s: &Server, id: i64) -> Value {
    s.publish("contact.create", json!(id))
}

fn verify(s: &Server) -> (i32, String) {
    let env = s.command_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cfg = buildr_e2e::repo_root().join("config/test.toml");
    run_binary(&["log", "verify", "--config", cfg.to_str().unwrap()], &env)
}

/// The line the server prints once its start-up replay is done.
fn ready_line(s: &Server) -> String {
    let found = || {
        s.stdout_lines
            .lock()
            .iter()
            .find(|l| l.starts_with("ready:"))
            .cloned()
    };
    assert!(
        wait_until(Duration::from_secs(10), || found().is_some()),
        "no ready line"
    );
    found().unwrap()
}

fn a_record() -> Record {
    Record::EventPublished(EventRecord {
        id: EventId::generate(),
        account: AccountId::default_account(),
        event_type: EventType::ContactCreate,
        data: EventData {
            id: ObjectId::Int(1),
            url: "https://x.example/1".into(),
        },
        created_at: Timestamp::now(),
        only_webhook: None,
    })
}

#[test]
fn a_torn_last_record_is_cut_and_every_earlier_event_kept() {
    let mut s = Server::start();
    let before: Vec<String> = (0..5)
        .map(|i| publish(&s, i)["id"].as_str().unwrap().to_owned())
        .collect();
    s.kill9();
    {
        // What a write cut short by a crash leaves: the last record's bytes end early.
        let (log, _) = buildr_log::EventLog::open(&s.data_dir).unwrap();
        let bytes = buildr_log::encode(&a_record());
        log.append_raw_for_tests(&bytes[..bytes.len() / 2]).unwrap();
    }
    s.start_again();
    // The line is printed once start-up is done, which may be just after /readyz answers 200.
    assert!(
        wait_until(Duration::from_secs(10), || s
            .stdout_lines
            .lock()
            .iter()
            .any(|l| l.starts_with("recovered: cut torn records"))),
        "the server says so"
    );
    assert_eq!(s.event_ids(), before);
    let after = publish(&s, 99);
    assert_eq!(s.event_ids().last().unwrap(), after["id"].as_str().unwrap());
}

#[test]
fn corruption_in_the_middle_stops_start_up_with_a_clear_message() {
    let mut s = Server::start();
    publish(&s, 1);
    s.kill9();
    {
        let (log, _) = buildr_log::EventLog::open(&s.data_dir).unwrap();
        let mut bad = buildr_log::encode(&a_record());
        let n = bad.len();
        bad[n - 2] ^= 0x5a;
        log.append_raw_for_tests(&bad).unwrap();
        log.append(&[a_record()]).unwrap();
    }
    let env = s.command_env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("BUILDR_ADMIN_TOKEN", "t"));
    let cfg = buildr_e2e::repo_root().join("config/test.toml");
    let (code, out) = run_binary(&["serve", "--config", cfg.to_str().unwrap()], &env);
    assert_ne!(code, 0, "start-up must stop: {out}");
    assert!(out.contains("corrupt"), "{out}");
    let (code, out) = verify(&s);
    assert_ne!(code, 0);
    assert!(out.contains("corrupt"), "{out}");
}

#[test]
fn a_clean_stop_checkpoints_so_the_next_start_replays_nothing() {
    let mut s = Server::start();
    let rx = Receiver::start();
    s.create_webhook(&rx.url("/c"), json!({}));
    for i in 0..50 {
        publish(&s, i);
    }
    assert!(wait_until(Duration::from_secs(10), || rx.count("/c") == 50));
    let webhooks = s.call("GET", "/webhooks", None).1;
    s.stop();
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("matches the full replay"), "{out}");
    s.start_again();
    let ready = ready_line(&s);
    assert!(
        ready.contains("replayed 0 log records (checkpoint at seq"),
        "{ready}"
    );
    assert_eq!(s.call("GET", "/webhooks", None).1, webhooks);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rx.count("/c"),
        50,
        "nothing delivered twice after a clean stop"
    );
    // After a crash, the tail past the checkpoint is replayed.
    publish(&s, 1000);
    s.kill9();
    s.start_again();
    let ready = ready_line(&s);
    assert!(!ready.contains("replayed 0 log records"), "{ready}");
    assert!(wait_until(Duration::from_secs(10), || rx.count("/c") >= 51));
}

/// The delivery index is derived state in its own database (`<data>/delivery-index`): when it is lost
/// (or behind the checkpoint, as after an upgrade from a version that kept it elsewhere), start-up
/// ignores the checkpoint, replays the whole log and rebuilds it: the same deliveries are listed, with
/// their attempts, and nothing is sent again.
#[test]
fn a_lost_delivery_index_is_rebuilt_from_the_log() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/i"), json!({}));
    for i in 0..20 {
        publish(&s, i);
    }
    assert!(wait_until(Duration::from_secs(10), || rx.count("/i") == 20));
    let listed = |s: &Server| {
        let path = format!("/webhooks/{id}/deliveries?limit=100");
        s.call("GET", &path, None).1["deliveries"].clone()
    };
    assert!(wait_until(Duration::from_secs(10), || {
        listed(&s)
            .as_array()
            .is_some_and(|d| d.len() == 20 && d.iter().all(|r| r["status"] == "succeeded"))
    }));
    let before = listed(&s);
    s.stop();
    let index_dir = s.data_dir.join("delivery-index");
    assert!(index_dir.is_dir(), "the index has its own database");
    std::fs::remove_dir_all(&index_dir).unwrap();

    s.start_again();
    let ready = ready_line(&s);
    assert!(
        !ready.contains("replayed 0 log records"),
        "the whole log is replayed: {ready}"
    );
    assert_eq!(listed(&s), before, "the same deliveries, rebuilt");
    let first = before[0]["event_id"].as_str().unwrap().to_owned();
    let (st, attempts) = s.call(
        "GET",
        &format!("/webhooks/{id}/deliveries/{first}/attempts"),
        None,
    );
    assert_eq!(st, 200, "{attempts}");
    assert_eq!(attempts["attempts"].as_array().map(Vec::len), Some(1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count("/i"), 20, "nothing delivered twice");
}

/// The soak of issue 3: bounded load, a receiver failing 30 % of the time, SIGKILL at random moments
/// (6 times, some in the middle of a publish), restarts on the same data dir; then every acknowledged
/// event reached every matching webhook, nothing reached a webhook that did not match, and `log verify`
/// passes.
#[test]
fn kill_9_soak_loses_nothing() {
    const EVENTS: usize = 2000;
    const BATCH: usize = 20;
    let mut s = Server::builder()
        // Enough retries that a 30 % failure rate never exhausts them (0.3^16 per delivery).
        .env(
            "BUILDR_DELIVERY__RETRY_SCHEDULE",
            &vec!["50ms"; 15].join(","),
        )
        .start();
    let rx = Receiver::start();
    let filters: [Option<&[&str]>; 5] = [
        None,
        Some(&["contact.create"]),
        Some(&["contact.update", "company.create"]),
        Some(&["opportunity.create", "opportunity.update"]),
        Some(&["company.update"]),
    ];
    let mut hooks = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let path = format!("/w{i}");
        rx.fail_randomly(&path, 0.3);
        let (st, v) = s.call(
            "POST",
            "/webhooks",
            Some(json!({"webhook": {"url": rx.url(&path), "filter_types": f, "rate_limit": 1000000}})),
        );
        assert_eq!(st, 201, "{v}");
        hooks.push((
            path,
            f.map(|f| f.iter().map(|t| t.to_string()).collect::<HashSet<String>>()),
        ));
    }
    let types = buildr_e2e::EVENT_TYPES;
    let mut rng = rand::thread_rng();
    let mut acked: HashMap<String, String> = HashMap::new();
    let kill_after: HashSet<usize> = (0..6).map(|k| 10 + k * 16 + rng.gen_range(0..6)).collect();
    let mut kills = 0;
    for b in 0..EVENTS / BATCH {
        let events: Vec<Value> = (0..BATCH)
            .map(|i| {
                let n = b * BATCH + i;
                json!({"type": types[n % 6], "data": {"id": n, "url": format!("https://x.example/{n}")}})
            })
            .collect();
        let mid_publish = kill_after.contains(&b) && b % 2 == 0;
        let (st, v) = if mid_publish {
            // Kill while this batch is in flight: it may or may not be acknowledged.
            let base = s.base.clone();
            let token = s.token();
            let body = json!({"events": events}).to_string();
            let sender = std::thread::spawn(move || {
                let r = ureq::post(&format!("{base}/api/2023-01/events/batch"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .set("Content-Type", "application/json")
                    .send_string(&body);
                match r {
                    Ok(r) => (r.status(), r.into_json::<Value>().unwrap_or(Value::Null)),
                    Err(_) => (0, Value::Null),
                }
            });
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..15)));
            s.kill9();
            kills += 1;
            let out = sender.join().unwrap();
            s.start_again();
            out
        } else {
            s.call("POST", "/events/batch", Some(json!({ "events": events })))
        };
        if st == 202 {
            for e in v["events"].as_array().unwrap() {
                acked.insert(
                    e["id"].as_str().unwrap().to_owned(),
                    e["type"].as_str().unwrap().to_owned(),
                );
            }
        }
        if kill_after.contains(&b) && !mid_publish {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
            s.kill9();
            kills += 1;
            s.start_again();
        }
    }
    assert!(kills >= 5, "killed {kills} times");
    // Only a batch in flight at a kill may go unacknowledged.
    assert!(
        acked.len() >= EVENTS - kills * BATCH,
        "acknowledged {} of {EVENTS}",
        acked.len()
    );

    let wanted = |filter: &Option<HashSet<String>>| -> HashSet<String> {
        acked
            .iter()
            .filter(|(_, t)| filter.as_ref().is_none_or(|f| f.contains(*t)))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let delivered = |path: &str| -> HashSet<String> {
        rx.at(path)
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.header("webhook-id").to_owned())
            .collect()
    };
    let all_in = wait_until(Duration::from_secs(120), || {
        hooks
            .iter()
            .all(|(p, f)| wanted(f).is_subset(&delivered(p)))
    });
    for (path, filter) in &hooks {
        let missing = wanted(filter).difference(&delivered(path)).count();
        assert!(all_in, "{missing} acknowledged events never reached {path}");
        let got: HashSet<String> = rx
            .at(path)
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        if let Some(f) = filter {
            assert!(
                got.is_subset(f),
                "{path} got types it did not subscribe to: {got:?}"
            );
        }
    }
    s.kill9();
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn retention_removes_finished_old_events_and_keeps_the_rest() {
    let mut s = Server::builder()
        .env("BUILDR_RETENTION__EVENTS", "1s")
        .env("BUILDR_RETENTION__INTERVAL", "200ms")
        .env("BUILDR_DELIVERY__RETRY_SCHEDULE", "1h")
        .start();
    let rx = Receiver::start();
    let hook = |path: &str, t: &str| {
        let (st, v) = s.call(
            "POST",
            "/webhooks",
            Some(
                json!({"webhook": {"url": rx.url(path), "filter_types": [t], "rate_limit": 60000}}),
            ),
        );
        assert_eq!(st, 201, "{v}");
        v["webhook"]["id"].as_str().unwrap().to_owned()
    };
    let ok = hook("/ok", "contact.create");
    let down = hook("/down", "company.create");
    rx.answer_path("/down", buildr_e2e::receiver::Reply::status(500));
    let delivered: Vec<String> = (0..5)
        .map(|i| publish(&s, i)["id"].as_str().unwrap().to_owned())
        .collect();
    let (_, v) = s.call(
        "POST",
        "/events",
        Some(json!({"event": {"type": "company.create", "data": {"id": 77, "url": "https://x.example/77"}}})),
    );
    let stuck = v["event"]["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(10), || rx.count("/ok") == 5
        && rx.count("/down") == 1));

    // Past the retention period the delivered events go; the undelivered one stays.
    assert!(
        wait_until(Duration::from_secs(15), || s.event_ids()
            == vec![stuck.clone()]),
        "events now: {:?}",
        s.event_ids()
    );
    let rows = |id: &str| {
        s.call("GET", &format!("/webhooks/{id}/deliveries"), None).1["deliveries"]
            .as_array()
            .unwrap()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(5), || rows(&ok) == 0),
        "their delivery records go too"
    );
    assert_eq!(rows(&down), 1, "the undelivered event's record stays");
    let (_, v) = s.call(
        "POST",
        &format!("/webhooks/{ok}/replay"),
        Some(json!({"from_seq": 1})),
    );
    assert_eq!(
        v["replay"]["events"], 0,
        "nothing of the removed events is left to replay"
    );

    // Seq order is kept: a new event comes after everything ever published.
    let max_old = s.call("GET", "/events", None).1["events"][0]["seq"]
        .as_u64()
        .unwrap();
    let fresh = publish(&s, 100);
    assert!(fresh["seq"].as_u64().unwrap() > max_old);
    assert!(!delivered.contains(&fresh["id"].as_str().unwrap().to_owned()));
    s.kill9();
    s.start_again();
    let now = s.event_ids();
    assert!(
        now.contains(&stuck) && now.contains(&fresh["id"].as_str().unwrap().to_owned()),
        "{now:?}"
    );
    s.stop();
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn retention_removes_records_nothing_refers_to_any_more() {
    let mut s = Server::builder()
        .env("BUILDR_RETENTION__EVENTS", "1s")
        .env("BUILDR_RETENTION__INTERVAL", "200ms")
        .start();
    let rx = Receiver::start();
    let kept = s.create_webhook(&rx.url("/kept"), json!({}));
    let gone = s.create_webhook(&rx.url("/gone"), json!({}));
    let (st, _) = s.call(
        "PATCH",
        &format!("/webhooks/{gone}"),
        Some(json!({"webhook": {"description": "soon deleted"}})),
    );
    assert_eq!(st, 200);
    // Two keys of the default account; one is revoked.
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (st, v) = s.call("POST", "/accounts/acc_default/keys", None);
        assert_eq!(st, 201, "{v}");
        keys.push((
            v["api_key"].as_str().unwrap().to_owned(),
            v["key_prefix"].as_str().unwrap().to_owned(),
        ));
    }
    let (live_key, live_prefix) = keys[0].clone();
    let (revoked_key, revoked_prefix) = keys[1].clone();
    let revoke = format!("/accounts/acc_default/keys/{revoked_prefix}");
    assert_eq!(s.call("DELETE", &revoke, None).0, 204);
    publish(&s, 1);
    assert!(wait_until(Duration::from_secs(10), || rx.count("/kept")
        == 1
        && rx.count("/gone") == 1));
    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{kept}/replay"),
        Some(json!({"from_seq": 1})),
    );
    assert_eq!(st, 202, "{v}");
    let rp = v["replay"]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.call("DELETE", &format!("/webhooks/{gone}"), None).0, 204);
    let status = |s: &Server| s.call("GET", &format!("/webhooks/{kept}/replays/{rp}"), None);
    assert!(wait_until(Duration::from_secs(10), || status(&s).1
        ["replay"]["done"]
        == 1));
    // Finished and older than the retention period: forgotten, then its request is removed.
    assert!(
        wait_until(Duration::from_secs(20), || status(&s).0 == 404),
        "a finished replay older than the retention period is forgotten"
    );
    std::thread::sleep(Duration::from_millis(2_500));
    // The last record is never removed: one more event, then a retention pass or two.
    publish(&s, 2);
    std::thread::sleep(Duration::from_millis(2_500));
    s.stop();
    let (log, _) = buildr_log::EventLog::open(&s.data_dir).unwrap();
    let mut left = Vec::new();
    for item in log.tail(1) {
        let (_, record) = item.unwrap();
        left.push(record);
    }
    drop(log);
    let names_gone = |r: &Record| match r {
        Record::WebhookCreated(w) => w.id.as_str() == gone,
        Record::WebhookUpdated { id, .. } | Record::WebhookDeleted { id, .. } => {
            id.as_str() == gone
        }
        _ => false,
    };
    assert!(!left.iter().any(names_gone), "{left:#?}");
    let key_records = |prefix: &str| {
        left.iter()
            .filter(|r| match r {
                Record::ApiKeyCreated { prefix: p, .. }
                | Record::ApiKeyRevoked { prefix: p, .. } => p == prefix,
                _ => false,
            })
            .count()
    };
    assert_eq!(
        key_records(&revoked_prefix),
        0,
        "a revoked key's records go"
    );
    assert_eq!(key_records(&live_prefix), 1, "a live key's creation stays");
    assert!(
        !left.iter().any(|r| matches!(
            r,
            Record::ReplayRequested { .. } | Record::ReplaysExpired { .. }
        )),
        "{left:#?}"
    );
    assert!(
        left.iter()
            .any(|r| matches!(r, Record::WebhookCreated(w) if w.id.as_str() == kept)),
        "the live webhook's records stay"
    );
    let (code, out) = verify(&s);
    assert_eq!(code, 0, "{out}");
    s.start_again();
    assert_eq!(s.call("GET", &format!("/webhooks/{gone}"), None).0, 404);
    assert_eq!(s.call("GET", &format!("/webhooks/{kept}"), None).0, 200);
    let as_key = |key: &str| s.call_with(key, &[], "GET", "/webhooks", None).0;
    assert_eq!(as_key(&live_key), 200, "the live key still works");
    assert_eq!(
        as_key(&revoked_key),
        401,
        "the revoked key is still refused"
    );
}
