//! Cluster mode's operations end to end: readiness tied to the stream, attempts recorded once across a
//! NATS outage, one admin token for the cluster, retention, the offline replay. Real processes: three
//! nats-server (from `make nats-server`) and `buildr-webhooks` nodes, each with its own storage.path.
#![allow(clippy::unwrap_used)]

use buildr_cluster::testkit::NatsCluster;
use buildr_e2e::{wait_until, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One cluster at a time (see tests/cluster.rs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn node(nats: &NatsCluster, id: &str) -> Server {
    Server::builder()
        .env("BUILDR_CLUSTER__NATS", &nats.urls().join(","))
        .env("BUILDR_CLUSTER__NODE_ID", id)
        .env("BUILDR_CLUSTER__STREAM", "ops")
        .env("BUILDR_CLUSTER__LEASE_TTL", "2s")
        .start()
}

/// `GET /readyz`: the status and the body.
fn readyz(s: &Server) -> (u16, Value) {
    let (st, body) = s.raw("GET", "/readyz", None, &[]);
    (st, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn readyz_follows_the_connection_to_nats_without_any_write() {
    let _one = exclusive();
    let mut nats = NatsCluster::start(3);
    let s = node(&nats, "node-a");
    let event = s.publish("contact.create", json!(1));
    assert_eq!(readyz(&s).0, 200);
    for i in 0..3 {
        nats.kill(i);
    }
    // No write: the node notices by itself.
    let cut = Instant::now();
    let mut last = (0, Value::Null);
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = readyz(&s);
            last.0 == 503
        }),
        "/readyz stayed {} with NATS down: {}",
        last.0,
        last.1
    );
    eprintln!(
        "/readyz 503 {:?} after NATS went down: {}",
        cut.elapsed(),
        last.1
    );
    assert_eq!(last.1["status"], "out_of_sync", "{}", last.1);
    // Reads are still served from this node's copy.
    assert_eq!(
        s.event_ids(),
        vec![event["id"].as_str().unwrap().to_owned()]
    );
    nats.restart_all();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || readyz(&s).0 == 200),
        "/readyz did not come back: {}",
        readyz(&s).1
    );
    eprintln!("/readyz 200 {:?} after NATS came back", back.elapsed());
    // And writes work again (after the writer's own healing, if it had tried meanwhile).
    assert!(wait_until(Duration::from_secs(30), || {
        s
        .call(
            "POST",
            "/events",
            Some(json!({"event": {"type": "contact.create", "data": {"id": 2, "url": "https://x.example/2"}}}))
        )
        .0
        == 202
    }));
}
