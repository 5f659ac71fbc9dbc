//! The storage interface the engine runs on: the log of [`Record`]s, its checkpoint and the derived
//! delivery index. Two implementations: [`crate::EventLog`] (sled, one node, the embedded default) and the
//! JetStream log of cluster mode (crate `buildr-cluster`). The engine holds an `Arc<dyn LogStore>` and never
//! knows which one it runs on; [`crate::drivertest`] is the behaviour every implementation must show.
//!
//! Seqs are one monotonic `u64` per record, starting above 0. They need not be contiguous (retention
//! removes records; a shared log may number its records with gaps), but the records of one atomic group
//! of an append always get consecutive seqs, so a caller may number a group's records from its first seq.

use crate::{CheckpointWriter, DeliveryIndex, LogError, Reopened};
use buildr_core::{AccountId, Record, Timestamp};

/// Records in log order with their seqs.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(u64, Record), LogError>> + 'a>;

/// An account's events as the events index knows them (see [`LogStore::account_event_refs`]).
pub type EventRefs<'a> = Box<dyn Iterator<Item = Result<crate::EventRef, LogError>> + 'a>;

/// An atomic group of an append: the records from `start` to the next group's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub start: usize,
    /// Stored at most once per id (within the log's de-duplication window) when the log is shared by
    /// several writers: a second append of a group with the same id stores nothing and is reported in
    /// [`Appended::duplicates`]. A log with one writer ignores it (the engine checks its own state).
    pub dedupe_id: Option<String>,
}

impl Group {
    /// A group starting at `start`, without a de-duplication id.
    pub fn at(start: usize) -> Self {
        Self {
            start,
            dedupe_id: None,
        }
    }
}

/// What [`LogStore::append_batch`] wrote, and what the caller must now apply.
#[derive(Debug, Default)]
pub struct Appended {
    /// The seq each written record got, in the order given (for a duplicate group: unspecified).
    pub seqs: Vec<u64>,
    /// Indexes (into the groups given) of groups not stored because their `dedupe_id` was stored
    /// before; what was stored then is among the `entries` handed out (or was handed out earlier).
    pub duplicates: Vec<usize>,
    /// Every record the caller has not been handed yet, in log order, up to and including the ones just
    /// written: only those on a log with one writer; on a shared log also what other writers appended
    /// before them.
    pub entries: Vec<(u64, Record)>,
}

/// What [`LogStore::write_batch`] did with a batch.
#[derive(Debug)]
pub enum Written {
    /// Durable already: the log has no separate sync step (what [`LogStore::append_batch`] returns).
    Durable(Appended),
    /// Written after everything written before, with its seqs, but durable only once a later
    /// [`LogStore::sync`] returns a seq at or past the batch's last: until then nobody may be told it
    /// is stored, nor be handed its records.
    Unsynced(Appended),
}

/// An append that failed, with the records handed back (the caller may want to write some again).
#[derive(Debug)]
pub struct Refused {
    pub error: LogError,
    pub records: Vec<Record>,
}

/// Records between two wanted seqs that a range read may pass over rather than start a new read.
const MAX_GAP: u64 = 32;

/// Splits ascending `seqs` into runs whose neighbours are at most [`MAX_GAP`] apart.
fn dense_runs(seqs: &[u64]) -> impl Iterator<Item = &[u64]> {
    seqs.chunk_by(|a, b| b.saturating_sub(*a) <= MAX_GAP)
}

/// Called (from any thread) when [`LogStore::catch_up`] has records for its caller.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// The log as the engine uses it. One caller appends and is handed records (the engine's log writer);
/// any thread may read.
pub trait LogStore: Send + Sync {
    /// The implementation's name, for logs ("sled", "jetstream").
    fn kind(&self) -> &'static str;

    /// The seq of the last record this node can read (0 when empty).
    fn last_seq(&self) -> u64;

    /// Why this node's view of the log may be out of date now, if it may: a shared log it has lost
    /// contact with, or follows far behind. `/readyz` is `503` while it is (reads are still served from
    /// what this node holds). Never on a log with one writer.
    fn out_of_sync(&self) -> Option<String> {
        None
    }

    /// Appends `records` durably: when this returns `Ok`, they survive a crash (and, on a replicated log,
    /// the loss of a minority of its servers). `groups` say where each atomic group starts (the first at
    /// 0): each group is stored all or nothing, with consecutive seqs. On `Err` the
    /// outcome of each group is unknown to the caller (a shared log may have stored some): the records
    /// that were stored are handed out later like any other.
    fn append_batch(&self, records: Vec<Record>, groups: &[Group]) -> Result<Appended, Refused>;

