//! The LogActor: the only writer of the log. It gathers what arrives while the previous flush runs and
//! writes it as one atomic, fsynced sled batch (group commit), then applies the batch to the projection,
//! answers the callers (a `202` is only ever sent after this), and hands the effects to the router.

use crate::checkpoint;
use crate::dispatcher::Outgoing;
use crate::health::Store;
use crate::indexer::IndexWriter;
use crate::metrics::Metrics;
use crate::projection::{Effect, IdempotencyEntry, Projection};
use crate::router::{Effects, Router};
use actix::prelude::*;
use buildr_core::{AccountId, Record, Timestamp};
use buildr_log::EventLog;
use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Refuse a submission whose idempotency key was already used; answer with the first use instead.
#[derive(Debug, Clone)]
pub struct IdempotencyGuard {
    pub account: AccountId,
    pub key: String,
}

/// Append `records` atomically and durably.
#[derive(Message)]
#[rtype(result = "Result<Submitted, SubmitError>")]
pub struct Submit {
    pub records: Vec<Record>,
    pub guard: Option<IdempotencyGuard>,
}

/// Append facts nobody waits for (delivery outcomes): batched like the rest.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordFacts(pub Vec<Record>);

#[derive(Debug, Clone)]
pub enum Submitted {
    /// Durable; the first record got this seq.
    Committed { first_seq: u64 },
    /// The guard's key was already used: nothing written.
    AlreadyUsed(IdempotencyEntry),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the log writer has stopped")]
    Stopped,
    #[error("storage refuses writes (e.g. a full disk); retry later")]
    Unwritable,
}

struct Pending {
    records: Vec<Record>,
    guard: Option<IdempotencyGuard>,
    reply: Option<oneshot::Sender<Result<Submitted, SubmitError>>>,
}

/// The LogActor's settings.
#[derive(Debug, Clone, Copy)]
pub struct LogSettings {
    pub checkpoint: CheckpointPolicy,
    pub idempotency_ttl: Duration,
    /// Finished events older than this are compacted away (`None`: never).
    pub retention: Option<Duration>,
    pub retention_interval: Duration,
}

/// When the LogActor writes a projection checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// After this many records since the last one…
    pub every_records: u64,
    /// …or this long, if anything changed.
    pub interval: Duration,
}

pub struct LogActor {
    log: Arc<EventLog>,
    projection: Arc<RwLock<Projection>>,
    router: Option<Addr<Router>>,
    indexer: IndexWriter,
    queue: Vec<Pending>,
    /// A `FlushNow` is in the mailbox.
    flush_requested: bool,
    checkpointing: bool,
    checkpointed_seq: u64,
    compacting: bool,
    settings: LogSettings,
    /// Callers waiting for a clean stop (queue written, checkpoint saved).
    stopping: Vec<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
    /// Storage refused a write: until a reopen and a probe write succeed, callers get `503` at once and
    /// facts nobody waits for (attempt outcomes) wait in the queue. The wait before the next try.
    healing: Option<Duration>,
    /// The facts nobody waits for of the batch whose append failed, and the seq that batch would have
    /// started at: written again after healing, unless the batch turns out to be on disk.
    held: Option<(u64, Vec<Pending>)>,
}

/// The first wait before reopening storage after a write failed, doubled up to [`MAX_HEAL_WAIT`].
const FIRST_HEAL_WAIT: Duration = Duration::from_millis(100);
const MAX_HEAL_WAIT: Duration = Duration::from_secs(5);

