//! Cluster mode: what a node's kill costs the webhooks it owned. Three nodes on a real three-server
//! JetStream cluster; the webhooks whose shard lease a node holds are followed through its `kill -9`: the
//! events published meanwhile all reach them soon after the lease moves, and the takeover itself makes no
//! attempt fail (a failed first attempt waits for the retry schedule: a minute in production).
#![allow(clippy::unwrap_used)]

use buildr_cluster::shard_of;
use buildr_cluster::testkit::NatsCluster;
use buildr_e2e::cluster::{balanced, node, node_with, shards};
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The harness's `lease_ttl` (2 s) and a generous margin for a loaded machine.
/// Webhooks of the killed node, and events published after the kill: each moved webhook's new owner
/// starts with a backlog at once.
const MOVED: usize = 8;
const AFTER: usize = 60;
const IDLE: u64 = 7;
const DELIVERED_BOUND: Duration = Duration::from_secs(2 + 15);

/// One cluster at a time (see tests/cluster.rs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The webhook ids each received a request for, by path.
fn received_ids(rx: &Receiver, path: &str) -> BTreeSet<String> {
    rx.at(path)
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

/// `hook`'s deliveries as `s` records them: (event id, status, attempts).
fn deliveries(s: &Server, hook: &str) -> Vec<(String, String, u64)> {
    let (st, v) = s.call(
        "GET",
        &format!("/webhooks/{hook}/deliveries?limit=250"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            (
                d["event_id"].as_str().unwrap_or_default().to_owned(),
                d["status"].as_str().unwrap_or_default().to_owned(),
                d["attempts"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The attempts of `hook`'s delivery of `event` that did not get a 2xx.
fn failed_attempts(s: &Server, hook: &str, event: &str) -> Vec<Value> {
    let (st, a) = s.call(
        "GET",
        &format!("/webhooks/{hook}/deliveries/{event}/attempts"),
        None,
    );
    assert_eq!(st, 200, "{a}");
    a["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            !a["error"].is_null()
                || !(200..300).contains(&a["response_status"].as_u64().unwrap_or(0))
        })
        .collect()
}

#[test]
fn a_killed_nodes_webhooks_get_their_pending_events_soon_and_no_attempt_fails_for_the_takeover() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let mut nodes: Vec<Server> = IDS.iter().map(|id| node(&nats, id)).collect();
    assert!(
        wait_until(Duration::from_secs(20), || balanced(&nodes[0], &IDS)),
        "shards not balanced: {:?}",
        shards(&nodes[0])
    );
    let rx = Receiver::start();
    // Webhooks until node-c owns MOVED of them (it holds a third of the shards).
    let mut hooks: Vec<(String, String)> = Vec::new();
    let mut moved: Vec<usize> = Vec::new();
    for i in 0..80 {
        let path = format!("/h{i}");
        let id = nodes[i % 2].create_webhook(&rx.url(&path), json!({"secret": SECRET}));
        let mut holder = None;
        assert!(wait_until(Duration::from_secs(5), || {
            holder = nats.lease_holder("e2e", shard_of(&id, 64));
            holder.is_some()
        }));
        if holder.as_deref() == Some("node-c") {
            moved.push(hooks.len());
        }
        hooks.push((id, path));
        if moved.len() >= MOVED && hooks.len() >= 2 * MOVED {
            break;
        }
    }
    assert!(moved.len() >= MOVED, "node-c owns {} webhooks", moved.len());
    // Warm-up: every node delivers, and the outcomes are in the stream before the kill.
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for i in 0..3 {
        let e = nodes[i % 3].publish("contact.create", json!(i));
        ids.insert(e["id"].as_str().unwrap().to_owned());
    }
    assert!(wait_until(Duration::from_secs(20), || hooks
        .iter()
        .all(|(_, p)| received_ids(&rx, p) == ids)));
    std::thread::sleep(Duration::from_secs(IDLE));
    let before: usize = hooks.iter().map(|(_, p)| rx.count(p)).sum();

    nodes[2].kill9();
    let killed = Instant::now();
    // Published while node-c's leases still run: its webhooks' events wait for the lease to move.
    for i in 0..AFTER {
        let e = nodes[i % 2].publish("contact.create", json!(100 + i));
        ids.insert(e["id"].as_str().unwrap().to_owned());
    }
    let all_there = wait_until(DELIVERED_BOUND.saturating_sub(killed.elapsed()), || {
        moved.iter().all(|&h| received_ids(&rx, &hooks[h].1) == ids)
    });
    let took = killed.elapsed();
    eprintln!(
        "the moved webhooks had every event {took:?} after the kill (shards: {:?})",
        shards(&nodes[0])
    );
    // The survivors' delivery records of the moved webhooks: no attempt failed (a failed attempt is
    // what made them wait for the retry schedule), whatever the timing.
    let mut failed = Vec::new();
    for &h in &moved {
        let hook = &hooks[h].0;
        let recorded = wait_until(Duration::from_secs(10), || {
            let d = deliveries(&nodes[0], hook);
            d.len() >= ids.len() && d.iter().all(|d| d.1 == "succeeded")
        });
        for (event, status, attempts) in deliveries(&nodes[0], hook) {
            if attempts != 1 || status != "succeeded" {
                failed.push((
                    hook.clone(),
                    status,
                    failed_attempts(&nodes[0], hook, &event),
                ));
            }
        }
        assert!(
            recorded || !failed.is_empty(),
            "node-a does not record every delivery of {hook}"
        );
    }
    assert!(
        failed.is_empty(),
        "attempts failed after the takeover: {failed:#?}"
    );
    assert!(
        all_there,
        "the moved webhooks did not get every event within lease_ttl + 15 s: {:?}",
        moved
            .iter()
            .map(|&h| ids.len() - received_ids(&rx, &hooks[h].1).len())
            .collect::<Vec<_>>()
    );
    // Sent once each: nothing was in flight at the kill.
    let after: usize = hooks.iter().map(|(_, p)| rx.count(p)).sum();
    assert_eq!(
        after - before,
        AFTER * hooks.len(),
        "requests sent after the kill"
    );
}

/// A node with one shard (so exactly one node owns every webhook) and the delivery timeout given.
fn one_shard_node(nats: &NatsCluster, id: &str, delivery_timeout: &str) -> Server {
    node_with(
        nats,
        id,
        &[
            ("BUILDR_CLUSTER__SHARDS", "1"),
            ("BUILDR_DELIVERY__TIMEOUT", delivery_timeout),
        ],
    )
}

/// A receiver whose path `/slow` answers 200 after `delay`.
fn slow_receiver(delay: Duration) -> Receiver {
    let rx = Receiver::start();
    rx.answer_path(
        "/slow",
        buildr_e2e::receiver::Reply {
            status: 200,
            retry_after: None,
            delay: Some(delay),
        },
    );
    rx
}

#[test]
fn an_attempt_in_flight_when_the_lease_moves_is_recorded_by_the_node_that_made_it() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    // One shard, so exactly one node owns the webhook; a receiver that answers after 6 s (the nodes wait
    // up to 20 s for it).
    let start = |id: &str| one_shard_node(&nats, id, "20s");
    // node-b first: it takes the shard; node-a (first by id) joining takes it over, so node-b gives the
    // lease back while its attempt is in flight.
    let b = start("node-b");
    assert!(wait_until(Duration::from_secs(10), || shards(&b)
        .iter()
        .any(|(id, n)| id == "node-b" && *n == 1)));
    let rx = slow_receiver(Duration::from_secs(6));
    let hook = b.create_webhook(&rx.url("/slow"), json!({"secret": SECRET}));
    let event = b.publish("contact.create", json!("in-flight"));
    let event_id = event["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(10), || rx.count("/slow") == 1));
    let a = start("node-a");
    assert!(
        wait_until(Duration::from_secs(10), || shards(&a)
            .iter()
            .any(|(id, n)| id == "node-a" && *n == 1)),
        "the shard did not move to node-a: {:?}",
        shards(&a)
    );
    // Every request the receiver answered is an attempt in the delivery records, on both nodes (node-a
    // may have sent it again: at least once).
    let recorded = |s: &Server| {
        deliveries(s, &hook)
            .iter()
            .find(|d| d.0 == event_id)
            .map(|d| (d.1.clone(), d.2))
    };
    let settled = wait_until(Duration::from_secs(30), || {
        let sent = rx.count("/slow") as u64;
        [&a, &b]
            .iter()
            .all(|s| recorded(s) == Some(("succeeded".to_owned(), sent)))
    });
    assert!(
        settled,
        "the receiver got {} requests; node-a records {:?}, node-b {:?}",
        rx.count("/slow"),
        recorded(&a),
        recorded(&b)
    );
}

#[test]
fn a_node_stopped_with_sigterm_records_its_attempt_in_flight_before_handing_over_so_it_is_not_sent_again(
) {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    // One shard, so exactly one node owns the webhook; a receiver that answers after 3 s (the nodes wait
    // up to 10 s for it).
    let start = |id: &str| one_shard_node(&nats, id, "10s");
    let mut nodes = [start("node-a"), start("node-b")];
    let owner = |nodes: &[Server]| {
        shards(&nodes[0])
            .into_iter()
            .find(|(_, n)| *n == 1)
            .and_then(|(id, _)| IDS.iter().position(|i| *i == id))
    };
    assert!(wait_until(Duration::from_secs(10), || owner(&nodes).is_some()));
    let owning = owner(&nodes).unwrap();
    let other = 1 - owning;
    let rx = slow_receiver(Duration::from_secs(3));
    let hook = nodes[other].create_webhook(&rx.url("/slow"), json!({"secret": SECRET}));
    let event = nodes[other].publish("contact.create", json!("in-flight-at-stop"));
    let event_id = event["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(10), || rx.count("/slow") == 1));
    // SIGTERM while the attempt is in flight: the node waits for the answer, records it, then hands over.
    nodes[owning].stop();
    let survivor = &nodes[other];
    assert!(
        wait_until(Duration::from_secs(10), || shards(survivor)
            .iter()
            .any(|(_, n)| *n == 1)),
        "the shard did not move: {:?}",
        shards(survivor)
    );
    let recorded = || {
        deliveries(survivor, &hook)
            .into_iter()
            .find(|d| d.0 == event_id)
            .map(|d| (d.1, d.2))
    };
    assert!(
        wait_until(Duration::from_secs(10), || recorded()
            == Some(("succeeded".to_owned(), 1))),
        "the stopped node's attempt is not recorded: {:?}",
        recorded()
    );
    // The new owner's takeover hold (about 2 s here) has passed: it did not send the event again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(rx.count("/slow"), 1, "sent again after a clean hand-over");
    assert_eq!(recorded(), Some(("succeeded".to_owned(), 1)));
}
