//! The Router: keeps one subscription actor per enabled webhook and hands each the events it must
//! deliver. Which webhook gets which event is decided by the projection (deterministically, in log
//! order); the router only routes seq numbers, never payloads.

use crate::projection::{Effect, Projection};
use crate::subscription::{Configure, Enqueue, SubscriptionActor, SubscriptionDeps};
use actix::prelude::*;
use buildr_core::WebhookId;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Effects(pub Vec<Effect>);

/// How many subscription actors are running (for metrics and tests).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ActiveSubscriptions;

pub struct Router {
    projection: Arc<RwLock<Projection>>,
    deps: Arc<SubscriptionDeps>,
    /// The delivery arbiters (threads) the subscription actors are spread over.
    arbiters: Vec<actix::ArbiterHandle>,
    next_arbiter: usize,
    subs: HashMap<WebhookId, Addr<SubscriptionActor>>,
}

impl Router {
    pub fn new(
        projection: Arc<RwLock<Projection>>,
        deps: Arc<SubscriptionDeps>,
        arbiters: Vec<actix::ArbiterHandle>,
    ) -> Self {
        Self {
            projection,
            deps,
            arbiters,
            next_arbiter: 0,
            subs: HashMap::new(),
        }
    }

    /// Starts, reconfigures or stops the actor of `id` to match the projection.
    fn sync(&mut self, id: &WebhookId) {
        let projection = self.projection.read();
        match projection.webhook_by_id(id) {
            Some(entry) if !entry.webhook.disabled && !self.deps.config.paused => {
                match self.subs.get(id) {
                    Some(addr) => addr.do_send(Configure(entry.webhook.clone())),
                    None => {
                        let actor = SubscriptionActor::new(entry, self.deps.clone());
                        let addr = match self
                            .arbiters
                            .get(self.next_arbiter % self.arbiters.len().max(1))
                        {
                            Some(arbiter) => {
                                self.next_arbiter += 1;
                                SubscriptionActor::start_in_arbiter(arbiter, move |_| actor)
                            }
                            None => actor.start(),
                        };
                        self.subs.insert(id.clone(), addr);
                    }
                }
            }
            _ => {
                // Dropping the last address stops the actor once its mailbox is empty; its in-flight
                // attempts are abandoned and redone from the projection if it is started again.
                if let Some(addr) = self.subs.remove(id) {
                    addr.do_send(crate::subscription::Stop);
                }
            }
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX);
        let ids: Vec<WebhookId> = self
            .projection
            .read()
            .all_webhooks()
            .map(|e| e.webhook.id.clone())
            .collect();
        for id in ids {
            self.sync(&id);
        }
    }
}

impl Handler<Effects> for Router {
    type Result = ();

    fn handle(&mut self, msg: Effects, _: &mut Context<Self>) {
        let mut deliveries: HashMap<WebhookId, Vec<u64>> = HashMap::new();
        for effect in msg.0 {
            match effect {
                Effect::Deliver { webhook, seq } => {
                    deliveries.entry(webhook).or_default().push(seq)
                }
                Effect::WebhookChanged(id) | Effect::WebhookRemoved(id) => {
                    // Deliveries routed before a change go out first, in order.
                    if let Some(seqs) = deliveries.remove(&id) {
                        if let Some(addr) = self.subs.get(&id) {
                            addr.do_send(Enqueue(seqs));
                        }
                    }
                    self.sync(&id);
                }
            }
        }
        for (id, seqs) in deliveries {
            if let Some(addr) = self.subs.get(&id) {
                addr.do_send(Enqueue(seqs));
            }
        }
    }
}

impl Handler<ActiveSubscriptions> for Router {
    type Result = usize;
    fn handle(&mut self, _: ActiveSubscriptions, _: &mut Context<Self>) -> usize {
        self.subs.len()
    }
}
