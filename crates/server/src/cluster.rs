//! Cluster mode's start-up: the JetStream log and the shard leases the engine runs on when `cluster.nats`
//! is set. The engine itself is the same in both modes.

use crate::config::Config;
use anyhow::{Context, Result};
use buildr_cluster::{ClusterAdmin, JetStreamConfig, JetStreamLog, LeaseConfig, Leases};
use buildr_core::WebhookId;
use buildr_engine::{ClusterStatus, NodeStatus, Ownership};
use buildr_log::{LogStore, OpenReport};
use std::sync::Arc;
use std::time::Duration;

/// How long start-up waits for NATS before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The log and ownership of a cluster node.
pub struct ClusterStorage {
    pub log: Arc<dyn LogStore>,
    pub open: OpenReport,
    pub owner: Arc<dyn Ownership>,
    /// Released on a clean stop.
    pub leases: Leases,
    /// The cluster's admin token (by hash) when none is configured, with the token itself when this
    /// node generated it.
    pub admin: Option<(ClusterAdmin, Option<String>)>,
}

/// Connects to the stream (creating it when missing) and starts keeping this node's leases; `None` in
/// single-node mode.
pub fn open(cfg: &Config) -> Result<Option<ClusterStorage>> {
    let c = &cfg.cluster;
    if !c.enabled() {
        return Ok(None);
    }
    let node_id = c.node_id();
    let js = JetStreamConfig {
        servers: c.nats.clone(),
        node_id: node_id.clone(),
        stream: c.stream.clone(),
        replicas: c.replicas,
        dir: cfg.storage.path.clone(),
        storage: cfg.engine().storage,
        connect_timeout: CONNECT_TIMEOUT,
        duplicate_window: cfg.ingest.idempotency_ttl.0,
    };
    let (log, open) = JetStreamLog::open(&js).with_context(|| {
        format!(
            "cannot open the cluster's stream {:?} on {}",
            c.stream,
            c.nats.join(",")
        )
    })?;
    // No token configured: the cluster's, stored (as a hash) by the first node that started without one.
    let admin = match crate::config::configured_admin_token(cfg) {
        Some(_) => None,
        None => {
            let token = crate::config::generate_admin_token();
            let admin = log
                .cluster_admin(
                    buildr_api::auth::AdminToken::sha256(&token),
                    c.replicas,
                    CONNECT_TIMEOUT,
                )
                .context("cannot read or store the cluster's admin token")?;
            Some((admin, admin.generated_here.then_some(token)))
        }
    };
    let leases = log.leases(LeaseConfig {
        node_id,
        stream: c.stream.clone(),
        shards: c.shards,
        ttl: c.lease_ttl.0,
        replicas: c.replicas,
    });
    Ok(Some(ClusterStorage {
        log: Arc::new(log),
        open,
        owner: Arc::new(LeaseOwnership {
            leases: leases.clone(),
            stream: c.stream.clone(),
        }),
        leases,
        admin,
    }))
}

/// The cluster's stream read into a fresh local copy in `dir` (for `log verify` while the nodes run).
pub fn copy_of_stream(cfg: &Config, dir: &std::path::Path) -> Result<JetStreamLog> {
    let c = &cfg.cluster;
    let js = JetStreamConfig {
        servers: c.nats.clone(),
        node_id: format!("{}-verify", c.node_id()),
        stream: c.stream.clone(),
        replicas: c.replicas,
        dir: dir.to_path_buf(),
        storage: cfg.engine().storage,
        connect_timeout: CONNECT_TIMEOUT,
        duplicate_window: cfg.ingest.idempotency_ttl.0,
    };
    let (log, _) = JetStreamLog::open(&js)
        .with_context(|| format!("cannot open the cluster's stream {:?}", c.stream))?;
    log.follow(0, Box::new(|| {}))?;
    // Wait until the copy holds the whole stream; what is handed out is not needed here.
    let mut handed = log.catch_up(true)?;
    while !handed.is_empty() {
        handed = log.catch_up(false)?;
    }
    Ok(log)
}

/// Waits (at most `bound`) until no delivery attempt is under way; whether none is. An attempt's permit is
/// freed just before its outcome is handed to the log writer, so a short settle follows the last one.
pub async fn wait_for_attempts_in_flight(
    engine: &buildr_engine::Engine,
    bound: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if engine.attempts_in_flight().unwrap_or(0) == 0 {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            if engine.attempts_in_flight().unwrap_or(0) == 0 {
                return true;
            }
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node delivers the webhooks of the shards it leases.
struct LeaseOwnership {
    leases: Leases,
    stream: String,
}

impl Ownership for LeaseOwnership {
    fn owns(&self, webhook: &WebhookId) -> bool {
        self.leases.owns(webhook.as_str())
    }

    fn watch(&self, changed: Box<dyn Fn() + Send + Sync>) {
        self.leases.on_change(changed);
    }

    fn taken_over_at(&self, webhook: &WebhookId) -> Option<std::time::Instant> {
        self.leases.taken_at(webhook.as_str())
    }

    fn cluster(&self) -> Option<ClusterStatus> {
        let m = self.leases.membership();
        Some(ClusterStatus {
            node_id: self.leases.node_id().to_owned(),
            nodes: m
                .nodes
                .iter()
                .map(|(id, (shards, applied))| NodeStatus {
                    node_id: id.clone(),
                    shards: *shards,
                    lag: m.stream_last_seq.saturating_sub(*applied),
                })
                .collect(),
            stream: self.stream.clone(),
            stream_last_seq: m.stream_last_seq,
        })
    }
}
