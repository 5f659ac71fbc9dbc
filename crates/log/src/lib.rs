//! The event log: an append-only sequence of [`Record`]s in sled, numbered by `seq` from 1.
//!
//! - One writer: only the engine's LogActor calls [`EventLog::append`]; readers may read any range at any
//!   time from any thread.
//! - [`EventLog::append`] returns only after the batch is flushed to disk (one fsync per batch).
//! - Each record is stored as `[format version][crc32 of the payload][bincode payload]`, so a torn or
//!   corrupt record is detected instead of misread, and a newer binary can read an older format.
#![forbid(unsafe_code)]

mod block;
mod closing;
mod codec;
mod codec_v1;
#[doc(hidden)]
pub mod drivertest;
mod events_index;
mod index;
mod stats;
mod store;

pub use codec::{decode, encode, DecodeError, FORMAT_VERSION};
pub use events_index::{EventRef, EventSummary};
pub use index::{DeliveryIndex, IndexOp};
pub use stats::{StatsBucket, StatsRow};
pub use store::{Appended, Entries, EventRefs, Group, LogStore, Notify, Refused, Written};

use buildr_core::{AccountId, Record, Timestamp};
use events_index::EventsIndex;
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("record {seq} is corrupt: {source}")]
    Corrupt { seq: u64, source: DecodeError },
    #[error("the log has a gap or a bad key near seq {0}")]
    BadKey(u64),
    /// A replicated log cannot be reached (or has no quorum): writes are refused until it can.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("only {free} bytes free on the log's filesystem")]
    LowSpace { free: u64 },
    /// The database is being reopened after a storage error (see [`EventLog::reopen`]).
    #[error("storage is being reopened after an error")]
    Reopening,
    /// A page of the events index (derived from the records: rebuilt when its tree is dropped).
    #[error("the events index's page at seq {0} does not decode")]
    BadIndexPage(u64),
}

impl LogError {
    /// The database found data it cannot read (as opposed to refusing a write).
    pub fn is_corruption(&self) -> bool {
        matches!(self, LogError::Storage(sled::Error::Corruption { .. }))
    }

    /// Another handle holds the database's lock (sled allows one open database per directory; sled 0.34
    /// reports it only as an I/O error of kind `Other` with this message).
    pub fn is_locked(&self) -> bool {
        matches!(self, LogError::Storage(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock"))
    }
}

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub last_seq: u64,
    /// Records at the tail that were torn or corrupt and were cut off (seq numbers).
    pub truncated: Vec<u64>,
}

/// The log's own database and its trees (cheap handles: cloning shares them).
#[derive(Clone)]
struct LogDb {
    db: sled::Db,
    records: sled::Tree,
    checkpoints: sled::Tree,
    events: EventsIndex,
}

/// The delivery index's database.
#[derive(Clone)]
struct IndexDb {
    db: sled::Db,
    index: DeliveryIndex,
}

/// The log. Its databases can be reopened in place after a storage error (sled keeps its first I/O
/// error for the life of the database: a full disk that gets space again would otherwise refuse every
/// write until a restart); callers hold the log, never the databases.
pub struct EventLog {
    dir: PathBuf,
    options: StorageOptions,
    main: RwLock<Option<LogDb>>,
    index: RwLock<Option<IndexDb>>,
    /// One above the last durable record: what [`EventLog::last_seq`] reports.
    next_seq: AtomicU64,
    /// The seq the next write gets: one above every record written, durable or not (see
    /// [`EventLog::write_groups`] and [`EventLog::sync`]).
    written: AtomicU64,
}

/// Where versions before [`CHECKPOINT_FILE`] kept the checkpoint (a key of the log's database).
const CHECKPOINT_KEY: &[u8] = b"projection";
/// The projection checkpoint's file in the log's directory: the seq it covers (8 bytes, big-endian), the
/// CRC-32 of the rest (4 bytes), and the checkpoint.
pub const CHECKPOINT_FILE: &str = "projection.checkpoint";
/// A checkpoint being written (renamed to [`CHECKPOINT_FILE`] once synced).
const CHECKPOINT_TMP: &str = "projection.checkpoint.tmp";

/// Streams a checkpoint's bytes ([`EventLog::stage_checkpoint`]).
pub type CheckpointWriter<'a> = dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()> + 'a;

/// Passes writes on and keeps the CRC-32 of what went through.
struct Crc32Writer<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: std::io::Write> std::io::Write for Crc32Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
/// A key written and flushed to find out whether storage accepts writes again.
const PROBE_KEY: &[u8] = b"probe";

/// Free space the log's filesystem must have before storage counts as writable again after an error:
/// a reopened sled database often frees a little (a half-written segment), enough for a small probe but
/// not for the next batch, and healing then would only fail again at once.
pub const MIN_FREE_BYTES: u64 = 4 << 20;

/// The delivery index lives in its own sled database in this subdirectory of the log's, so that the log's
/// flush (the fsync every `202` waits for) writes only the log's records, never the index's row updates.
pub const INDEX_DIR: &str = "delivery-index";

/// Where versions before the index had its own database kept it (a tree of the log's database).
const LEGACY_INDEX_TREE: &str = "delivery_index";

/// Each flush of the epoch collector frees up to 8 bags of 64 deferred frees (crossbeam-epoch 0.9's
/// `COLLECT_STEPS` and `MAX_OBJECTS`); [`reclaim`] flushes once per this many writes, twice what is needed.
const WRITES_PER_FLUSH: usize = 256;

/// Frees the tree nodes that the last `writes` writes replaced.
///
/// sled (0.34) copies a tree node for every key written to it and hands the old copy to crossbeam-epoch,
/// which frees it only once no thread can still see it, and then only a few at a time: the collector
/// frees at most 8 bags of 64 objects per 128 pins of a thread. A burst of writes (the delivery index
/// writing a fan-out to 100,000 webhooks: ~100,000 node copies of ~3 KB) outruns that by far, and the
/// old copies pile up until later reads and writes have pinned often enough: ~250 MB at S5's fan-out.
/// Flushing the collector here, from the thread that wrote, advances the epoch and frees what the
/// writes left behind at once (each flush costs a few microseconds when there is nothing to free).
pub(crate) fn reclaim(writes: usize) {
    for _ in 0..writes / WRITES_PER_FLUSH + 4 {
        crossbeam_epoch::pin().flush();
    }
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// The stored value holding the record at `seq`, with the seq of its key: the record under its own key, or
/// the block (see `block.rs`) that starts before it. `None` when no value holds it.
fn value_holding(records: &sled::Tree, seq: u64) -> Result<Option<(u64, sled::IVec)>, LogError> {
    if let Some(v) = records.get(key(seq))? {
        return Ok(Some((seq, v)));
    }
    match records.get_lt(key(seq))? {
        Some((k, v)) if block::is_block(&v) => {
            let first = seq_of(&k).ok_or(LogError::BadKey(seq))?;
            Ok(Some((first, v)))
        }
        _ => Ok(None),
    }
}

/// The records of `records` with `from <= seq < to`, in order, whether stored one per key or in blocks.
fn records_in(
    records: &sled::Tree,
    from: u64,
    to: u64,
) -> impl Iterator<Item = Result<(u64, Record), LogError>> {
    // A block starting before `from` may hold it.
    let (start, failed) = match value_holding(records, from) {
        Ok(found) => (found.map_or(from, |(first, _)| first), None),
        Err(e) => (from, Some(Err(e))),
    };
    let values = failed
        .is_none()
        .then(|| records.range(key(start)..key(to.max(from))));
    failed
        .into_iter()
        .chain(values.into_iter().flatten().flat_map(move |item| {
            let entries = item.map_err(LogError::from).and_then(|(k, v)| {
                let first = seq_of(&k).ok_or(LogError::BadKey(from))?;
                let entries = block::entries(first, &v)
                    .map_err(|source| LogError::Corrupt { seq: first, source })?;
                Ok(entries
                    .into_iter()
                    .filter(|(s, _)| (from..to).contains(s))
                    .map(|(s, bytes)| {
                        decode(bytes)
                            .map(|r| (s, r))
                            .map_err(|source| LogError::Corrupt { seq: s, source })
                    })
                    .collect::<Vec<_>>())
            });
            match entries {
                Ok(entries) => entries,
                Err(e) => vec![Err(e)],
            }
        }))
}

/// Attempt outcomes written one after another (each a group of its own: a fact nobody waits for) are
/// stored as one block (see `block.rs`) of up to [`AttemptRun::MAX_BYTES`]: one sled key instead of one
/// per attempt. sled's cost, in CPU and in the memory its tree keeps, is per key, and a fan-out writes an
/// attempt record per delivery (100,000 for one event to 100,000 webhooks). A run stays under 6 KiB so
/// that a tree node of them (sled splits a leaf past 16 values) stays under sled's blob threshold
/// (~128 KiB): a larger node is written to a file of its own, a file create and two `fsync`s (data and
/// directory) each time. Only attempts: retention removes a block only whole, and an attempt is
/// removable when its event is, while events, webhooks and keys keep a key each so that retention takes
/// each of them as soon as it may.
#[derive(Default)]
struct AttemptRun {
    first: u64,
    records: Vec<Vec<u8>>,
    bytes: usize,
}

impl AttemptRun {
    const MAX_BYTES: usize = 6 * 1024;

    /// Adds the attempt record stored at `seq` (the seq after the last one added, if any); returns the
    /// run written so far (first seq, stored value) when this record starts a new one.
    fn push(&mut self, seq: u64, record: Vec<u8>) -> Option<(u64, Vec<u8>)> {
        let full = self.bytes + record.len() > Self::MAX_BYTES
            || self.first + self.records.len() as u64 != seq;
        let done = if full { self.take() } else { None };
        if self.records.is_empty() {
            self.first = seq;
        }
        self.bytes += record.len();
        self.records.push(record);
        done
    }

    /// The run as its first seq and stored value (a lone record as itself), if it holds any.
    fn take(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.records.is_empty() {
            return None;
        }
        let parts: Vec<&[u8]> = self.records.iter().map(Vec::as_slice).collect();
        let value = block::encode(&parts);
        self.records.clear();
        self.bytes = 0;
        Some((self.first, value))
    }
}

/// Stores a finished [`AttemptRun`] (its first seq and value), if there is one; how many keys it wrote.
fn store_run(records: &sled::Tree, run: Option<(u64, Vec<u8>)>) -> Result<usize, LogError> {
    let Some((first, value)) = run else {
        return Ok(0);
    };
    records.insert(key(first), value)?;
    Ok(1)
}

/// How the log's databases are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// The most memory sled may use to cache each database (the log's and the delivery index's).
    pub cache_bytes: u64,
    /// Each flush of the log's database ends with `fdatasync` (the device's cache flushed, a grown
    /// file's size committed), not only `sync_file_range`: what a `202` promises. Off only for a log
    /// whose truth is elsewhere (cluster mode's copy of the stream).
    pub sync_data: bool,
}

impl Default for StorageOptions {
    /// sled's own default: 1 GiB per database.
    fn default() -> Self {
        Self {
            cache_bytes: 1 << 30,
            sync_data: true,
        }
    }
}

/// What reopening the log's database found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reopened {
    /// Records on disk past the last one this log had acknowledged: a batch whose flush reported an
    /// error but reached the disk all the same. The caller applies them (a restart would).
    pub unapplied: Option<std::ops::RangeInclusive<u64>>,
    /// Torn records cut from the tail.
    pub truncated: Vec<u64>,
}

