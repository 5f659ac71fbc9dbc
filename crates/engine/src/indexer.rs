//! Keeps the delivery index (buildr_log::DeliveryIndex) in step with the log: which changes each record
//! brings ([`ops`]), and a writer thread that applies them off the actors' thread.

use crate::error::EngineError;
use crate::health::Store;
use crate::metrics::Metrics;
use crate::projection::{Effect, Projection};
use buildr_core::{EventId, EventType, Record};
use buildr_log::{IndexOp, LogStore};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The index changes of `record` at `seq`, given the effects the projection derived from it.
pub fn ops(seq: u64, record: &Record, effects: &[Effect], out: &mut Vec<IndexOp>) {
    let event = match record {
        // An event's id → seq entry is written with its first delivery row (an event no webhook
        // receives needs none: there is nothing to look up).
        Record::EventPublished(e) => Some((e.id.clone(), e.event_type)),
        Record::DeliveryAttempted(a) => {
            out.push(IndexOp::Attempt {
                record_seq: seq,
                attempt: Box::new(a.clone()),
            });
            None
        }
        Record::WebhookDeleted { id, .. } => {
            out.push(IndexOp::WebhookDeleted(id.clone()));
            None
        }
        _ => None,
    };
    for effect in effects {
        match effect {
            Effect::Deliver { webhook, seq, .. } => out.push(IndexOp::Queued {
                webhook: webhook.clone(),
                seq: *seq,
                event: event.clone(),
            }),
            // Pending again, with its attempts so far kept in its history.
            Effect::Restarted { webhook, seq } => out.push(IndexOp::Queued {
                webhook: webhook.clone(),
                seq: *seq,
                event: None,
            }),
            Effect::WebhookChanged(_) | Effect::WebhookRemoved(_) => {}
        }
    }
}

/// The projection at the log's end (checkpoint + tail), with the delivery index caught up on the way.
pub fn catch_up(
    log: &dyn LogStore,
) -> Result<(Projection, crate::checkpoint::Rebuilt), EngineError> {
    let index = log.index()?;
    let index_seq = index.applied_seq()?;
    let mut pending = Vec::new();
    let mut last = 0;
    let mut pending_err = None;
    let result = crate::checkpoint::restore_up_to(log, index_seq, |seq, record, effects| {
        if seq <= index_seq || pending_err.is_some() {
            return;
        }
        ops(seq, record, effects, &mut pending);
        last = seq;
        if pending.len() >= 10_000 {
            if let Err(e) = apply_in_parts(log, &mut pending, seq) {
                pending_err = Some(e);
            }
            pending.clear();
        }
    })?;
    if let Some(e) = pending_err {
        return Err(e.into());
    }
    if !pending.is_empty() {
        apply_in_parts(log, &mut pending, last)?;
    }
    Ok(result)
}

/// Reads an event's id and type from the log (for rows a replay creates).
pub fn event_at(log: &dyn LogStore, seq: u64) -> Option<(EventId, EventType)> {
    match log.get(seq) {
        Ok(Some(Record::EventPublished(e))) => Some((e.id, e.event_type)),
        _ => None,
    }
}

enum Job {
    Apply(Vec<IndexOp>, u64),
    Forget(std::collections::HashSet<u64>, Vec<EventId>),
    Sync(std::sync::mpsc::Sender<()>),
    /// A reader is waiting: write what is gathered now instead of lingering.
    Nudge,
    /// Drop attempt statistics of buckets that ended before this time (ms).
    PruneStats(i64),
}

/// How far the index is: the last seq whose ops were handed to the writer, and the last one written.
/// A reader waits for `written` to reach what `sent` was when its request arrived (read-your-writes).
struct Progress {
    sent: AtomicU64,
    written: watch::Sender<u64>,
    /// Changes were dropped because the queue was full ([`MAX_QUEUED_OPS`]): the writer empties the queue
    /// and rebuilds the index from the log, which holds every record they came from.
    overflowed: AtomicBool,
}

