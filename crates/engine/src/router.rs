//! The Router: keeps one subscription actor per enabled webhook that has work, and hands each the events
//! it must deliver. Which webhook gets which event is decided by the projection (deterministically, in
//! log order); the router routes seq numbers, with the body of a freshly published event (made once,
//! shared by every webhook it fans out to).
//!
//! An actor is started when its webhook gets work (or has a backlog at start-up) and stopped when it
//! reports itself idle and nothing was sent to it since: an idle webhook costs no actor.

use crate::dispatcher::Outgoing;
use crate::ownership::Ownership;
use crate::projection::{Effect, Projection};
use crate::subscription::{Configure, Enqueue, Queued, SubscriptionActor, SubscriptionDeps};
use actix::prelude::*;
use buildr_core::WebhookId;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// What a log batch asks of the actors, with the bodies of the events it published (by seq); `upto` is
/// the batch's last seq.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Effects {
    pub effects: Vec<Effect>,
    pub bodies: HashMap<u64, Arc<Outgoing>>,
    pub upto: u64,
}

/// A subscription actor has had nothing to do for long enough; `enqueues` is how many `Enqueue`
/// messages it had handled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Idle {
    pub webhook: WebhookId,
    pub enqueues: u64,
}

struct Running {
    addr: Addr<SubscriptionActor>,
    /// `Enqueue` messages sent to it.
    enqueues: u64,
    /// The projection's seq when the actor was made from it: the deliveries of every batch up to it are
    /// already in its backlog, and enqueuing them again would send a finished one twice.
    from_seq: u64,
}

/// How many subscription actors are running (for metrics and tests).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ActiveSubscriptions;

pub struct Router {
    projection: Arc<RwLock<Projection>>,
    /// Which webhooks this node delivers.
    owner: Arc<dyn Ownership>,
    deps: Arc<SubscriptionDeps>,
    /// The delivery arbiters (threads) the subscription actors are spread over.
    arbiters: Vec<actix::ArbiterHandle>,
    next_arbiter: usize,
    subs: HashMap<WebhookId, Running>,
}

impl Router {
    pub fn new(
        projection: Arc<RwLock<Projection>>,
        deps: Arc<SubscriptionDeps>,
        arbiters: Vec<actix::ArbiterHandle>,
        owner: Arc<dyn Ownership>,
    ) -> Self {
        Self {
            projection,
            owner,
            deps,
            arbiters,
            next_arbiter: 0,
            subs: HashMap::new(),
        }
    }

    /// Reconfigures or stops the actor of `id` to match the projection, and starts one when the webhook
    /// is enabled and has undelivered events (with `bodies` for some of them).
    fn sync(
        &mut self,
        id: &WebhookId,
        bodies: HashMap<u64, Arc<Outgoing>>,
        ctx: &mut Context<Self>,
    ) {
        let projection = self.projection.read();
        match projection.webhook_by_id(id) {
            Some(entry)
                if !entry.webhook.disabled && !self.deps.config.paused && self.owner.owns(id) =>
            {
                match self.subs.get(id) {
                    Some(running) => running.addr.do_send(Configure(entry.webhook.clone())),
                    None if !entry.pending.is_empty() => {
                        let actor =
                            SubscriptionActor::new(entry, bodies, self.deps.clone(), ctx.address())
                                .hold_after_takeover(self.owner.taken_over_at(id));
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
                        self.subs.insert(
                            id.clone(),
                            Running {
                                addr,
                                enqueues: 0,
                                from_seq: projection.last_seq,
                            },
                        );
                    }
                    None => {}
                }
            }
            Some(entry) if !entry.webhook.disabled && !self.deps.config.paused => {
                // Another node owns it now: the actor records what it has in flight, then stops.
                if let Some(running) = self.subs.remove(id) {
                    running.addr.do_send(crate::subscription::Retire);
                }
            }
            _ => {
                // In-flight attempts of a stopped actor are abandoned and redone from the projection
                // when it is started again.
                if let Some(running) = self.subs.remove(id) {
                    running.addr.do_send(crate::subscription::Stop);
                }
            }
        }
    }

