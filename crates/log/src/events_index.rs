//! The events index: an account's events by seq and by time, so that listing an account's events
//! (`GET /events`) and planning a time-range replay are range reads of that account's events instead of
//! scans of the whole log (every account's events and every attempt record).
//!
//! It lives in the log's database, in a tree of its own, written right after each batch of records and
//! before the same flush, together with the seq it has indexed up to. It is derived: on open, the
//! records past that seq are indexed (all of them for a log written before the index existed, or by a
//! version that kept one key per event: its tree, `events_by_account`, is dropped and rebuilt as pages).
//!
//! **Pages.** Each write stores an account's events of that write as pages: about [`PAGE_BYTES`] (some
//! 130 events) at most, created within [`PAGE_SPAN_MS`] of each other (a write whose events span more is
//! split), so a busy account's batch costs two sled inserts, not two per event. Pages are kept small
//! because sled rewrites a whole tree node (up to 17 values) every few inserts, and writes a node over
//! ~128 KiB to a file of its own (a file create and two `fsync`s): a node of 4 KiB pages stays far
//! below that. Keys:
//!
//! - `S` account 0 seq → the page: `seq` is its first event's (retention keeps the key when it removes
//!   that event, so it is a lower bound of the page's seqs; an account's pages never overlap);
//! - `T` account 0 min_created_at seq → max_created_at: the same page by time, `min`/`max` of its events'
//!   `created_at` when it was written. Every event created at or after `since` is in a page whose `min`
//!   is at least `since − PAGE_SPAN_MS`, so a time range reads the `T` keys from there;
//! - `mindexed` → the last seq indexed.
//!
//! `created_at` in keys is milliseconds with the sign bit flipped, so keys sort by time. A page's value:
//! `[2][min_created_at: i64 BE]`, then per event its seq minus the key's (LEB128), its `created_at` (i64
//! BE), its type's name (length `u8`, bytes) and its test event's webhook id (length `u8`, bytes; 0 =
//! none). The type and the webhook are what a replay decides by, so planning one reads no record; a
//! name of length 0 means the summary is unknown and the record is read instead.

use crate::LogError;
use buildr_core::record::EventRecord;
use buildr_core::{AccountId, EventType, Record, Timestamp, WebhookId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

/// The tree the index lives in.
pub(crate) const TREE: &str = "events_pages";
/// The tree of the format before pages (one `s` and one `t` key per event), dropped on open.
pub(crate) const OLD_TREE: &str = "events_by_account";

const INDEXED: &[u8] = b"mindexed";
const PAGE_FORMAT: u8 = 2;
const PAGE_HEADER: usize = 9;
/// A page takes no more events once it is this long (one event adds 20–90 bytes).
pub(crate) const PAGE_BYTES: usize = 4096;
/// A page's events were created at most this far apart.
pub(crate) const PAGE_SPAN_MS: i64 = 60_000;

/// One of an account's events as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub seq: u64,
    /// `None` when the index does not know it (a type this version cannot read): read the record.
    pub summary: Option<EventSummary>,
}

/// What a replay needs to know of an event besides its account and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    pub event_type: EventType,
    /// A test event's only webhook.
    pub only_webhook: Option<WebhookId>,
}

impl EventSummary {
    pub fn of(e: &EventRecord) -> Self {
        Self {
            event_type: e.event_type,
            only_webhook: e.only_webhook.clone(),
        }
    }
}

/// An event in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq: u64,
    created_at: i64,
    summary: Option<EventSummary>,
}

impl Entry {
    fn into_ref(self) -> EventRef {
        EventRef {
            seq: self.seq,
            summary: self.summary,
        }
    }
}

fn push_leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_leb128(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
    *bytes = rest;
    Some(head)
}

fn take_short<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&len, rest) = bytes.split_first()?;
    *bytes = rest;
    take(bytes, usize::from(len))
}

