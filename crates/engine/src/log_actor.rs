//! The LogActor: the only writer of the log on this node. It gathers what arrives in its mailbox and
//! writes it as one batch (group commit), then applies what the log hands back once it is durable (the
//! batch, and on a shared log what other nodes appended before it) to the projection in log order,
//! answers the callers (a `202` is only ever sent after this), and hands the effects to the router.
//! Records other nodes append while this one is idle are applied the same way when the log says it has
//! them ([`CatchUp`]).
//!
//! On sled a batch is written in place and made durable by a `log-sync` thread ([`LogStore::sync`]: one
//! write and `fdatasync`), so this thread never waits for the disk: it writes the next batches, routes
//! and applies while the sync runs, and the next sync covers everything written meanwhile. Batches are
//! applied and answered strictly in log order, each only after a sync that covers it. On JetStream the
//! append itself waits for the stream's acknowledgement ([`Written::Durable`]).

use crate::checkpoint;
use crate::dispatcher::Outgoing;
use crate::health::Store;
use crate::indexer::IndexWriter;
use crate::metrics::Metrics;
use crate::projection::{Effect, IdempotencyEntry, Projection};
use crate::router::{Effects, Router};
use actix::prelude::*;
use buildr_core::{AccountId, Record, Timestamp};
use buildr_log::{Appended, Group, LogStore, Written};
use parking_lot::RwLock;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Refuse a submission whose idempotency key was already used; answer with the first use instead.
#[derive(Debug, Clone)]
pub struct IdempotencyGuard {
    pub account: AccountId,
    pub key: String,
}

