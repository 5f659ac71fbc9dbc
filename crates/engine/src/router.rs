//! The Router: keeps one subscription actor per enabled webhook that has work, and hands each the events
//! it must deliver. Which webhook gets which event is decided by the projection (deterministically, in
//! log order); the router routes seq numbers, with the body of a freshly published event (made once,
//! shared by every webhook it fans out to).
//!
//! An actor is started when its webhook gets work (or has a backlog at start-up) and stopped when it
//! reports itself idle and nothing was sent to it since: an idle webhook costs no actor.
//!
//! An actor is started only with a permit for its first attempt (see [`crate::permits`]): when none is
//! free the webhook waits for one in the permits' queue, in turn with the actors already running, and
//! its actor is made (from the projection, which holds its backlog) when the permit is granted. So a
//! burst to 100,000 webhooks runs about as many actors as attempts may be in flight, not 100,000. Those
//! actors stop as soon as they run out of work while many are running, and the router keeps the state of
//! a stopped actor's rate limiter until it is full again, for the webhook's next actor.

use crate::dispatcher::Outgoing;
use crate::limiter::LimiterState;
use crate::ownership::Ownership;
use crate::permits::{Grant, Key, Permit, SharedGrant};
use crate::projection::{Effect, Projection};
use crate::subscription::{Configure, Enqueue, Queued, SubscriptionActor, SubscriptionDeps};
use actix::prelude::*;
use buildr_core::WebhookId;
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

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
    /// Its rate limiter's state, when not full again yet.
    pub limiter: Option<LimiterState>,
}

/// The permit a webhook without an actor waited for: its actor can start.
#[derive(Message)]
#[rtype(result = "()")]
struct StartGranted {
    /// The webhook's permit key; its id too when its key is another waiting webhook's as well.
    key: Key,
    webhook: Option<WebhookId>,
    permit: Permit,
}

/// Webhooks waiting for a permit to start their actor, by permit key: the router's one shared grant
/// names the key only. A webhook whose key a waiting webhook has already (two ids, one hash) is kept by
/// id, and its grant names it.
#[derive(Default)]
struct Starting {
    by_key: HashMap<Key, WebhookId>,
    by_id: HashSet<WebhookId>,
}

impl Starting {
    fn contains(&self, key: Key, id: &WebhookId) -> bool {
        self.by_key.get(&key) == Some(id) || self.by_id.contains(id)
    }

    /// Whether a webhook with `key` must wait with a grant naming it (another one waits under its key).
    fn key_taken(&self, key: Key) -> bool {
        self.by_key.contains_key(&key)
    }

    /// Adds `id` (not waiting yet): under its key if free, else by id ([`Self::key_taken`] said so
    /// when its grant was made).
    fn insert(&mut self, key: Key, id: WebhookId) {
        if self.key_taken(key) {
            self.by_id.insert(id);
        } else {
            self.by_key.insert(key, id);
        }
    }

    /// The webhook a granted permit is for: the one the grant names, else the one waiting under `key`.
    fn take(&mut self, key: Key, named: Option<WebhookId>) -> Option<WebhookId> {
        match named {
            Some(id) => self.by_id.remove(&id).then_some(id),
            None => self.by_key.remove(&key),
        }
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.by_id.is_empty()
    }

    /// A burst's worth of room is not kept once it is over.
    fn shrink(&mut self) {
        if self.by_key.capacity() > 1024 {
            self.by_key.shrink_to(64);
        }
    }
}

