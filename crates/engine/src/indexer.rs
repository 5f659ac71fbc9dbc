//! Keeps the delivery index (buildr_log::DeliveryIndex) in step with the log: which changes each record
//! brings ([`ops`]), and a writer thread that applies them off the actors' thread.

use crate::projection::Effect;
use buildr_core::{EventId, EventType, Record};
use buildr_log::{IndexOp, LogStore};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The index changes of `record` at `seq`, given the effects the projection derived from it.
pub fn ops(seq: u64, record: &Record, effects: &[Effect], out: &mut Vec<IndexOp>) {
    let event = match record {
        // An event's id → seq entry is written with its first delivery row (an event no webhook
        // receives needs none: there is nothing to look up).
        Record::EventPublished(e) => Some((e.id.clone(), e.event_type)),
        Record::DeliveryAttempted(a) => {
            out.push(IndexOp::Attempt {
                record_seq: seq,
                attempt: a.clone(),
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
        if let Effect::Deliver { webhook, seq } = effect {
            out.push(IndexOp::Queued {
                webhook: webhook.clone(),
                seq: *seq,
                event: event.clone(),
            });
        }
    }
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
}

/// At most this many ops are merged into one index batch (sled's batch lock is process-wide: a huge index
/// batch would hold up the log's own appends).
const MAX_MERGED_OPS: usize = 5_000;

/// How long the writer gathers batches before writing them. Most deliveries are queued and attempted
/// within this time, so their row is written once, with its outcome, instead of twice (and never read
/// back). The delivery-records API lags the log by at most this much.
const LINGER: Duration = Duration::from_millis(50);

/// The writer thread: gathers what arrives for up to [`LINGER`] (or [`MAX_MERGED_OPS`]) and writes it
/// as one sled batch, in log order.
fn run(log: &dyn LogStore, rx: &mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Apply(mut ops, mut seq) => {
                let until = Instant::now() + LINGER;
                while ops.len() < MAX_MERGED_OPS {
                    let left = until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(Job::Apply(more, s)) => {
                            ops.extend(more);
                            seq = s;
                        }
                        // Anything else (a sync, a retention clean-up) waits for what came before it.
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = log.index().apply(&ops, seq, |s| event_at(log, s)) {
                    tracing::error!(error = %e, seq, "delivery index update failed; it is rebuilt from the log on restart");
                }
            }
            Job::Forget(seqs, ids) => {
                if let Err(e) = log.index().forget(&seqs, &ids) {
                    tracing::warn!(error = %e, "could not drop compacted events from the delivery index");
                }
            }
            Job::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The index writer: one thread, applying batches in log order.
#[derive(Clone)]
pub struct IndexWriter {
    tx: mpsc::Sender<Job>,
}

impl IndexWriter {
    pub fn start(log: Arc<dyn LogStore>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("delivery-index".into())
            .spawn(move || run(&*log, &rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the delivery index writer");
        }
        Self { tx }
    }

    pub fn apply(&self, ops: Vec<IndexOp>, applied_seq: u64) {
        // A batch without changes need not move `applied_seq`: replaying it again changes nothing.
        if !ops.is_empty() {
            let _ = self.tx.send(Job::Apply(ops, applied_seq));
        }
    }

    /// Drops the rows of events that retention removed from the log.
    pub fn forget(&self, seqs: std::collections::HashSet<u64>, ids: Vec<EventId>) {
        let _ = self.tx.send(Job::Forget(seqs, ids));
    }

    /// Blocks until everything sent before is applied.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Job::Sync(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}
