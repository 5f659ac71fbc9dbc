//! Delivery that never gives up and never loses: disabling, Retry-After, delivery records, replay.
#![allow(clippy::unwrap_used)]

use buildr_e2e::receiver::{Reply, RetryAfter};
use buildr_e2e::server::run_binary;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::time::Duration;

fn publish(s: &Server, id: i64) -> Value {
    s.publish("contact.create", json!(id))
}

fn webhook(s: &Server, id: &str) -> Value {
    s.call("GET", &format!("/webhooks/{id}"), None).1["webhook"].clone()
}

fn deliveries(s: &Server, id: &str, query: &str) -> Vec<Value> {
    let (st, v) = s.call("GET", &format!("/webhooks/{id}/deliveries{query}"), None);
    assert_eq!(st, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

fn ids_at(rx: &Receiver, path: &str) -> Vec<String> {
    rx.at(path)
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

#[test]
fn gone_disables_at_once_and_reenabling_resumes_the_backlog() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/gone"), json!({}));
    rx.answer_path("/gone", Reply::status(410));
    let a = publish(&s, 1);
    assert!(wait_until(Duration::from_secs(10), || webhook(&s, &id)
        ["disabled"]
        == true));
    let w = webhook(&s, &id);
    assert_eq!(w["disabled_reason"], "gone");
    assert_eq!(rx.count("/gone"), 1, "no attempt after 410");
    // Published while disabled: not queued for it.
    let b = publish(&s, 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count("/gone"), 1);

    rx.answer_path("/gone", Reply::status(200));
    let (st, v) = s.call(
        "PATCH",
        &format!("/webhooks/{id}"),
        Some(json!({"webhook": {"disabled": false}})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["webhook"]["disabled_reason"], Value::Null);
    assert!(
        wait_until(Duration::from_secs(10), || rx.count("/gone") >= 2),
        "the backlog resumes"
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = ids_at(&rx, "/gone");
    assert_eq!(got, vec![a["id"].as_str().unwrap().to_owned(); 2]);
    assert!(!got.contains(&b["id"].as_str().unwrap().to_owned()));
    let d = deliveries(&s, &id, "");
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0]["status"].clone(), d[0]["attempts"].clone()),
        (json!("succeeded"), json!(2))
    );
}

#[test]
fn a_webhook_failing_for_disable_after_is_disabled() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__DISABLE_AFTER", "1s")
        .env(
            "BUILDR_DELIVERY__RETRY_SCHEDULE",
            "200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms,200ms",
        )
        .start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/down"), json!({}));
    rx.answer_path("/down", Reply::status(500));
    publish(&s, 1);
    assert!(wait_until(Duration::from_secs(15), || webhook(&s, &id)
        ["disabled"]
        == true));
    assert_eq!(webhook(&s, &id)["disabled_reason"], "failing");
    let n = rx.count("/down");
    assert!(
        (5..=8).contains(&n),
        "about 1s of 200ms retries before disabling, got {n}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(rx.count("/down"), n, "nothing is sent while disabled");
}

#[test]
fn retry_after_is_waited_for() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__RETRY_SCHEDULE", "50ms,2s")
        .start();
    let rx = Receiver::start();
    s.create_webhook(&rx.url("/busy"), json!({}));
    rx.script(
        json!(1),
        vec![Reply {
            status: 429,
            retry_after: Some(RetryAfter::Seconds(1)),
            delay: None,
        }],
    );
    publish(&s, 1);
    assert!(wait_until(Duration::from_secs(10), || rx.count("/busy") >= 2));
    let got = rx.at("/busy");
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "waited {gap:?}, Retry-After said 1 s"
    );
    assert_eq!(got[1].status, 200);
}