impl IdempotencyGuard {
    /// The id a shared log stores this key's group under at most once (account and key, the key in hex
    /// so that any key is a valid header value).
    pub fn dedupe_id(&self) -> String {
        let mut id = format!("idem.{}.", self.account);
        for b in self.key.as_bytes() {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }
}

/// Append `records` atomically and durably.
#[derive(Message)]
#[rtype(result = "Result<Submitted, SubmitError>")]
pub struct Submit {
    pub records: Vec<Record>,
    pub guard: Option<IdempotencyGuard>,
}

/// Facts nobody waits for (attempt outcomes, restarts) on their way to the log writer. They are put in
/// a shared inbox, not sent as messages: the writer takes them with its next flush, and wakes for them
/// only when no flush or timer of its own is coming. At a low event rate an event's outcome then rides
/// with the next event's flush without a wake-up of the writer's thread of its own (a message per
/// outcome was one more thread switch per event, the most expensive thing this machine does at 500
/// events/s).
#[derive(Clone)]
pub struct FactInbox {
    shared: Arc<SharedFacts>,
    writer: Addr<LogActor>,
}

/// The inbox both sides hold.
#[derive(Default)]
struct SharedFacts {
    queue: parking_lot::Mutex<Vec<Vec<Record>>>,
    /// The writer will take the inbox without being told: its linger timer is armed, or a
    /// [`FactsWaiting`] is in its mailbox.
    watched: AtomicBool,
}

impl FactInbox {
    /// Hands `facts` (one group, written all or nothing) to the log writer.
    pub fn record(&self, facts: Vec<Record>) {
        let waiting = {
            let mut queue = self.shared.queue.lock();
            queue.push(facts);
            queue.len()
        };
        // Checked after the push: a writer that stops watching first stops, then takes the inbox, so
        // a push it does not take finds it unwatched and wakes it.
        if !self.shared.watched.swap(true, Ordering::SeqCst) || waiting == FACT_LINGER_MAX {
            self.writer.do_send(FactsWaiting);
        }
    }
}

/// The fact inbox holds facts the writer is not watching for, or as many as it should write at once.
#[derive(Message)]
#[rtype(result = "()")]
struct FactsWaiting;

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

/// A submission in a written batch: where its records are in the batch, who waits for it.
struct Caller {
    offset: usize,
    len: usize,
    reply: Option<oneshot::Sender<Result<Submitted, SubmitError>>>,
    guard: Option<IdempotencyGuard>,
}

/// A batch written to the log but not durable yet: applied and answered once a sync covers `last_seq`.
struct UnsyncedBatch {
    appended: Appended,
    /// One above the last durable record when it was written (see [`LogActor::finish`]).
    unacknowledged_from: u64,
    last_seq: u64,
    callers: Vec<Caller>,
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
    log: Arc<dyn LogStore>,
    projection: Arc<RwLock<Projection>>,
    router: Option<Addr<Router>>,
    indexer: IndexWriter,
    queue: Vec<Pending>,
    /// A `FlushNow` is in the mailbox.
    flush_requested: bool,
    /// Facts nobody waits for, handed over without a message ([`FactInbox`]).
    facts: Arc<SharedFacts>,
    /// The timer that takes the fact inbox [`FACT_LINGER`] after it was armed, when no flush took it
    /// first.
    linger: Option<SpawnHandle>,
    checkpointing: bool,
    /// The last checkpoint failed: none is tried again before this (a stop meanwhile ends without one),
    /// and the wait it was given (see [`FIRST_CHECKPOINT_RETRY`]).
    checkpoint_retry: Option<(std::time::Instant, Duration)>,
    checkpointed_seq: u64,
    /// Records applied since the last checkpoint (seqs need not be contiguous, so they are counted).
    uncheckpointed: u64,
    /// A `CatchUp` is in the mailbox.
    catch_up_requested: Arc<std::sync::atomic::AtomicBool>,
    compacting: bool,
    settings: LogSettings,
    /// Callers waiting for a clean stop (queue written, checkpoint saved).
    stopping: Vec<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
    /// Storage refused a write: until a reopen and a probe write succeed, callers get `503` at once and
    /// facts nobody waits for (attempt outcomes) wait in the queue. The wait before the next try.
    healing: Option<Duration>,
    /// Batches written and waiting for a sync, oldest first.
    unsynced: VecDeque<UnsyncedBatch>,
    /// The idempotency keys of `unsynced` batches (a second use waits until the first is applied).
    unsynced_keys: HashSet<(AccountId, String)>,
    /// Makes written batches durable; started with the first batch that needs it.
    syncer: Option<Syncer>,
    /// A sync is running (its [`Synced`] is on the way).
    syncing: bool,
    /// When the last sync ended (see [`QUIET_GAP`]).
    last_sync_end: std::time::Instant,
    /// The facts nobody waits for of the batch whose append failed, and the seq that batch would have
    /// started at: written again after healing, unless the batch turns out to be on disk.
    held: Option<(u64, Vec<Pending>)>,
}

/// How long facts nobody waits for (attempt outcomes) may wait for the next flush. At a low event rate
/// they ride along with the next event's flush instead of paying one of their own (a flush is a
/// write, a sync and two thread wake-ups: the bulk of an event's CPU there). Losing them in a crash
/// costs what losing an attempt in flight costs: the delivery is sent again, with the same
/// `webhook-id`.
const FACT_LINGER: Duration = Duration::from_millis(5);

/// A batch written at least this long after the last sync ended, with nothing else waiting for a sync,
/// is synced on the writer's own thread: at a low rate there is nothing to overlap the sync with, and
/// handing it to the sync thread and back costs two thread switches. Busier, the writer never waits
/// for the disk.
const QUIET_GAP: Duration = Duration::from_millis(1);

/// Groups of facts nobody waits for that are flushed at once, without waiting out [`FACT_LINGER`]:
/// as many waiting in the [`FactInbox`] send the writer a [`FactsWaiting`], as many in its queue ask
/// for a flush.
const FACT_LINGER_MAX: usize = 1024;

/// The first wait before a checkpoint is tried again after one failed (a directory gone, a full disk),
/// doubled after each failure up to the checkpoint interval. Without it a checkpoint that was due and
/// failed was tried again at once, over and over: the whole projection encoded in a loop.
const FIRST_CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// The first wait before reopening storage after a write failed, doubled up to the log's
/// [`LogStore::max_heal_wait`].
const FIRST_HEAL_WAIT: Duration = Duration::from_millis(100);

impl LogActor {
    /// `checkpointed_seq`: the seq of the checkpoint start-up used; `uncheckpointed`: the records it
    /// replayed after it.
    pub fn new(
        log: Arc<dyn LogStore>,
        projection: Arc<RwLock<Projection>>,
        indexer: IndexWriter,
        (checkpointed_seq, uncheckpointed): (u64, u64),
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
            facts: Arc::default(),
            linger: None,
            checkpointing: false,
            checkpoint_retry: None,
            checkpointed_seq,
            uncheckpointed,
            catch_up_requested: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            compacting: false,
            settings,
            stopping: Vec::new(),
            metrics,
            healing: None,
            held: None,
            unsynced: VecDeque::new(),
            unsynced_keys: HashSet::new(),
            syncer: None,
            syncing: false,
            last_sync_end: std::time::Instant::now(),
        }
    }

