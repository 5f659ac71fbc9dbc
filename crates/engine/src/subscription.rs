//! One actor per enabled webhook with work to do. It alone owns the webhook's rate limiter (governor), its
//! backlog of undelivered seqs, the attempts in flight and the retry timers. A slow or dead receiver only
//! slows its own actor. Every attempt's outcome is sent to the LogActor as a fact; nothing here is the
//! truth after a crash: the actor is rebuilt from the projection.
//!
//! Actors are started by the router when a webhook gets work and stop when they have been idle long
//! enough for their limiter to be full again (see [`SubscriptionActor::idle_stop_after`]), so a fresh
//! limiter on the next start allows nothing the old one would not have: idle webhooks cost no actor.

use crate::backlog::Backlog;
use crate::config::DeliveryConfig;
use crate::dispatcher::{AttemptClass, AttemptResult, Dispatcher, Outgoing};
use crate::limiter::{burst, Limiter, LimiterState};
use crate::log_actor::{FactInbox, LogActor, Submit};
use crate::permits::{Permit, Permits};
use crate::projection::WebhookEntry;
use crate::router::{Idle, Router};
use actix::prelude::*;
use buildr_core::{
    AttemptOutcome, AttemptRecord, DeliveryOrder, DisabledReason, EventId, Record, Secret,
    Timestamp, Webhook, WebhookChanges,
};
use buildr_log::LogStore;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every subscription actor shares. The actors are spread over the delivery arbiters (one per core);
/// each arbiter thread has its own awc client ([`Dispatcher::for_this_thread`]).
pub struct SubscriptionDeps {
    pub log: Arc<dyn LogStore>,
    pub log_actor: Addr<LogActor>,
    /// Where outcomes nobody waits for go (a FIFO webhook's are `Submit`ted to `log_actor`).
    pub facts: FactInbox,
    pub config: DeliveryConfig,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The bound on attempts in flight per destination host and in all (see [`crate::permits`]).
    pub permits: Arc<Permits>,
    /// How many subscription actors are running (kept by the router). Above
    /// `delivery.max_in_flight_total` an actor that runs out of work stops at once (see
    /// [`SubscriptionActor::crowded`]).
    pub live: AtomicUsize,
}

/// Deliver these seqs, with the body to send when the router has it (freshly published events); otherwise
/// it is read from the log when due. A seq the actor already holds was replayed: its delivery starts again
/// (at once, or after the attempt in flight ends).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Vec<Queued>);

/// One delivery to make: the event at `seq`, queued by the record at `queued_at` (the event itself, or a
/// replay), with its body when the router has it.
pub struct Queued {
    pub seq: u64,
    pub queued_at: u64,
    pub body: Option<Arc<Outgoing>>,
}

/// At most this many bodies are held per actor; the rest of a long backlog is read from the log when due,
/// so a receiver that is down never makes the server hold its backlog's bodies in memory.
const HELD_BODIES: usize = 1024;

/// New settings for the webhook (URL, rate limit, secret…).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Configure(pub Webhook);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// This node no longer owns the webhook (its shard's lease moved, see [`crate::Ownership`]): the actor
/// sends nothing more, records the outcome of each attempt already in flight when it ends (the new owner
/// may send those again: at least once, and the delivery records count both), then stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// The permit this actor queued for (see [`crate::permits`]).
#[derive(Message)]
#[rtype(result = "()")]
struct Granted(Permit);

pub struct SubscriptionActor {
    webhook: Webhook,
    deps: Arc<SubscriptionDeps>,
    router: Addr<Router>,
    limiter: Limiter,
    /// The keys that sign now (the current secret, and the previous one during a rotation overlap), and
    /// when that set changes next.
    keys: (Arc<[Secret]>, Option<Timestamp>),
    /// Every undelivered seq this actor owns, in delivery order.
    backlog: Backlog,
    /// Bodies of some of the due seqs, handed over by the router (at most [`HELD_BODIES`]).
    bodies: HashMap<u64, Arc<Outgoing>>,
    in_flight: HashSet<u64>,
    /// Replayed (by the replay at the value) while in flight, or in FIFO order while held: started again
    /// once the attempt in flight (FIFO: the delivery) ends.
    again: HashMap<u64, u64>,
    /// FIFO: outcomes sent to the log and not yet durable. The next delivery starts only once they are,
    /// so a crash can never make the receiver see an earlier event again after a later one.
    committing: usize,
    failing_since: Option<Timestamp>,
    wake: Option<(Instant, SpawnHandle)>,
    /// Set once the actor asked for its webhook to be disabled: it sends nothing more.
    disabling: bool,
    /// Set by [`Retire`]: sends nothing more, stops once nothing is in flight or being recorded.
    retiring: bool,
    /// `Enqueue` messages handled (the router stops an idle actor only if it has sent no more than this).
    enqueues: u64,
    /// When the actor last ran out of work (`None` while it has some).
    idle_since: Option<Instant>,
    /// The idle check is scheduled (one timer at a time: actix polls every pending timer of an actor on
    /// each of its wake-ups, so a timer per idle spell made a busy actor's every message cost thousands).
    idle_timer: bool,
    /// Nothing is sent before this (a webhook taken over from another node: see [`Self::hold_after_takeover`]).
    not_before: Option<Instant>,
    /// The destination of the webhook's URL, as permits count it.
    host: Arc<str>,
    /// The webhook's id, as permits count what each webhook holds of a host.
    permit_key: crate::permits::Key,
    /// Queued for a permit (at most once at a time: webhooks take turns).
    awaiting_permit: bool,
    /// A permit granted after a wait, for the pump that follows.
    granted: Option<Permit>,
}