    /// Writes a batch like [`Self::append_batch`], but may return before it is durable
    /// ([`Written::Unsynced`]), so that the writer goes on writing the next batches while
    /// [`Self::sync`] makes this one durable on another thread (one write and `fdatasync` then covers
    /// every batch written meanwhile). By default the whole append, durable on return.
    fn write_batch(&self, records: Vec<Record>, groups: &[Group]) -> Result<Written, Refused> {
        self.append_batch(records, groups).map(Written::Durable)
    }

    /// Makes every batch [`Self::write_batch`] wrote before this call durable and returns the seq of the
    /// last record now durable. Runs on a thread other than the writer's, one call at a time, while the
    /// writer writes.
    fn sync(&self) -> Result<u64, LogError> {
        Ok(self.last_seq())
    }

    /// Records appended by other writers that this caller has not been handed yet, in log order (always
    /// empty on a log with one writer). With `to_end`, first waits until everything the log held when
    /// called can be handed out (start-up uses it to be caught up before it is ready).
    fn catch_up(&self, to_end: bool) -> Result<Vec<(u64, Record)>, LogError>;

    /// Starts handing out records after `applied` (what the caller's state already holds); `notify` is
    /// called whenever [`LogStore::catch_up`] has something new. Called once, before the first append.
    fn follow(&self, applied: u64, notify: Notify) -> Result<(), LogError>;

    /// One record, `None` if it does not exist (never written, or removed).
    fn get(&self, seq: u64) -> Result<Option<Record>, LogError>;

    /// The records at `seqs` (ascending), in order; seqs without a record are skipped. Dense runs of seqs
    /// are read with one range read each instead of a read per record (a replay of a busy account's hour
    /// reads hundreds of thousands of neighbouring records).
    fn records_at<'a>(&'a self, seqs: &'a [u64]) -> Entries<'a> {
        Box::new(dense_runs(seqs).flat_map(move |run| -> Entries<'a> {
            match run {
                [] => Box::new(std::iter::empty()),
                [seq] => Box::new(
                    self.get(*seq)
                        .transpose()
                        .map(|r| r.map(|r| (*seq, r)))
                        .into_iter(),
                ),
                [first, .., last] => {
                    let mut wanted = run.iter().copied().peekable();
                    Box::new(self.range(*first, last + 1).filter(move |item| {
                        let Ok((seq, _)) = item else { return true };
                        while wanted.next_if(|w| w < seq).is_some() {}
                        wanted.next_if_eq(seq).is_some()
                    }))
                }
            }
        }))
    }

    /// Records with `from <= seq < to`, in order.
    fn range(&self, from: u64, to: u64) -> Entries<'_>;

    /// Every record from `from` on.
    fn tail(&self, from: u64) -> Entries<'_> {
        self.range(from, u64::MAX)
    }

    /// `account`'s events after `after_seq`, in log order (found by an index, without scanning the log).
    fn account_events(&self, account: &AccountId, after_seq: u64) -> Entries<'_>;

    /// `account`'s events created in `[since, until)`, in log order, as the index knows them: their seqs
    /// and (unless indexed by an older version) what a replay decides by, without reading the records.
    fn account_events_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<crate::EventRef>, LogError>;

    /// `account`'s events after `after_seq`, in log order, as the index knows them (see
    /// [`Self::account_events_between`]).
    fn account_event_refs(&self, account: &AccountId, after_seq: u64) -> EventRefs<'_>;

    /// Reopens this node's storage after a write error (the writer heals by itself: see the LogActor).
    /// Afterwards the log's readable records include everything a failed append stored after all (the
    /// writer checks there before it writes a failed batch's facts again).
    fn reopen(&self) -> Result<Reopened, LogError>;

    /// The longest wait between two tries to heal after a write error (the writer's backoff doubles up to
    /// it): a local disk is given seconds; a replicated log whose servers elect a new leader, less.
    fn max_heal_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }

    /// `Ok` once the log accepts writes again (after an error).
    fn probe(&self) -> Result<(), LogError>;

    /// Reopens the delivery index's storage after a write error (only the index writer calls it).
    fn reopen_index(&self) -> Result<(), LogError>;

    /// Throws the delivery index away and opens an empty one, to be rebuilt from the log.
    fn reset_index(&self) -> Result<(), LogError>;

    /// Whether this node carries out retention now: writes its facts and removes records from the shared
    /// log. A shared log lets one node at a time do it (the others' `remove` only drops from their own
    /// copy what was removed); a log with one writer always does.
    fn maintains(&self) -> bool {
        true
    }

    /// Removes records (retention); returns how many. Never the last one. Seqs that are not there are
    /// skipped.
    fn remove(&self, seqs: &[u64]) -> Result<usize, LogError>;

    /// Writes a projection snapshot covering the log up to `seq` (opaque bytes, the engine's format) as
    /// `write` streams it, without holding it whole in memory. It takes effect only with
    /// [`Self::commit_checkpoint`] (until then the last one stays).
    fn stage_checkpoint(&self, seq: u64, write: &mut CheckpointWriter<'_>) -> Result<(), LogError>;

    /// Makes the staged snapshot durable and the one [`Self::load_checkpoint`] returns.
    fn commit_checkpoint(&self) -> Result<(), LogError>;

    /// Stores a projection snapshot covering the log up to `seq` at once.
    fn save_checkpoint(&self, seq: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.stage_checkpoint(seq, &mut |w| w.write_all(bytes))?;
        self.commit_checkpoint()
    }

    /// The last snapshot saved, with its seq.
    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, LogError>;

    /// The delivery index (derived from the log, kept on this node's disk).
    fn index(&self) -> Result<DeliveryIndex, LogError>;

    /// Flushes the delivery index to disk (before a checkpoint that assumes it is caught up).
    fn flush_index(&self) -> Result<(), LogError>;

    /// Flushes this node's files (index and checkpoint included) to disk.
    fn flush(&self) -> Result<(), LogError>;
}