    fn cutoff(&self) -> Timestamp {
        Timestamp::from_millis(
            Timestamp::now().as_millis()
                - i64::try_from(self.settings.idempotency_ttl.as_millis()).unwrap_or(i64::MAX),
        )
    }

    /// Moves the fact inbox into the queue, behind what is queued (a group handed over before a
    /// submission was sent goes before it).
    fn take_facts(&mut self) {
        let facts = std::mem::take(&mut *self.facts.queue.lock());
        self.queue.extend(facts.into_iter().map(|records| Pending {
            records,
            guard: None,
            reply: None,
        }));
    }

    /// Facts are coming (a batch was routed, or the inbox woke the writer): the inbox is taken by the
    /// next flush, or [`FACT_LINGER`] from now at the latest.
    fn watch_facts(&mut self, ctx: &mut Context<Self>) {
        if self.linger.is_some() {
            return;
        }
        self.facts.watched.store(true, Ordering::SeqCst);
        self.linger = Some(ctx.run_later(FACT_LINGER, |act, ctx| {
            act.linger = None;
            act.facts.watched.store(false, Ordering::SeqCst);
            act.take_facts();
            if !act.queue.is_empty() {
                act.flush_soon(ctx);
            }
        }));
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        // This flush takes the inbox: the timer that would have is not needed (at a steady low rate it
        // never fires), and until a batch is routed again a fact wakes the writer.
        if let Some(timer) = self.linger.take() {
            ctx.cancel_future(timer);
            self.facts.watched.store(false, Ordering::SeqCst);
        }
        self.take_facts();
        if self.queue.is_empty() {
            return;
        }
        if self.healing.is_some() {
            return self.refuse_while_healing();
        }
        let cutoff = self.cutoff();
        let mut to_write = Vec::new();
        let mut groups = Vec::new();
        let mut callers = Vec::new();
        let mut deferred = Vec::new();
        {
            let projection = self.projection.read();
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
                    // A second use of a key in this batch, or in one waiting for its sync, waits for the
                    // first to be applied.
                    let key = (g.account.clone(), g.key.clone());
                    if self.unsynced_keys.contains(&key) {
                        deferred.push(p);
                        continue;
                    }
                    self.unsynced_keys.insert(key);
                }
                let offset = to_write.len();
                let len = p.records.len();
                groups.push(Group {
                    start: offset,
                    dedupe_id: p.guard.as_ref().map(IdempotencyGuard::dedupe_id),
                });
                to_write.extend(p.records);
                callers.push(Caller {
                    offset,
                    len,
                    reply: p.reply,
                    guard: p.guard,
                });
            }
        }
        self.queue = deferred;
        // Nothing to write: every submission was a repeat of a used idempotency key (a deferred second use
        // always comes with the first use in this batch or an unsynced one).
        if to_write.is_empty() {
            return self.after_flush(ctx);
        }
        let started = std::time::Instant::now();
        let written = to_write.len();
        let unacknowledged_from = self.log.last_seq() + 1;
        match self.log.write_batch(to_write, &groups) {
            Ok(Written::Durable(appended)) => {
                self.record_stats(written, started.elapsed());
                self.forget_keys(&callers);
                self.finish(callers, Ok(appended), unacknowledged_from, ctx);
            }
            Ok(Written::Unsynced(appended)) => {
                let last_seq = appended.seqs.iter().copied().max().unwrap_or(0);
                self.unsynced.push_back(UnsyncedBatch {
                    appended,
                    unacknowledged_from,
                    last_seq,
                    callers,
                });
                let quiet = self.last_sync_end.elapsed() >= QUIET_GAP;
                if !self.syncing && self.unsynced.len() == 1 && quiet {
                    let started = std::time::Instant::now();
                    let result = self.log.sync().map_err(|e| e.to_string());
                    self.sync_ended(result, started.elapsed(), ctx);
                } else {
                    self.request_sync(ctx);
                }
            }
            Err(refused) => {
                self.forget_keys(&callers);
                let error = refused.error.to_string();
                self.finish(
                    callers,
                    Err((error, refused.records)),
                    unacknowledged_from,
                    ctx,
                );
            }
        }
    }

    /// Asks the sync thread to make what is written durable, unless a sync is already running (its
    /// [`Synced`] asks for the next one).
    fn request_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.unsynced.is_empty() {
            return;
        }
        if self.syncer.is_none() {
            match Syncer::start(self.log.clone(), ctx.address().downgrade()) {
                Ok(syncer) => self.syncer = Some(syncer),
                Err(e) => {
                    return self
                        .synced(Err(format!("cannot start the log's sync thread: {e}")), ctx)
                }
            }
        }
        if self.syncer.as_ref().is_some_and(Syncer::request) {
            self.syncing = true;
        } else {
            self.syncer = None;
            self.synced(Err("the log's sync thread has stopped".into()), ctx);
        }
    }

    /// A sync ran (on this thread or the sync thread) for `took`: counted, then [`Self::synced`].
    fn sync_ended(&mut self, result: Result<u64, String>, took: Duration, ctx: &mut Context<Self>) {
        self.last_sync_end = std::time::Instant::now();
        self.metrics.log_flush_seconds.observe(took.as_secs_f64());
        self.synced(result, ctx);
    }

    /// A sync ended: the batches it covers are durable and are applied and answered, in order; if it
    /// failed, whether the batches waiting for it are stored is unknown, and they are treated as a failed
    /// append (callers get `503`, facts are held until storage heals).
    fn synced(&mut self, result: Result<u64, String>, ctx: &mut Context<Self>) {
        match result {
            Ok(through) => {
                let mut records = 0;
                while self.unsynced.front().is_some_and(|b| b.last_seq <= through) {
                    let Some(batch) = self.unsynced.pop_front() else {
                        break;
                    };
                    records += batch.appended.seqs.len();
                    self.forget_keys(&batch.callers);
                    self.finish(
                        batch.callers,
                        Ok(batch.appended),
                        batch.unacknowledged_from,
                        ctx,
                    );
                }
                if records > 0 {
                    self.metrics.log_batch_records.observe(records as f64);
                }
            }
            Err(error) => {
                while let Some(batch) = self.unsynced.pop_front() {
                    self.forget_keys(&batch.callers);
                    let records = batch.appended.entries.into_iter().map(|(_, r)| r).collect();
                    self.finish(
                        batch.callers,
                        Err((error.clone(), records)),
                        batch.unacknowledged_from,
                        ctx,
                    );
                }
            }
        }
        self.request_sync(ctx);
    }

    /// The idempotency keys of `callers` are no longer in a batch waiting for its sync.
    fn forget_keys(&mut self, callers: &[Caller]) {
        for g in callers.iter().filter_map(|c| c.guard.as_ref()) {
            self.unsynced_keys
                .remove(&(g.account.clone(), g.key.clone()));
        }
    }

    /// A batch's outcome: applies a stored batch and answers its callers; for a failed one answers
    /// `503`, holds its facts until storage heals and starts healing. `unacknowledged_from`: one above
    /// the last durable record when the batch was written: after healing, the log is searched from
    /// there for a failed batch's facts, which may be stored after all.
    fn finish(
        &mut self,
        callers: Vec<Caller>,
        outcome: Result<Appended, (String, Vec<Record>)>,
        unacknowledged_from: u64,
        ctx: &mut Context<Self>,
    ) {
        let (seqs, duplicates, failed) = match outcome {
            Ok(appended) => {
                self.apply(appended.entries, ctx);
                (appended.seqs, appended.duplicates, None)
            }
            Err(failed) => (Vec::new(), Vec::new(), Some(failed)),
        };
        for (group, caller) in callers.into_iter().enumerate() {
            let Caller {
                offset,
                len,
                reply,
                guard,
            } = caller;
            match (reply, &failed) {
                // Another node stored this idempotency key first (a shared log): its answer.
                (Some(reply), None) if duplicates.contains(&group) => {
                    let first = guard.and_then(|g| {
                        self.projection
                            .read()
                            .idempotency(&g.account, &g.key)
                            .cloned()
                    });
                    let _ = reply.send(first.map(Submitted::AlreadyUsed).ok_or_else(|| {
                        SubmitError::Storage(
                            "the first use of this Idempotency-Key is not applied yet".into(),
                        )
                    }));
                }
                // A group's records have consecutive seqs: its first seq numbers them all.
                (Some(reply), None) => {
                    let _ = reply.send(
                        seqs.get(offset)
                            .map(|&first_seq| Submitted::Committed { first_seq })
                            .ok_or_else(|| SubmitError::Storage("the log lost a seq".into())),
                    );
                }
                (Some(reply), Some((error, _))) => {
                    let _ = reply.send(Err(SubmitError::Storage(error.clone())));
                }
                // Facts nobody waits for are not lost: they are written once storage heals
                // (unless the failed batch reached the disk after all: see `reopen_and_probe`).
                (None, Some((_, records))) => {
                    let held = self
                        .held
                        .get_or_insert_with(|| (unacknowledged_from, Vec::new()));
                    held.0 = held.0.min(unacknowledged_from);
                    held.1.push(Pending {
                        records: records
                            .get(offset..offset + len)
                            .map(<[Record]>::to_vec)
                            .unwrap_or_default(),
                        guard: None,
                        reply: None,
                    });
                }
                (None, None) => {}
            }
        }
        if let Some((error, _)) = &failed {
            return self.start_healing(error, ctx);
        }
        // Second uses of an idempotency key deferred from this batch go in the next one.
        if !self.queue.is_empty() {
            self.flush_soon(ctx);
        }
        self.after_flush(ctx);
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
        // A sync still running holds the database; its outcome comes first.
        if self.syncing || !self.unsynced.is_empty() {
            ctx.run_later(wait, |act, ctx| act.heal(ctx));
            return;
        }
        match self.reopen_and_probe(ctx) {
            Ok(()) => {
                self.healing = None;
                self.metrics.storage.healed(Store::Log);
                self.flush_soon(ctx);
            }
            Err(e) => {
                self.metrics.storage.failed(Store::Log, &e.to_string());
                let next = (wait * 2).min(self.log.max_heal_wait());
                self.healing = Some(next);
                ctx.run_later(next, |act, ctx| act.heal(ctx));
            }
        }
    }

    fn reopen_and_probe(&mut self, ctx: &mut Context<Self>) -> Result<(), buildr_log::LogError> {
        let reopened = self.log.reopen()?;
        for seq in &reopened.truncated {
            tracing::warn!(
                seq,
                "cut a torn record off the end of the log on reopening it"
            );
        }
        // The failed append may have stored its facts after all (a sled batch that reached the disk; a
        // stream message whose acknowledgement was lost): only those the log does not hold now are queued
        // again, so none is recorded twice.
        if let Some((first, facts)) = self.held.take() {
            match self.not_in_log(first, facts) {
                Ok(facts) => self.queue.splice(0..0, facts),
                Err((e, facts)) => {
                    self.held = Some((first, facts));
                    return Err(e);
                }
            };
        }
        // A batch whose flush reported the error may have reached the disk all the same: it is in the
        // log now, so it is applied as a restart would (its callers got 503; their retries with the
        // same Idempotency-Key get the first answer).
        if let Some(range) = reopened.unapplied {
            let first = *range.start();
            let entries = self
                .log
                .range(first, range.end() + 1)
                .collect::<Result<Vec<_>, _>>()?;
            if !entries.is_empty() {
                tracing::warn!(
                    first,
                    count = entries.len(),
                    "records written by a failed flush are in the log after all; applying them"
                );
                self.apply(entries, ctx);
            }
        }
        self.log.probe()
    }

    /// The held `facts` the log does not hold from `first` on (compared record by record, encoded: an
    /// attempt record carries its webhook, event, attempt number and times, so no other record equals it).
    #[allow(clippy::type_complexity)]
    fn not_in_log(
        &self,
        first: u64,
        facts: Vec<Pending>,
    ) -> Result<Vec<Pending>, (buildr_log::LogError, Vec<Pending>)> {
        let mut missing: HashSet<Vec<u8>> = facts
            .iter()
            .flat_map(|p| p.records.iter().map(buildr_log::encode))
            .collect();
        for entry in self.log.tail(first) {
            if missing.is_empty() {
                break;
            }
            match entry {
                Ok((_, record)) => {
                    missing.remove(&buildr_log::encode(&record));
                }
                Err(e) => return Err((e, facts)),
            }
        }
        let (kept, stored): (Vec<Pending>, Vec<Pending>) = facts.into_iter().partition(|p| {
            p.records
                .iter()
                .any(|r| missing.contains(&buildr_log::encode(r)))
        });
        if !stored.is_empty() {
            tracing::warn!(
                facts = stored.len(),
                "facts of a failed write are in the log after all; not writing them again"
            );
        }
        Ok(kept)
    }

    /// Asks for a flush once everything already in the mailbox has been queued (group commit).
    fn flush_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_requested {
            self.flush_requested = true;
            ctx.address().do_send(FlushNow);
        }
    }

    /// Writes a checkpoint when one is due, or when stopping once every written batch is applied. The
    /// checkpoint covers what is applied (durable) only; batches waiting for their sync are not in it.
    fn after_flush(&mut self, ctx: &mut Context<Self>) {
        let due = self.uncheckpointed >= self.settings.checkpoint.every_records;
        let stop = !self.stopping.is_empty() && self.unsynced.is_empty();
        if due || stop {
            self.checkpoint(ctx);
        }
    }

    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        if self.checkpointing {
            return;
        }
        if self
            .checkpoint_retry
            .is_some_and(|(at, _)| std::time::Instant::now() < at)
        {
            // Not again yet; a stop waiting for one ends without it (a restart replays the log's tail).
            self.finish_stop_if_written();
            return;
        }
        let covered = self.uncheckpointed;
        // Encoded here, under the projection's lock, straight into the checkpoint's file (its write
        // goes to the page cache; syncing it is left to the blocking task below).
        let (seq, staged) = {
            let p = self.projection.read();
            if p.last_seq == self.checkpointed_seq {
                (p.last_seq, None)
            } else {
                let staged = self
                    .log
                    .stage_checkpoint(p.last_seq, &mut |out| checkpoint::encode(&p, out));
                (p.last_seq, Some(staged))
            }
        };
        self.checkpointing = true;
        let log = self.log.clone();
        let indexer = self.indexer.clone();
        let write = actix_rt::task::spawn_blocking(move || {
            // The index is caught up and on disk first, so it is never behind a checkpoint (and a clean
            // stop leaves nothing to redo).
            indexer.sync();
            match staged {
                Some(staged) => staged
                    .and_then(|()| log.index())
                    .and_then(|index| index.mark_applied(seq))
                    .and_then(|()| log.flush_index())
                    .and_then(|()| log.commit_checkpoint()),
                None => log.flush(),
            }
        });
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.checkpointing = false;
            match res {
                Ok(Ok(())) => {
                    tracing::debug!(seq, "projection checkpoint saved");
                    act.checkpointed_seq = seq;
                    act.uncheckpointed = act.uncheckpointed.saturating_sub(covered);
                    act.checkpoint_retry = None;
                }
                Ok(Err(e)) => {
                    let wait = act.checkpoint_failed();
                    tracing::warn!(error = %e, retry_in = ?wait, "saving a projection checkpoint failed");
                }
                Err(e) => {
                    let wait = act.checkpoint_failed();
                    tracing::warn!(error = %e, retry_in = ?wait, "checkpoint task failed");
                }
            }
            act.finish_stop_if_written();
            act.after_flush(ctx);
        }));
    }

    /// Answers the callers waiting for a clean stop once everything queued is written and synced.
    fn finish_stop_if_written(&mut self) {
        if !self.stopping.is_empty() && self.queue.is_empty() && self.unsynced.is_empty() {
            for done in self.stopping.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Counts a failed checkpoint and sets when the next may be tried; returns the wait.
    fn checkpoint_failed(&mut self) -> Duration {
        self.metrics.checkpoint_failures.inc();
        let wait = self
            .checkpoint_retry
            .map_or(FIRST_CHECKPOINT_RETRY, |(_, last)| {
                (last * 2).min(
                    self.settings
                        .checkpoint
                        .interval
                        .max(FIRST_CHECKPOINT_RETRY),
                )
            });
        self.checkpoint_retry = Some((std::time::Instant::now() + wait, wait));
        wait
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
        // run removes their requests. On a shared log only the node that maintains it writes the fact.
        if !expired.is_empty() && self.log.maintains() {
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
            let plan = crate::retention::plan(&*log, cutoff, &keep)?;
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

    /// Applies records the log handed out, in log order, and routes their effects (the delivery
    /// threads' facts about them are then watched for).
    fn apply(&mut self, entries: Vec<(u64, Record)>, ctx: &mut Context<Self>) {
        let Some(&(upto, _)) = entries.last() else {
            return;
        };
        self.uncheckpointed += entries.len() as u64;
        let mut effects: Vec<Effect> = Vec::new();
        let mut bodies = std::collections::HashMap::new();
        let mut ops = Vec::new();
        {
            let mut projection = self.projection.write();
            for (seq, r) in &entries {
                let (seq, r) = (*seq, r);
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
        self.indexer.apply(ops, upto);
        if let (Some(router), false) = (&self.router, effects.is_empty()) {
            router.do_send(Effects {
                effects,
                bodies,
                upto,
            });
            self.watch_facts(ctx);
        }
    }

    /// Applies what other writers of a shared log appended (nothing on a log with one writer).
    fn catch_up(&mut self, to_end: bool, ctx: &mut Context<Self>) -> Result<(), SubmitError> {
        self.catch_up_requested
            .store(false, std::sync::atomic::Ordering::Release);
        let entries = self
            .log
            .catch_up(to_end)
            .map_err(|e| SubmitError::Storage(e.to_string()))?;
        if !entries.is_empty() {
            self.apply(entries, ctx);
            self.after_flush(ctx);
        }
        Ok(())
    }
}

impl LogActor {
    /// Starts the LogActor on a thread of its own, in an actix system of its own: its writes (and, on a
    /// log without a separate sync, its waits for each append) never hold up the HTTP workers; and a SIGTERM, which makes actix-web stop the main system and all its arbiters,
    /// cannot stop it before the clean stop has written what is queued and saved a checkpoint. The thread
    /// ends when the actor stops (every address dropped). Also returns its fact inbox (for the delivery
    /// threads) and the thread's arbiter, where the router runs: a batch's effects reach it without
    /// waking another thread.
    pub fn start_on_own_thread(
        actor: LogActor,
    ) -> std::io::Result<(Addr<LogActor>, FactInbox, actix::ArbiterHandle)> {
        let facts = actor.facts.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let _ = tx.send((actor.start(), actix::Arbiter::current()));
                });
                let _ = system.run();
            })?;
        let (writer, arbiter) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the log writer thread did not start"))?;
        let inbox = FactInbox {
            shared: facts,
            writer: writer.clone(),
        };
        Ok((writer, inbox, arbiter))
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
        // The log says when other writers appended; one `CatchUp` at a time waits in the mailbox.
        let me = ctx.address();
        let requested = self.catch_up_requested.clone();
        let applied = self.projection.read().last_seq;
        let followed = self.log.follow(
            applied,
            Box::new(move || {
                if !requested.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    me.do_send(CatchUp { to_end: false });
                }
            }),
        );
        if let Err(e) = followed {
            tracing::error!(error = %e, "cannot follow the log");
        }
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
        // Facts handed over before this was sent (a FIFO webhook's earlier outcomes) go first.
        self.take_facts();
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

impl Handler<FactsWaiting> for LogActor {
    type Result = ();

    fn handle(&mut self, _: FactsWaiting, ctx: &mut Context<Self>) {
        if self.linger.is_none() {
            // Unwatched from here: a fact handed over after the take below wakes the writer again.
            self.facts.watched.store(false, Ordering::SeqCst);
        }
        self.take_facts();
        if self.queue.len() >= FACT_LINGER_MAX || !self.stopping.is_empty() {
            return self.flush_soon(ctx);
        }
        if !self.queue.is_empty() {
            self.watch_facts(ctx);
        }
    }
}

/// The thread that makes written batches durable ([`LogStore::sync`]) while the LogActor goes on writing:
/// one request at a time, each answered with a [`Synced`]. It ends when the LogActor drops it.
struct Syncer {
    requests: std::sync::mpsc::Sender<()>,
}

impl Syncer {
    fn start(log: Arc<dyn LogStore>, actor: actix::WeakAddr<LogActor>) -> std::io::Result<Self> {
        let (requests, asked) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    let started = std::time::Instant::now();
                    let result = log.sync().map_err(|e| e.to_string());
                    let took = started.elapsed();
                    match actor.upgrade() {
                        Some(actor) => actor.do_send(Synced { result, took }),
                        None => return,
                    }
                }
            })?;
        Ok(Self { requests })
    }

    /// `false` if the thread has ended.
    fn request(&self) -> bool {
        self.requests.send(()).is_ok()
    }
}