/// At most this many event bodies are kept for webhooks waiting to start (the newest); the others read
/// theirs from the log when due.
const KEPT_BODIES: usize = 1024;

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
    /// Webhooks with work and no actor, waiting for a permit to start one (their grant is queued in
    /// the permits).
    starting: Starting,
    /// The router's shared grant (made when first needed: it holds the router's address).
    shared_grant: Option<SharedGrant>,
    /// Bodies of recent events for the webhooks in `starting`, by seq (at most [`KEPT_BODIES`]).
    bodies: BTreeMap<u64, Arc<Outgoing>>,
    /// The limiter state of stopped actors whose limiter was not full again yet, by permit key: the next
    /// actor of the webhook continues from it. Two webhooks sharing a key keep the stricter state of the
    /// two (never more sends than either's limiter allows). Entries past their time are dropped when the
    /// map has doubled.
    limiters: HashMap<Key, LimiterState>,
    prune_limiters_at: usize,
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
            starting: Starting::default(),
            shared_grant: None,
            bodies: BTreeMap::new(),
            limiters: HashMap::new(),
            prune_limiters_at: 1024,
        }
    }

    /// Keeps `bodies` for webhooks that wait to start (the newest [`KEPT_BODIES`]).
    fn keep_bodies(&mut self, bodies: HashMap<u64, Arc<Outgoing>>) {
        self.bodies.extend(bodies);
        while self.bodies.len() > KEPT_BODIES {
            self.bodies.pop_first();
        }
    }

    /// Notes how many actors run, for the actors' [`SubscriptionActor`] idle rule and metrics.
    fn count_live(&mut self) {
        self.deps.live.store(self.subs.len(), Ordering::Relaxed);
        // A burst's worth of entries is not kept once it is over.
        if self.subs.is_empty() && self.subs.capacity() > 1024 {
            self.subs.shrink_to(64);
        }
        if self.starting.is_empty() {
            self.starting.shrink();
            self.bodies.clear();
        }
    }

    /// Stops the actor of `id` (it reported itself idle), keeping its limiter's state if it is not full.
    fn keep_limiter(&mut self, id: &WebhookId, state: LimiterState) {
        let now = Instant::now();
        if state <= now {
            return;
        }
        self.limiters
            .entry(crate::permits::key_of(id))
            .and_modify(|at| *at = (*at).max(state))
            .or_insert(state);
        if self.limiters.len() >= self.prune_limiters_at {
            self.limiters.retain(|_, at| *at > now);
            self.limiters.shrink_to_fit();
            self.prune_limiters_at = (self.limiters.len() * 2).max(1024);
        }
    }

    /// The grant every webhook waiting to start shares (see [`Grant::Shared`]).
    fn shared_grant(&mut self, ctx: &Context<Self>) -> Grant {
        let shared = self.shared_grant.get_or_insert_with(|| {
            let me = ctx.address();
            Arc::new(move |key, permit| grant(&me, key, None, permit))
        });
        Grant::Shared(shared.clone())
    }

    /// Reconfigures or stops the actor of `id` to match the projection, and starts one when the webhook
    /// is enabled and has undelivered events (with `bodies` for some of them).
    fn sync(
        &mut self,
        id: &WebhookId,
        bodies: HashMap<u64, Arc<Outgoing>>,
        ctx: &mut Context<Self>,
    ) {
        let shared = self.projection.clone();
        let projection = shared.read();
        match projection.webhook_by_id(id) {
            Some(entry)
                if !entry.webhook.disabled && !self.deps.config.paused && self.owner.owns(id) =>
            {
                match self.subs.get(id) {
                    Some(running) => running.addr.do_send(Configure(entry.webhook.clone())),
                    None if !entry.pending.is_empty() => {
                        let key = crate::permits::key_of(id);
                        if self.starting.contains(key, id) {
                            // Already waiting for a permit; the actor takes the backlog as it is then.
                            drop(projection);
                            return self.keep_bodies(bodies);
                        }
                        let host = crate::permits::host_of(&entry.webhook.url);
                        // The shared grant, unless another waiting webhook has this key.
                        let waiter_grant = if self.starting.key_taken(key) {
                            let (me, waiter) = (ctx.address(), id.clone());
                            Grant::once(move |permit| grant(&me, key, Some(waiter), permit))
                        } else {
                            self.shared_grant(ctx)
                        };
                        let permit = self
                            .deps
                            .permits
                            .acquire_or_wait(&host, key, move || waiter_grant);
                        drop(projection);
                        match permit {
                            Some(permit) => self.start(id, bodies, permit, ctx),
                            None => {
                                self.starting.insert(key, id.clone());
                                self.keep_bodies(bodies);
                            }
                        }
                    }
                    None => {}
                }
            }
            Some(entry) if !entry.webhook.disabled && !self.deps.config.paused => {
                // Another node owns it now: the actor records what it has in flight, then stops.
                if let Some(running) = self.subs.remove(id) {
                    running.addr.do_send(crate::subscription::Retire);
                    self.count_live();
                }
            }
            _ => {
                // In-flight attempts of a stopped actor are abandoned and redone from the projection
                // when it is started again.
                if let Some(running) = self.subs.remove(id) {
                    running.addr.do_send(crate::subscription::Stop);
                    self.count_live();
                }
            }
        }
    }

    /// Starts the actor of `id` with `permit` for its first attempt, if the webhook still has work it may
    /// deliver (otherwise the permit goes to the next waiter).
    fn start(
        &mut self,
        id: &WebhookId,
        mut bodies: HashMap<u64, Arc<Outgoing>>,
        permit: Permit,
        ctx: &mut Context<Self>,
    ) {
        let projection = self.projection.read();
        let Some(entry) = projection.webhook_by_id(id) else {
            return;
        };
        if self.subs.contains_key(id)
            || entry.pending.is_empty()
            || entry.webhook.disabled
            || self.deps.config.paused
            || !self.owner.owns(id)
        {
            return;
        }
        // Bodies kept while it waited, for the seqs it has.
        if let (Some(first), Some(last)) =
            (entry.pending.keys().next(), entry.pending.keys().last())
        {
            for (seq, body) in self.bodies.range(*first..=*last) {
                if entry.pending.contains_key(seq) {
                    bodies.entry(*seq).or_insert_with(|| body.clone());
                }
            }
        }
        let actor = SubscriptionActor::new(entry, bodies, self.deps.clone(), ctx.address())
            .hold_after_takeover(self.owner.taken_over_at(id))
            .resume_limiter(self.limiters.remove(&crate::permits::key_of(id)))
            .with_permit(Some(permit));
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
        drop(projection);
        self.count_live();
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
                    let queued = Queued {
                        seq,
                        queued_at,
                        body,
                    };
                    if self.subs.contains_key(&webhook) {
                        deliveries.entry(webhook).or_default().push(queued);
                    } else {
                        // No actor: one is started (or waits for a permit) with the backlog the
                        // projection holds, so nothing needs gathering for it (a fan-out to many
                        // webhooks builds no map here).
                        self.enqueue(&webhook, vec![queued], msg.upto, ctx);
                    }
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
                self.count_live();
                if let Some(state) = msg.limiter {
                    self.keep_limiter(&msg.webhook, state);
                }
            }
        }
    }
}