fn take_i64(bytes: &mut &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(take(bytes, 8)?.try_into().ok()?))
}

/// Appends `text` with a one-byte length (type names and ids are short ASCII words; a longer one is
/// stored empty, which reads as "unknown").
fn push_short(out: &mut Vec<u8>, text: &str) {
    match u8::try_from(text.len()) {
        Ok(len) => {
            out.push(len);
            out.extend_from_slice(text.as_bytes());
        }
        Err(_) => out.push(0),
    }
}

fn push_entry(
    out: &mut Vec<u8>,
    key_seq: u64,
    seq: u64,
    created_at: i64,
    summary: Option<&EventSummary>,
) {
    push_leb128(out, seq - key_seq);
    out.extend_from_slice(&created_at.to_be_bytes());
    match summary {
        Some(s) => {
            push_short(out, s.event_type.as_str());
            push_short(out, s.only_webhook.as_ref().map_or("", |w| w.as_str()));
        }
        None => out.extend_from_slice(&[0, 0]),
    }
}

fn parse_summary(name: &[u8], only: &[u8]) -> Option<EventSummary> {
    let event_type = std::str::from_utf8(name).ok()?.parse().ok()?;
    let only_webhook = match only {
        [] => None,
        id => Some(std::str::from_utf8(id).ok()?.parse().ok()?),
    };
    Some(EventSummary {
        event_type,
        only_webhook,
    })
}

/// The `min_created_at` a page was written with and its events; `None` if it does not decode.
fn decode_page(key_seq: u64, mut bytes: &[u8]) -> Option<(i64, Vec<Entry>)> {
    let (&format, rest) = bytes.split_first()?;
    if format != PAGE_FORMAT {
        return None;
    }
    bytes = rest;
    let min = take_i64(&mut bytes)?;
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let seq = key_seq.checked_add(take_leb128(&mut bytes)?)?;
        let created_at = take_i64(&mut bytes)?;
        let name = take_short(&mut bytes)?;
        let only = take_short(&mut bytes)?;
        entries.push(Entry {
            seq,
            created_at,
            summary: parse_summary(name, only),
        });
    }
    Some((min, entries))
}

fn encode_page(key_seq: u64, min: i64, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PAGE_HEADER + entries.len() * 32);
    out.push(PAGE_FORMAT);
    out.extend_from_slice(&min.to_be_bytes());
    for e in entries {
        push_entry(&mut out, key_seq, e.seq, e.created_at, e.summary.as_ref());
    }
    out
}

fn account_prefix(tag: u8, account: &AccountId) -> Vec<u8> {
    let mut k = Vec::with_capacity(account.as_str().len() + 18);
    k.push(tag);
    k.extend_from_slice(account.as_str().as_bytes());
    k.push(0);
    k
}