impl LogActor {
    pub fn new(
        log: Arc<EventLog>,
        projection: Arc<RwLock<Projection>>,
        indexer: IndexWriter,
        checkpointed_seq: u64,
        settings: LogSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            log,
            projection,
            router: None,
            indexer,
            queue: Vec::new(),
            flush_requested: false,
            checkpointing: false,
            checkpointed_seq,
            compacting: false,
            settings,
            stopping: Vec::new(),
            metrics,
            healing: None,
            held: None,
        }
    }

    fn cutoff(&self) -> Timestamp {
        Timestamp::from_millis(
            Timestamp::now().as_millis()
                - i64::try_from(self.settings.idempotency_ttl.as_millis()).unwrap_or(i64::MAX),
        )
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.queue.is_empty() {
            return;
        }
        if self.healing.is_some() {
            return self.refuse_while_healing();
        }
        let cutoff = self.cutoff();
        let mut to_write = Vec::new();
        let mut committed = Vec::new();
        let mut deferred = Vec::new();
        {
            let projection = self.projection.read();
            let mut keys_in_batch = HashSet::new();
            for p in self.queue.drain(..) {
                if let Some(g) = &p.guard {
                    if let Some(entry) = projection
                        .idempotency(&g.account, &g.key)
                        .filter(|e| e.at >= cutoff)
                    {
                        if let Some(reply) = p.reply {
                            let _ = reply.send(Ok(Submitted::AlreadyUsed(entry.clone())));
                        }
                        continue;
                    }
                    // A second use of a key in this same batch waits for the first to be applied.
                    if !keys_in_batch.insert((g.account.clone(), g.key.clone())) {
                        deferred.push(p);
                        continue;
                    }
                }
                let offset = to_write.len();
                let len = p.records.len();
                to_write.extend(p.records);
                committed.push((offset, len, p.reply));
            }
        }
        self.queue = deferred;
        // Nothing to write: every submission was a repeat of a used idempotency key (a deferred second use
        // always comes with the first use in `to_write`).
        if to_write.is_empty() {
            return self.after_flush(ctx);
        }
        // The LogActor has its own thread: it blocks on the append (batch + fsync) right here, and
        // everything that arrives meanwhile waits in its mailbox for the next batch.
        let started = std::time::Instant::now();
        let first_seq = self.log.last_seq() + 1;
        let outcome = match self.log.append(&to_write) {
            Ok(first) => {
                self.record_stats(to_write.len(), started.elapsed());
                self.apply(first, &to_write);
                Ok(first)
            }
            Err(e) => Err(SubmitError::Storage(e.to_string())),
        };
        {
            let failed = outcome.is_err();
            for (offset, len, reply) in committed {
                match reply {
                    Some(reply) => {
                        let _ = reply.send(outcome.clone().map(|first| Submitted::Committed {
                            first_seq: first + offset as u64,
                        }));
                    }
                    // Facts nobody waits for are not lost: they are written once storage heals
                    // (unless the failed batch reached the disk after all: see `reopen_and_probe`).
                    None if failed => self
                        .held
                        .get_or_insert_with(|| (first_seq, Vec::new()))
                        .1
                        .push(Pending {
                            records: to_write[offset..offset + len].to_vec(),
                            guard: None,
                            reply: None,
                        }),
                    None => {}
                }
            }
            if let Err(SubmitError::Storage(e)) = &outcome {
                return self.start_healing(e, ctx);
            }
            // Second uses of an idempotency key deferred from this batch go in the next one.
            if !self.queue.is_empty() {
                self.flush_soon(ctx);
            }
            self.after_flush(ctx);
        }
    }

    /// Storage refused a write: reopen it with backoff until a probe write succeeds.
    fn start_healing(&mut self, error: &str, ctx: &mut Context<Self>) {
        self.metrics.storage.failed(Store::Log, error);
        if self.healing.is_none() {
            self.healing = Some(FIRST_HEAL_WAIT);
            ctx.run_later(FIRST_HEAL_WAIT, |act, ctx| act.heal(ctx));
        }
        self.refuse_while_healing();
    }

    /// While storage refuses writes, callers are answered at once (`503`); facts nobody waits for stay
    /// queued.
    fn refuse_while_healing(&mut self) {
        let mut kept = Vec::new();
        for p in self.queue.drain(..) {
            match p.reply {
                Some(reply) => {
                    let _ = reply.send(Err(SubmitError::Unwritable));
                }
                None => kept.push(p),
            }
        }
        self.queue = kept;
    }

    /// Reopens the log (clearing the error sled keeps) and probes it with a small write; on success the
    /// queued facts are written and callers are served again, without a restart.
    fn heal(&mut self, ctx: &mut Context<Self>) {
        let Some(wait) = self.healing else { return };
        match self.reopen_and_probe() {
            Ok(()) => {
                self.healing = None;
                self.metrics.storage.healed(Store::Log);
                self.flush_soon(ctx);
            }
            Err(e) => {
                self.metrics.storage.failed(Store::Log, &e.to_string());
                let next = (wait * 2).min(MAX_HEAL_WAIT);
                self.healing = Some(next);
                ctx.run_later(next, |act, ctx| act.heal(ctx));
            }
        }
    }

    fn reopen_and_probe(&mut self) -> Result<(), buildr_log::LogError> {
        let reopened = self.log.reopen()?;
        for seq in &reopened.truncated {
            tracing::warn!(
                seq,
                "cut a torn record off the end of the log on reopening it"
            );
        }
        // The failed batch is either wholly on disk (sled batches are atomic) or not at all: its facts
        // are queued again only in the second case, so none is recorded twice.
        if let Some((first, facts)) = self.held.take() {
            let on_disk = reopened
                .unapplied
                .as_ref()
                .is_some_and(|r| *r.start() == first);
            if !on_disk {
                self.queue.splice(0..0, facts);
            }
        }
        // A batch whose flush reported the error may have reached the disk all the same: it is in the
        // log now, so it is applied as a restart would (its callers got 503; their retries with the
        // same Idempotency-Key get the first answer).
        if let Some(range) = reopened.unapplied {
            let first = *range.start();
            let records = self
                .log
                .range(first, range.end() + 1)
                .map(|r| r.map(|(_, record)| record))
                .collect::<Result<Vec<_>, _>>()?;
            if !records.is_empty() {
                tracing::warn!(
                    first,
                    count = records.len(),
                    "records written by a failed flush are in the log after all; applying them"
                );
                self.apply(first, &records);
            }
        }
        self.log.probe()
    }

    /// Asks for a flush once everything already in the mailbox has been queued (group commit).
    fn flush_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_requested {
            self.flush_requested = true;
            ctx.address().do_send(FlushNow);
        }
    }

    /// Writes a checkpoint when one is due (or when stopping). Appends are synchronous on this actor's
    /// thread, so nothing is being written when this runs.
    fn after_flush(&mut self, ctx: &mut Context<Self>) {
        let last = self.log.last_seq();
        let due = last >= self.checkpointed_seq + self.settings.checkpoint.every_records;
        if due || !self.stopping.is_empty() {
            self.checkpoint(ctx);
        }
    }

    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.checkpointing {
            return;
        }
        let (seq, bytes) = {
            let p = self.projection.read();
            if p.last_seq == self.checkpointed_seq {
                (p.last_seq, None)
            } else {
                (p.last_seq, Some(checkpoint::encode(&p)))
            }
        };
        self.checkpointing = true;
        let log = self.log.clone();
        let indexer = self.indexer.clone();
        let write = actix_rt::task::spawn_blocking(move || {
            // The index is caught up and on disk first, so it is never behind a checkpoint (and a clean
            // stop leaves nothing to redo).
            indexer.sync();
            match bytes {
                Some(b) => log
                    .index()
                    .and_then(|index| index.mark_applied(seq))
                    .and_then(|()| log.flush_index())
                    .and_then(|()| log.save_checkpoint(seq, &b)),
                None => log.flush(),
            }
        });
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.checkpointing = false;
            match res {
                Ok(Ok(())) => {
                    tracing::debug!(seq, "projection checkpoint saved");
                    act.checkpointed_seq = seq;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "saving a projection checkpoint failed"),
                Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
            }
            if !act.stopping.is_empty() && act.queue.is_empty() {
                for done in act.stopping.drain(..) {
                    let _ = done.send(());
                }
            }
            act.after_flush(ctx);
        }));
    }

    /// Retention: removes finished events older than the retention period (see [`crate::retention`]).
    fn compact(&mut self, ctx: &mut Context<Self>) {
        let Some(retention) = self.settings.retention else {
            return;
        };
        if self.compacting {
            return;
        }
        self.compacting = true;
        let cutoff = Timestamp::from_millis(
            Timestamp::now().as_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
        );
        let (keep, expired) = {
            let p = self.projection.read();
            (p.retention_keep(), p.expired_replays(cutoff))
        };
        // Finished old replays are forgotten first (a fact, so a rebuild forgets them too); the next
        // run removes their requests.
        if !expired.is_empty() {
            self.queue.push(Pending {
                records: vec![Record::ReplaysExpired {
                    ids: expired,
                    at: Timestamp::now(),
                }],
                guard: None,
                reply: None,
            });
            self.flush_soon(ctx);
        }
        let log = self.log.clone();
        let indexer = self.indexer.clone();
        let work = actix_rt::task::spawn_blocking(move || {
            let plan = crate::retention::plan(&log, cutoff, &keep)?;
            let removed = log.remove(&plan.records)?;
            if !plan.event_seqs.is_empty() {
                indexer.forget(plan.event_seqs.clone(), plan.event_ids.clone());
            }
            indexer.prune_stats();
            Ok::<_, crate::error::EngineError>((removed, plan.event_seqs.len()))
        });
        ctx.spawn(work.into_actor(self).map(|res, act, _| {
            act.compacting = false;
            match res {
                Ok(Ok((0, _))) => {}
                Ok(Ok((records, events))) => {
                    tracing::info!(
                        records,
                        events,
                        "retention removed finished events older than the retention period"
                    )
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "retention failed; it runs again later"),
                Err(e) => tracing::warn!(error = %e, "retention task failed"),
            }
        }));
    }

    fn record_stats(&self, records: usize, took: Duration) {
        self.metrics.log_batch_records.observe(records as f64);
        self.metrics.log_flush_seconds.observe(took.as_secs_f64());
    }

    fn apply(&mut self, first: u64, records: &[Record]) {
        let mut effects: Vec<Effect> = Vec::new();
        let mut bodies = std::collections::HashMap::new();
        let mut ops = Vec::new();
        {
            let mut projection = self.projection.write();
            for (i, r) in records.iter().enumerate() {
                let seq = first + i as u64;
                let e = projection.apply(seq, r);
                crate::indexer::ops(seq, r, &e, &mut ops);
                if let Record::EventPublished(ev) = r {
                    if ev.only_webhook.is_none() {
                        self.metrics.events_published.inc();
                    }
                    // The body is made once here, for every webhook the event fans out to.
                    if e.iter().any(|e| matches!(e, Effect::Deliver { .. })) {
                        bodies.insert(seq, Outgoing::from_record(ev));
                    }
                }
                effects.extend(e);
            }
        }
        self.indexer.apply(ops, first + records.len() as u64 - 1);
        if let (Some(router), false) = (&self.router, effects.is_empty()) {
            router.do_send(Effects {
                effects,
                bodies,
                upto: first + records.len() as u64 - 1,
            });
        }
    }
}

