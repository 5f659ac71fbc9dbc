//! Shard leases on a real 3-server JetStream cluster: what a node does when a renewal's answer was lost
//! (the lease is still its own) and when another node took a lease (it stops using it at once).
#![allow(clippy::unwrap_used)]

use buildr_cluster::testkit::NatsCluster;
use buildr_cluster::{shard_of, JetStreamConfig, JetStreamLog, LeaseConfig, Leases};
use buildr_log::StorageOptions;
use std::time::{Duration, Instant};

const STREAM: &str = "leasetest";
const SHARDS: u32 = 2;

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A webhook id in `shard`.
fn webhook_in(shard: u32) -> String {
    (0..)
        .map(|i| format!("wh_{i}"))
        .find(|id| shard_of(id, SHARDS) == shard)
        .unwrap_or_default()
}

/// Node `node-a`'s log on `nats` (its copy in `dir`) and its leases, with a `ttl` of 3 s.
fn node_a(nats: &NatsCluster, dir: &std::path::Path) -> (JetStreamLog, Leases, Duration) {
    let (log, _) = JetStreamLog::open(&JetStreamConfig {
        servers: nats.urls(),
        node_id: "node-a".into(),
        stream: STREAM.into(),
        replicas: 3,
        dir: dir.join("node-a"),
        storage: StorageOptions {
            cache_bytes: 16 << 20,
            ..Default::default()
        },
        connect_timeout: Duration::from_secs(20),
        duplicate_window: Duration::from_secs(120),
    })
    .unwrap();
    let ttl = Duration::from_secs(3);
    let leases = log.leases(LeaseConfig {
        node_id: "node-a".into(),
        stream: STREAM.into(),
        shards: SHARDS,
        ttl,
        replicas: 3,
    });
    (log, leases, ttl)
}

#[test]
fn a_lost_renewal_answer_keeps_the_lease_and_a_lease_taken_by_another_is_dropped() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let (_log, leases, ttl) = node_a(&nats, dir.path());
    assert!(wait_until(Duration::from_secs(20), || leases.held() == 2));
    let (first, second) = (webhook_in(0), webhook_in(1));

    // A renewal stored without its answer arriving: the key's revision moved on, and still names this
    // node. The node keeps the lease (and renews it from the new revision) across several rounds.
    assert!(nats.put_lease(STREAM, 0, "node-a").is_some());
    let watched = Instant::now();
    while watched.elapsed() < ttl {
        assert!(
            leases.owns(&first),
            "dropped a lease that was still its own"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(nats.lease_holder(STREAM, 0).as_deref(), Some("node-a"));

    // Another node took the lease: the next round finds the key naming it and stops using the shard.
    assert!(nats.put_lease(STREAM, 1, "node-z").is_some());
    assert!(
        wait_until(ttl, || !leases.owns(&second)),
        "kept using a lease another node holds"
    );
    assert!(leases.owns(&first));
}

/// A node killed right after a round leaves its heartbeat and a lease behind, and nothing deletes them:
/// they expire in the bucket without a word to its watchers. The live node leaves the shard alone while
/// the dead node's lease lives, counts it among the nodes meanwhile, and takes the shard once the lease
/// has expired (its view dates every key it saw and lets it go `lease_ttl` later).
#[test]
fn the_leases_of_a_node_gone_silent_are_taken_once_they_expire_and_not_before() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let (_log, leases, ttl) = node_a(&nats, dir.path());
    assert!(wait_until(Duration::from_secs(20), || leases.held() == 2));
    let second = webhook_in(1);
    assert!(nats.put_lease_key(STREAM, "node.node-z", "0").is_some());
    assert!(nats.put_lease(STREAM, 1, "node-z").is_some());
    let written = Instant::now();
    assert!(
        wait_until(ttl, || !leases.owns(&second)),
        "kept using a lease another node holds"
    );
    assert!(
        wait_until(ttl, || leases.membership().nodes.contains_key("node-z")),
        "the other node's heartbeat was not seen: {:?}",
        leases.membership()
    );
    while written.elapsed() < ttl * 3 / 4 {
        assert!(
            !leases.owns(&second),
            "took a lease whose holder's key had not expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        wait_until(ttl + Duration::from_secs(5), || leases.owns(&second)),
        "the silent node's lease was not taken after it expired: {:?}",
        leases.membership()
    );
    assert!(
        !leases.membership().nodes.contains_key("node-z"),
        "a node whose heartbeat expired is still listed: {:?}",
        leases.membership()
    );
    assert_eq!(nats.lease_holder(STREAM, 1).as_deref(), Some("node-a"));
}