#[test]
fn retry_after_as_an_http_date_is_waited_for_and_a_bad_one_is_ignored() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__RETRY_SCHEDULE", "50ms,50ms,30s")
        .start();
    let rx = Receiver::start();
    s.create_webhook(&rx.url("/dated"), json!({}));
    let answer = |status, ra| Reply {
        status,
        retry_after: Some(ra),
        delay: None,
    };
    // A date 2 s ahead (HTTP dates have whole seconds: the wait is between 1 and 2 s).
    rx.script(
        json!(1),
        vec![answer(503, RetryAfter::DateIn(Duration::from_secs(2)))],
    );
    // Unparsable, and a date far beyond the schedule's longest step: the first is ignored (the 50 ms
    // step applies), the second is capped at 30 s, so it is not waited for within this test.
    rx.script(json!(2), vec![answer(429, RetryAfter::Text("soon"))]);
    publish(&s, 1);
    publish(&s, 2);
    assert!(wait_until(Duration::from_secs(10), || {
        let ids = |id| rx.all().iter().filter(|r| r.json()["id"] == id).count();
        ids(1) >= 2 && ids(2) >= 2
    }));
    let gap = |id: i64| {
        let got: Vec<_> = rx
            .all()
            .into_iter()
            .filter(|r| r.json()["id"] == id)
            .collect();
        got[1].at.duration_since(got[0].at)
    };
    assert!(
        gap(1) >= Duration::from_millis(900),
        "waited {:?}, Retry-After named a date ~2 s ahead",
        gap(1)
    );
    assert!(
        gap(2) < Duration::from_millis(900),
        "an unparsable Retry-After is ignored: waited {:?}",
        gap(2)
    );
}

#[test]
fn deliveries_and_attempts_are_recorded_and_survive_a_crash() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/d"), json!({}));
    rx.script(json!(1), vec![Reply::status(500), Reply::status(200)]);
    rx.script(json!(2), vec![Reply::status(503); 4]);
    let ok = publish(&s, 1);
    let failed = publish(&s, 2);
    let settled = || {
        let d = deliveries(&s, &id, "");
        d.len() == 2
            && d.iter()
                .all(|d| d["status"] == "succeeded" || d["status"] == "failed")
    };
    assert!(wait_until(Duration::from_secs(15), settled));
    let check = |s: &Server| {
        let d = deliveries(s, &id, "");
        assert_eq!(d[0]["event_id"], failed["id"], "newest first");
        assert_eq!(d[0]["status"], "failed");
        assert_eq!(d[0]["attempts"], 4, "1 + the schedule's 3 retries");
        assert_eq!(d[0]["response_status"], 503);
        assert_eq!(d[1]["status"], "succeeded");
        assert_eq!(d[1]["attempts"], 2);
        assert_eq!(d[1]["type"], "contact.create");
        let f = deliveries(s, &id, "?status=failed");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["event_id"], failed["id"]);
        let (st, v) = s.call(
            "GET",
            &format!(
                "/webhooks/{id}/deliveries/{}/attempts",
                ok["id"].as_str().unwrap()
            ),
            None,
        );
        assert_eq!(st, 200);
        let a = v["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0]["attempt"].clone(), a[0]["response_status"].clone()),
            (json!(1), json!(500))
        );
        assert_eq!(
            (a[1]["attempt"].clone(), a[1]["response_status"].clone()),
            (json!(2), json!(200))
        );
        assert_eq!(a[1]["response_body"], "received");
        assert!(a[1]["duration_ms"].is_u64());
        assert!(a[0]["error"].as_str().unwrap().contains("500"));
        // Pages walk everything once.
        let p1 = s
            .call("GET", &format!("/webhooks/{id}/deliveries?limit=1"), None)
            .1;
        let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
        let p2 = s
            .call(
                "GET",
                &format!("/webhooks/{id}/deliveries?limit=1&cursor={cursor}"),
                None,
            )
            .1;
        assert_eq!(p2["deliveries"][0]["event_id"], ok["id"]);
        assert_eq!(p2["next_cursor"], Value::Null);
    };
    check(&s);
    s.kill9();
    s.start_again();
    check(&s);
    let (st, v) = s.call(
        "GET",
        &format!("/webhooks/{id}/deliveries?status=lost"),
        None,
    );
    assert_eq!((st, v["error"]["field"].clone()), (400, json!("status")));
    let (st, _) = s.call(
        "GET",
        &format!("/webhooks/{id}/deliveries/evt_nope/attempts"),
        None,
    );
    assert_eq!(st, 404);
}