/// The index did not reach the position a reader waits for within the bound.
#[derive(Debug, thiserror::Error)]
#[error("the delivery index is behind the log (seq {written} of {wanted})")]
pub struct IndexBehind {
    pub written: u64,
    pub wanted: u64,
}

/// At most this many ops are merged into one index batch (sled's batch lock stops the index database's
/// readers, the delivery API among them, while a batch is written).
const MAX_MERGED_OPS: usize = 5_000;

/// A batch of more than this many ops (a large fan-out) is written in parts: its fresh rows
/// [`MAX_FRESH_ROWS`] to a sled batch, so a fan-out to 100,000 webhooks is not one batch of 100,000 rows
/// (sled holds a batch's node splits in memory until it is done: S5's peak was ~700 MB written whole,
/// ~340 MB in parts). Smaller batches are written whole, as before: splitting S3's 10,000-row batches
/// (100 events to 100 webhooks) cost ~20 % more server CPU there.
const SPLIT_ABOVE: usize = 16_384;

/// The fresh rows of a batch written in parts go this many to a sled batch. The node copies a sled batch
/// replaces can only be freed once it is done (`buildr_log::reclaim`): ~3 KB per row at a fan-out, so a
/// part of 4,096 rows held ~11 MB of them at once.
const MAX_FRESH_ROWS: usize = 1_024;

/// At most this many changes wait for the writer (about 100–200 MB of them). The queue only grows that
/// long when the index cannot be written (a failing disk, while the log still takes events): past it the
/// changes are dropped, and once the index can be written again the writer rebuilds it from the log
/// instead of writing them, so memory stays bounded and nothing is lost (the log holds every record).
const MAX_QUEUED_OPS: usize = 1_000_000;

/// How long the writer gathers batches before writing them. Most deliveries are queued and attempted
/// within this time, so their row is written once, with its outcome, instead of twice (and never read
/// back). The delivery-records API lags the log by at most this much.
const LINGER: Duration = Duration::from_millis(50);

/// How often the writer flushes the index (sled's own background flush is off for it, so the writer
/// knows which of its batches are on disk).
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The longest wait between two attempts to reopen a failing index.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The writer thread's state.
struct Writer<'a> {
    log: &'a dyn LogStore,
    rx: &'a mpsc::Receiver<Job>,
    progress: &'a Progress,
    metrics: &'a Metrics,
    /// Batches written since the last flush this writer saw succeed: after a storage error, the ones
    /// the reopened index does not have are written again.
    journal: Vec<(Vec<IndexOp>, u64)>,
    flushed_at: Instant,
    /// Batches up to this seq are already in an index rebuilt from the log: skipped when they arrive.
    rebuilt_up_to: u64,
    /// [`LINGER`], longer in tests.
    linger: Duration,
}