impl Handler<StartGranted> for Router {
    type Result = ();
    fn handle(&mut self, msg: StartGranted, ctx: &mut Context<Self>) {
        if let Some(id) = self.starting.take(msg.key, msg.webhook) {
            self.start(&id, HashMap::new(), msg.permit, ctx);
            self.count_live();
        }
    }
}

/// Hands a permit granted to `webhook` (waiting to start) to the router; gives it back if the router is
/// gone. Never refused for a full mailbox: the webhook's turn would be lost.
fn grant(
    router: &Addr<Router>,
    key: Key,
    webhook: Option<WebhookId>,
    permit: Permit,
) -> Result<(), Permit> {
    match router.try_send(StartGranted {
        key,
        webhook,
        permit,
    }) {
        Ok(()) => Ok(()),
        Err(SendError::Full(msg)) => {
            router.do_send(msg);
            Ok(())
        }
        Err(SendError::Closed(msg)) => Err(msg.permit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> WebhookId {
        s.parse().expect("a valid webhook id")
    }

    #[test]
    fn webhooks_sharing_a_permit_key_each_start_once() {
        let mut w = Starting::default();
        let (a, b, c) = (id("wh_a1"), id("wh_b2"), id("wh_c3"));
        // a and b share key 7 (a hash collision); c has its own.
        assert!(!w.key_taken(7));
        w.insert(7, a.clone());
        assert!(w.key_taken(7), "b's grant must name it");
        w.insert(7, b.clone());
        w.insert(9, c.clone());
        assert!(w.contains(7, &a) && w.contains(7, &b) && w.contains(9, &c));
        assert!(!w.contains(7, &c) && !w.contains(8, &a));
        // b's named grant starts b, not a; the shared grant of key 7 starts a.
        assert_eq!(w.take(7, Some(b.clone())), Some(b.clone()));
        assert_eq!(w.take(7, Some(b.clone())), None, "started once");
        assert!(w.contains(7, &a) && !w.contains(7, &b));
        // b again, with a started first: it still waits by id until its own grant comes.
        w.insert(7, b.clone());
        assert_eq!(w.take(7, None), Some(a.clone()));
        assert!(w.contains(7, &b), "b waits for its named grant");
        assert_eq!(w.take(7, None), None);
        assert_eq!(w.take(7, Some(b.clone())), Some(b.clone()));
        assert!(!w.is_empty());
        assert_eq!(w.take(9, None), Some(c));
        assert!(w.is_empty());
    }
}