#[test]
fn replay_resends_with_original_ids_and_only_failed_resends_only_failures() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/r"), json!({}));
    let other = s.create_webhook(
        &rx.url("/other"),
        json!({"filter_types": ["company.create"]}),
    );
    rx.script(json!(1), vec![Reply::status(500); 4]);
    let before = "2000-01-01T00:00:00Z";
    let e1 = publish(&s, 1);
    let e2 = publish(&s, 2);
    assert!(wait_until(Duration::from_secs(15), || deliveries(
        &s,
        &id,
        "?status=failed"
    )
    .len()
        == 1
        && deliveries(&s, &id, "?status=succeeded").len() == 1));
    assert_eq!(rx.count("/r"), 5);

    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/replay"),
        Some(json!({"since": before, "only_failed": true})),
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["replay"]["events"], 1);
    let rp = v["replay"]["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(10), || rx.count("/r") >= 6));
    assert_eq!(
        rx.at("/r")[5].header("webhook-id"),
        e1["id"].as_str().unwrap(),
        "original id"
    );
    assert!(wait_until(Duration::from_secs(10), || {
        let r = s
            .call("GET", &format!("/webhooks/{id}/replays/{rp}"), None)
            .1;
        r["replay"]["done"] == 1 && r["replay"]["events"] == 1
    }));

    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/replay"),
        Some(json!({"from_seq": 1})),
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(
        v["replay"]["events"], 2,
        "both events of this webhook's filter, none of the other's"
    );
    assert!(wait_until(Duration::from_secs(10), || rx.count("/r") >= 8));
    std::thread::sleep(Duration::from_millis(300));
    let tail: Vec<String> = ids_at(&rx, "/r")[6..].to_vec();
    assert_eq!(tail.len(), 2);
    assert!(
        tail.contains(&e1["id"].as_str().unwrap().to_owned())
            && tail.contains(&e2["id"].as_str().unwrap().to_owned())
    );
    assert_eq!(rx.count("/other"), 0);

    // A replay of another webhook's range by seq covers none of ours; bad requests are refused.
    let (_, v) = s.call(
        "POST",
        &format!("/webhooks/{other}/replay"),
        Some(json!({"from_seq": 1})),
    );
    assert_eq!(v["replay"]["events"], 0);
    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"since": before, "from_seq": 1}), "from_seq"),
        (json!({"from_seq": 5, "to_seq": 5}), "to_seq"),
        (json!({"from_seq": 1, "only_failed": "yes"}), "only_failed"),
    ] {
        let (st, v) = s.call("POST", &format!("/webhooks/{id}/replay"), Some(body));
        assert_eq!(
            (st, v["error"]["field"].clone()),
            (400, json!(field)),
            "{v}"
        );
    }
    let (st, _) = s.call("GET", &format!("/webhooks/{id}/replays/rp_nope"), None);
    assert_eq!(st, 404);
}

