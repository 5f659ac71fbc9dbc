//! Attempt statistics: `GET /webhooks/{id}/stats` and `GET /stats` count real attempts (some failing)
//! per bucket with their latency, bad queries are refused by name, and the statistics are the same after
//! the delivery index is rebuilt from the log.
#![allow(clippy::unwrap_used)]

use buildr_core::Timestamp;
use buildr_e2e::receiver::Reply;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::time::Duration;

fn ago(ms: i64) -> String {
    Timestamp::from_millis(Timestamp::now().as_millis() - ms).to_string()
}

fn stats(s: &Server, path: &str) -> (u16, Value) {
    s.call("GET", path, None)
}

/// (attempts, succeeded, failed) summed over the buckets.
fn totals(v: &Value) -> (u64, u64, u64) {
    let b = v["stats"]["buckets"].as_array().unwrap();
    let sum = |k: &str| b.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
    (sum("attempts"), sum("succeeded"), sum("failed"))
}

#[test]
fn stats_count_real_attempts_per_bucket_and_survive_a_rebuild() {
    let mut s = Server::start();
    let rx = Receiver::start();
    let a = s.create_webhook(&rx.url("/a"), json!({}));
    let b = s.create_webhook(&rx.url("/b"), json!({"filter_types": ["company.create"]}));
    rx.answer_path(
        "/a",
        Reply {
            status: 200,
            retry_after: None,
            delay: Some(Duration::from_millis(120)),
        },
    );
    // Objects 1 and 2 fail once each, then succeed on the retry: 12 attempts, 2 of them failed.
    rx.script(json!(1), vec![Reply::status(500)]);
    rx.script(json!(2), vec![Reply::status(503)]);
    for i in 1..=10 {
        s.publish("contact.create", json!(i));
    }
    s.publish("company.create", json!(11));
    assert!(wait_until(Duration::from_secs(20), || rx.count("/a") == 13
        && rx.count("/b") == 1));

    // Each attempt counts once its outcome is recorded (the receiver holds most for 120 ms).
    assert!(wait_until(Duration::from_secs(10), || {
        totals(&stats(&s, &format!("/webhooks/{a}/stats")).1) == (13, 11, 2)
    }));
    let (st, v) = stats(&s, &format!("/webhooks/{a}/stats"));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stats"]["bucket"], "1h");
    let buckets = v["stats"]["buckets"].as_array().unwrap().clone();
    assert_eq!(buckets.len(), 24, "the last 24 hours by default");
    assert_eq!(totals(&v), (13, 11, 2));
    let mut starts = Vec::new();
    for bk in &buckets {
        starts.push(bk["start"].as_str().unwrap().to_owned());
        if bk["attempts"] == 0 {
            assert_eq!(
                (bk["latency_p50_ms"].clone(), bk["latency_p99_ms"].clone()),
                (Value::Null, Value::Null)
            );
        } else {
            // Most attempts waited 120 ms for the receiver; the failures answered at once.
            let p50 = bk["latency_p50_ms"].as_u64().unwrap();
            let p99 = bk["latency_p99_ms"].as_u64().unwrap();
            assert!((100..2_000).contains(&p50), "{bk}");
            assert!(p99 >= p50, "{bk}");
        }
    }
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "oldest first");

    // Minute buckets since ten minutes ago: 11 of them (the current one included).
    let (st, v) = stats(
        &s,
        &format!("/webhooks/{a}/stats?bucket=1m&since={}", ago(600_000)),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stats"]["bucket"], "1m");
    let n = v["stats"]["buckets"].as_array().unwrap().len();
    assert!((11..=12).contains(&n), "{n}");
    assert_eq!(totals(&v), (13, 11, 2));

    // The account: both webhooks.
    assert!(wait_until(Duration::from_secs(10), || totals(
        &stats(&s, "/stats").1
    ) == (14, 12, 2)));
    let (st, v) = stats(&s, "/stats");
    assert_eq!(st, 200, "{v}");
    assert_eq!(totals(&v), (14, 12, 2));
    let (_, v) = stats(&s, &format!("/webhooks/{b}/stats"));
    assert_eq!(totals(&v), (1, 1, 0));

    // Another account sees none of it, and not the webhook.
    let (st, acc) = s.call(
        "POST",
        "/accounts",
        Some(json!({"account": {"name": "Other"}})),
    );
    assert_eq!(st, 201, "{acc}");
    let key = acc["api_key"].as_str().unwrap();
    let (st, v) = s.call_with(key, &[], "GET", "/stats", None);
    assert_eq!((st, totals(&v)), (200, (0, 0, 0)), "{v}");
    let (st, _) = s.call_with(key, &[], "GET", &format!("/webhooks/{a}/stats"), None);
    assert_eq!(st, 404);

    // Bad queries: 400 naming the parameter.
    let since = ago(3_600_000);
    for (query, field) in [
        (
            format!(
                "since={}",
                Timestamp::from_millis(Timestamp::now().as_millis() + 3_600_000)
            ),
            "since",
        ),
        (format!("since={}", ago(61 * 86_400_000)), "since"),
        (format!("bucket=1m&since={}", ago(2 * 86_400_000)), "since"),
        ("since=yesterday".to_owned(), "since"),
        ("bucket=5m".to_owned(), "bucket"),
        ("bucket=".to_owned(), "bucket"),
        (format!("since={since}&limit=3"), "limit"),
    ] {
        for path in [
            format!("/webhooks/{a}/stats?{query}"),
            format!("/stats?{query}"),
        ] {
            let (st, v) = stats(&s, &path);
            assert_eq!(
                (st, v["error"]["field"].clone()),
                (400, json!(field)),
                "{path}: {v}"
            );
        }
    }

    // Live = rebuilt: drop the delivery index; the next start rebuilds it, statistics included.
    let fixed = format!("/webhooks/{a}/stats?bucket=1m&since={}", ago(1_800_000));
    let (_, before) = stats(&s, &fixed);
    let (_, account_before) = stats(&s, "/stats");
    s.stop();
    std::fs::remove_dir_all(s.data_dir.join("delivery-index")).unwrap();
    s.start_again();
    let (_, after) = stats(&s, &fixed);
    let by_start = |v: &Value| -> std::collections::BTreeMap<String, Value> {
        v["stats"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["start"].as_str().unwrap().to_owned(), b.clone()))
            .collect()
    };
    let (b1, b2) = (by_start(&before), by_start(&after));
    for (start, bucket) in &b1 {
        if let Some(again) = b2.get(start) {
            assert_eq!(bucket, again, "rebuilt bucket {start}");
        }
    }
    assert_eq!(totals(&after), (13, 11, 2));
    assert_eq!(totals(&stats(&s, "/stats").1), totals(&account_before));
}
