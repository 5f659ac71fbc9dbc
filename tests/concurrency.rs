//! The bound on attempts in flight (`delivery.max_connections_per_host`, `delivery.max_in_flight_total`):
//! receivers that count the requests they are answering at once never see more than the cap, and a
//! webhook with a long backlog to a slow host does not hold up another webhook to that host.
#![allow(clippy::unwrap_used)]

use buildr_e2e::receiver::Reply;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::json;
use std::time::Duration;

/// Every answer at `path` waits `delay`.
fn slow(rx: &Receiver, path: &str, delay: Duration) {
    rx.answer_path(
        path,
        Reply {
            status: 200,
            retry_after: None,
            delay: Some(delay),
        },
    );
}

fn publish_many(s: &Server, t: &str, n: i64) {
    for id in 0..n {
        s.publish(t, json!(id));
    }
}

#[test]
fn no_host_ever_gets_more_attempts_at_once_than_its_cap() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__MAX_CONNECTIONS_PER_HOST", "3")
        .start();
    let a = Receiver::start();
    let b = Receiver::start();
    // Five webhooks on each host, each allowed 32 at once on its own: 10 × 32 attempts could start.
    for i in 0..5 {
        let path = format!("/w{i}");
        slow(&a, &path, Duration::from_millis(100));
        slow(&b, &path, Duration::from_millis(100));
        s.create_webhook(&a.url(&path), json!({}));
        s.create_webhook(&b.url(&path), json!({}));
    }
    publish_many(&s, "contact.create", 12);
    let all_in = wait_until(Duration::from_secs(60), || {
        a.all().len() >= 60 && b.all().len() >= 60
    });
    assert!(
        all_in,
        "{} and {} of 60 arrived",
        a.all().len(),
        b.all().len()
    );
    assert!(
        a.most_at_once_total() <= 3 && b.most_at_once_total() <= 3,
        "at most 3 at once per host: {} and {}",
        a.most_at_once_total(),
        b.most_at_once_total()
    );
    assert!(
        a.most_at_once_total() >= 2,
        "webhooks of one host still run side by side"
    );
    assert_eq!(a.all().len(), 60, "nothing sent twice");
}

#[test]
fn all_hosts_together_stay_under_the_total_cap() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__MAX_IN_FLIGHT_TOTAL", "4")
        .start();
    let a = Receiver::start();
    let b = Receiver::start_counting_with(&a);
    for i in 0..4 {
        let path = format!("/w{i}");
        slow(&a, &path, Duration::from_millis(100));
        slow(&b, &path, Duration::from_millis(100));
        s.create_webhook(&a.url(&path), json!({}));
        s.create_webhook(&b.url(&path), json!({}));
    }
    publish_many(&s, "contact.create", 10);
    let all_in = wait_until(Duration::from_secs(60), || {
        a.all().len() >= 40 && b.all().len() >= 40
    });
    assert!(
        all_in,
        "{} and {} of 40 arrived",
        a.all().len(),
        b.all().len()
    );
    let most = a.most_at_once_total();
    assert!(most <= 4, "at most 4 at once over both hosts: {most}");
    assert!(
        a.most_at_once("/w0") >= 1 && b.most_at_once("/w0") >= 1,
        "both hosts were served"
    );
}

#[test]
fn a_backlog_to_a_slow_host_does_not_starve_another_webhook_there() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__MAX_CONNECTIONS_PER_HOST", "2")
        .start();
    let rx = Receiver::start();
    // Slow enough that the backlog moves by ~2 requests a second, so a busy machine delaying the other
    // webhook's publish by seconds still leaves most of the backlog behind it.
    slow(&rx, "/backlog", Duration::from_secs(1));
    s.create_webhook(
        &rx.url("/backlog"),
        json!({"filter_types": ["contact.create"]}),
    );
    s.create_webhook(
        &rx.url("/other"),
        json!({"filter_types": ["contact.update"]}),
    );
    publish_many(&s, "contact.create", 30);
    assert!(
        wait_until(Duration::from_secs(30), || rx.count("/backlog") >= 2),
        "the backlog started"
    );
    // Operators see it: two attempts under way, the backlog's webhook queued for the next slot.
    let metrics = s.raw("GET", "/metrics", None, &[]).1;
    assert!(
        metrics.contains("buildr_delivery_attempts_in_flight 2")
            && metrics.contains("buildr_delivery_waiting_for_permit 1"),
        "{metrics}"
    );
    s.publish("contact.update", json!(1000));
    assert!(
        wait_until(Duration::from_secs(30), || rx.count("/other") == 1),
        "the other webhook's event arrived"
    );
    // Queued behind the backlog's attempts in flight, it gets the next free permit: a webhook that took
    // every permit in turn would send all of its 30 first.
    let all = rx.all();
    let backlog_before = all
        .iter()
        .take_while(|r| r.path != "/other")
        .filter(|r| r.path == "/backlog")
        .count();
    assert!(
        backlog_before <= 10,
        "the other webhook waited for {backlog_before} of the backlog's 30 attempts"
    );
    assert!(
        rx.most_at_once_total() <= 2,
        "cap held: {}",
        rx.most_at_once_total()
    );
    assert!(wait_until(Duration::from_secs(60), || rx.count("/backlog") == 30));
}

/// S7 in small: one webhook's endpoint hangs (each attempt held 10 s) while another webhook to the same
/// host is busy. The hanging webhook may hold only its share of the host's permits (the cap over the
/// webhooks using it: 2 of 4 here), so the busy webhook keeps delivering instead of getting one permit per
/// hanging attempt that ends.
#[test]
fn a_webhook_whose_endpoint_hangs_cannot_take_the_host_from_another() {
    let s = Server::builder()
        .env("BUILDR_DELIVERY__MAX_CONNECTIONS_PER_HOST", "4")
        .start();
    let rx = Receiver::start();
    slow(&rx, "/busy", Duration::from_millis(50));
    slow(&rx, "/hangs", Duration::from_secs(10));
    s.create_webhook(
        &rx.url("/busy"),
        json!({"filter_types": ["contact.update"]}),
    );
    s.create_webhook(
        &rx.url("/hangs"),
        json!({"filter_types": ["contact.create"]}),
    );
    publish_many(&s, "contact.update", 60);
    assert!(
        wait_until(Duration::from_secs(30), || rx.count("/busy") >= 4),
        "the busy webhook started"
    );
    publish_many(&s, "contact.create", 10);
    assert!(
        wait_until(Duration::from_secs(60), || rx.count("/busy") == 60),
        "the busy webhook delivered everything (got {})",
        rx.count("/busy")
    );
    let hanging_done = rx.count("/hangs") - rx.open_now("/hangs");
    assert_eq!(
        hanging_done, 0,
        "the busy webhook's deliveries waited for hanging attempts to end"
    );
    assert!(
        rx.most_at_once("/hangs") <= 2,
        "the hanging webhook held {} of the host's 4 permits at once",
        rx.most_at_once("/hangs")
    );
    assert!(rx.most_at_once_total() <= 4, "cap held");
}
