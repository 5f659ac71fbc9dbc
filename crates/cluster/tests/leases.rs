//! Shard leases on a real 3-server JetStream cluster: what a node does when a renewal's answer was lost
//! (the lease is still its own) and when another node took a lease (it stops using it at once).
#![allow(clippy::unwrap_used)]

use buildr_cluster::testkit::NatsCluster;
use buildr_cluster::{shard_of, JetStreamConfig, JetStreamLog, LeaseConfig};
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

#[test]
fn a_lost_renewal_answer_keeps_the_lease_and_a_lease_taken_by_another_is_dropped() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = JetStreamLog::open(&JetStreamConfig {
        servers: nats.urls(),
        node_id: "node-a".into(),
        stream: STREAM.into(),
        replicas: 3,
        dir: dir.path().join("node-a"),
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
