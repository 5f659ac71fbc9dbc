//! The event log: an append-only sequence of [`Record`]s in sled, numbered by `seq` from 1.
//!
//! - One writer: only the engine's LogActor calls [`EventLog::append`]; readers may read any range at any
//!   time from any thread.
//! - [`EventLog::append`] returns only after the batch is flushed to disk (one fsync per batch).
//! - Each record is stored as `[format version][crc32 of the payload][bincode payload]`, so a torn or
//!   corrupt record is detected instead of misread, and a newer binary can read an older format.
#![forbid(unsafe_code)]

mod codec;
#[doc(hidden)]
pub mod drivertest;
mod index;
mod store;

pub use codec::{decode, encode, DecodeError, FORMAT_VERSION};
pub use index::{DeliveryIndex, IndexOp};
pub use store::{Appended, Entries, LogStore, Notify};

use buildr_core::Record;
use std::path::Path;
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
}

/// What opening the log found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub last_seq: u64,
    /// Records at the tail that were torn or corrupt and were cut off (seq numbers).
    pub truncated: Vec<u64>,
}

pub struct EventLog {
    db: sled::Db,
    /// The delivery index's own database (see [`INDEX_DIR`]).
    index_db: sled::Db,
    records: sled::Tree,
    checkpoints: sled::Tree,
    index: DeliveryIndex,
    next_seq: AtomicU64,
}

const CHECKPOINT_KEY: &[u8] = b"projection";

/// The delivery index lives in its own sled database in this subdirectory of the log's, so that the log's
/// flush (the fsync every `202` waits for) writes only the log's records, never the index's row updates.
pub const INDEX_DIR: &str = "delivery-index";

/// Where versions before the index had its own database kept it (a tree of the log's database).
const LEGACY_INDEX_TREE: &str = "delivery_index";

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// How the log's databases are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// The most memory sled may use to cache each database (the log's and the delivery index's).
    pub cache_bytes: u64,
}

impl Default for StorageOptions {
    /// sled's own default: 1 GiB per database.
    fn default() -> Self {
        Self {
            cache_bytes: 1 << 30,
        }
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
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .open()?;
        let records = db.open_tree("records")?;
        let checkpoints = db.open_tree("checkpoints")?;
        let index_db = sled::Config::new()
            .path(dir.join(INDEX_DIR))
            .cache_capacity(options.cache_bytes)
            .open()?;
        let index = DeliveryIndex::open(index_db.open_tree("delivery_index")?)?;
        // An index left in the log's database by an older version is dropped; the new one is rebuilt
        // from the log on start (its applied seq starts at 0).
        if db
            .tree_names()
            .iter()
            .any(|n| n == LEGACY_INDEX_TREE.as_bytes())
        {
            db.drop_tree(LEGACY_INDEX_TREE)?;
        }
        let mut report = OpenReport::default();
        while let Some((k, v)) = records.last()? {
            let seq = seq_of(&k).ok_or(LogError::BadKey(0))?;
            match decode(&v) {
                Ok(_) => {
                    report.last_seq = seq;
                    break;
                }
                Err(_) => {
                    records.remove(k)?;
                    report.truncated.push(seq);
                }
            }
        }
        if !report.truncated.is_empty() {
            db.flush()?;
        }
        let log = Self {
            db,
            index_db,
            records,
            checkpoints,
            index,
            next_seq: AtomicU64::new(report.last_seq + 1),
        };
        Ok((log, report))
    }