/// A sync ended: with the seq of the last record now durable.
#[derive(Message)]
#[rtype(result = "()")]
struct Synced {
    result: Result<u64, String>,
    took: Duration,
}

impl Handler<Synced> for LogActor {
    type Result = ();

    fn handle(&mut self, msg: Synced, ctx: &mut Context<Self>) {
        self.syncing = false;
        self.sync_ended(msg.result, msg.took, ctx);
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

/// Apply what other writers of a shared log appended; with `to_end`, first wait until everything the log
/// held when asked is here (start-up, before the node is ready).
#[derive(Message)]
#[rtype(result = "Result<(), SubmitError>")]
pub struct CatchUp {
    pub to_end: bool,
}

impl Handler<CatchUp> for LogActor {
    type Result = Result<(), SubmitError>;

    fn handle(&mut self, msg: CatchUp, ctx: &mut Context<Self>) -> Self::Result {
        self.catch_up(msg.to_end, ctx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::indexer::IndexWriter;
    use crate::metrics::Metrics;

    /// A LogActor on its own thread over a fresh sled log, with no router (nothing routed, so it
    /// watches for facts only when the inbox wakes it).
    fn start() -> (
        tempfile::TempDir,
        Arc<dyn LogStore>,
        Addr<LogActor>,
        FactInbox,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            buildr_log::EventLog::open_with(dir.path(), buildr_log::StorageOptions::default())
                .unwrap();
        let log: Arc<dyn LogStore> = Arc::new(log);
        let metrics = Arc::new(Metrics::new());
        let settings = LogSettings {
            checkpoint: CheckpointPolicy {
                every_records: 1_000_000,
                interval: Duration::from_secs(3600),
            },
            idempotency_ttl: Duration::from_secs(3600),
            retention: None,
            retention_interval: Duration::from_secs(3600),
        };
        let actor = LogActor::new(
            log.clone(),
            Arc::new(RwLock::new(crate::projection::Projection::default())),
            IndexWriter::start(log.clone(), metrics.clone()),
            (0, 0),
            settings,
            metrics,
        );
        let (addr, inbox, _) = LogActor::start_on_own_thread(actor).unwrap();
        (dir, log, addr, inbox)
    }

    /// The records the log holds, in log order.
    fn stored(log: &dyn LogStore) -> Vec<Record> {
        log.range(1, u64::MAX)
            .map(|r| r.unwrap().1)
            .collect::<Vec<_>>()
    }

    /// A fact handed over while nothing of the writer's own is coming wakes it, and is written without
    /// anything else arriving after it.
    #[test]
    fn a_fact_nobody_waits_for_is_written_on_its_own() {
        let (_dir, log, _addr, inbox) = start();
        let fact = buildr_log::drivertest::record(1);
        inbox.record(vec![fact.clone()]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.last_seq() < 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stored(&*log), vec![fact]);
    }

    /// Facts handed over while the writer watches for them (as after a routed batch: no message) are
    /// written before a submission sent after them, as a message sent after them would be.
    #[test]
    fn facts_handed_over_before_a_submission_are_written_before_it() {
        let (_dir, log, addr, inbox) = start();
        let records: Vec<Record> = (1..=3).map(buildr_log::drivertest::record).collect();
        inbox.shared.watched.store(true, Ordering::SeqCst);
        inbox.record(vec![records[0].clone()]);
        inbox.record(vec![records[1].clone()]);
        let system = actix_rt::System::new();
        let submitted = system.block_on(addr.send(Submit {
            records: vec![records[2].clone()],
            guard: None,
        }));
        assert!(matches!(
            submitted,
            Ok(Ok(Submitted::Committed { first_seq: 3 }))
        ));
        assert_eq!(stored(&*log), records);
    }
}