impl LogStore for crate::EventLog {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn last_seq(&self) -> u64 {
        crate::EventLog::last_seq(self)
    }

    /// One fsync for all groups; each group is stored all or nothing (`EventLog::append_groups`).
    fn append_batch(&self, records: Vec<Record>, groups: &[Group]) -> Result<Appended, Refused> {
        let written = match LogStore::write_batch(self, records, groups)? {
            Written::Durable(appended) | Written::Unsynced(appended) => appended,
        };
        match crate::EventLog::sync(self) {
            Ok(_) => Ok(written),
            Err(error) => Err(Refused {
                error,
                records: written.entries.into_iter().map(|(_, r)| r).collect(),
            }),
        }
    }

    /// The groups written in place; [`LogStore::sync`] makes them durable (`EventLog::write_groups`).
    fn write_batch(&self, records: Vec<Record>, groups: &[Group]) -> Result<Written, Refused> {
        let starts: Vec<usize> = groups.iter().map(|g| g.start).collect();
        let first = match self.write_groups(&records, &starts) {
            Ok(first) => first,
            Err(error) => return Err(Refused { error, records }),
        };
        let seqs: Vec<u64> = (first..first + records.len() as u64).collect();
        let entries = seqs.iter().copied().zip(records).collect();
        Ok(Written::Unsynced(Appended {
            seqs,
            duplicates: Vec::new(),
            entries,
        }))
    }

    fn sync(&self) -> Result<u64, LogError> {
        crate::EventLog::sync(self)
    }

    fn catch_up(&self, _to_end: bool) -> Result<Vec<(u64, Record)>, LogError> {
        Ok(Vec::new())
    }

    fn follow(&self, _applied: u64, _notify: Notify) -> Result<(), LogError> {
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        crate::EventLog::get(self, seq)
    }

    fn range(&self, from: u64, to: u64) -> Entries<'_> {
        Box::new(crate::EventLog::range(self, from, to))
    }

    fn account_events(&self, account: &AccountId, after_seq: u64) -> Entries<'_> {
        Box::new(crate::EventLog::account_events(self, account, after_seq))
    }

    fn account_events_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<crate::EventRef>, LogError> {
        crate::EventLog::account_events_between(self, account, since, until)
    }

    fn account_event_refs(&self, account: &AccountId, after_seq: u64) -> EventRefs<'_> {
        crate::EventLog::account_event_refs(self, account, after_seq)
    }

    fn reopen(&self) -> Result<Reopened, LogError> {
        crate::EventLog::reopen(self)
    }

    fn probe(&self) -> Result<(), LogError> {
        crate::EventLog::probe(self)
    }

    fn reopen_index(&self) -> Result<(), LogError> {
        crate::EventLog::reopen_index(self)
    }

    fn reset_index(&self) -> Result<(), LogError> {
        crate::EventLog::reset_index(self)
    }

    fn remove(&self, seqs: &[u64]) -> Result<usize, LogError> {
        crate::EventLog::remove(self, seqs)
    }

    fn stage_checkpoint(&self, seq: u64, write: &mut CheckpointWriter<'_>) -> Result<(), LogError> {
        crate::EventLog::stage_checkpoint(self, seq, write)
    }

    fn commit_checkpoint(&self) -> Result<(), LogError> {
        crate::EventLog::commit_checkpoint(self)
    }

    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        crate::EventLog::load_checkpoint(self)
    }

    fn index(&self) -> Result<DeliveryIndex, LogError> {
        crate::EventLog::index(self)
    }

    fn flush_index(&self) -> Result<(), LogError> {
        crate::EventLog::flush_index(self)
    }

    fn flush(&self) -> Result<(), LogError> {
        crate::EventLog::flush(self)
    }
}