    /// The seq of the last record (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire) - 1
    }

    /// Appends `records` atomically and durably; returns the seq of the first. Only one writer may call it.
    pub fn append(&self, records: &[Record]) -> Result<u64, LogError> {
        let first = self.next_seq.load(Ordering::Acquire);
        let mut batch = sled::Batch::default();
        for (i, r) in records.iter().enumerate() {
            batch.insert(&key(first + i as u64), encode(r));
        }
        self.records.apply_batch(batch)?;
        self.db.flush()?;
        self.next_seq
            .store(first + records.len() as u64, Ordering::Release);
        Ok(first)
    }

    /// Removes records (retention). Never the last one: the next seq must stay above every seq ever
    /// used, and it is derived from the last record on open.
    pub fn remove(&self, seqs: &[u64]) -> Result<usize, LogError> {
        let last = self.last_seq();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for &seq in seqs.iter().filter(|&&s| s < last) {
            batch.remove(&key(seq));
            n += 1;
        }
        self.records.apply_batch(batch)?;
        self.db.flush()?;
        Ok(n)
    }

    /// Stores already-encoded records at the seqs given (ascending, above every seq present), without an
    /// fsync: for a local copy of a log whose truth is elsewhere (cluster mode's copy of the stream, which
    /// is rebuilt from the stream when lost). One atomic sled batch.
    pub fn store_at(&self, entries: &[(u64, &[u8])]) -> Result<(), LogError> {
        let Some(&(last, _)) = entries.last() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for (seq, bytes) in entries {
            batch.insert(&key(*seq), *bytes);
        }
        self.records.apply_batch(batch)?;
        self.next_seq.fetch_max(last + 1, Ordering::AcqRel);
        Ok(())
    }

    /// Appends bytes as they are, bypassing encoding (tests and tools that need a damaged record).
    #[doc(hidden)]
    pub fn append_raw_for_tests(&self, bytes: &[u8]) -> Result<u64, LogError> {
        let seq = self.next_seq.load(Ordering::Acquire);
        self.records.insert(key(seq), bytes)?;
        self.db.flush()?;
        self.next_seq.store(seq + 1, Ordering::Release);
        Ok(seq)
    }

    pub fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        match self.records.get(key(seq))? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|source| LogError::Corrupt { seq, source }),
        }
    }

    /// Records with `from <= seq < to`, in order.
    pub fn range(
        &self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Record), LogError>> + '_ {
        self.records
            .range(key(from)..key(to.max(from)))
            .map(move |item| {
                let (k, v) = item?;
                let seq = seq_of(&k).ok_or(LogError::BadKey(from))?;
                let rec = decode(&v).map_err(|source| LogError::Corrupt { seq, source })?;
                Ok((seq, rec))
            })
    }

    /// Every record from `from` on.
    pub fn tail(&self, from: u64) -> impl Iterator<Item = Result<(u64, Record), LogError>> + '_ {
        self.range(from, u64::MAX)
    }

    /// Stores a projection snapshot that covers the log up to `seq` (opaque bytes, the engine's format).
    pub fn save_checkpoint(&self, seq: u64, bytes: &[u8]) -> Result<(), LogError> {
        let mut v = Vec::with_capacity(bytes.len() + 8);
        v.extend_from_slice(&key(seq));
        v.extend_from_slice(bytes);
        self.checkpoints.insert(CHECKPOINT_KEY, v)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        Ok(self.checkpoints.get(CHECKPOINT_KEY)?.and_then(|v| {
            let seq = seq_of(v.get(..8)?)?;
            Some((seq, v[8..].to_vec()))
        }))
    }

    /// The delivery index (a projection of the log in its own database; see [`DeliveryIndex`]).
    pub fn index(&self) -> &DeliveryIndex {
        &self.index
    }

    /// Flushes the delivery index to disk (before a checkpoint that assumes it is caught up).
    pub fn flush_index(&self) -> Result<(), LogError> {
        self.index_db.flush()?;
        Ok(())
    }

    /// Flushes everything (the index and checkpoints included) to disk.
    pub fn flush(&self) -> Result<(), LogError> {
        self.index_db.flush()?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::drivertest::record as event;

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

    #[test]
    fn passes_the_driver_suite() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let result = dir.and_then(|d| {
            crate::drivertest::run_all(&mut crate::drivertest::SledDriver::new(d.path()))
        });
        assert_eq!(result, Ok(()));
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