/// The keys that sign a message sent at `now`, and when that changes (the end of a rotation overlap).
fn signing_keys(webhook: &Webhook, now: Timestamp) -> (Arc<[Secret]>, Option<Timestamp>) {
    let keys: Arc<[Secret]> = webhook.signing_secrets(now).into_iter().cloned().collect();
    let changes_at = webhook
        .previous_secret
        .as_deref()
        .map(|(_, until)| *until)
        .filter(|until| *until > now);
    (keys, changes_at)
}

impl SubscriptionActor {
    /// The actor of `entry`'s webhook with its backlog, holding `bodies` for some of it.
    pub fn new(
        entry: &WebhookEntry,
        mut bodies: HashMap<u64, Arc<Outgoing>>,
        deps: Arc<SubscriptionDeps>,
        router: Addr<Router>,
    ) -> Self {
        bodies.retain(|seq, _| entry.pending.get(seq).is_some_and(|p| p.attempts == 0));
        if bodies.len() > HELD_BODIES {
            bodies = bodies.into_iter().take(HELD_BODIES).collect();
        }
        let now = Timestamp::now();
        let mut actor = Self {
            webhook: entry.webhook.clone(),
            limiter: Limiter::per_minute(entry.webhook.rate_limit),
            keys: signing_keys(&entry.webhook, now),
            deps,
            router,
            backlog: Backlog::with_capacity(entry.pending.len()),
            bodies,
            in_flight: HashSet::new(),
            again: HashMap::new(),
            committing: 0,
            failing_since: entry.failing_since,
            wake: None,
            disabling: false,
            retiring: false,
            enqueues: 0,
            idle_since: None,
            idle_timer: false,
            not_before: None,
            host: crate::permits::host_of(&entry.webhook.url),
            permit_key: crate::permits::key_of(&entry.webhook.id),
            awaiting_permit: false,
            granted: None,
        };
        let mut restarted = Vec::new();
        for (&seq, p) in entry.pending.iter() {
            actor
                .backlog
                .hold(seq, p.queued_at, p.attempts, p.next_at, now);
            // Replayed and not yet restarted (nothing of it is in flight now).
            if let Some(replay) = p.replayed {
                actor.replayed(seq, replay, &mut restarted);
            }
        }
        if !restarted.is_empty() {
            actor.deps.facts.record(restarted);
        }
        actor
    }

    fn fifo(&self) -> bool {
        self.webhook.ordering == DeliveryOrder::Fifo
    }

    fn restart_fact(&self, seq: u64, replay: u64) -> Record {
        Record::DeliveryRestarted {
            webhook: self.webhook.id.clone(),
            seq,
            replay,
            at: Timestamp::now(),
        }
    }