/// Removes the snapshot files sled left half-written in `dir` (`snap.<lsn>.generating`).
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating` and renames it when complete, but on open it
/// also considers the `.generating` files and picks the last one by name, which sorts after the complete
/// one: a snapshot whose write failed (a full disk, when a database is closed) leaves an empty file that
/// makes every later open fail with "Read corrupted data". Such a file is never a complete snapshot, so
/// removing it only makes sled use the last complete one (or rebuild from its log), as it meant to.
fn remove_unfinished_snapshots(dir: &Path) -> Result<(), LogError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // not created yet
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl LogDb {
    /// Opens the log's database, cutting a torn tail (see [`EventLog::open_with`]).
    fn open(dir: &Path, options: StorageOptions) -> Result<(Self, OpenReport), LogError> {
        remove_unfinished_snapshots(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .sync_data(options.sync_data);
        let db = closing::open(&config, dir)?;
        let records = db.open_tree("records")?;
        let checkpoints = db.open_tree("checkpoints")?;
        let events = EventsIndex::new(db.open_tree(events_index::TREE)?);
        // Indexes left in the log's database by older versions are dropped; the new ones are rebuilt
        // from the log on start (their applied seq starts at 0): the delivery index before it had a
        // database of its own, the events index before it was written in pages.
        for old in [LEGACY_INDEX_TREE, events_index::OLD_TREE] {
            if db.tree_names().iter().any(|n| n == old.as_bytes()) {
                db.drop_tree(old)?;
            }
        }
        let mut report = OpenReport::default();
        while let Some((k, v)) = records.last()? {
            let seq = seq_of(&k).ok_or(LogError::BadKey(0))?;
            // The last value's last record, if all of it decodes (a block is cut whole, as it was written).
            let whole = block::entries(seq, &v).ok().and_then(|entries| {
                entries
                    .iter()
                    .all(|(_, bytes)| decode(bytes).is_ok())
                    .then(|| entries.last().map(|(s, _)| *s))
                    .flatten()
            });
            match whole {
                Some(last) => {
                    report.last_seq = last;
                    break;
                }
                None => {
                    records.remove(k)?;
                    report.truncated.push(seq);
                }
            }
        }
        let main = Self {
            db,
            records,
            checkpoints,
            events,
        };
        let indexed = main.index_tail(report.last_seq)?;
        if !report.truncated.is_empty() || indexed > 0 {
            main.db.flush()?;
        }
        Ok((main, report))
    }

    /// Indexes the records the events index does not have yet (a crash between a batch and its index
    /// entries, or a log from before the index): how many were read.
    fn index_tail(&self, last_seq: u64) -> Result<u64, LogError> {
        let from = self.events.indexed_seq()? + 1;
        if from > last_seq {
            return Ok(0);
        }
        let mut chunk: Vec<(u64, Record)> = Vec::with_capacity(10_000);
        let mut read = 0;
        for item in records_in(&self.records, from, u64::MAX) {
            match item {
                Ok(entry) => chunk.push(entry),
                // A record that does not decode is found and reported by readers; it has nothing to index.
                Err(LogError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
            read += 1;
            if chunk.len() == chunk.capacity() {
                self.events.add(chunk.iter().map(|(s, r)| (*s, r)))?;
                chunk.clear();
            }
        }
        self.events.add(chunk.iter().map(|(s, r)| (*s, r)))?;
        Ok(read)
    }
}

impl IndexDb {
    fn open(dir: &Path, options: StorageOptions) -> Result<Self, LogError> {
        remove_unfinished_snapshots(&dir.join(INDEX_DIR))?;
        // No background flush: the index writer flushes itself, so it knows which of its batches are
        // on disk and can write the others again after a storage error.
        let config = sled::Config::new()
            .path(dir.join(INDEX_DIR))
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None);
        let db = closing::open(&config, dir)?;
        let index = DeliveryIndex::open(db.open_tree("delivery_index")?)?;
        Ok(Self { db, index })
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.closing();
    }
}

impl EventLog {
    /// Opens (or creates) the log in `dir` with the default [`StorageOptions`]; see [`EventLog::open_with`].
    pub fn open(dir: &Path) -> Result<(Self, OpenReport), LogError> {
        Self::open_with(dir, StorageOptions::default())
    }

    /// Opens (or creates) the log in `dir`. A torn or corrupt record at the very end of the log (a write
    /// cut short by a crash) is removed, and reported; corruption further back is found by reading.
    pub fn open_with(dir: &Path, options: StorageOptions) -> Result<(Self, OpenReport), LogError> {
        let (main, report) = LogDb::open(dir, options)?;
        let index = IndexDb::open(dir, options)?;
        let log = Self {
            dir: dir.to_path_buf(),
            options,
            main: RwLock::new(Some(main)),
            index: RwLock::new(Some(index)),
            next_seq: AtomicU64::new(report.last_seq + 1),
            written: AtomicU64::new(report.last_seq + 1),
        };
        Ok((log, report))
    }

    /// Notes that this log is being closed (its drop does too): opening its directory again in this
    /// process waits up to 5 s for the last handle to let go of it instead of failing as if another
    /// process held it. For an owner whose handles end later than its own drop (tasks on a runtime).
    pub fn closing(&self) {
        closing::closed(&self.dir);
    }

    fn main(&self) -> Result<LogDb, LogError> {
        self.main.read().clone().ok_or(LogError::Reopening)
    }

    fn index_db(&self) -> Result<IndexDb, LogError> {
        self.index.read().clone().ok_or(LogError::Reopening)
    }

    /// Closes and opens the log's database again, clearing the error sled keeps after a failed write
    /// (only the writer calls it). Fails while any other handle to the old database is still in use
    /// (a read in progress): try again a moment later.
    pub fn reopen(&self) -> Result<Reopened, LogError> {
        let mut slot = self.main.write();
        // sled locks its files: the old database must be gone before the new one opens.
        *slot = None;
        let (main, report) = LogDb::open(&self.dir, self.options)?;
        *slot = Some(main);
        let acknowledged = self.last_seq();
        let unapplied =
            (report.last_seq > acknowledged).then(|| acknowledged + 1..=report.last_seq);
        let next = acknowledged.max(report.last_seq) + 1;
        self.written.store(next, Ordering::Release);
        self.next_seq.store(next, Ordering::Release);
        Ok(Reopened {
            unapplied,
            truncated: report.truncated,
        })
    }

    /// Closes and opens the delivery index's database again (see [`EventLog::reopen`]); only the index
    /// writer calls it.
    pub fn reopen_index(&self) -> Result<(), LogError> {
        let mut slot = self.index.write();
        *slot = None;
        *slot = Some(IndexDb::open(&self.dir, self.options)?);
        Ok(())
    }

    /// Throws the delivery index away and opens an empty one (the engine then rebuilds it from the log):
    /// for an index its database can no longer read (a write cut short by a full disk can leave it so).
    pub fn reset_index(&self) -> Result<(), LogError> {
        let mut slot = self.index.write();
        *slot = None;
        let dir = self.dir.join(INDEX_DIR);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        *slot = Some(IndexDb::open(&self.dir, self.options)?);
        Ok(())
    }

    /// Writes and flushes a small key, and checks the filesystem has [`MIN_FREE_BYTES`] free: `Ok` once
    /// storage accepts writes again.
    pub fn probe(&self) -> Result<(), LogError> {
        let free = fs2::available_space(&self.dir)?;
        if free < MIN_FREE_BYTES {
            return Err(LogError::LowSpace { free });
        }
        let main = self.main()?;
        main.checkpoints.insert(PROBE_KEY, &[0u8; 64][..])?;
        main.db.flush()?;
        Ok(())
    }

    /// The seq of the last record (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    /// Appends `records` atomically and durably; returns the seq of the first. Only one writer may call it.
    pub fn append(&self, records: &[Record]) -> Result<u64, LogError> {
        self.append_groups(records, &[0])
    }

    /// Appends `records` durably, each group (`starts`: where each begins, ascending, the first at 0)
    /// all or nothing; returns the seq of the first. Only one writer may call it.
    pub fn append_groups(&self, records: &[Record], starts: &[usize]) -> Result<u64, LogError> {
        let first = self.write_groups(records, starts)?;
        self.sync()?;
        Ok(first)
    }

    /// Writes `records` after everything written before, each group (`starts`: where each begins,
    /// ascending, the first at 0) all or nothing, and returns the seq of the first; they are durable once
    /// a later [`EventLog::sync`] returns (until then [`EventLog::last_seq`] does not count them, and
    /// nobody may be told they are stored). Only one writer may call it; `sync` may run meanwhile on
    /// another thread.
    ///
    /// A group of one record is a plain insert, except that attempt outcomes written one after another
    /// share one (a block, see [`AttemptRun`]); only a larger group is a sled batch, which costs sled two
    /// more log writes (its manifest, in a buffer of its own). sled recovers a prefix of its log, so a
    /// crash before the sync keeps a prefix of the groups, never part of one; none was acknowledged.
    pub fn write_groups(&self, records: &[Record], starts: &[usize]) -> Result<u64, LogError> {
        let main = self.main()?;
        let first = self.written.load(Ordering::Acquire);
        // Every record in exactly one group, whatever `starts` holds.
        let mut bounds: Vec<usize> = starts
            .iter()
            .copied()
            .filter(|&s| s < records.len())
            .collect();
        bounds.extend([0, records.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut attempts = AttemptRun::default();
        let mut inserts = 0;
        for pair in bounds.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            let seq = first + start as u64;
            match &records[start..end] {
                [] => {}
                [r @ Record::DeliveryAttempted(_)] => {
                    inserts += store_run(&main.records, attempts.push(seq, encode(r)))?;
                }
                group => {
                    inserts += store_run(&main.records, attempts.take())?;
                    if let [r] = group {
                        main.records.insert(key(seq), encode(r))?;
                    } else {
                        let mut batch = sled::Batch::default();
                        for (i, r) in group.iter().enumerate() {
                            batch.insert(&key(seq + i as u64), encode(r));
                        }
                        main.records.apply_batch(batch)?;
                    }
                    inserts += group.len();
                }
            }
        }
        inserts += store_run(&main.records, attempts.take())?;
        // Indexed before the sync that makes the batch durable; a crash in between is caught up on open.
        main.events.add((first..).zip(records.iter()))?;
        self.written
            .store(first + records.len() as u64, Ordering::Release);
        // On the writing thread, whose epoch holds what the inserts replaced.
        reclaim(inserts + records.len());
        Ok(first)
    }

    /// Makes every record [`EventLog::write_groups`] wrote before this call durable (one flush of the
    /// log's database: a write and an `fdatasync` of what is not on disk yet) and returns the seq of the
    /// last one, which [`EventLog::last_seq`] reports from then on. Runs beside the writer: records
    /// written while it flushes wait for the next call.
    pub fn sync(&self) -> Result<u64, LogError> {
        let through = self.written.load(Ordering::Acquire) - 1;
        self.main()?.db.flush()?;
        self.next_seq.fetch_max(through + 1, Ordering::AcqRel);
        Ok(through)
    }

    /// `account`'s events after `after_seq`, in log order (test events included: the caller decides).
    /// The seqs come from the events index in chunks (64, growing to 4,096, so a page of `GET /events`
    /// reads little and a replay of a busy account reads neighbours with one range read each).
    pub fn account_events(
        &self,
        account: &AccountId,
        after_seq: u64,
    ) -> impl Iterator<Item = Result<(u64, Record), LogError>> + '_ {
        let (seqs, opened) = match self.main() {
            Ok(main) => (
                Some(
                    main.events
                        .refs_after(account, after_seq)
                        .map(|r| r.map(|r| r.seq)),
                ),
                None,
            ),
            Err(e) => (None, Some(Err(e))),
        };
        let mut seqs = seqs.into_iter().flatten();
        let mut chunk_len = 64;
        let chunks = std::iter::from_fn(move || {
            let chunk: Result<Vec<u64>, LogError> = seqs.by_ref().take(chunk_len).collect();
            chunk_len = (chunk_len * 4).min(4_096);
            match chunk {
                Ok(c) if c.is_empty() => None,
                // Records removed by retention after the index read are skipped by `records_at`.
                Ok(c) => Some(LogStore::records_at(self, &c).collect::<Vec<_>>()),
                Err(e) => Some(vec![Err(e)]),
            }
        });
        opened.into_iter().chain(chunks.flatten())
    }

    /// `account`'s events created in `[since, until)` as the index knows them (no record read), in log
    /// order.
    pub fn account_events_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<EventRef>, LogError> {
        self.main()?.events.refs_between(account, since, until)
    }

    /// `account`'s events after `after_seq` as the index knows them (no record read), in log order.
    pub fn account_event_refs(&self, account: &AccountId, after_seq: u64) -> EventRefs<'_> {
        match self.main() {
            Ok(main) => Box::new(main.events.refs_after(account, after_seq)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// Makes the events index look as an older version wrote it, without summaries (tests of the
    /// readers' fallback to the records).
    #[doc(hidden)]
    pub fn forget_event_summaries(&self) -> Result<(), LogError> {
        self.main()?.events.forget_summaries()
    }

    /// Removes records (retention); how many were removed. Never the last one: the next seq must stay
    /// above every seq ever used, and it is derived from the last record on open. A block (see
    /// `block.rs`) is removed only when all of its records are named; otherwise none of them is.
    pub fn remove(&self, seqs: &[u64]) -> Result<usize, LogError> {
        let main = self.main()?;
        let last = self.last_seq();
        let wanted: std::collections::BTreeSet<u64> =
            seqs.iter().copied().filter(|&s| s < last).collect();
        let mut batch = sled::Batch::default();
        let mut removed = Vec::new();
        let mut values_seen = std::collections::HashSet::new();
        for &seq in &wanted {
            let Some((first, value)) = value_holding(&main.records, seq)? else {
                continue;
            };
            if !values_seen.insert(first) {
                continue;
            }
            let entries = block::entries(first, &value)
                .map_err(|source| LogError::Corrupt { seq: first, source })?;
            // A block goes only with all of its records (cluster mode removes whole messages).
            if entries.iter().all(|(s, _)| wanted.contains(s)) {
                for (s, bytes) in entries {
                    let record =
                        decode(bytes).map_err(|source| LogError::Corrupt { seq: s, source })?;
                    removed.push((s, record));
                }
                batch.remove(&key(first));
            }
        }
        let n = removed.len();
        main.events.remove(removed.iter().map(|(s, r)| (*s, r)))?;
        main.records.apply_batch(batch)?;
        main.db.flush()?;
        Ok(n)
    }

    /// Stores already-encoded records at `first`, `first + 1`, … (above every seq present) as one value
    /// (a block, see `block.rs`: one sled insert for a whole stream message), without an fsync: for a
    /// local copy of a log whose truth is elsewhere (cluster mode's copy of the stream, which is rebuilt
    /// from the stream when lost). All or nothing.
    pub fn store_at(&self, first: u64, records: &[&[u8]]) -> Result<(), LogError> {
        let Some(count) = std::num::NonZeroU64::new(records.len() as u64) else {
            return Ok(());
        };
        let last = first + (count.get() - 1);
        let main = self.main()?;
        // A record that does not decode is reported by readers; it has nothing to index.
        let decoded: Vec<(u64, Record)> = (first..)
            .zip(records)
            .filter_map(|(seq, bytes)| decode(bytes).ok().map(|r| (seq, r)))
            .collect();
        main.records.insert(key(first), block::encode(records))?;
        main.events.add(decoded.iter().map(|(s, r)| (*s, r)))?;
        reclaim(1 + decoded.len());
        self.written.fetch_max(last + 1, Ordering::AcqRel);
        self.next_seq.fetch_max(last + 1, Ordering::AcqRel);
        Ok(())
    }

    /// Appends bytes as they are, bypassing encoding (tests and tools that need a damaged record).
    #[doc(hidden)]
    pub fn append_raw_for_tests(&self, bytes: &[u8]) -> Result<u64, LogError> {
        let main = self.main()?;
        let seq = self.written.load(Ordering::Acquire);
        main.records.insert(key(seq), bytes)?;
        main.db.flush()?;
        self.written.store(seq + 1, Ordering::Release);
        self.next_seq.store(seq + 1, Ordering::Release);
        Ok(seq)
    }

    pub fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        let Some((first, value)) = value_holding(&self.main()?.records, seq)? else {
            return Ok(None);
        };
        let corrupt = |source| LogError::Corrupt { seq, source };
        match block::at(first, &value, seq).map_err(corrupt)? {
            None => Ok(None),
            Some(bytes) => decode(bytes).map(Some).map_err(corrupt),
        }
    }

    /// Records with `from <= seq < to`, in order.
    pub fn range(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Record), LogError>> + '_ {
        let (iter, opened) = match self.main() {
            Ok(main) => (Some(records_in(&main.records, from, to)), None),
            Err(e) => (None, Some(Err(e))),
        };
        opened.into_iter().chain(iter.into_iter().flatten())
    }

    /// Every record from `from` on.
    pub fn tail(&self, from: u64) -> impl Iterator<Item = Result<(u64, Record), LogError>> + '_ {
        self.range(from, u64::MAX)
    }

    /// Stores a projection snapshot that covers the log up to `seq` (opaque bytes, the engine's format):
    /// [`Self::stage_checkpoint`] then [`Self::commit_checkpoint`].
    pub fn save_checkpoint(&self, seq: u64, bytes: &[u8]) -> Result<(), LogError> {
        self.stage_checkpoint(seq, &mut |w| w.write_all(bytes))?;
        self.commit_checkpoint()
    }

    /// Writes a projection checkpoint covering the log up to `seq` beside the current one
    /// ([`CHECKPOINT_FILE`]), as `write` streams it: straight into the file (through a small buffer),
    /// never whole in memory (20 MB with 100,000 webhooks, at the end of a burst when memory is
    /// scarcest). Not synced and not in effect until [`Self::commit_checkpoint`]; a crash before that
    /// leaves the current one. Not in the database either: sled would keep a copy in memory for as long
    /// as it caches the page and make two more while writing it.
    pub fn stage_checkpoint(
        &self,
        seq: u64,
        write: &mut CheckpointWriter<'_>,
    ) -> Result<(), LogError> {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::create(self.dir.join(CHECKPOINT_TMP))?;
        // The header's checksum is filled in once the payload is written.
        file.write_all(&key(seq))?;
        file.write_all(&[0; 4])?;
        // Buffered before the checksum: an encoder's many small writes reach it (and the file) in
        // large pieces.
        let mut out = std::io::BufWriter::with_capacity(
            256 << 10,
            Crc32Writer {
                inner: file,
                crc: crc32fast::Hasher::new(),
            },
        );
        write(&mut out)?;
        let Crc32Writer {
            inner: mut file,
            crc,
        } = out.into_inner().map_err(|e| e.into_error())?;
        let crc = crc.finalize();
        file.seek(SeekFrom::Start(8))?;
        file.write_all(&crc.to_be_bytes())?;
        Ok(())
    }

    /// Makes the checkpoint [`Self::stage_checkpoint`] wrote the one [`Self::load_checkpoint`] finds:
    /// synced, renamed over the old one and the directory synced, so a crash leaves the old checkpoint
    /// or the new one, whole.
    pub fn commit_checkpoint(&self) -> Result<(), LogError> {
        let tmp = self.dir.join(CHECKPOINT_TMP);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)?
            .sync_all()?;
        std::fs::rename(&tmp, self.dir.join(CHECKPOINT_FILE))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        // Versions before the file kept the checkpoint in the database: that one is older now.
        let main = self.main()?;
        if main.checkpoints.remove(CHECKPOINT_KEY)?.is_some() {
            main.db.flush()?;
        }
        Ok(())
    }

    /// The last checkpoint saved: its file, or where versions before it kept it (the database). A file
    /// that is damaged is passed over (a checkpoint only saves replaying the log).
    pub fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        match std::fs::read(self.dir.join(CHECKPOINT_FILE)) {
            Ok(mut v) => {
                let header = v.get(..12).and_then(|h| {
                    Some((
                        seq_of(&h[..8])?,
                        u32::from_be_bytes(h[8..].try_into().ok()?),
                    ))
                });
                if let Some((seq, crc)) = header {
                    if crc32fast::hash(&v[12..]) == crc {
                        v.drain(..12);
                        return Ok(Some((seq, v)));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.main()?.checkpoints.get(CHECKPOINT_KEY)?.and_then(|v| {
            let seq = seq_of(v.get(..8)?)?;
            Some((seq, v[8..].to_vec()))
        }))
    }

    /// The delivery index (a projection of the log in its own database; see [`DeliveryIndex`]).
    pub fn index(&self) -> Result<DeliveryIndex, LogError> {
        Ok(self.index_db()?.index)
    }

    /// Flushes the delivery index to disk (before a checkpoint that assumes it is caught up).
    pub fn flush_index(&self) -> Result<(), LogError> {
        self.index_db()?.db.flush()?;
        Ok(())
    }

    /// Flushes everything (the index and checkpoints included) to disk.
    pub fn flush(&self) -> Result<(), LogError> {
        self.index_db()?.db.flush()?;
        self.main()?.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::drivertest::record as event;

    #[test]
    fn a_second_open_of_the_same_directory_is_a_lock_error() -> Result<(), LogError> {
        let d = tempfile::tempdir()?;
        let (_log, _) = EventLog::open(d.path())?;
        match EventLog::open(d.path()) {
            Err(e) => assert!(e.is_locked(), "{e}"),
            Ok(_) => panic!("opened twice"),
        }
        Ok(())
    }

    /// sled lets go of a closed database's lock only once its I/O threads are done with it; opening the
    /// directory again at once failed as if another process held it (seen in this crate's tests).
    #[test]
    fn a_log_closed_a_moment_ago_opens_again_once_sled_lets_go_of_it() -> Result<(), LogError> {
        use std::time::{Duration, Instant};
        let d = tempfile::tempdir()?;
        drop(EventLog::open(d.path())?);
        // Stands in for the closed log's I/O threads: a handle of its database that lives on a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let holder = loop {
            match sled::Config::new().path(d.path()).open() {
                Ok(db) => break db,
                Err(e) if Instant::now() < deadline => drop(e),
                Err(e) => return Err(e.into()),
            }
        };
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(holder);
        });
        let opened = EventLog::open(d.path());
        let _ = release.join();
        assert!(opened.is_ok(), "{:?}", opened.err());
        Ok(())
    }

    /// Our sled patch (vendor/sled/PATCHED.md, change 5): the lock a batch or transaction takes is one per
    /// database. With sled 0.34.7's process-wide lock, a batch being written to the delivery index (a
    /// database of its own) stopped the log's appends and flushes until it was done.
    #[test]
    fn a_batch_held_open_on_another_database_does_not_stop_the_log() -> Result<(), LogError> {
        use std::sync::mpsc;
        use std::time::Duration;
        let dir = tempfile::tempdir()?;
        let (log, _) = EventLog::open(&dir.path().join("log"))?;
        let other = sled::Config::new()
            .path(dir.path().join("other"))
            .open()?
            .open_tree("rows")?;
        let (inside_tx, inside_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        // A transaction holds its database's lock for writing while its closure runs.
        let holder = std::thread::spawn(move || {
            other.transaction(|t| {
                t.insert(&b"k"[..], &b"v"[..])?;
                let _ = inside_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(60));
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
        });
        let held = inside_rx.recv_timeout(Duration::from_secs(60));
        let (done_tx, done_rx) = mpsc::channel();
        let records = [event(1), event(2)];
        let second = records[1].clone();
        let appender = std::thread::spawn(move || {
            // A two-record append is a sled batch of the log's own, then a flush.
            let _ = done_tx.send(log.append(&records).map(|seq| (seq, log)));
        });
        // Generous: the append takes milliseconds; blocked, it would wait for the release below.
        let appended = done_rx.recv_timeout(Duration::from_secs(30));
        let _ = release_tx.send(());
        let _ = holder.join();
        let _ = appender.join();
        assert!(
            held.is_ok(),
            "the other database's transaction never started"
        );
        let (first, log) =
            appended.expect("the log's append waited for another database's batch")?;
        assert_eq!(first, 1);
        assert_eq!(log.get(2)?, Some(second));
        Ok(())
    }

    #[test]
    fn appends_in_order_and_survives_reopen() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        let recs: Vec<Record> = (0..10).map(event).collect();
        {
            let (log, report) = EventLog::open(dir.path())?;
            assert_eq!(report.last_seq, 0);
            assert_eq!(log.append(&recs[..3])?, 1);
            assert_eq!(log.append(&recs[3..])?, 4);
            assert_eq!(log.last_seq(), 10);
        }
        let (log, report) = EventLog::open(dir.path())?;
        assert_eq!(
            report,
            OpenReport {
                last_seq: 10,
                truncated: vec![]
            }
        );
        let read: Vec<_> = log.range(1, 11).collect::<Result<_, _>>()?;
        assert_eq!(read.len(), 10);
        assert_eq!(read[4], (5, recs[4].clone()));
        assert_eq!(log.range(3, 5).count(), 2);
        assert_eq!(log.get(10)?, Some(recs[9].clone()));
        assert_eq!(log.get(11)?, None);
        Ok(())
    }

    #[test]
    fn torn_tail_is_cut_back_and_reported() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        {
            let (log, _) = EventLog::open(dir.path())?;
            log.append(&[event(1), event(2)])?;
            let good = encode(&event(3));
            log.append_raw_for_tests(&good[..good.len() - 3])?;
        }
        let (log, report) = EventLog::open(dir.path())?;
        assert_eq!(
            report,
            OpenReport {
                last_seq: 2,
                truncated: vec![3]
            }
        );
        assert_eq!(
            log.append(&[event(4)])?,
            3,
            "the cut seq is reused by the next append"
        );
        Ok(())
    }

    #[test]
    fn corruption_in_the_middle_is_an_error_not_a_skip() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        let (log, _) = EventLog::open(dir.path())?;
        log.append(&[event(1)])?;
        let mut bad = encode(&event(2));
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        log.append_raw_for_tests(&bad)?;
        log.append(&[event(3)])?;
        let results: Vec<_> = log.range(1, 4).collect();
        assert!(matches!(results[1], Err(LogError::Corrupt { seq: 2, .. })));
        Ok(())
    }

    fn event_of(account: &AccountId, at_ms: i64) -> Record {
        let mut r = event(at_ms);
        if let Record::EventPublished(e) = &mut r {
            e.account = account.clone();
            e.created_at = Timestamp::from_millis(at_ms);
        }
        r
    }

    fn seqs(log: &EventLog, account: &AccountId, after: u64) -> Vec<u64> {
        log.account_events(account, after)
            .map(|r| r.map(|(s, _)| s))
            .collect::<Result<_, _>>()
            .unwrap_or_default()
    }

    #[test]
    fn events_are_found_by_account_and_time_and_the_index_is_rebuilt() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        let busy = AccountId::default_account();
        let small: AccountId = "acc_small".parse().map_err(|_| LogError::BadKey(0))?;
        {
            let (log, _) = EventLog::open(dir.path())?;
            // seq 1..=6: busy at t=10,20,30; small at t=25 (seq 4), busy t=5 (clock behind), small t=40.
            log.append(&[
                event_of(&busy, 10),
                event_of(&busy, 20),
                event_of(&busy, 30),
                event_of(&small, 25),
                event_of(&busy, 5),
                event_of(&small, 40),
            ])?;
            assert_eq!(seqs(&log, &small, 0), vec![4, 6]);
            assert_eq!(seqs(&log, &small, 4), vec![6]);
            assert_eq!(seqs(&log, &busy, 0), vec![1, 2, 3, 5]);
            let t = Timestamp::from_millis;
            let between = |account, since, until| -> Result<Vec<u64>, LogError> {
                Ok(log
                    .account_events_between(account, since, until)?
                    .into_iter()
                    .map(|r| r.seq)
                    .collect())
            };
            assert_eq!(between(&busy, t(5), Some(t(21)))?, vec![1, 2, 5]);
            assert_eq!(between(&busy, t(20), None)?, vec![2, 3]);
            assert_eq!(between(&small, t(0), Some(t(40)))?, vec![4]);
            // Retention drops index entries with the records.
            assert_eq!(log.remove(&[2])?, 1);
            assert_eq!(seqs(&log, &busy, 0), vec![1, 3, 5]);
            assert_eq!(between(&busy, t(0), None)?, vec![1, 3, 5]);
            // A log written by a version that kept one key per event (or none): its tree is dropped
            // and the pages are rebuilt from the records on the next open.
            let main = log.main()?;
            main.db.drop_tree(events_index::TREE)?;
            let old = main.db.open_tree(events_index::OLD_TREE)?;
            old.insert(b"sacc_default\0\0\0\0\0\0\0\0\x01", &[])?;
            old.insert(b"mindexed", &6u64.to_be_bytes())?;
        }
        let (log, _) = EventLog::open(dir.path())?;
        assert!(!log
            .main()?
            .db
            .tree_names()
            .iter()
            .any(|n| n == events_index::OLD_TREE.as_bytes()));
        assert_eq!(
            seqs(&log, &busy, 0),
            vec![1, 3, 5],
            "rebuilt from the records"
        );
        assert_eq!(seqs(&log, &small, 0), vec![4, 6]);
        Ok(())
    }

    fn attempt(n: u32, body: usize) -> Record {
        Record::DeliveryAttempted(buildr_core::record::AttemptRecord {
            webhook: buildr_core::WebhookId::generate(),
            seq: 1,
            event_id: buildr_core::EventId::generate(),
            attempt: n,
            at: Timestamp::now(),
            response_status: Some(200),
            response_body: "x".repeat(body),
            error: None,
            duration_ms: 1,
            outcome: buildr_core::record::AttemptOutcome::Succeeded,
        })
    }

    #[test]
    fn attempts_written_one_after_another_share_a_key_and_read_back_like_single_records(
    ) -> Result<(), LogError> {
        let dir = tempfile::tempdir()?;
        // Each a group of its own, as the log writer writes facts, except the last two.
        let recs = [
            attempt(1, 0),
            attempt(2, 0),
            attempt(3, 0),
            event(1),
            attempt(4, 0),
            attempt(5, 0),
            attempt(6, 0),
            attempt(7, 0),
        ];
        let starts = [0, 1, 2, 3, 4, 5, 6];
        let seqs_in = |log: &EventLog, from, to| -> Result<Vec<u64>, LogError> {
            log.range(from, to).map(|r| r.map(|(s, _)| s)).collect()
        };
        {
            let (log, _) = EventLog::open(dir.path())?;
            assert_eq!(log.append_groups(&recs, &starts)?, 1);
            // 1-3 as one block, the event alone, 5-6 as one block, the group 7-8 a key per record.
            let keys: Vec<u64> = log
                .main()?
                .records
                .iter()
                .keys()
                .map(|k| seq_of(&k?).ok_or(LogError::BadKey(0)))
                .collect::<Result<_, _>>()?;
            assert_eq!(keys, vec![1, 4, 5, 7, 8]);
            for (seq, r) in (1..).zip(&recs) {
                assert_eq!(log.get(seq)?.as_ref(), Some(r), "seq {seq}");
            }
            assert_eq!(seqs_in(&log, 2, 7)?, vec![2, 3, 4, 5, 6]);
            // Retention takes a block of attempts only whole.
            assert_eq!(log.remove(&[1, 2])?, 0);
            assert_eq!(log.remove(&[1, 2, 3, 5])?, 3);
            assert_eq!(seqs_in(&log, 0, u64::MAX)?, vec![4, 5, 6, 7, 8]);
        }
        let (log, _) = EventLog::open(dir.path())?;
        assert_eq!(log.last_seq(), 8);
        for (seq, r) in (4..).zip(&recs[3..]) {
            assert_eq!(log.get(seq)?.as_ref(), Some(r), "seq {seq} after reopening");
        }
        // A run ends at its byte limit, and the next block starts where it stopped.
        let many: Vec<Record> = (0..300).map(|n| attempt(n, 0)).collect();
        let mut runs = 1;
        let mut bytes = 0;
        for r in &many {
            let len = encode(r).len();
            if bytes + len > AttemptRun::MAX_BYTES {
                runs += 1;
                bytes = 0;
            }
            bytes += len;
        }
        assert!(runs > 1, "300 attempts fill more than one run");
        let big: Vec<Record> = (0..3)
            .map(|n| attempt(n, AttemptRun::MAX_BYTES / 2))
            .collect();
        let first = log.append_groups(&many, &(0..300).collect::<Vec<_>>())?;
        let big_first = log.append_groups(&big, &[0, 1, 2])?;
        let keys_from = |from: u64| -> Result<usize, LogError> {
            Ok(log.main()?.records.range(key(from)..).count())
        };
        assert_eq!(
            keys_from(first)?,
            runs + 3,
            "{runs} runs, then one key per half-block record"
        );
        assert_eq!(keys_from(big_first)?, 3);
        assert_eq!(
            seqs_in(&log, first, u64::MAX)?,
            (first..big_first + 3).collect::<Vec<_>>()
        );
        for (seq, r) in (first..).zip(many.iter().chain(&big)) {
            assert_eq!(log.get(seq)?.as_ref(), Some(r), "seq {seq}");
        }
        Ok(())
    }

    /// A fan-out's attempt runs never make a tree node big enough for sled to write it to a blob file of
    /// its own (a file create and two `fsync`s each; with 32 KiB runs a fan-out of 200,000 deliveries
    /// wrote 66 such files).
    #[test]
    fn attempt_runs_keep_the_records_tree_out_of_blob_files() -> Result<(), LogError> {
        let dir = tempfile::tempdir()?;
        let (log, _) = EventLog::open(dir.path())?;
        for _ in 0..20 {
            let recs: Vec<Record> = (0..1_000).map(|n| attempt(n, 40)).collect();
            log.append_groups(&recs, &(0..1_000).collect::<Vec<_>>())?;
        }
        log.main()?.db.flush()?;
        drop(log);
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "blob files in the log's database");
        Ok(())
    }

    /// Stores `records` as the block at `first` (as cluster mode's copy stores a stream message).
    fn store(log: &EventLog, first: u64, records: &[Record]) -> Result<(), LogError> {
        let encoded: Vec<Vec<u8>> = records.iter().map(encode).collect();
        let slices: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        log.store_at(first, &slices)
    }

    #[test]
    fn records_stored_in_blocks_are_read_removed_and_reopened_like_single_ones(
    ) -> Result<(), LogError> {
        let dir = tempfile::tempdir()?;
        let busy = AccountId::default_account();
        let small: AccountId = "acc_small".parse().map_err(|_| LogError::BadKey(0))?;
        let recs = [
            event_of(&busy, 10),
            event_of(&small, 20),
            event_of(&busy, 30),
            event_of(&small, 40),
            event_of(&busy, 50),
            event_of(&busy, 60),
        ];
        let all = [4096, 4097, 4098, 8192, 12288, 12289];
        {
            let (log, _) = EventLog::open_with(
                dir.path(),
                StorageOptions {
                    sync_data: false,
                    ..StorageOptions::default()
                },
            )?;
            store(&log, 4096, &recs[..3])?;
            store(&log, 8192, &recs[3..4])?; // one record: stored as itself
            store(&log, 12288, &recs[4..])?;
            assert_eq!(log.last_seq(), 12289);
            for (seq, r) in all.iter().zip(&recs) {
                assert_eq!(log.get(*seq)?.as_ref(), Some(r), "seq {seq}");
            }
            for missing in [1, 4095, 4099, 8191, 8193, 12290] {
                assert_eq!(log.get(missing)?, None, "seq {missing}");
            }
            let seqs_in = |from, to| -> Result<Vec<u64>, LogError> {
                log.range(from, to).map(|r| r.map(|(s, _)| s)).collect()
            };
            assert_eq!(seqs_in(0, u64::MAX)?, all);
            assert_eq!(seqs_in(4097, 12289)?, vec![4097, 4098, 8192, 12288]);
            assert_eq!(seqs_in(4098, 4099)?, vec![4098]);
            assert_eq!(seqs_in(4099, 8192)?, Vec::<u64>::new());
            assert_eq!(seqs_in(5000, 4000)?, Vec::<u64>::new());
            assert_eq!(seqs(&log, &small, 0), vec![4097, 8192]);
            assert_eq!(seqs(&log, &busy, 4096), vec![4098, 12288, 12289]);
            // A block goes only whole.
            assert_eq!(log.remove(&[4096, 4097])?, 0);
            assert_eq!(log.get(4096)?.as_ref(), Some(&recs[0]));
            assert_eq!(log.remove(&[4096, 4097, 4098, 8192])?, 4);
            assert_eq!(seqs_in(0, u64::MAX)?, vec![12288, 12289]);
            assert_eq!(seqs(&log, &small, 0), Vec::<u64>::new());
            // The block holding the last record is never removed.
            assert_eq!(log.remove(&[12288, 12289])?, 0);
            // A damaged block at the end is cut whole on the next open.
            let mut damaged = encode(&recs[0]);
            damaged.truncate(damaged.len() - 2);
            log.append_raw_for_tests(&block::encode(&[&encode(&recs[1]), &damaged]))?;
        }
        let (log, report) = EventLog::open(dir.path())?;
        assert_eq!(
            report,
            OpenReport {
                last_seq: 12289,
                truncated: vec![12290]
            }
        );
        assert_eq!(log.last_seq(), 12289);
        assert_eq!(log.get(12289)?.as_ref(), Some(&recs[5]));
        Ok(())
    }

    #[test]
    fn passes_the_driver_suite() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let result = dir.and_then(|d| {
            crate::drivertest::run_all(&mut crate::drivertest::SledDriver::new(d.path()))
        });
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn a_snapshot_left_half_written_does_not_stop_the_log_opening() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        {
            let (log, _) = EventLog::open(dir.path())?;
            log.append(&[event(1), event(2)])?;
        }
        // What a snapshot write cut short by a full disk leaves behind (an empty file that sorts last).
        for d in [dir.path().to_path_buf(), dir.path().join(INDEX_DIR)] {
            std::fs::write(d.join("snap.FFFFFFFFFFFFFFFF.generating"), b"")?;
        }
        let (log, report) = EventLog::open(dir.path())?;
        assert_eq!(report.last_seq, 2);
        assert_eq!(log.range(1, 3).count(), 2);
        Ok(())
    }

    /// A record of group `group` (of `size` records), `index` within it.
    fn grouped(group: u64, index: usize, size: usize) -> Record {
        let mut r = event(0);
        if let Record::EventPublished(e) = &mut r {
            e.data.url = format!("https://x.example/{group}/{index}/{size}");
        }
        r
    }

    /// (group, index, size) of a record written by `grouped`.
    fn group_of(r: &Record) -> Option<(u64, usize, usize)> {
        let Record::EventPublished(e) = r else {
            return None;
        };
        let mut parts = e.data.url.strip_prefix("https://x.example/")?.split('/');
        let mut next = || parts.next()?.parse::<u64>().ok();
        Some((
            next()?,
            usize::try_from(next()?).ok()?,
            usize::try_from(next()?).ok()?,
        ))
    }

    const CRASH_CHILD_DIR: &str = "BUILDR_LOG_TEST_CRASH_CHILD_DIR";

    /// Checks the log holds whole groups 0, 1, … in order, every event in the events index; returns how
    /// many groups.
    fn whole_groups(log: &EventLog) -> Result<u64, String> {
        let mut next_group = 0;
        let mut open: Option<(u64, usize, usize)> = None;
        let records: Vec<(u64, Record)> = log
            .range(1, log.last_seq() + 1)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for (n, (seq, r)) in records.iter().enumerate() {
            if *seq != n as u64 + 1 {
                return Err(format!("seq {seq} at position {n}"));
            }
            let (g, i, size) = group_of(r).ok_or("not a grouped record")?;
            let expected = match open {
                Some((og, oi, osize)) if oi + 1 < osize => (og, oi + 1, osize),
                _ => (next_group, 0, size),
            };
            if (g, i, size) != expected {
                return Err(format!(
                    "seq {seq}: group {g} {i}/{size}, expected {expected:?}"
                ));
            }
            if i == 0 {
                next_group += 1;
            }
            open = Some((g, i, size));
        }
        if let Some((g, i, size)) = open {
            if i + 1 != size {
                return Err(format!("group {g} cut after {} of {size} records", i + 1));
            }
        }
        let indexed = log.account_events(&AccountId::default_account(), 0).count();
        if indexed != records.len() {
            return Err(format!("{indexed} events indexed of {}", records.len()));
        }
        Ok(next_group)
    }

    /// The child of `a_kill_9_keeps_whole_groups_and_their_index_entries`: appends groups of 1–7
    /// records, several groups per append, until it is killed.
    fn append_groups_until_killed(dir: &Path) -> Result<(), String> {
        let (log, _) = EventLog::open(dir).map_err(|e| e.to_string())?;
        let mut group = whole_groups(&log)?;
        let mut said = false;
        const SIZES: [usize; 7] = [1, 1, 3, 1, 7, 2, 1];
        loop {
            let mut records = Vec::new();
            let mut starts = Vec::new();
            for _ in 0..(group % 4 + 1) {
                let size = SIZES[(group % 7) as usize];
                starts.push(records.len());
                records.extend((0..size).map(|i| grouped(group, i, size)));
                group += 1;
            }
            log.append_groups(&records, &starts)
                .map_err(|e| e.to_string())?;
            if !said {
                println!("appending");
                said = true;
            }
        }
    }

    /// A process killed in the middle of appending leaves whole groups, in order, with their events
    /// index entries (groups of one record are plain sled inserts, larger ones sled batches; the
    /// index's entries are plain inserts followed by the seq they reach), eight kills on one log. A
    /// kill leaves what sled had written in the page cache, so this checks the groups' bounds, seqs and
    /// the index's catch-up; a power cut relies on sled recovering a prefix of its log.
    #[test]
    fn a_kill_9_keeps_whole_groups_and_their_index_entries() -> Result<(), String> {
        if let Ok(dir) = std::env::var(CRASH_CHILD_DIR) {
            return append_groups_until_killed(Path::new(&dir));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut groups = 0;
        for run_ms in [30, 180, 120, 250, 5, 360, 70, 280] {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "tests::a_kill_9_keeps_whole_groups_and_their_index_entries",
                    "--nocapture",
                ])
                .env(CRASH_CHILD_DIR, dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            // Killed `run_ms` after its first append returned.
            let mut out = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
            let mut line = String::new();
            while !line.contains("appending") {
                line.clear();
                if std::io::BufRead::read_line(&mut out, &mut line).map_err(|e| e.to_string())? == 0
                {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(run_ms));
            let exited = child.try_wait().map_err(|e| e.to_string())?;
            child.kill().map_err(|e| e.to_string())?; // SIGKILL
            child.wait().map_err(|e| e.to_string())?;
            assert!(exited.is_none(), "the writer stopped by itself: {exited:?}");
            let (log, _) = EventLog::open(dir.path()).map_err(|e| e.to_string())?;
            let now = whole_groups(&log)?;
            assert!(now > groups, "no group appended in {run_ms} ms ({now})");
            groups = now;
        }
        Ok(())
    }

    #[test]
    fn a_checkpoint_is_a_file_and_one_kept_in_the_database_by_an_older_version_is_read(
    ) -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        let (log, _) = EventLog::open(dir.path())?;
        // What a version before the file left in the database.
        let mut old = key(7).to_vec();
        old.extend_from_slice(b"old");
        log.main()?.checkpoints.insert(CHECKPOINT_KEY, old)?;
        assert_eq!(log.load_checkpoint()?, Some((7, b"old".to_vec())));
        log.save_checkpoint(9, b"new")?;
        assert_eq!(log.load_checkpoint()?, Some((9, b"new".to_vec())));
        assert!(
            log.main()?.checkpoints.get(CHECKPOINT_KEY)?.is_none(),
            "the old copy is gone"
        );
        assert!(!dir.path().join(CHECKPOINT_TMP).exists());
        // A damaged file is passed over: the log is replayed instead.
        let path = dir.path().join(CHECKPOINT_FILE);
        let mut bytes = std::fs::read(&path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes)?;
        assert_eq!(log.load_checkpoint()?, None);
        std::fs::write(&path, b"short")?;
        assert_eq!(log.load_checkpoint()?, None);
        // A crash while writing leaves the temporary file: the last whole checkpoint is used.
        log.save_checkpoint(11, b"whole")?;
        std::fs::write(dir.path().join(CHECKPOINT_TMP), b"torn")?;
        drop(log);
        let (log, _) = EventLog::open(dir.path())?;
        assert_eq!(log.load_checkpoint()?, Some((11, b"whole".to_vec())));
        Ok(())
    }

    #[test]
    fn a_streamed_checkpoint_counts_only_once_committed_and_a_failed_one_never(
    ) -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        let (log, _) = EventLog::open(dir.path())?;
        log.save_checkpoint(5, b"before")?;
        // 1 MB in 100-byte pieces, as an encoder writes it.
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        log.stage_checkpoint(8, &mut |w| {
            payload.chunks(100).try_for_each(|c| w.write_all(c))
        })?;
        assert_eq!(log.load_checkpoint()?, Some((5, b"before".to_vec())));
        log.commit_checkpoint()?;
        assert_eq!(log.load_checkpoint()?, Some((8, payload.clone())));
        // An encoder that fails half-way: nothing to commit, the last checkpoint stays.
        let failed = log.stage_checkpoint(9, &mut |w| {
            w.write_all(&payload[..500_000])?;
            Err(std::io::Error::other("the encoder failed"))
        });
        assert!(failed.is_err());
        drop(log);
        let (log, _) = EventLog::open(dir.path())?;
        assert_eq!(log.load_checkpoint()?, Some((8, payload)));
        Ok(())
    }

    #[test]
    fn checkpoint_round_trips() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Storage(e.into()))?;
        let (log, _) = EventLog::open(dir.path())?;
        assert_eq!(log.load_checkpoint()?, None);
        log.save_checkpoint(42, b"state")?;
        assert_eq!(log.load_checkpoint()?, Some((42, b"state".to_vec())));
        Ok(())
    }
}
