//! Cluster mode end to end: three `buildr-webhooks` nodes on a real three-server JetStream cluster
//! (nats-server from `make nats-server`), each with its own storage.path.
#![allow(clippy::unwrap_used)]

use buildr_cluster::testkit::NatsCluster;
use buildr_e2e::cluster::{balanced, node, shards};
use buildr_e2e::server::{ids_of, run_binary};
use buildr_e2e::verifier::svix_verify;
use buildr_e2e::{wait_until, Receiver, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One cluster at a time: each test runs three NATS servers and up to three nodes, and several at once
/// would starve each other on a small machine (and time out).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn written_on_one_node_read_on_the_others_and_delivered_once_verified() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let nodes = [
        node(&nats, "node-a"),
        node(&nats, "node-b"),
        node(&nats, "node-c"),
    ];
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(15), || balanced(
                n,
                &["node-a", "node-b", "node-c"]
            )),
            "shards not balanced: {:?}",
            shards(n)
        );
    }
    let (_, metrics) = nodes[0].raw("GET", "/metrics", None, &[]);
    assert!(metrics.contains("\nbuildr_cluster_nodes 3\n"), "{metrics}");
    let held: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("buildr_cluster_shards_held "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((20..=22).contains(&held), "shards held: {held}");
    let rx = Receiver::start();
    let hook = nodes[0].create_webhook(
        &rx.url("/hook"),
        json!({"secret": SECRET, "filter_types": ["contact.create"]}),
    );
    for n in &nodes[1..] {
        assert!(
            wait_until(Duration::from_secs(1), || n
                .call("GET", &format!("/webhooks/{hook}"), None)
                .0
                == 200),
            "a webhook created on node A is readable on the others within 1 s"
        );
    }
    // Events published on B and C, one at a time: their seqs increase across nodes.
    let mut published: Vec<Value> = Vec::new();
    for i in 0..30 {
        published.push(nodes[1 + i % 2].publish("contact.create", json!(i)));
    }
    let seqs: Vec<u64> = published
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ids: BTreeSet<String> = published
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        wait_until(Duration::from_secs(1), || nodes[0]
            .event_ids()
            .into_iter()
            .collect::<BTreeSet<_>>()
            == ids),
        "events published on B and C are listed on A within 1 s"
    );
    // Delivered by whichever node owns the webhook's shard: every event, once.
    assert!(
        wait_until(Duration::from_secs(30), || rx.count("/hook") >= ids.len()),
        "delivered {} of {}",
        rx.count("/hook"),
        ids.len()
    );
    std::thread::sleep(Duration::from_secs(1));
    let got = rx.at("/hook");
    let delivered: BTreeSet<String> = got
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(delivered, ids);
    assert_eq!(got.len(), ids.len(), "each event delivered once");
    let verified = svix_verify(SECRET, false, &got);
    assert!(verified.iter().all(Result::is_ok), "{verified:?}");
    // Every node's delivery records show the same outcome.
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(2), || {
            let (_, v) = n.call(
                "GET",
                &format!("/webhooks/{hook}/deliveries?limit=100"),
                None,
            );
            v["deliveries"].as_array().is_some_and(|d| {
                d.len() == ids.len() && d.iter().all(|d| d["status"] == "succeeded")
            })
        }));
    }
}

#[test]
fn bad_cluster_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (key, value) in [
        ("BUILDR_CLUSTER__NATS", "nats://127.0.0.1:notaport"),
        ("BUILDR_CLUSTER__NODE_ID", "node a"),
        ("BUILDR_CLUSTER__STREAM", "buildr.log"),
        ("BUILDR_CLUSTER__REPLICAS", "0"),
        ("BUILDR_CLUSTER__SHARDS", "0"),
        ("BUILDR_CLUSTER__LEASE_TTL", "10"),
        ("BUILDR_CLUSTER__LEASE_TTL", "100ms"),
        ("BUILDR_CLUSTER__LEADER", "x"),
    ] {
        let (code, out) = run_binary(
            &["serve"],
            &[
                ("BUILDR_STORAGE__PATH", data),
                ("BUILDR_ADMIN_TOKEN", "t"),
                (key, value),
            ],
        );
        assert_ne!(code, 0, "{key}={value} was accepted");
        let name = key
            .trim_start_matches("BUILDR_")
            .replace("__", ".")
            .to_lowercase();
        assert!(out.to_lowercase().contains(&name), "{key}={value}: {out}");
    }
}

