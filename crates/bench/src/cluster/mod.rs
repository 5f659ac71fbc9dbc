//! `make bench-cluster` (issue 11): the same binary in cluster mode, 1, 2 and 3 nodes over one real
//! 3-server JetStream cluster (nats-server from `make nats-server`, `sync_interval: always`, started by
//! `buildr_cluster::testkit`), against L-nats (raw R3 publishes of our record size) and the single-node
//! sled figures of the same run (the scenarios of `make bench`). Each scenario gets a stream of its own.

pub mod lnats;
pub mod scenarios;

use crate::api::{Api, Method};
use crate::procs::{Server, ADMIN_TOKEN};
use crate::scenarios::Ctx;
use anyhow::{Context, Result};
use buildr_cluster::testkit::NatsCluster;
use std::time::{Duration, Instant};

/// `cluster.shards` (the default the nodes run with).
pub const SHARDS: u64 = 64;

/// The takeover hold at the bench's rate limit (1,000,000/min: burst 16,667, refilled in 1 s, + 1 s).
const TAKEOVER_HOLD: Duration = Duration::from_millis(2_200);

/// Cluster nodes of one scenario: their processes and a client of each.
pub struct Nodes {
    pub servers: Vec<Server>,
    pub apis: Vec<Api>,
    /// Shards each node held once they settled (node id order).
    pub shards: Vec<u64>,
}

impl Nodes {
    /// `count` nodes on `nats`, stream `stream`, each on a fresh data dir; returns once every node is
    /// ready and the shards have settled (all held, none above its share; or after 60 s as they are).
    pub async fn start(
        ctx: &Ctx,
        nats: &NatsCluster,
        stream: &str,
        count: usize,
        lease_ttl: &str,
    ) -> Result<Nodes> {
        let urls = nats.urls().join(",");
        let mut servers = Vec::new();
        let mut apis = Vec::new();
        for i in 0..count {
            let dir = ctx.work_dir.join(format!("{stream}-node-{i}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot clear {}", dir.display()))?;
            }
            let node_id = format!("node-{i}");
            let mut env: Vec<(&str, &str)> = ctx
                .server_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            env.extend_from_slice(&[
                ("BUILDR_CLUSTER__NATS", urls.as_str()),
                ("BUILDR_CLUSTER__NODE_ID", node_id.as_str()),
                ("BUILDR_CLUSTER__STREAM", stream),
                ("BUILDR_CLUSTER__LEASE_TTL", lease_ttl),
            ]);
            let server = Server::start(&ctx.bins, &dir, &env)?;
            let api = Api::new(crate::api::client(512), &server.base, ADMIN_TOKEN);
            api.wait_ready(Duration::from_secs(60)).await?;
            servers.push(server);
            apis.push(api);
        }
        let mut nodes = Nodes {
            servers,
            apis,
            shards: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            nodes.shards = shard_counts(&nodes.apis[0]).await?;
            // Settled as the lease rounds settle (each node at most ceil(64 / n)); whether that is
            // within ±1 of even is reported, not waited for.
            let (floor, ceil) = (SHARDS / count as u64, SHARDS.div_ceil(count as u64));
            let settled = nodes.shards.len() == count
                && nodes.shards.iter().sum::<u64>() == SHARDS
                && nodes.shards.iter().all(|s| *s + 1 >= floor && *s <= ceil);
            if settled || Instant::now() >= deadline {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        // A node holds back a shard it took (at start-up too) for its webhooks' limiter refill time, 2 s at
        // the bench's rate limit (`SubscriptionActor::hold_after_takeover`): measure after it, not it.
        actix_rt::time::sleep(TAKEOVER_HOLD).await;
        Ok(nodes)
    }

    /// The client of node `i % count` (requests spread over the nodes).
    pub fn api(&self, i: u64) -> &Api {
        &self.apis[usize::try_from(i).unwrap_or(0) % self.apis.len()]
    }

    /// CPU seconds used so far by each node.
    pub fn cpu(&self) -> Result<Vec<f64>> {
        self.servers
            .iter()
            .map(|s| s.cpu_seconds().map(|c| c.process))
            .collect()
    }

    pub fn kill_all(&mut self) -> Result<()> {
        for s in &mut self.servers {
            s.kill9()?;
        }
        Ok(())
    }
}

/// Shards held by each live node (node id order), from `GET /cluster` on `api`.
pub async fn shard_counts(api: &Api) -> Result<Vec<u64>> {
    let v = api
        .send_expecting(Method::GET, "/cluster", None, 200, "GET /cluster")
        .await?;
    Ok(v["cluster"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["shards"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default())
}

/// Whether every node holds its even share of all the shards (`total / nodes`, not rounded) ±1.
pub fn balanced(shards: &[u64]) -> bool {
    let total: u64 = shards.iter().sum();
    let even = total as f64 / shards.len().max(1) as f64;
    total > 0 && shards.iter().all(|s| (*s as f64 - even).abs() <= 1.0)
}