    /// The replay at `replay` named `seq`, which this actor holds: its delivery starts again from the first
    /// attempt, queued at the replay (with a fact saying so). In parallel mode that is at once, or when an
    /// attempt is in flight, once it ends; in FIFO order once this delivery has ended (it keeps its place
    /// until then, so nothing later passes it).
    fn replayed(&mut self, seq: u64, replay: u64, facts: &mut Vec<Record>) {
        if self.fifo() || self.in_flight.contains(&seq) {
            self.again.insert(seq, replay);
            return;
        }
        // Restarted now for this (latest) replay: one that waited from FIFO days is answered too.
        self.again.remove(&seq);
        self.backlog.restart(seq, replay);
        facts.push(self.restart_fact(seq, replay));
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.retiring {
            if self.in_flight.is_empty() && self.committing == 0 {
                ctx.stop();
            }
            return;
        }
        if self.disabling {
            return;
        }
        if let Some(at) = self.not_before {
            let left = at.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return self.wake_in(ctx, left);
            }
            self.not_before = None;
        }
        let now = Timestamp::now();
        self.backlog.release_due(now);
        // FIFO: one attempt at a time, the next only once the last outcome is durable.
        let (fifo, most) = match self.fifo() {
            true => (true, 1),
            false => (false, self.deps.config.max_in_flight),
        };
        while self.in_flight.len() < most && !(fifo && self.committing > 0) {
            let Some(seq) = self.backlog.next_due(fifo) else {
                break;
            };
            // The permit first, then the rate-limit token: a wait for a permit never spends a token, so
            // the limiter's bound holds for what is actually sent.
            let Some(permit) = self.permit(ctx) else {
                break;
            };
            if let Err(wait) = self.limiter.check() {
                self.wake_in(ctx, wait);
                break;
            }
            self.backlog.start(seq);
            self.dispatch(seq, permit, ctx);
        }
        if let Some(t) = self.backlog.next_retry() {
            self.wake_in(ctx, now.until(t));
        }
        self.note_idle(ctx);
    }

    /// A permit for one attempt: the one granted after a wait, or a free one now; `None` when none is free
    /// (the actor is then queued and pumps again when [`Granted`]).
    fn permit(&mut self, ctx: &mut Context<Self>) -> Option<Permit> {
        if let Some(p) = self.granted.take() {
            return Some(p);
        }
        if self.awaiting_permit {
            return None;
        }
        let me = ctx.address();
        let permit = self
            .deps
            .permits
            .acquire_or_wait(&self.host, self.permit_key, || {
                crate::permits::Grant::once(move |p| {
                    me.try_send(Granted(p)).map_err(|e| e.into_inner().0)
                })
            });
        self.awaiting_permit = permit.is_none();
        permit
    }

    /// Holds every send until the limiter's refill time has passed since `taken_over_at` (when this node
    /// took the webhook over from another, which may have used its whole burst just before): the same rule
    /// as the idle stop, so a fresh limiter never lets more through than the old one would have.
    pub fn hold_after_takeover(mut self, taken_over_at: Option<Instant>) -> Self {
        self.not_before = taken_over_at
            .map(|t| t + Self::idle_stop_after(self.webhook.rate_limit, Duration::ZERO));
        self
    }

    /// Continues the rate limiter of the webhook's previous actor, stopped before its limiter was full
    /// again (the router kept its state): a restarted actor never gets a fresh burst.
    pub fn resume_limiter(mut self, state: Option<LimiterState>) -> Self {
        self.limiter = self.limiter.resume(state);
        self
    }

    /// Starts with `permit` (the router waited for it before starting the actor): its first attempt
    /// uses it. One for another destination (the URL changed meanwhile) is handed on at once.
    pub fn with_permit(mut self, permit: Option<Permit>) -> Self {
        self.granted = permit.filter(|p| p.host() == &*self.host);
        self
    }

    /// More actors are running than attempts may be in flight in all: an actor that runs out of work
    /// stops at once (its limiter's state kept by the router) rather than after `idle_stop`, so a burst
    /// to many webhooks holds about as many actors as it has attempts in flight.
    fn crowded(&self) -> bool {
        self.deps.live.load(Ordering::Relaxed) > self.deps.config.max_in_flight_total
    }

    /// How long the actor must have been idle before it may stop: long enough for its limiter to have
    /// refilled its whole burst (so the next actor's fresh limiter allows nothing more), and at least
    /// `delivery.idle_stop`.
    pub fn idle_stop_after(rate_limit: u32, idle_stop: Duration) -> Duration {
        let rate = u64::from(rate_limit.max(1));
        let refill = Duration::from_millis(u64::from(burst(rate_limit)) * 60_000 / rate + 1_000);
        refill.max(idle_stop)
    }

    /// Starts the idle clock when the actor has nothing left; when it has stayed idle long enough, tells
    /// the router, which stops it unless more work is on its way.
    fn note_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.backlog.is_idle() && self.in_flight.is_empty() && self.committing == 0;
        if !idle || self.disabling {
            self.idle_since = None;
            return;
        }
        if self.idle_since.is_some() {
            return;
        }
        self.idle_since = Some(Instant::now());
        if self.crowded() {
            return self.report_idle();
        }
        let after = Self::idle_stop_after(self.webhook.rate_limit, self.deps.config.idle_stop);
        self.check_idle_in(after, ctx);
    }

    /// Tells the router the actor is idle, with its limiter's state (`None` once full again).
    fn report_idle(&self) {
        self.router.do_send(Idle {
            webhook: self.webhook.id.clone(),
            enqueues: self.enqueues,
            limiter: self.limiter.state(Instant::now()),
        });
    }

    /// Checks after `d` whether the actor has been idle for its whole idle time; if it has been busy
    /// meanwhile and is idle again, the same timer checks again when that idle spell is long enough.
    fn check_idle_in(&mut self, d: Duration, ctx: &mut Context<Self>) {
        if self.idle_timer {
            return;
        }
        self.idle_timer = true;
        ctx.run_later(d, |act, ctx| {
            act.idle_timer = false;
            let Some(since) = act.idle_since else {
                return;
            };
            let after = Self::idle_stop_after(act.webhook.rate_limit, act.deps.config.idle_stop);
            match after.checked_sub(since.elapsed()) {
                Some(left) if !left.is_zero() => act.check_idle_in(left, ctx),
                _ => act.report_idle(),
            }
        });
    }

    /// The keys to sign with now.
    fn keys(&mut self) -> Arc<[Secret]> {
        let now = Timestamp::now();
        if self.keys.1.is_some_and(|at| at <= now) {
            self.keys = signing_keys(&self.webhook, now);
        }
        self.keys.0.clone()
    }

    /// Makes sure the actor pumps again within `d` (keeps an earlier wake-up if one is set).
    fn wake_in(&mut self, ctx: &mut Context<Self>, d: Duration) {
        let at = Instant::now() + d;
        if let Some((existing, handle)) = self.wake {
            if existing <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(d, |act, ctx| {
            act.wake = None;
            act.pump(ctx);
        });
        self.wake = Some((at, handle));
    }

    /// The body of the event at `seq`: the one handed over, or read from the log.
    fn body(&mut self, seq: u64) -> Result<Arc<Outgoing>, Option<buildr_log::LogError>> {
        if let Some(body) = self.bodies.remove(&seq) {
            return Ok(body);
        }
        match self.deps.log.get(seq) {
            Ok(Some(Record::EventPublished(e))) => Ok(Outgoing::from_record(&e)),
            Ok(_) => Err(None),
            Err(e) => Err(Some(e)),
        }
    }

    fn dispatch(&mut self, seq: u64, permit: Permit, ctx: &mut Context<Self>) {
        let event = match self.body(seq) {
            Ok(event) => event,
            Err(None) => {
                tracing::warn!(webhook = %self.webhook.id, seq, "event no longer in the log; dropped from the backlog");
                self.backlog.remove(seq);
                self.again.remove(&seq);
                return;
            }
            Err(Some(e)) => {
                tracing::error!(webhook = %self.webhook.id, seq, error = %e, "cannot read event; will try again");
                self.backlog
                    .wait_until(seq, Timestamp::now().plus(Duration::from_secs(1)));
                return;
            }
        };
        self.in_flight.insert(seq);
        let dispatcher = Dispatcher::for_this_thread(&self.deps.config);
        let url = self.webhook.url.clone();
        let keys = self.keys();
        let attempt = async move {
            let result = dispatcher.attempt(&url, &keys, &event).await;
            drop(permit);
            (result, event.id.clone())
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(move |(result, event_id), act, ctx| {
                    act.finished(seq, event_id, result, ctx);
                    act.pump(ctx);
                }),
        );
    }

    fn finished(&mut self, seq: u64, event_id: EventId, r: AttemptResult, ctx: &mut Context<Self>) {
        self.in_flight.remove(&seq);
        let Some(attempt) = self.backlog.attempted(seq) else {
            return;
        };
        let cfg = &self.deps.config;
        let mut disable = None;
        let outcome = match r.class {
            AttemptClass::Delivered => {
                self.backlog.remove(seq);
                self.failing_since = None;
                AttemptOutcome::Succeeded
            }
            AttemptClass::Gone | AttemptClass::Failed { .. } => {
                let retry_after = match r.class {
                    AttemptClass::Failed { retry_after } => retry_after,
                    _ => None,
                };
                let since = *self.failing_since.get_or_insert(r.at);
                if r.class == AttemptClass::Gone {
                    disable = Some(DisabledReason::Gone);
                } else if since.until(r.at) >= cfg.disable_after {
                    disable = Some(DisabledReason::Failing);
                }
                match cfg
                    .retry
                    .delay_after(attempt, retry_after, &mut rand::thread_rng())
                {
                    Some(d) => {
                        // The wait counts from the end of the failed attempt (its answer, timeout or
                        // error), as `Retry-After` does: a slow failure never shortens the next step.
                        let next_at = r.at.plus(r.duration).plus(d);
                        self.backlog.wait_until(seq, next_at);
                        AttemptOutcome::Retrying { next_at }
                    }
                    None => {
                        self.backlog.remove(seq);
                        AttemptOutcome::Failed
                    }
                }
            }
        };
        let m = &self.deps.metrics;
        m.attempt_seconds.observe(r.duration.as_secs_f64());
        let label = match outcome {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retrying { .. } => "retrying",
            AttemptOutcome::Failed => "failed",
        };
        m.attempts.with_label_values(&[label]).inc();
        // Replayed while held: it starts again now, queued at the replay (in FIFO order only once this
        // delivery has ended, so it never lets a later event pass a failing one).
        let ends = !matches!(outcome, AttemptOutcome::Retrying { .. });
        let restart = match self.again.get(&seq) {
            Some(&replay) if ends || !self.fifo() => {
                self.again.remove(&seq);
                self.backlog.restart(seq, replay);
                Some(replay)
            }
            _ => None,
        };
        if label == "retrying" {
            m.retries_scheduled.inc();
        }
        let mut facts = vec![Record::DeliveryAttempted(AttemptRecord {
            webhook: self.webhook.id.clone(),
            seq,
            event_id,
            attempt,
            at: r.at,
            response_status: r.status,
            response_body: r.body,
            error: r.error,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            outcome,
        })];
        if let Some(replay) = restart {
            facts.push(self.restart_fact(seq, replay));
        }
        if let (Some(reason), false) = (disable, self.disabling) {
            tracing::warn!(webhook = %self.webhook.id, reason = reason.as_str(), "disabling webhook");
            self.disabling = true;
            facts.push(Record::WebhookUpdated {
                id: self.webhook.id.clone(),
                changes: WebhookChanges {
                    disabled: Some((true, Some(reason))),
                    ..Default::default()
                },
                at: r.at,
            });
        }
        if !self.fifo() {
            self.deps.facts.record(facts);
            return;
        }
        self.committing += 1;
        let commit = self.deps.log_actor.send(Submit {
            records: facts,
            guard: None,
        });
        ctx.spawn(commit.into_actor(self).map(|res, act, ctx| {
            // A storage error is logged by the log writer; the order holds either way (the outcome not
            // stored means the event is sent again after a restart, before anything later).
            if let Err(e) = res {
                tracing::warn!(webhook = %act.webhook.id, error = %e, "the log writer is gone");
            }
            act.committing -= 1;
            act.pump(ctx);
        }));
    }
}

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.pump(ctx);
        // The permit the router started it with, if the first pump did not need it: the next waiter's.
        self.granted = None;
    }
}