#[test]
fn a_single_node_has_no_cluster() {
    let s = Server::start();
    assert_eq!(s.call("GET", "/cluster", None).0, 404);
}

#[test]
fn killing_nodes_moves_their_shards_and_every_acknowledged_event_is_delivered() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let mut nodes = [
        node(&nats, "node-a"),
        node(&nats, "node-b"),
        node(&nats, "node-c"),
    ];
    let rx = Receiver::start();
    // Six webhooks: every node owns some of them.
    let hooks: Vec<String> = (0..6)
        .map(|i| nodes[i % 3].create_webhook(&rx.url(&format!("/h{i}")), json!({"secret": SECRET})))
        .collect();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut publish = |s: &Server, n: usize| {
        for i in 0..n {
            ids.insert(
                s.publish("contact.create", json!(i))["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    };
    publish(&nodes[0], 10);
    for (killed, alive) in [(0usize, vec!["node-b", "node-c"]), (1, vec!["node-c"])] {
        nodes[killed].kill9();
        let started = std::time::Instant::now();
        let survivor = &nodes[2];
        // Acknowledged while the dead node's leases still run: delivered once they move.
        publish(survivor, 10);
        assert!(
            wait_until(Duration::from_secs(2 + 5), || balanced(survivor, &alive)),
            "shards did not move within lease_ttl + 5 s: {:?}",
            shards(survivor)
        );
        eprintln!("shards moved {:?} after the kill", started.elapsed());
    }
    let all_delivered = || {
        (0..hooks.len()).all(|i| {
            let got: BTreeSet<String> = rx
                .at(&format!("/h{i}"))
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            got == ids
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), all_delivered),
        "not every acknowledged event reached every webhook: missing per webhook {:?}; shards {:?}",
        (0..hooks.len())
            .map(|i| {
                let got: BTreeSet<String> = rx
                    .at(&format!("/h{i}"))
                    .iter()
                    .map(|r| r.header("webhook-id").to_owned())
                    .collect();
                ids.difference(&got).count()
            })
            .collect::<Vec<_>>(),
        shards(&nodes[2])
    );
    let verified = svix_verify(SECRET, false, &rx.all());
    assert!(verified.iter().all(Result::is_ok));
}

#[test]
fn writes_answer_503_while_nats_is_down_and_resume_after() {
    let _one = exclusive();
    let mut nats = NatsCluster::start(3);
    let s = node(&nats, "node-a");
    s.publish("contact.create", json!(1));
    for i in 0..3 {
        nats.kill(i);
    }
    let body = json!({"event": {"type": "contact.create", "data": {"id": 2, "url": "https://x.example/2"}}});
    let (st, v) = s.call("POST", "/events", Some(body.clone()));
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let (st, retry_after) = s.call_for_header("POST", "/events", &body, "Retry-After");
    assert_eq!(st, 503);
    assert!(retry_after.is_some(), "503 without Retry-After");
    // Reads keep working from the projection.
    assert_eq!(s.call("GET", "/event-types", None).0, 200);
    nats.restart_all();
    assert!(
        wait_until(Duration::from_secs(30), || s
            .call("POST", "/events", Some(body.clone()))
            .0
            == 202),
        "writes did not resume after NATS came back"
    );
    assert_eq!(s.event_ids().len(), 2);
}

#[test]
fn one_idempotency_key_sent_to_two_nodes_at_once_stores_one_set_of_events() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let nodes = [node(&nats, "node-a"), node(&nats, "node-b")];
    let body = |k: usize| {
        json!({"events": [
            {"type": "contact.create", "data": {"id": k, "url": "https://x.example/a"}},
            {"type": "contact.update", "data": {"id": k, "url": "https://x.example/b"}},
        ]})
    };
    let mut stored = BTreeSet::new();
    for k in 0..5 {
        let key = format!("key-{k}");
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let calls: Vec<_> = nodes
                .iter()
                .map(|n| {
                    let (key, body) = (key.clone(), body(k));
                    scope.spawn(move || {
                        n.call_with(
                            &n.token(),
                            &[("Idempotency-Key", &key)],
                            "POST",
                            "/events/batch",
                            Some(body),
                        )
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let ids: Vec<Vec<String>> = answers
            .iter()
            .map(|(st, v)| {
                assert_eq!(*st, 202, "{v}");
                ids_of(v)
            })
            .collect();
        assert_eq!(ids[0], ids[1], "both nodes answer with the first set");
        stored.extend(ids[0].iter().cloned());
    }
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(2), || n
                .event_ids()
                .into_iter()
                .collect::<BTreeSet<_>>()
                == stored),
            "the log holds one set of events per key"
        );
    }
    assert_eq!(stored.len(), 10);
}

#[test]
fn the_rate_limit_holds_across_a_failover() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    // One shard: exactly one node owns every webhook, and GET /cluster says which.
    let start = |id: &str| {
        Server::builder()
            .env("BUILDR_CLUSTER__NATS", &nats.urls().join(","))
            .env("BUILDR_CLUSTER__NODE_ID", id)
            .env("BUILDR_CLUSTER__STREAM", "e2e")
            .env("BUILDR_CLUSTER__LEASE_TTL", "2s")
            .env("BUILDR_CLUSTER__SHARDS", "1")
            .start()
    };
    let mut nodes = [start("node-a"), start("node-b")];
    let owner = |s: &Server| {
        shards(s)
            .into_iter()
            .find(|(_, n)| *n == 1)
            .map(|(id, _)| id)
    };
    assert!(
        wait_until(Duration::from_secs(20), || owner(&nodes[0]).is_some()),
        "no node took the one shard: {:?}",
        shards(&nodes[0])
    );
    let rx = Receiver::start();
    let hook = nodes[0].create_webhook(
        &rx.url("/slow"),
        json!({"secret": SECRET, "rate_limit": 60}),
    );
    for i in 0..8 {
        nodes[i % 2].publish("contact.create", json!(i));
    }
    assert!(wait_until(Duration::from_secs(10), || rx.count("/slow") >= 3));
    let first = owner(&nodes[0]).unwrap();
    let (dead, alive) = if first == "node-a" { (0, 1) } else { (1, 0) };
    nodes[dead].kill9();
    assert!(
        wait_until(Duration::from_secs(2 + 5), || owner(&nodes[alive])
            .is_some_and(|o| o != first)),
        "the shard did not move"
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            rx.at("/slow")
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect::<BTreeSet<_>>()
                .len()
                == 8
        }),
        "not every event reached {hook} after the failover"
    );
    // 60 a minute with a burst of 1: one request a second, also across the failover.
    let mut at: Vec<std::time::Instant> = rx.at("/slow").iter().map(|r| r.at).collect();
    at.sort();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(900)),
        "requests closer than the rate limit allows: {gaps:?}"
    );
}

