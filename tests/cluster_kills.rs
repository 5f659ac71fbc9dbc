//! Issue 11, test 2 at its scale: three nodes on a three-server JetStream cluster, two writers publishing
//! without pause to random live nodes, and five `kill -9`s of nodes (the owner of a busy webhook every
//! other time, a random node otherwise), each killed node started again on its own storage.path. Every
//! acknowledged event reaches every webhook it matches (svix-verified), and the dead node's shards move to
//! the survivors within `lease_ttl` + 5 s of each kill.
#![allow(clippy::unwrap_used)]

use buildr_cluster::shard_of;
use buildr_cluster::testkit::NatsCluster;
use buildr_e2e::cluster::{balanced, node, shards};
use buildr_e2e::server::request;
use buildr_e2e::verifier::svix_verify;
use buildr_e2e::{wait_until, Receiver, Server};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
const KILLS: usize = 5;
/// `LEASE_TTL` of the harness's cluster nodes (2 s) + 5 s.
const MOVE_BOUND: Duration = Duration::from_secs(2 + 5);
const TYPES: [&str; 2] = ["contact.create", "company.update"];

/// Stops the writers however the test ends (a failed assertion included).
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The webhooks, as (receiver path, type filter): `None` takes every type.
const HOOKS: [(&str, Option<&str>); 4] = [
    ("/busy0", None),
    ("/busy1", None),
    ("/creates", Some("contact.create")),
    ("/updates", Some("company.update")),
];

#[test]
fn five_kills_of_random_nodes_under_load_lose_nothing_acknowledged() {
    let nats = NatsCluster::start(3);
    let mut nodes: Vec<Server> = IDS.iter().map(|id| node(&nats, id)).collect();
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(20), || balanced(n, &IDS)),
            "{:?}",
            shards(n)
        );
    }
    let rx = Receiver::start();
    let hooks: Vec<String> = HOOKS
        .iter()
        .enumerate()
        .map(|(i, (path, filter))| {
            let mut extra = json!({"secret": SECRET});
            if let Some(t) = filter {
                extra["filter_types"] = json!([t]);
            }
            nodes[i % 3].create_webhook(&rx.url(path), extra)
        })
        .collect();
    let token = nodes[0].token();
    // The writers read the live nodes' addresses from here; a killed node is `None` until it is back.
    let bases = parking_lot::Mutex::new(
        nodes
            .iter()
            .map(|n| Some(n.base.clone()))
            .collect::<Vec<_>>(),
    );
    let acked = parking_lot::Mutex::new(Vec::<(String, &str)>::new());
    let refused = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut moves = Vec::new();
    std::thread::scope(|scope| {
        let _stop_writers = StopOnDrop(&stop);
        for w in 0..2 {
            let (bases, acked, refused, stop, token) = (&bases, &acked, &refused, &stop, &token);
            scope.spawn(move || {
                let mut rng = rand::thread_rng();
                let auth = format!("Bearer {token}");
                for i in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let live: Vec<String> = bases.lock().iter().flatten().cloned().collect();
                    let base = &live[rng.gen_range(0..live.len())];
                    let t = TYPES[rng.gen_range(0..TYPES.len())];
                    let body = json!({"event": {"type": t,
                        "data": {"id": format!("{w}-{i}"), "url": "https://x.example/k"}}});
                    let (status, text) = request(
                        base,
                        "POST",
                        "/api/2023-01/events",
                        Some(&body.to_string()),
                        &[
                            ("Authorization", &auth),
                            ("Content-Type", "application/json"),
                        ],
                    );
                    if status == 202 {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        acked
                            .lock()
                            .push((v["event"]["id"].as_str().unwrap().to_owned(), t));
                    } else {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        let mut rng = rand::thread_rng();
        for k in 0..KILLS {
            std::thread::sleep(Duration::from_millis(1_500));
            // Every other kill: the node that owns a busy webhook now; else a random one.
            let victim = if k % 2 == 0 {
                let shard = shard_of(&hooks[k % 2], 64);
                let mut owner = None;
                assert!(wait_until(Duration::from_secs(5), || {
                    owner = nats.lease_holder("e2e", shard);
                    owner.is_some()
                }));
                let owner = owner.unwrap();
                IDS.iter().position(|id| *id == owner).unwrap()
            } else {
                rng.gen_range(0..IDS.len())
            };
            bases.lock()[victim] = None;
            let killed = Instant::now();
            nodes[victim].kill9();
            let alive: Vec<&str> = (0..3).filter(|i| *i != victim).map(|i| IDS[i]).collect();
            let survivor = &nodes[(victim + 1) % 3];
            assert!(
                wait_until(MOVE_BOUND, || balanced(survivor, &alive)),
                "kill {k} ({}): shards did not move within lease_ttl + 5 s: {:?}",
                IDS[victim],
                shards(survivor)
            );
            moves.push((IDS[victim], killed.elapsed()));
            nodes[victim].start_again();
            bases.lock()[victim] = Some(nodes[victim].base.clone());
            assert!(
                wait_until(Duration::from_secs(20), || balanced(&nodes[victim], &IDS)),
                "the restarted node did not get its share back: {:?}",
                shards(&nodes[victim])
            );
        }
    });
    let acked = acked.into_inner();
    eprintln!(
        "shards moved after each kill: {moves:?}; {} acknowledged, {} refused",
        acked.len(),
        refused.load(Ordering::SeqCst)
    );
    assert!(acked.len() > 100, "too little load: {}", acked.len());
    let expected = |filter: Option<&str>| -> BTreeSet<String> {
        acked
            .iter()
            .filter(|(_, t)| filter.is_none_or(|f| f == *t))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let got = |path: &str| -> BTreeSet<String> {
        rx.at(path)
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect()
    };
    let all_delivered = || {
        HOOKS
            .iter()
            .all(|(path, filter)| expected(*filter).is_subset(&got(path)))
    };
    assert!(
        wait_until(Duration::from_secs(60), all_delivered),
        "not every acknowledged event reached every matching webhook: missing {:?}",
        HOOKS
            .iter()
            .map(|(p, f)| (p, expected(*f).difference(&got(p)).count()))
            .collect::<Vec<_>>()
    );
    // A filtered webhook got only its type (including events whose answer a kill cut off), and every
    // request verifies.
    for (path, filter) in HOOKS {
        if let Some(t) = filter {
            assert!(rx.at(path).iter().all(|r| r.json()["type"] == t), "{path}");
        }
    }
    let verified = svix_verify(SECRET, false, &rx.all());
    assert!(verified.iter().all(Result::is_ok));
}