impl Writer<'_> {
    /// Gathers what arrives for up to [`LINGER`] (or [`MAX_MERGED_OPS`]) and writes it as one sled
    /// batch, in log order.
    fn run(&mut self) {
        let rx = self.rx;
        let mut next = None;
        loop {
            if self.progress.overflowed.load(Ordering::Acquire) {
                self.rebuild_after_overflow();
            }
            let job = match next.take() {
                Some(job) => job,
                None if self.journal.is_empty() => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
                None => {
                    match rx.recv_timeout(FLUSH_EVERY.saturating_sub(self.flushed_at.elapsed())) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.flush_if_due();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            match job {
                Job::Apply(mut ops, mut seq) => {
                    let until = Instant::now() + self.linger;
                    while ops.len() < MAX_MERGED_OPS {
                        match rx.try_recv() {
                            Ok(Job::Apply(more, s)) => {
                                ops.extend(more);
                                seq = s;
                                continue;
                            }
                            // Anything else (a sync, a retention clean-up) waits for what came before it.
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(mpsc::TryRecvError::Disconnected) => break,
                            Err(mpsc::TryRecvError::Empty) => {}
                        }
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        // Parked, not waiting on the channel: a batch handed over does not wake this
                        // thread (at a low event rate that was two wake-ups per event, one for the
                        // event's batch and one for its attempt's); what cannot wait out the linger
                        // unparks it (`IndexWriter::wake`).
                        std::thread::park_timeout(left);
                    }
                    self.write(ops, seq);
                }
                Job::Forget(seqs, ids) => {
                    if let Err(e) = self.log.index().and_then(|ix| ix.forget(&seqs, &ids)) {
                        tracing::warn!(error = %e, "could not drop compacted events from the delivery index");
                    }
                }
                Job::Sync(done) => {
                    let _ = done.send(());
                }
                Job::PruneStats(before) => {
                    if let Err(e) = self.log.index().and_then(|ix| ix.prune_stats(before)) {
                        tracing::warn!(error = %e, "could not drop old attempt statistics");
                    }
                }
                Job::Nudge => {}
            }
            self.flush_if_due();
        }
    }

    fn write(&mut self, mut ops: Vec<IndexOp>, seq: u64) {
        // Off the queue either way: written now, or (after a storage error) held in the journal and
        // written again by `recover` before anything else.
        self.metrics.index_queued.sub(gauge_count(ops.len()));
        if seq <= self.rebuilt_up_to {
            return;
        }
        let written = apply_in_parts(self.log, &mut ops, seq);
        self.journal.push((ops, seq));
        match written {
            Ok(()) => self.progress.written.send_modify(|w| *w = (*w).max(seq)),
            Err(e) => self.recover(e.to_string(), false),
        }
    }

    fn flush_if_due(&mut self) {
        if self.journal.is_empty() || self.flushed_at.elapsed() < FLUSH_EVERY {
            return;
        }
        match self.log.flush_index() {
            Ok(()) => {
                self.journal.clear();
                self.flushed_at = Instant::now();
            }
            Err(e) => self.recover(e.to_string(), false),
        }
    }

    /// After a storage error: reopens the index (sled keeps its first I/O error for the life of the
    /// database) and writes again what the reopened index lacks, with backoff, until it succeeds. Until
    /// then readers wait (and get `503`), `/readyz` is `503`, and what arrives waits in the channel.
    /// `rebuilding`: the index is to be rebuilt from the log rather than given its journal again.
    fn recover(&mut self, mut error: String, mut rebuilding: bool) {
        let mut wait = Duration::from_millis(100);
        // Once the index was found unreadable it is rebuilt, until a rebuild succeeds: a half-done one
        // has only part of the log in it, which the journal does not make up for.
        let mut waiting = Vec::new();
        loop {
            self.metrics.storage.failed(Store::DeliveryIndex, &error);
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
            if self.progress.overflowed.load(Ordering::Acquire) {
                // Changes were dropped while the index could not be written: the journal no longer
                // makes up what it lacks, only a rebuild from the log does.
                waiting.extend(self.drop_queue());
                rebuilding = true;
            }
            let attempt = if rebuilding {
                self.rebuild()
            } else {
                self.rewrite_journal().map_err(|e| {
                    // The reopened index cannot be read (a write cut short by the full disk): it is
                    // derived, so it is thrown away and rebuilt from the log.
                    rebuilding = e.is_corruption();
                    e.to_string()
                })
            };
            match attempt {
                Ok(()) => break,
                Err(e) => error = e,
            }
        }
        if let Some(&(_, seq)) = self.journal.last() {
            self.progress.written.send_modify(|w| *w = (*w).max(seq));
        }
        self.journal.clear();
        self.flushed_at = Instant::now();
        self.metrics.storage.healed(Store::DeliveryIndex);
        for done in waiting {
            let _ = done.send(());
        }
    }

    /// Empties the queue that went past [`MAX_QUEUED_OPS`] (its changes are dropped: the rebuild that
    /// follows reads their records from the log) and lets changes be queued again; returns the syncs
    /// waiting in it, to be answered once the index is rebuilt. Every change dropped, here or by
    /// [`IndexWriter::apply`] while the flag was up, came from a record the log held before the flag
    /// went down, so before the rebuild reads the log.
    fn drop_queue(&mut self) -> Vec<mpsc::Sender<()>> {
        let mut dropped = 0;
        let mut waiting = Vec::new();
        while let Ok(job) = self.rx.try_recv() {
            match job {
                Job::Apply(ops, _) => dropped += ops.len(),
                Job::Sync(done) => waiting.push(done),
                // The log the rebuild reads no longer holds what retention removed; statistics are
                // pruned again at the next round.
                Job::Forget(..) | Job::PruneStats(_) | Job::Nudge => {}
            }
        }
        self.metrics.index_queued.sub(gauge_count(dropped));
        self.progress.overflowed.store(false, Ordering::Release);
        tracing::warn!(
            dropped,
            "the delivery index fell {MAX_QUEUED_OPS} changes behind the log; rebuilding it from the log"
        );
        waiting
    }

    /// After the queue overflowed while the index could be written (it could not keep up).
    fn rebuild_after_overflow(&mut self) {
        let waiting = self.drop_queue();
        if let Err(e) = self.rebuild() {
            // Healing rebuilds it once the index can be written.
            self.recover(e, true);
        }
        for done in waiting {
            let _ = done.send(());
        }
    }

    /// A fresh index, caught up from the whole log; batches it already covers are skipped later.
    fn rebuild(&mut self) -> Result<(), String> {
        tracing::warn!(
            "the delivery index cannot be read after a storage error; rebuilding it from the log"
        );
        self.log.reset_index().map_err(|e| e.to_string())?;
        let (projection, _) = catch_up(self.log).map_err(|e| e.to_string())?;
        self.log.flush_index().map_err(|e| e.to_string())?;
        self.rebuilt_up_to = projection.last_seq;
        self.progress
            .written
            .send_modify(|w| *w = (*w).max(projection.last_seq));
        // Every batch journaled was in the log the rebuild read.
        self.journal.clear();
        Ok(())
    }

    fn rewrite_journal(&self) -> Result<(), buildr_log::LogError> {
        self.log.reopen_index()?;
        let index = self.log.index()?;
        // Each batch went in atomically with the seq it reached: the reopened index has a prefix of them.
        let on_disk = index.applied_seq()?;
        for (ops, seq) in self.journal.iter().filter(|(_, seq)| *seq > on_disk) {
            apply_parts(self.log, &index, ops, *seq, on_disk)?;
        }
        self.log.flush_index()
    }
}

/// A row of a freshly published event: written for the first time, so writing it again is harmless as
/// long as nothing later about it is in the index (its attempts come in later batches).
fn fresh(op: &IndexOp) -> bool {
    matches!(op, IndexOp::Queued { event: Some(_), .. })
}

/// Writes `ops` (the changes of the log up to `seq`, in log order) to the index. A batch of more than
/// [`SPLIT_ABOVE`] ops is written in parts: first the fresh rows it creates ([`fresh`]; they move ahead of
/// the rest, which never refers to them), [`MAX_FRESH_ROWS`] at a time with the index's position left
/// where it was,
/// then the rest as one batch that moves it to `seq`. A crash between the parts leaves the index at its
/// old position, and start-up applies the whole batch again: the fresh rows are written once more, the
/// same, and the rest (attempt counts, requeues) only once. `ops` is left in the order written (the
/// journal rewrites it so after a storage error).
fn apply_in_parts(
    log: &dyn LogStore,
    ops: &mut Vec<IndexOp>,
    seq: u64,
) -> Result<(), buildr_log::LogError> {
    let index = log.index()?;
    if ops.len() <= SPLIT_ABOVE {
        return index.apply(ops, seq, |s| event_at(log, s));
    }
    // Reordered only when a fresh row comes after another op (a fan-out alone needs no copy).
    if ops.iter().skip_while(|op| fresh(op)).any(fresh) {
        let (mut first, rest): (Vec<IndexOp>, Vec<IndexOp>) =
            std::mem::take(ops).into_iter().partition(fresh);
        first.extend(rest);
        *ops = first;
    }
    let at = index.applied_seq()?;
    apply_parts(log, &index, ops, seq, at)
}

/// Writes `ops`, whose fresh rows come first, as [`apply_in_parts`] does; `at` is the index's position.
fn apply_parts(
    log: &dyn LogStore,
    index: &buildr_log::DeliveryIndex,
    ops: &[IndexOp],
    seq: u64,
    at: u64,
) -> Result<(), buildr_log::LogError> {
    let mut ops = ops;
    if ops.len() <= SPLIT_ABOVE {
        return index.apply(ops, seq, |s| event_at(log, s));
    }
    while ops.len() > MAX_FRESH_ROWS && ops[..MAX_FRESH_ROWS].iter().all(fresh) {
        let (part, more) = ops.split_at(MAX_FRESH_ROWS);
        index.apply(part, at.min(seq), |s| event_at(log, s))?;
        ops = more;
    }
    index.apply(ops, seq, |s| event_at(log, s))
}

/// A count of ops as the value of a gauge.
fn gauge_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The index writer: one thread, applying batches in log order.
#[derive(Clone)]
pub struct IndexWriter {
    tx: mpsc::Sender<Job>,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    /// [`MAX_QUEUED_OPS`], smaller in tests.
    max_queued: usize,
    /// The writer thread, unparked by [`Self::wake`] (`None` if it could not be started).
    thread: Option<std::thread::Thread>,
}

impl IndexWriter {
    pub fn start(log: Arc<dyn LogStore>, metrics: Arc<Metrics>) -> Self {
        Self::start_with(log, metrics, LINGER)
    }

    fn start_with(log: Arc<dyn LogStore>, metrics: Arc<Metrics>, linger: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let progress = Arc::new(Progress {
            sent: AtomicU64::new(0),
            written: watch::Sender::new(0),
            overflowed: AtomicBool::new(false),
        });
        let theirs = progress.clone();
        let writer_metrics = metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("delivery-index".into())
            .spawn(move || {
                Writer {
                    log: &*log,
                    rx: &rx,
                    progress: &theirs,
                    metrics: &writer_metrics,
                    journal: Vec::new(),
                    flushed_at: Instant::now(),
                    rebuilt_up_to: 0,
                    linger,
                }
                .run()
            });
        let thread = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the delivery index writer");
                None
            }
        };
        Self {
            tx,
            progress,
            metrics,
            max_queued: MAX_QUEUED_OPS,
            thread,
        }
    }

    /// Hands the writer a job that must not wait out its linger (a reader, a sync, a clean-up).
    fn send_now(&self, job: Job) {
        let _ = self.tx.send(job);
        self.wake();
    }

    /// Ends the writer's linger now (it may be parked in it, where a send does not wake it).
    fn wake(&self) {
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
    }

    pub fn apply(&self, ops: Vec<IndexOp>, applied_seq: u64) {
        // A batch without changes need not move `applied_seq`: replaying it again changes nothing.
        if !ops.is_empty() {
            self.progress.sent.fetch_max(applied_seq, Ordering::AcqRel);
            let queued = usize::try_from(self.metrics.index_queued.get()).unwrap_or(0);
            if self.progress.overflowed.load(Ordering::Acquire)
                || (queued > 0 && queued + ops.len() > self.max_queued)
            {
                // Dropped: the writer rebuilds the index from the log, which holds these records.
                if !self.progress.overflowed.swap(true, Ordering::AcqRel) {
                    self.send_now(Job::Nudge);
                }
                return;
            }
            let len = ops.len();
            self.metrics.index_queued.add(gauge_count(len));
            if let Err(mpsc::SendError(Job::Apply(ops, _))) =
                self.tx.send(Job::Apply(ops, applied_seq))
            {
                // The writer is gone (shutting down): nothing will write them.
                self.metrics.index_queued.sub(gauge_count(ops.len()));
            } else if queued + len >= MAX_MERGED_OPS {
                // A full batch's worth waits: written now, not at the end of the linger.
                self.wake();
            }
        }
    }

    /// Waits (at most `bound`) until the index holds every change handed to it before this call: what was
    /// committed to the log before a request arrived is then in the index (read-your-writes). The writer
    /// is nudged to write what it is gathering at once rather than after its linger.
    pub async fn caught_up(&self, bound: Duration) -> Result<(), IndexBehind> {
        let wanted = self.progress.sent.load(Ordering::Acquire);
        let mut written = self.progress.written.subscribe();
        if *written.borrow() >= wanted {
            return Ok(());
        }
        self.send_now(Job::Nudge);
        let reached = tokio::time::timeout(bound, written.wait_for(|w| *w >= wanted))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            return Ok(());
        }
        let at = *written.borrow();
        Err(IndexBehind {
            written: at,
            wanted,
        })
    }

    /// Drops the rows of events that retention removed from the log.
    pub fn forget(&self, seqs: std::collections::HashSet<u64>, ids: Vec<EventId>) {
        self.send_now(Job::Forget(seqs, ids));
    }

    /// Drops attempt statistics older than anyone may ask for (`GET …/stats` goes 60 days back).
    pub fn prune_stats(&self) {
        let keep = crate::engine::STATS_HISTORY.as_millis() as i64 + 3_600_000;
        self.send_now(Job::PruneStats(
            buildr_core::Timestamp::now().as_millis() - keep,
        ));
    }

    /// Blocks until everything sent before is applied.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Job::Sync(done)).is_ok() {
            self.wake();
            let _ = wait.recv();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use buildr_core::WebhookId;

    /// A fresh sled log in a temporary directory (kept while the directory guard lives).
    fn temp_log() -> (tempfile::TempDir, buildr_log::EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            buildr_log::EventLog::open_with(dir.path(), buildr_log::StorageOptions::default())
                .unwrap();
        (dir, log)
    }

    /// A fan-out larger than [`SPLIT_ABOVE`], behind an op that is not a fresh row: its fresh rows go
    /// first, in parts, and the index reaches the batch's seq with every row in it.
    #[test]
    fn a_large_fan_out_is_written_in_parts_and_reaches_its_seq() {
        let (_dir, log) = temp_log();
        let event: EventId = "evt_01HZY0000000000000000000AA".parse().unwrap();
        let hooks: Vec<WebhookId> = (0..SPLIT_ABOVE + 100)
            .map(|n| format!("wh_01HZY{n:021}").parse().unwrap())
            .collect();
        // A requeue of a row that does not exist (its event is not in the log): not fresh, written last.
        let mut ops = vec![IndexOp::Queued {
            webhook: hooks[0].clone(),
            seq: 3,
            event: None,
        }];
        ops.extend(hooks.iter().map(|w| IndexOp::Queued {
            webhook: w.clone(),
            seq: 5,
            event: Some((event.clone(), EventType::ContactCreate)),
        }));
        apply_in_parts(&log, &mut ops, 9).unwrap();
        assert!(fresh(&ops[0]), "fresh rows moved ahead");
        assert!(!fresh(&ops[ops.len() - 1]));
        let index = log.index().unwrap();
        assert_eq!(index.applied_seq().unwrap(), 9);
        for w in [&hooks[0], &hooks[MAX_FRESH_ROWS], &hooks[hooks.len() - 1]] {
            assert!(index.delivery(w, 5).unwrap().is_some(), "{w} has its row");
        }
        assert!(index.delivery(&hooks[0], 3).unwrap().is_none());
    }

    /// A queue past its bound drops what arrives, and the writer, instead of writing the changes it
    /// holds, rebuilds the index from the log: every event the log holds ends up in it, the queue is
    /// counted back to 0, and changes are queued again afterwards.
    #[test]
    fn a_queue_past_its_bound_is_dropped_and_the_index_rebuilt_from_the_log() {
        use buildr_core::Record;
        let (_dir, log) = temp_log();
        let log: Arc<dyn LogStore> = Arc::new(log);
        let hook = crate::projection::tests::webhook();
        let w = hook.id.clone();
        // Seq 1 the webhook, 2..=16 its events; the changes of each, as the log writer hands them over.
        let mut records = vec![Record::WebhookCreated(hook)];
        records.extend((2..=16).map(buildr_log::drivertest::record));
        let groups: Vec<_> = (0..records.len()).map(buildr_log::Group::at).collect();
        log.append_batch(records.clone(), &groups).unwrap();
        let changes = |seqs: std::ops::RangeInclusive<u64>| -> Vec<IndexOp> {
            seqs.map(|seq| match &records[seq as usize - 1] {
                Record::EventPublished(e) => IndexOp::Queued {
                    webhook: w.clone(),
                    seq,
                    event: Some((e.id.clone(), e.event_type)),
                },
                _ => unreachable!(),
            })
            .collect()
        };

        // The writer is not running yet: what is handed over waits in the queue (at most 10 changes).
        let (tx, rx) = mpsc::channel();
        let progress = Arc::new(Progress {
            sent: AtomicU64::new(0),
            written: watch::Sender::new(0),
            overflowed: AtomicBool::new(false),
        });
        let metrics = Arc::new(Metrics::new());
        let writer = IndexWriter {
            tx,
            progress: progress.clone(),
            metrics: metrics.clone(),
            max_queued: 10,
            thread: None,
        };
        writer.apply(changes(2..=6), 6);
        writer.apply(changes(7..=12), 12);
        writer.apply(changes(13..=15), 15);
        assert_eq!(
            metrics.index_queued.get(),
            5,
            "only the first batch is queued"
        );
        assert!(progress.overflowed.load(Ordering::Acquire));

        let thread = {
            let (log, progress, metrics) = (log.clone(), progress.clone(), metrics.clone());
            std::thread::spawn(move || {
                Writer {
                    log: &*log,
                    rx: &rx,
                    progress: &progress,
                    metrics: &metrics,
                    journal: Vec::new(),
                    flushed_at: Instant::now(),
                    rebuilt_up_to: 0,
                    linger: LINGER,
                }
                .run()
            })
        };
        writer.sync();
        let index = log.index().unwrap();
        let seqs = |index: &buildr_log::DeliveryIndex| -> Vec<u64> {
            let mut s: Vec<u64> = index
                .deliveries(&w, None, None, 100)
                .unwrap()
                .into_iter()
                .map(|(seq, _)| seq)
                .collect();
            s.sort_unstable();
            s
        };
        // Rebuilt from the log: seq 16 too, which was never handed over.
        assert_eq!(seqs(&index), (2..=16).collect::<Vec<_>>());
        assert_eq!(metrics.index_queued.get(), 0);
        assert!(!progress.overflowed.load(Ordering::Acquire));

        // Changes are queued and written again; those the rebuild already holds are skipped.
        writer.apply(changes(16..=16), 16);
        writer.sync();
        assert_eq!(seqs(&log.index().unwrap()), (2..=16).collect::<Vec<_>>());
        assert_eq!(metrics.index_queued.get(), 0);
        drop(writer);
        thread.join().unwrap();
    }

    /// A batch handed over does not wake the writer in its linger (it sleeps it out), but a reader
    /// waiting for read-your-writes, a sync and a full batch's worth of changes do: with a linger far longer than the reader's
    /// bound, each still finds its changes written.
    #[test]
    fn a_reader_a_sync_and_a_full_batch_cut_the_writers_linger_short() {
        let (_dir, log) = temp_log();
        let log: Arc<dyn LogStore> = Arc::new(log);
        let metrics = Arc::new(Metrics::new());
        let writer =
            IndexWriter::start_with(log.clone(), metrics.clone(), Duration::from_secs(600));
        let event: EventId = "evt_01HZY0000000000000000000AA".parse().unwrap();
        let hook: WebhookId = "wh_01HZY000000000000000000001".parse().unwrap();
        let queued = |seq: u64| {
            vec![IndexOp::Queued {
                webhook: hook.clone(),
                seq,
                event: Some((event.clone(), EventType::ContactCreate)),
            }]
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let index = log.index().unwrap();

        // The first batch wakes the idle writer, the second arrives while it lingers.
        writer.apply(queued(1), 1);
        writer.apply(queued(2), 2);
        // Parked in the linger by now (were it not, the nudge would be found without a wake).
        std::thread::sleep(Duration::from_millis(200));
        runtime
            .block_on(writer.caught_up(Duration::from_secs(5)))
            .expect("a reader's nudge ends the linger");
        assert!(index.delivery(&hook, 2).unwrap().is_some());

        writer.apply(queued(3), 3);
        writer.apply(queued(4), 4);
        std::thread::sleep(Duration::from_millis(200));
        let (done, synced) = mpsc::channel();
        let syncing = writer.clone();
        std::thread::spawn(move || {
            syncing.sync();
            let _ = done.send(());
        });
        synced
            .recv_timeout(Duration::from_secs(30))
            .expect("a sync ends the linger");
        assert!(index.delivery(&hook, 4).unwrap().is_some());

        // A full batch's worth of changes is written without waiting out the linger either.
        let many: Vec<IndexOp> = (0..MAX_MERGED_OPS)
            .map(|i| IndexOp::Queued {
                webhook: format!("wh_01HZY{i:021}").parse().unwrap(),
                seq: 5,
                event: Some((event.clone(), EventType::ContactCreate)),
            })
            .collect();
        writer.apply(queued(5), 5);
        std::thread::sleep(Duration::from_millis(200));
        writer.apply(many, 5);
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics.index_queued.get() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            metrics.index_queued.get(),
            0,
            "written before the linger ended"
        );
    }

    /// `buildr_delivery_index_queued_changes` counts the ops handed to the writer until it has written
    /// them, merged batches included.
    #[test]
    fn the_queued_changes_gauge_counts_ops_until_they_are_written() {
        let (_dir, log) = temp_log();
        let metrics = Arc::new(Metrics::new());
        let writer = IndexWriter::start(Arc::new(log), metrics.clone());
        let event: EventId = "evt_01HZY0000000000000000000AA".parse().unwrap();
        let queued = |n: usize, seq: u64| -> Vec<IndexOp> {
            (0..n)
                .map(|i| IndexOp::Queued {
                    webhook: format!("wh_01HZY{i:021}").parse().unwrap(),
                    seq,
                    event: Some((event.clone(), EventType::ContactCreate)),
                })
                .collect()
        };
        let handed = Instant::now();
        writer.apply(queued(3, 1), 1);
        writer.apply(queued(2, 2), 2);
        let right_after = metrics.index_queued.get();
        // The writer gathers for LINGER before it writes: unless this thread was held up that long, both
        // batches are still waiting.
        if handed.elapsed() < LINGER {
            assert_eq!(right_after, 5);
        }
        writer.sync();
        assert_eq!(metrics.index_queued.get(), 0, "written and counted off");
        writer.apply(Vec::new(), 3);
        assert_eq!(
            metrics.index_queued.get(),
            0,
            "an empty batch is not queued"
        );
    }
}