#[test]
fn a_clean_stop_hands_its_shards_over_before_the_lease_ttl() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let start = |id: &str| {
        Server::builder()
            .env("BUILDR_CLUSTER__NATS", &nats.urls().join(","))
            .env("BUILDR_CLUSTER__NODE_ID", id)
            .env("BUILDR_CLUSTER__STREAM", "e2e")
            .env("BUILDR_CLUSTER__LEASE_TTL", "15s")
            .start()
    };
    let mut nodes = [start("node-a"), start("node-b")];
    assert!(wait_until(Duration::from_secs(40), || balanced(
        &nodes[1],
        &["node-a", "node-b"]
    )));
    let stopped = std::time::Instant::now();
    nodes[0].stop();
    assert!(
        wait_until(Duration::from_secs(20), || balanced(&nodes[1], &["node-b"])),
        "the shards of a node stopped with SIGTERM did not move: {:?}",
        shards(&nodes[1])
    );
    let took = stopped.elapsed();
    eprintln!("shards handed over {took:?} after SIGTERM (lease_ttl 15 s)");
    // Leases renewed every 5 s expire at the earliest 10 s after the stop: sooner means they were given back.
    assert!(
        took < Duration::from_secs(10),
        "not handed over, expired: {took:?}"
    );
}

#[test]
fn a_node_whose_storage_was_wiped_rebuilds_from_the_stream() {
    let _one = exclusive();
    let nats = NatsCluster::start(3);
    let mut nodes = [node(&nats, "node-a"), node(&nats, "node-b")];
    let rx = Receiver::start();
    let hook = nodes[0].create_webhook(&rx.url("/w"), json!({"secret": SECRET}));
    let published: BTreeSet<String> = (0..20)
        .map(|i| {
            nodes[i % 2].publish("contact.create", json!(i))["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || rx.count("/w") >= 20));
    nodes[1].kill9();
    std::fs::remove_dir_all(&nodes[1].data_dir).unwrap();
    nodes[1].start_again();
    // Everything is back, read from its own rebuilt copy: events, the webhook, its delivery records.
    let events: BTreeSet<String> = nodes[1].event_ids().into_iter().collect();
    assert_eq!(events, published);
    assert_eq!(
        nodes[1].call("GET", &format!("/webhooks/{hook}"), None).0,
        200
    );
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, v) = nodes[1].call(
            "GET",
            &format!("/webhooks/{hook}/deliveries?limit=100"),
            None,
        );
        v["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 20 && d.iter().all(|d| d["status"] == "succeeded"))
    }));
    // And it takes part again: what it publishes is read on the other node.
    let more = nodes[1].publish("contact.create", json!(99));
    let id = more["id"].as_str().unwrap().to_owned();
    assert!(wait_until(Duration::from_secs(1), || nodes[0]
        .event_ids()
        .contains(&id)));
    // `log verify` reads the cluster's stream (into a copy of its own, with the nodes running).
    let urls = nats.urls().join(",");
    let cfg = buildr_e2e::repo_root().join("config/test.toml");
    let (code, out) = run_binary(
        &["log", "verify", "--config", cfg.to_str().unwrap()],
        &[
            ("BUILDR_CLUSTER__NATS", urls.as_str()),
            ("BUILDR_CLUSTER__STREAM", "e2e"),
            ("BUILDR_ADMIN_TOKEN", "t"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: ") && out.contains("1 webhooks"), "{out}");
}

#[test]
fn killing_the_stream_leader_three_times_loses_nothing_acknowledged() {
    let _one = exclusive();
    let mut nats = NatsCluster::start(3);
    let nodes = [node(&nats, "node-a"), node(&nats, "node-b")];
    let rx = Receiver::start();
    nodes[0].create_webhook(&rx.url("/l"), json!({"secret": SECRET}));
    let acked = parking_lot::Mutex::new(BTreeSet::new());
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut stalls = Vec::new();
    /// Stops the writers however the scope ends (a failed assertion included), so it never waits long.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    std::thread::scope(|scope| {
        let _stop_writers = StopOnDrop(&stop);
        for n in &nodes {
            let (acked, refused, stop) = (&acked, &refused, &stop);
            scope.spawn(move || {
                for i in 0..2_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let body = json!({"event": {"type": "contact.create",
                        "data": {"id": i, "url": "https://x.example/l"}}});
                    match n.call("POST", "/events", Some(body)) {
                        (202, v) => {
                            acked
                                .lock()
                                .insert(v["event"]["id"].as_str().unwrap().to_owned());
                        }
                        _ => {
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(1));
            let mut leader = None;
            assert!(wait_until(Duration::from_secs(15), || {
                leader = nats.stream_leader("e2e");
                leader.is_some()
            }));
            let leader = leader.unwrap();
            let before = acked.lock().len();
            let killed = std::time::Instant::now();
            nats.kill(leader);
            // Writes stall or answer 503, then resume on the new leader.
            assert!(
                wait_until(Duration::from_secs(30), || acked.lock().len() > before + 2),
                "writes did not resume after the stream leader was killed"
            );
            stalls.push(killed.elapsed());
            nats.restart(leader);
        }
    });
    eprintln!(
        "writes resumed {stalls:?} after each leader kill; {} acknowledged, {} refused",
        acked.lock().len(),
        refused.load(std::sync::atomic::Ordering::SeqCst)
    );
    let acked = acked.into_inner();
    assert!(acked.len() < 1_000, "GET /events lists at most 1,000");
    // A node lists what it has copied from the stream: after a leader change its follower may be a few
    // seconds behind (readers who must see their writes at once send `Buildr-Min-Position`). Something
    // acknowledged and still missing after that is lost.
    let read = std::time::Instant::now();
    for n in &nodes {
        let mut lost = Vec::new();
        let caught_up = wait_until(Duration::from_secs(20), || {
            let listed: BTreeSet<String> = n.event_ids().into_iter().collect();
            lost = acked.difference(&listed).cloned().collect();
            lost.is_empty()
        });
        assert!(caught_up, "acknowledged but lost: {lost:?}");
        eprintln!(
            "{} listed every acknowledged event {:?} after the writers stopped",
            n.base,
            read.elapsed()
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || {
            let got: BTreeSet<String> = rx
                .at("/l")
                .iter()
                .map(|r| r.header("webhook-id").to_owned())
                .collect();
            acked.is_subset(&got)
        }),
        "not every acknowledged event was delivered"
    );
}