impl Handler<Enqueue> for SubscriptionActor {
    type Result = ();
    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.enqueues += 1;
        let mut restarted = Vec::new();
        for Queued {
            seq,
            queued_at,
            body,
        } in msg.0
        {
            // The router never sends a seq an actor took from the projection; one it still holds was
            // replayed, and its body is read from the log.
            if self.backlog.contains(seq) {
                self.replayed(seq, queued_at, &mut restarted);
                continue;
            }
            self.backlog
                .hold(seq, queued_at, 0, None, Timestamp::from_millis(0));
            if let Some(body) = body.filter(|_| self.bodies.len() < HELD_BODIES) {
                self.bodies.insert(seq, body);
            }
        }
        if !restarted.is_empty() {
            self.deps.facts.record(restarted);
        }
        self.pump(ctx);
    }
}

impl Handler<Configure> for SubscriptionActor {
    type Result = ();
    fn handle(&mut self, msg: Configure, ctx: &mut Context<Self>) {
        if msg.0.rate_limit != self.webhook.rate_limit {
            self.limiter = Limiter::per_minute(msg.0.rate_limit);
        }
        if msg.0.url != self.webhook.url {
            self.host = crate::permits::host_of(&msg.0.url);
        }
        self.webhook = msg.0;
        self.keys = signing_keys(&self.webhook, Timestamp::now());
        self.pump(ctx);
    }
}

impl Handler<Granted> for SubscriptionActor {
    type Result = ();
    fn handle(&mut self, msg: Granted, ctx: &mut Context<Self>) {
        self.awaiting_permit = false;
        // Queued for the webhook's previous URL: of no use now (dropping it hands it on).
        if msg.0.host() == &*self.host {
            self.granted = Some(msg.0);
        }
        self.pump(ctx);
        // Not needed after all (a retry not due yet, the limiter, disabling): the next waiter's turn.
        self.granted = None;
    }
}

impl Handler<Retire> for SubscriptionActor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.retiring = true;
        self.pump(ctx);
    }
}

impl Handler<Stop> for SubscriptionActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
