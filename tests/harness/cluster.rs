//! Cluster mode for the end-to-end tests: the nodes of one `Server` on a real three-server JetStream
//! cluster (nats-server from `make nats-server`), and what the cluster tests ask of a node.

use crate::server::request;
use crate::Server;
use buildr_cluster::testkit::NatsCluster;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How many nodes a cluster-mode `Server` runs.
pub const NODES: usize = 3;

/// The lease TTL the tests' nodes run with: short, so shards settle (and move) within seconds.
pub const LEASE_TTL: &str = "2s";

/// One NATS cluster for every cluster-mode `Server` alive in this test process; stopped (by PID) when the
/// last of them is dropped. Each `Server` has a stream (and lease bucket) of its own.
static SHARED_NATS: Mutex<Weak<NatsCluster>> = Mutex::new(Weak::new());
static STREAMS: AtomicUsize = AtomicUsize::new(0);

fn shared_nats() -> Arc<NatsCluster> {
    let mut shared = SHARED_NATS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(nats) = shared.upgrade() {
        return nats;
    }
    let nats = Arc::new(NatsCluster::start(3));
    *shared = Arc::downgrade(&nats);
    nats
}

/// What a cluster-mode `Server` keeps: its NATS cluster, its stream, the node the next request goes to,
/// and the highest position any node answered with (sent back as `Buildr-Min-Position`).
pub struct Nodes {
    nats: Arc<NatsCluster>,
    stream: String,
    next: AtomicUsize,
    position: AtomicU64,
}

impl Nodes {
    pub fn new() -> Nodes {
        Nodes {
            nats: shared_nats(),
            stream: format!(
                "e2e{}n{}",
                std::process::id(),
                STREAMS.fetch_add(1, Ordering::SeqCst)
            ),
            next: AtomicUsize::new(0),
            position: AtomicU64::new(0),
        }
    }

    /// The environment of node `i`.
    pub fn env(&self, i: usize) -> Vec<(String, String)> {
        vec![
            ("BUILDR_CLUSTER__NATS".into(), self.nats.urls().join(",")),
            ("BUILDR_CLUSTER__NODE_ID".into(), format!("node-{i}")),
            ("BUILDR_CLUSTER__STREAM".into(), self.stream.clone()),
            ("BUILDR_CLUSTER__LEASE_TTL".into(), LEASE_TTL.into()),
        ]
    }

    /// The node (index) the next request goes to.
    pub fn next_node(&self, nodes: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % nodes.max(1)
    }

    pub fn position(&self) -> u64 {
        self.position.load(Ordering::SeqCst)
    }

    pub fn saw_position(&self, p: u64) {
        self.position.fetch_max(p, Ordering::SeqCst);
    }

    /// Waits until the first node sees every node alive holding its share of the shards (so every webhook
    /// has an owner from the first request on).
    pub fn wait_balanced(&self, bases: &[String], token: &str) {
        let ids: Vec<String> = (0..bases.len()).map(|i| format!("node-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let auth = format!("Bearer {token}");
        let ok = crate::wait_until(Duration::from_secs(30), || {
            let (status, text) = request(
                &bases[0],
                "GET",
                "/api/2023-01/cluster",
                None,
                &[("Authorization", &auth)],
            );
            status == 200 && shards_balanced(&parse_shards(&text), &ids)
        });
        assert!(ok, "the cluster's shards did not settle within 30 s");
    }
}

impl Default for Nodes {
    fn default() -> Self {
        Self::new()
    }
}

/// A node of a cluster test: one `buildr-webhooks` on `nats`, stream `e2e`, named `id`.
pub fn node(nats: &NatsCluster, id: &str) -> Server {
    node_with(nats, id, &[])
}

/// [`node`] with more environment (`BUILDR_…` overrides, applied after the defaults).
pub fn node_with(nats: &NatsCluster, id: &str, env: &[(&str, &str)]) -> Server {
    let mut b = Server::builder()
        .env("BUILDR_CLUSTER__NATS", &nats.urls().join(","))
        .env("BUILDR_CLUSTER__NODE_ID", id)
        .env("BUILDR_CLUSTER__STREAM", "e2e")
        .env("BUILDR_CLUSTER__LEASE_TTL", LEASE_TTL);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start()
}

/// (node_id, shards) of each node in a `GET /cluster` answer.
fn parse_shards(text: &str) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    v["cluster"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["node_id"].as_str().unwrap_or_default().to_owned(),
                        n["shards"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `nodes` of `GET /cluster` on `s` as (node_id, shards).
pub fn shards(s: &Server) -> Vec<(String, u64)> {
    let (st, v) = s.call("GET", "/cluster", None);
    assert_eq!(st, 200, "{v}");
    parse_shards(&v.to_string())
}

/// Whether exactly `ids` are alive, holding all 64 shards between them, no node more than one above another.
fn shards_balanced(got: &[(String, u64)], ids: &[&str]) -> bool {
    let counts = || got.iter().map(|(_, n)| *n);
    let spread = counts().max().unwrap_or(0) - counts().min().unwrap_or(0);
    got.len() == ids.len()
        && got.iter().all(|(id, _)| ids.contains(&id.as_str()))
        && counts().sum::<u64>() == 64
        && spread <= 1
}

/// Whether `s` sees exactly `ids` alive, holding all 64 shards between them, no node more than one above another.
pub fn balanced(s: &Server, ids: &[&str]) -> bool {
    shards_balanced(&shards(s), ids)
}