#[test]
fn offline_replay_is_carried_out_by_the_next_serve() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/off"), json!({}));
    let e = publish(&s, 9);
    assert!(wait_until(Duration::from_secs(10), || rx.count("/off") == 1));
    s.stop();
    let env = s.command_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = buildr_e2e::repo_root().join("config/test.toml");
    let cfg = config.to_str().unwrap();
    let (code, out) = run_binary(
        &[
            "replay",
            "--config",
            cfg,
            "--webhook",
            &id,
            "--since",
            "2000-01-01T00:00:00Z",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 events queued"), "{out}");
    let (code, out) = run_binary(
        &[
            "replay",
            "--config",
            cfg,
            "--webhook",
            "wh_nope",
            "--from-seq",
            "1",
        ],
        &env,
    );
    assert_ne!(code, 0, "{out}");
    assert_eq!(
        rx.count("/off"),
        1,
        "nothing is sent while the server is stopped"
    );
    s.start_again();
    assert!(wait_until(Duration::from_secs(10), || rx.count("/off") == 2));
    assert_eq!(ids_at(&rx, "/off")[1], e["id"].as_str().unwrap());
}

#[test]
fn a_test_event_reaches_only_its_webhook_and_is_not_listed() {
    let s = Server::start();
    let rx = Receiver::start();
    let id = s.create_webhook(&rx.url("/t"), json!({"filter_types": ["contact.create"]}));
    s.create_webhook(&rx.url("/bystander"), json!({}));
    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/test"),
        Some(json!({"type": "company.update"})),
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["event"]["type"], "company.update");
    assert!(wait_until(Duration::from_secs(10), || rx.count("/t") == 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.count("/bystander"), 0, "delivered to this webhook only");
    let got = &rx.at("/t")[0];
    assert_eq!(got.header("webhook-id"), v["event"]["id"].as_str().unwrap());
    assert_eq!(got.json()["type"], "company.update");
    assert_eq!(
        s.call("GET", "/events", None).1["events"],
        json!([]),
        "test events are not platform events"
    );
    let (st, v) = s.call(
        "POST",
        &format!("/webhooks/{id}/test"),
        Some(json!({"type": "deal.create"})),
    );
    assert_eq!((st, v["error"]["field"].clone()), (400, json!("type")));
    let (st, _) = s.call(
        "POST",
        "/webhooks/wh_nope/test",
        Some(json!({"type": "contact.create"})),
    );
    assert_eq!(st, 404);
}

#[test]
fn metrics_count_what_happened_and_requests_get_an_id() {
    let s = Server::start();
    let rx = Receiver::start();
    s.create_webhook(&rx.url("/m"), json!({}));
    rx.script(json!(1), vec![Reply::status(500)]);
    publish(&s, 1);
    publish(&s, 2);
    assert!(wait_until(Duration::from_secs(10), || rx.count("/m") == 3));
    let text = || s.raw("GET", "/metrics", None, &[]).1;
    let lines = [
        "buildr_events_published_total 2",
        "buildr_delivery_attempts_total{outcome=\"succeeded\"} 2",
        "buildr_delivery_attempts_total{outcome=\"retrying\"} 1",
        "buildr_retries_scheduled_total 1",
        "buildr_backlog_deliveries 0",
        // Every change handed to the delivery-index writer is written (and counted off) in the end.
        "buildr_delivery_index_queued_changes 0",
        "buildr_webhooks{state=\"enabled\"} 1",
        "buildr_log_flush_duration_seconds_count",
        "buildr_delivery_attempt_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ];
    // Counters move when an attempt ends, the backlog gauge once its outcome is durable: wait for all.
    let all_there = || {
        let t = text();
        lines.iter().all(|l| t.contains(l))
    };
    assert!(wait_until(Duration::from_secs(10), all_there), "{}", text());
    let t = text();
    assert!(!t.contains("wh_"), "no per-webhook labels");
    let r = ureq::get(&format!("{}/healthz", s.base)).call().unwrap();
    assert_eq!(
        r.header("x-request-id").map(str::len),
        Some(26),
        "a generated request id"
    );
    let r = ureq::get(&format!("{}/healthz", s.base))
        .set("X-Request-Id", "trace-abc-123")
        .call()
        .unwrap();
    assert_eq!(
        r.header("x-request-id"),
        Some("trace-abc-123"),
        "the caller's id is kept"
    );
}

#[test]
fn a_paused_service_stores_everything_and_delivers_after_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rx = Receiver::start();
    let (id, e) = {
        let s = Server::builder()
            .data_dir(&data)
            .env("BUILDR_DELIVERY__PAUSED", "true")
            .start();
        let id = s.create_webhook(&rx.url("/p"), json!({}));
        let e = publish(&s, 5);
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(rx.count("/p"), 0, "paused: nothing is sent");
        assert_eq!(deliveries(&s, &id, "?status=pending").len(), 1);
        (id, e)
    };
    let s = Server::builder().data_dir(&data).start();
    assert!(wait_until(Duration::from_secs(10), || rx.count("/p") == 1));
    assert_eq!(
        rx.at("/p")[0].header("webhook-id"),
        e["id"].as_str().unwrap()
    );
    assert!(wait_until(Duration::from_secs(5), || deliveries(
        &s,
        &id,
        "?status=succeeded"
    )
    .len()
        == 1));
}