impl LogActor {
    /// Starts the LogActor on a thread of its own, in an actix system of its own: it blocks on each append
    /// (batch + fsync) while the next batch gathers in its mailbox, without holding up the router or the
    /// HTTP workers; and a SIGTERM, which makes actix-web stop the main system and all its arbiters,
    /// cannot stop it before the clean stop has written what is queued and saved a checkpoint. The thread
    /// ends when the actor stops (every address dropped).
    pub fn start_on_own_thread(actor: LogActor) -> std::io::Result<Addr<LogActor>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let _ = tx.send(actor.start());
                });
                let _ = system.run();
            })?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the log writer thread did not start"))
    }
}

impl Actor for LogActor {
    type Context = Context<Self>;

    /// Ends the log writer's own system and thread (the LogActor is only ever started by
    /// [`LogActor::start_on_own_thread`]).
    fn stopped(&mut self, _: &mut Context<Self>) {
        actix_rt::System::current().stop();
    }

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        ctx.run_interval(Duration::from_secs(60), |act, _| {
            let cutoff = act.cutoff();
            act.projection.write().expire_idempotency(cutoff);
        });
        if self.settings.retention.is_some() {
            ctx.run_interval(self.settings.retention_interval, |act, ctx| {
                act.compact(ctx)
            });
        }
        ctx.run_interval(self.settings.checkpoint.interval, |act, ctx| {
            if act.log.last_seq() > act.checkpointed_seq {
                act.checkpoint(ctx);
            }
        });
    }
}