fn time_bytes(ms: i64) -> [u8; 8] {
    // Flipping the sign bit makes the big-endian bytes of an i64 sort in numeric order.
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn page_key(account: &AccountId, seq: u64) -> Vec<u8> {
    let mut k = account_prefix(b'S', account);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn time_key(account: &AccountId, min: i64, seq: u64) -> Vec<u8> {
    let mut k = account_prefix(b'T', account);
    k.extend_from_slice(&time_bytes(min));
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

/// A page being filled by one write.
struct PageBuilder {
    first: u64,
    min: i64,
    max: i64,
    bytes: Vec<u8>,
}

impl PageBuilder {
    fn new(first: u64, at: i64) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(PAGE_FORMAT);
        bytes.extend_from_slice(&[0; 8]);
        Self {
            first,
            min: at,
            max: at,
            bytes,
        }
    }

    /// Whether an event created at `at` may join (the page's limits).
    fn takes(&self, at: i64) -> bool {
        self.bytes.len() < PAGE_BYTES
            && i128::from(self.max.max(at)) - i128::from(self.min.min(at))
                <= i128::from(PAGE_SPAN_MS)
    }

    fn push(&mut self, seq: u64, e: &EventRecord) {
        let at = e.created_at.as_millis();
        self.min = self.min.min(at);
        self.max = self.max.max(at);
        push_entry(
            &mut self.bytes,
            self.first,
            seq,
            at,
            Some(&EventSummary::of(e)),
        );
    }

    fn finish(mut self) -> (u64, i64, i64, Vec<u8>) {
        self.bytes[1..PAGE_HEADER].copy_from_slice(&self.min.to_be_bytes());
        (self.first, self.min, self.max, self.bytes)
    }
}

/// The page stored under the key of seq `first`: its `min_created_at` and events.
fn read_page(first: u64, value: &[u8]) -> Result<(i64, Vec<Entry>), LogError> {
    decode_page(first, value).ok_or(LogError::BadIndexPage(first))
}

/// A stored `S` key and its page: the key's seq, the page's `min_created_at` and its events.
fn key_and_page(k: &[u8], v: &[u8]) -> Result<(u64, i64, Vec<Entry>), LogError> {
    let first = trailing_seq(k).ok_or(LogError::BadKey(0))?;
    let (min, entries) = read_page(first, v)?;
    Ok((first, min, entries))
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

    fn store(&self, account: &AccountId, page: PageBuilder) -> Result<(), LogError> {
        let (first, min, max, bytes) = page.finish();
        self.tree.insert(page_key(account, first), bytes)?;
        self.tree
            .insert(time_key(account, min, first), &max.to_be_bytes())?;
        Ok(())
    }

    /// Indexes `records` (in seq order) as pages per account, then records the seq they reach.
    ///
    /// Plain inserts, not a sled batch: a batch costs sled two extra log writes (it writes its manifest
    /// in a buffer of its own and seals the buffer before it), which at a low event rate were most of an
    /// event's disk writes. Nothing is lost by it: sled recovers a prefix of its log (it stops at the
    /// first torn message), so when the seq survives a crash the pages written before it did too; pages
    /// without their seq are written again by the catch-up on open, which starts at the same seq and
    /// splits the same way, so each lands on its own key again (with any events after it).
    pub(crate) fn add<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, &'a Record)>,
    ) -> Result<(), LogError> {
        let mut open: HashMap<&'a AccountId, PageBuilder> = HashMap::new();
        let mut last = None;
        for (seq, record) in records {
            last = Some(seq);
            let Record::EventPublished(e) = record else {
                continue;
            };
            let at = e.created_at.as_millis();
            let page = match open.get_mut(&e.account) {
                Some(page) if page.takes(at) => page,
                Some(page) => {
                    let full = std::mem::replace(page, PageBuilder::new(seq, at));
                    self.store(&e.account, full)?;
                    page
                }
                None => open
                    .entry(&e.account)
                    .or_insert_with(|| PageBuilder::new(seq, at)),
            };
            page.push(seq, e);
        }
        for (account, page) in open {
            self.store(account, page)?;
        }
        if let Some(seq) = last {
            self.tree.insert(INDEXED, &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// The page of `account` that holds `seq` if any: its key seq, `min_created_at` and events.
    fn page_holding(
        &self,
        account: &AccountId,
        seq: u64,
    ) -> Result<Option<(u64, i64, Vec<Entry>)>, LogError> {
        let Some((k, v)) = self
            .tree
            .range(account_prefix(b'S', account)..=page_key(account, seq))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        key_and_page(&k, &v).map(Some)
    }

    /// Empties every event's summary, as if the index did not know them (tests of the readers'
    /// fallback to the records).
    pub(crate) fn forget_summaries(&self) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for item in self.tree.scan_prefix([b'S']) {
            let (k, v) = item?;
            let (first, min, mut entries) = key_and_page(&k, &v)?;
            for e in &mut entries {
                e.summary = None;
            }
            batch.insert(k, encode_page(first, min, &entries));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Drops the removed records' events from their pages, and a page with none left (retention).
    pub(crate) fn remove<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, &'a Record)>,
    ) -> Result<(), LogError> {
        let mut by_account: BTreeMap<&'a AccountId, BTreeSet<u64>> = BTreeMap::new();
        for (seq, record) in records {
            if let Record::EventPublished(e) = record {
                by_account.entry(&e.account).or_default().insert(seq);
            }
        }
        let mut batch = sled::Batch::default();
        for (account, seqs) in by_account {
            let mut next = seqs.first().copied();
            while let Some(seq) = next {
                let Some((first, min, entries)) = self.page_holding(account, seq)? else {
                    next = seqs.range(seq + 1..).next().copied();
                    continue;
                };
                let end = entries.last().map_or(first, |e| e.seq);
                let kept: Vec<Entry> = entries
                    .into_iter()
                    .filter(|e| !seqs.contains(&e.seq))
                    .collect();
                if kept.is_empty() {
                    batch.remove(page_key(account, first));
                    batch.remove(time_key(account, min, first));
                } else {
                    batch.insert(page_key(account, first), encode_page(first, min, &kept));
                }
                next = seqs.range(seq.max(end) + 1..).next().copied();
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// `account`'s events after `after_seq`, in order: the page holding `after_seq + 1`, then the pages
    /// after it, read as the iterator is.
    pub(crate) fn refs_after(
        &self,
        account: &AccountId,
        after_seq: u64,
    ) -> impl Iterator<Item = Result<EventRef, LogError>> {
        let prefix = account_prefix(b'S', account);
        let at = page_key(account, after_seq.saturating_add(1));
        let floor = self.tree.range(prefix.clone()..=at.clone()).next_back();
        let rest = self
            .tree
            .range((Bound::Excluded(at), Bound::Excluded(prefix_end(&prefix))));
        let mut last = after_seq;
        floor
            .into_iter()
            .chain(rest)
            .flat_map(|item| -> Vec<Result<EventRef, LogError>> {
                let page = item
                    .map_err(LogError::from)
                    .and_then(|(k, v)| key_and_page(&k, &v));
                match page {
                    Ok((_, _, entries)) => entries.into_iter().map(|e| Ok(e.into_ref())).collect(),
                    Err(e) => vec![Err(e)],
                }
            })
            // Pages never overlap, but an event is never given twice or out of order even if they did.
            .filter(move |r| match r {
                Ok(r) if r.seq <= last => false,
                Ok(r) => {
                    last = r.seq;
                    true
                }
                Err(_) => true,
            })
    }

    /// `account`'s events created in `[since, until)`, in seq order.
    pub(crate) fn refs_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<EventRef>, LogError> {
        let (since, until) = (since.as_millis(), until.map(Timestamp::as_millis));
        let start = time_key(account, since.saturating_sub(PAGE_SPAN_MS), 0);
        let end = match until {
            Some(u) => time_key(account, u, 0),
            None => prefix_end(&account_prefix(b'T', account)),
        };
        let mut refs = Vec::new();
        for item in self.tree.range(start..end) {
            let (k, v) = item?;
            let first = trailing_seq(&k).ok_or(LogError::BadKey(0))?;
            let max = v
                .as_ref()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| LogError::BadIndexPage(first))?;
            if max < since {
                continue;
            }
            let Some(page) = self.tree.get(page_key(account, first))? else {
                continue;
            };
            let (_, entries) = read_page(first, &page)?;
            refs.extend(
                entries
                    .into_iter()
                    .filter(|e| e.created_at >= since && until.is_none_or(|u| e.created_at < u))
                    .map(Entry::into_ref),
            );
        }
        // Times are not monotonic in log order (clocks, concurrent publishers): order by seq.
        refs.sort_unstable_by_key(|r| r.seq);
        refs.dedup_by_key(|r| r.seq);
        Ok(refs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use buildr_core::{EventData, EventId, ObjectId};

    fn event(account: &AccountId, at: i64, event_type: EventType, only: Option<&str>) -> Record {
        Record::EventPublished(EventRecord {
            id: EventId::generate(),
            account: account.clone(),
            event_type,
            data: EventData {
                id: ObjectId::Int(1),
                url: "https://x.example/1".into(),
            },
            created_at: Timestamp::from_millis(at),
            only_webhook: only.and_then(|w| w.parse().ok()),
        })
    }

    fn index() -> (tempfile::TempDir, EventsIndex) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, EventsIndex::new(db.open_tree(TREE).unwrap()))
    }

    /// xorshift64*: a fixed sequence, so a failure is found again by its round.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
        }
    }

    #[test]
    fn pages_round_trip_and_unknown_or_damaged_ones_are_told_apart() {
        let acc = AccountId::default_account();
        let mut page = PageBuilder::new(7, 1_000);
        let mut want = Vec::new();
        for (i, t) in EventType::ALL.into_iter().enumerate() {
            for only in [None, Some("wh_01abc")] {
                let seq = 7 + (want.len() as u64) * 300; // deltas of more than one LEB128 byte
                let r = event(&acc, 1_000 + i as i64, t, only);
                let Record::EventPublished(e) = &r else {
                    unreachable!()
                };
                page.push(seq, e);
                want.push(Entry {
                    seq,
                    created_at: e.created_at.as_millis(),
                    summary: Some(EventSummary::of(e)),
                });
            }
        }
        let (first, min, _, bytes) = page.finish();
        assert_eq!(decode_page(first, &bytes), Some((min, want.clone())));
        assert_eq!(encode_page(first, min, &want), bytes);
        // A type this version does not know reads as an unknown summary, not as an error.
        let mut unknown = want[..1].to_vec();
        unknown[0].summary = None;
        let mut raw = encode_page(first, min, &unknown);
        let at = raw.len() - 2;
        raw.splice(at..at + 1, *b"\x04nope");
        assert_eq!(decode_page(first, &raw), Some((min, unknown)));
        // A later format, cut short (every length), a delta past u64.
        assert_eq!(decode_page(first, b"\x03\0\0\0\0\0\0\0\0"), None);
        for cut in 1..bytes.len() {
            if decode_page(first, &bytes[..cut]).is_some() {
                // Only a cut at an entry's end is a shorter, valid page.
                let (_, entries) = decode_page(first, &bytes[..cut]).unwrap();
                assert!(entries.len() < want.len() && want.starts_with(&entries));
            }
        }
        assert_eq!(decode_page(u64::MAX, &encode_page(0, 0, &want[1..2])), None);
    }

    /// The index against a model (every event's account, time and summary in a map), through writes of
    /// every size, times that jump and go back, retention of single events and whole pages, and
    /// summaries forgotten.
    #[test]
    fn the_index_answers_what_a_full_scan_would() {
        let (_dir, idx) = index();
        let accounts: Vec<AccountId> = ["acc_a", "acc_ab", "acc_b"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // seq → (account, created_at, summary, whether the index still knows the summary)
        let mut model: BTreeMap<u64, (usize, i64, EventSummary, bool)> = BTreeMap::new();
        let mut next_seq = 1u64;
        let mut clock = 1_000_000i64;
        for round in 0..300 {
            match rng.below(10) {
                0..=6 => {
                    let len = match rng.below(20) {
                        0 => 600 + rng.below(900),
                        _ => 1 + rng.below(40),
                    };
                    // A large write is one account's, in one minute (its pages split by count).
                    let one_account = len > 600;
                    let mut records = Vec::new();
                    for _ in 0..len {
                        let seq = next_seq;
                        next_seq += 1 + rng.below(3); // the gaps are other records
                        clock += match rng.below(50) {
                            0 if !one_account => 90_000,
                            1 if !one_account => -70_000,
                            _ => rng.below(60) as i64 - 20,
                        };
                        let acc = match one_account {
                            true => 0,
                            false => rng.below(accounts.len() as u64) as usize,
                        };
                        let t = EventType::ALL[rng.below(EventType::ALL.len() as u64) as usize];
                        let only = (rng.below(8) == 0).then_some("wh_01test");
                        let r = event(&accounts[acc], clock, t, only);
                        let Record::EventPublished(e) = &r else {
                            unreachable!()
                        };
                        model.insert(seq, (acc, clock, EventSummary::of(e), true));
                        records.push((seq, r));
                    }
                    idx.add(records.iter().map(|(s, r)| (*s, r))).unwrap();
                    assert_eq!(idx.indexed_seq().unwrap(), records.last().unwrap().0);
                }
                7 | 8 => {
                    // Retention: the oldest run of events, or a scattering of them.
                    let seqs: Vec<u64> = model.keys().copied().collect();
                    let take: Vec<u64> = if rng.below(2) == 0 {
                        seqs.iter().take(rng.below(700) as usize).copied().collect()
                    } else {
                        seqs.iter().filter(|_| rng.below(7) == 0).copied().collect()
                    };
                    let records: Vec<(u64, Record)> = take
                        .iter()
                        .map(|s| {
                            let (acc, at, summary, _) = model.remove(s).unwrap();
                            (*s, event(&accounts[acc], at, summary.event_type, None))
                        })
                        .collect();
                    idx.remove(records.iter().map(|(s, r)| (*s, r))).unwrap();
                }
                _ => {
                    idx.forget_summaries().unwrap();
                    for (_, (_, _, _, known)) in model.iter_mut() {
                        *known = false;
                    }
                }
            }
            let as_ref =
                |(seq, (_, _, s, known)): (&u64, &(usize, i64, EventSummary, bool))| EventRef {
                    seq: *seq,
                    summary: known.then(|| s.clone()),
                };
            for (a, account) in accounts.iter().enumerate() {
                let after = rng.below(next_seq + 1);
                let got: Vec<EventRef> = idx
                    .refs_after(account, after)
                    .collect::<Result<_, _>>()
                    .unwrap();
                let want: Vec<EventRef> = model
                    .range(after + 1..)
                    .filter(|(_, (acc, _, _, _))| *acc == a)
                    .map(as_ref)
                    .collect();
                assert_eq!(got, want, "round {round}: {account} after {after}");
                let since = clock - rng.below(400_000) as i64;
                let until = (rng.below(3) > 0).then(|| since + rng.below(300_000) as i64);
                let got = idx
                    .refs_between(
                        account,
                        Timestamp::from_millis(since),
                        until.map(Timestamp::from_millis),
                    )
                    .unwrap();
                let want: Vec<EventRef> = model
                    .iter()
                    .filter(|(_, (acc, at, _, _))| {
                        *acc == a && *at >= since && until.is_none_or(|u| *at < u)
                    })
                    .map(as_ref)
                    .collect();
                assert_eq!(
                    got, want,
                    "round {round}: {account} in [{since}, {until:?})"
                );
            }
        }
        assert!(model.len() > 1_000, "the model kept {} events", model.len());
        // Pages keep their limits, and there are far fewer of them than events (the point of them).
        let mut pages = 0;
        for item in idx.tree.scan_prefix([b'S']) {
            let (k, v) = item.unwrap();
            let (min, entries) = decode_page(trailing_seq(&k).unwrap(), &v).unwrap();
            assert!(!entries.is_empty() && v.len() < PAGE_BYTES + 100);
            let max = entries.iter().map(|e| e.created_at).max().unwrap();
            assert!(entries.iter().all(|e| e.created_at >= min) && max - min <= PAGE_SPAN_MS);
            pages += 1;
        }
        assert_eq!(idx.tree.scan_prefix([b'T']).count(), pages);
        assert!(
            pages * 4 < model.len(),
            "{pages} pages for {} events",
            model.len()
        );
    }
}