    /// Hands `seqs` (from the batch ending at `upto`) to the actor of `id`, starting it if needed.
    fn enqueue(&mut self, id: &WebhookId, seqs: Vec<Queued>, upto: u64, ctx: &mut Context<Self>) {
        match self.subs.get_mut(id) {
            // Made from a projection that already holds this batch: it has these seqs (and may have
            // delivered them already).
            Some(running) if running.from_seq >= upto => {}
            Some(running) => {
                running.enqueues += 1;
                running.addr.do_send(Enqueue(seqs));
            }
            None => {
                // The projection holds these seqs (it is applied before effects are sent); the new
                // actor takes them from there, with the bodies.
                let bodies = seqs
                    .into_iter()
                    .filter_map(|q| Some((q.seq, q.body?)))
                    .collect();
                self.sync(id, bodies, ctx);
            }
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        let me = ctx.address();
        self.owner.watch(Box::new(move || me.do_send(Reassess)));
        self.reassess(ctx);
    }
}

impl Router {
    /// Starts the actors of owned webhooks with a backlog, stops those of webhooks no longer owned.
    fn reassess(&mut self, ctx: &mut Context<Self>) {
        let mut ids: Vec<WebhookId> = self
            .projection
            .read()
            .all_webhooks()
            .filter(|e| !e.pending.is_empty())
            .map(|e| e.webhook.id.clone())
            .collect();
        ids.extend(self.subs.keys().cloned());
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        for id in ids {
            self.sync(&id, HashMap::new(), ctx);
        }
    }
}

/// Stops the router (and so drops its subscription actors' addresses and the log writer's).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRouter;

impl Handler<StopRouter> for Router {
    type Result = ();
    fn handle(&mut self, _: StopRouter, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Stops `router` when the actix system of the calling thread stops (its tasks are dropped then). The
/// router runs on the log writer's thread, whose system lasts as long as the log writer.
pub fn stop_with_this_system(router: Addr<Router>) {
    struct Guard(Addr<Router>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.do_send(StopRouter);
        }
    }
    let guard = Guard(router);
    actix_rt::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
}

/// Which webhooks this node owns may have changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reassess;

impl Handler<Reassess> for Router {
    type Result = ();
    fn handle(&mut self, _: Reassess, ctx: &mut Context<Self>) {
        self.reassess(ctx);
    }
}

impl Handler<Effects> for Router {
    type Result = ();

    fn handle(&mut self, msg: Effects, ctx: &mut Context<Self>) {
        let mut deliveries: HashMap<WebhookId, Vec<Queued>> = HashMap::new();
        for effect in msg.effects {
            match effect {
                Effect::Deliver {
                    webhook,
                    seq,
                    queued_at,
                } => {
                    let body = msg.bodies.get(&seq).cloned();
                    deliveries.entry(webhook).or_default().push(Queued {
                        seq,
                        queued_at,
                        body,
                    })
                }
                // The actor restarted it itself (it is what asked, or what held the attempt).
                Effect::Restarted { .. } => {}
                Effect::WebhookChanged(id) | Effect::WebhookRemoved(id) => {
                    // Deliveries routed before a change go out first, in order.
                    if let Some(seqs) = deliveries.remove(&id) {
                        self.enqueue(&id, seqs, msg.upto, ctx);
                    }
                    self.sync(&id, HashMap::new(), ctx);
                }
            }
        }
        for (id, seqs) in deliveries {
            self.enqueue(&id, seqs, msg.upto, ctx);
        }
    }
}

impl Handler<ActiveSubscriptions> for Router {
    type Result = usize;
    fn handle(&mut self, _: ActiveSubscriptions, _: &mut Context<Self>) -> usize {
        self.subs.len()
    }
}

impl Handler<Idle> for Router {
    type Result = ();
    fn handle(&mut self, msg: Idle, _: &mut Context<Self>) {
        // Only when nothing was sent after what it had seen: otherwise work is in its mailbox and it
        // reports again once that is done.
        if self
            .subs
            .get(&msg.webhook)
            .is_some_and(|r| r.enqueues == msg.enqueues)
        {
            if let Some(running) = self.subs.remove(&msg.webhook) {
                running.addr.do_send(crate::subscription::Stop);
            }
        }
    }
}