/// Connects the router (it is started after the log actor, with the log actor's address).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRouter(pub Addr<Router>);

impl Handler<SetRouter> for LogActor {
    type Result = ();
    fn handle(&mut self, msg: SetRouter, _: &mut Context<Self>) {
        self.router = Some(msg.0);
    }
}

impl Handler<Submit> for LogActor {
    type Result = ResponseFuture<Result<Submitted, SubmitError>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue.push(Pending {
            records: msg.records,
            guard: msg.guard,
            reply: Some(tx),
        });
        self.flush_soon(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(SubmitError::Stopped)) })
    }
}

/// Write what is queued, save a checkpoint, then answer: a clean stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for LogActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stopping.push(tx);
        self.flush(ctx);
        self.after_flush(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<RecordFacts> for LogActor {
    type Result = ();

    fn handle(&mut self, msg: RecordFacts, ctx: &mut Context<Self>) {
        self.queue.push(Pending {
            records: msg.0,
            guard: None,
            reply: None,
        });
        self.flush_soon(ctx);
    }
}

/// Write what is queued now (sent by the LogActor to itself, behind what is already in its mailbox).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushNow;

impl Handler<FlushNow> for LogActor {
    type Result = ();

    fn handle(&mut self, _: FlushNow, ctx: &mut Context<Self>) {
        self.flush_requested = false;
        self.flush(ctx);
    }
}
