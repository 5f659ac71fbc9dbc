//! The events index: each event's seq by account, and by account and time, so that listing an
//! account's events (`GET /events`) and planning a time-range replay are range reads of that account's
//! events instead of scans of the whole log (every account's events and every attempt record).
//!
//! It lives in the log's database, in a tree of its own, written right after each batch of records and
//! before the same flush, together with the seq it has indexed up to. It is derived: on open, the
//! records past that seq are indexed (all of them for a log written before the index existed).
//!
//! Keys: `s` account 0 seq → (); `t` account 0 created_at seq → (); `m indexed` → seq. `created_at` is
//! milliseconds with the sign bit flipped, so keys sort by time.

use crate::LogError;
use buildr_core::{AccountId, Record, Timestamp};

const INDEXED: &[u8] = b"mindexed";

fn account_prefix(tag: u8, account: &AccountId) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.as_str().len() + 18);
    k.push(tag);
    k.extend_from_slice(account.as_str().as_bytes());
    k.push(0);
    k
}

fn time_bytes(t: Timestamp) -> [u8; 8] {
    // Flipping the sign bit makes the big-endian bytes of an i64 sort in numeric order.
    ((t.as_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

fn seq_key(account: &AccountId, seq: u64) -> Vec<u8> {
    let mut k = account_prefix(b's', account);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn time_key(account: &AccountId, at: Timestamp, seq: u64) -> Vec<u8> {
    let mut k = account_prefix(b't', account);
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn trailing_seq(k: &[u8]) -> Option<u64> {
    let tail = k.get(k.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[derive(Clone)]
pub(crate) struct EventsIndex {
    tree: sled::Tree,
}

impl EventsIndex {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// The last seq whose record is indexed.
    pub(crate) fn indexed_seq(&self) -> Result<u64, LogError> {
        Ok(self
            .tree
            .get(INDEXED)?
            .and_then(|v| trailing_seq(&v))
            .unwrap_or(0))
    }

    /// Indexes `records` (at `first`, `first + 1`, …) as one batch with the seq they reach.
    pub(crate) fn add<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, &'a Record)>,
    ) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for (seq, record) in records {
            if let Record::EventPublished(e) = record {
                batch.insert(seq_key(&e.account, seq), &[]);
                batch.insert(time_key(&e.account, e.created_at, seq), &[]);
            }
            last = Some(seq);
        }
        if let Some(seq) = last {
            batch.insert(INDEXED, &seq.to_be_bytes());
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Drops the entries of removed records (retention).
    pub(crate) fn remove<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, &'a Record)>,
    ) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for (seq, record) in records {
            if let Record::EventPublished(e) = record {
                batch.remove(seq_key(&e.account, seq));
                batch.remove(time_key(&e.account, e.created_at, seq));
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The seqs of `account`'s events after `after_seq`, in order.
    pub(crate) fn seqs_after(
        &self,
        account: &AccountId,
        after_seq: u64,
    ) -> impl Iterator<Item = Result<u64, LogError>> {
        let prefix = account_prefix(b's', account);
        let start = seq_key(account, after_seq.saturating_add(1));
        self.tree.range(start..prefix_end(&prefix)).map(|item| {
            let (k, _) = item?;
            trailing_seq(&k).ok_or(LogError::BadKey(0))
        })
    }

    /// The seqs of `account`'s events created in `[since, until)`, in seq order.
    pub(crate) fn seqs_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<u64>, LogError> {
        let prefix = account_prefix(b't', account);
        let start = time_key(account, since, 0);
        let end = match until {
            Some(u) => time_key(account, u, 0),
            None => prefix_end(&prefix),
        };
        let mut seqs = self
            .tree
            .range(start..end)
            .map(|item| {
                let (k, _) = item?;
                trailing_seq(&k).ok_or(LogError::BadKey(0))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Times are not monotonic in log order (clocks, concurrent publishers): order by seq.
        seqs.sort_unstable();
        Ok(seqs)
    }
}
