//! Which webhooks this node delivers. One node owns every webhook; in cluster mode a node owns the
//! webhooks of the shards it holds a lease on, and only it runs their subscription actors (and so appends
//! their attempts). The router asks [`Ownership::owns`] before it starts an actor and re-checks every
//! webhook when told the answer may have changed.

use buildr_core::WebhookId;

pub trait Ownership: Send + Sync {
    /// Whether this node delivers `webhook` now.
    fn owns(&self, webhook: &WebhookId) -> bool;
    /// Called once by the engine: `changed` is to be called whenever [`Ownership::owns`] may answer
    /// differently (a lease gained or lost).
    fn watch(&self, changed: Box<dyn Fn() + Send + Sync>);
    /// When this node took `webhook` over from another (its shard's lease), if it did: its first send
    /// then waits for the rate limiter's refill time from that moment, so the webhook's rate bound holds
    /// across the failover. `None`: the webhook was never anyone else's (a single node).
    fn taken_over_at(&self, _webhook: &WebhookId) -> Option<std::time::Instant> {
        None
    }

    /// The cluster as this node sees it (`None` on a single node).
    fn cluster(&self) -> Option<ClusterStatus> {
        None
    }
}

/// The cluster as one node sees it (`GET /api/2023-01/cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: String,
    /// Every live node, by id.
    pub nodes: Vec<NodeStatus>,
    pub stream: String,
    /// The stream's last message seq.
    pub stream_last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: String,
    /// Shards whose lease it holds.
    pub shards: u32,
    /// Stream messages it has still to apply.
    pub lag: u64,
}

/// One node: every webhook is this node's.
pub struct OwnsAll;

impl Ownership for OwnsAll {
    fn owns(&self, _: &WebhookId) -> bool {
        true
    }

    fn watch(&self, _: Box<dyn Fn() + Send + Sync>) {}
}
