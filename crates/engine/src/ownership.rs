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
}

/// One node: every webhook is this node's.
pub struct OwnsAll;

impl Ownership for OwnsAll {
    fn owns(&self, _: &WebhookId) -> bool {
        true
    }

    fn watch(&self, _: Box<dyn Fn() + Send + Sync>) {}
}
