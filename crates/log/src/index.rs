//! The delivery index: a persisted projection of the log for the delivery-records API — one row per
//! (webhook, event) with its status and last attempt, every attempt, and event id → seq. It lives in one
//! sled tree and each batch of updates is written atomically together with the seq it brings the index
//! up to, so after a crash it is caught up from that seq and nothing is counted twice.
//!
//! Keys: `r` webhook seq → a page of [`Row`]s (the deliveries with neighbouring seqs, each with its first
//! attempt inline; see `pages.rs`); `a` webhook seq
//! attempt-record-seq → AttemptRecord (every attempt, once there is more than one); `e` event id → seq
//! (for events with at least one delivery); `h` webhook 0 hour → the hour's and its minutes' attempt
//! statistics (see `stats.rs`);
//! `m applied` → seq; `m format` → [`FORMAT`].
//!
//! Most deliveries succeed at the first attempt, so keeping that attempt in the row makes them one row
//! write; a second attempt moves it out to its `a` key.

use crate::stats::{HourRow, StatsBucket, StatsRow};
use crate::LogError;
use buildr_core::{
    AttemptOutcome, AttemptRecord, Delivery, DeliveryStatus, EventId, EventType, WebhookId,
};

const APPLIED: &[u8] = b"mapplied";
const FORMAT_KEY: &[u8] = b"mformat";
/// The layout of the rows; an index in another layout is cleared and rebuilt from the log.
const FORMAT: u8 = 6;

mod pages;
use pages::{Page, PageSet, Tails};

/// A delivery row: the delivery as the API shows it, and its first attempt while it is the only one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Row {
    delivery: Delivery,
    first_attempt: Option<FirstAttempt>,
}

/// What a delivery's only attempt has beyond the delivery itself: the delivery records the time,
/// response, error and duration of its last attempt, and its key the webhook and the event's seq.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct FirstAttempt {
    /// The seq of the attempt's record.
    record_seq: u64,
    attempt: u32,
    outcome: AttemptOutcome,
}

impl Row {
    fn queued(id: EventId, t: EventType) -> Self {
        Self {
            delivery: Delivery::queued(id, t),
            first_attempt: None,
        }
    }

    /// About how many bytes it takes in a page.
    fn size(&self) -> usize {
        64 + self.delivery.response_body.len() + self.delivery.error.as_ref().map_or(0, String::len)
    }

    /// The inline first attempt as its record, with the seq of the record. Only while the delivery has
    /// had that one attempt (a replay's requeue changes its status, not the last attempt's fields).
    fn first(&self, webhook: &WebhookId, seq: u64) -> Option<(u64, AttemptRecord)> {
        let first = self.first_attempt.as_ref()?;
        let d = &self.delivery;
        Some((
            first.record_seq,
            AttemptRecord {
                webhook: webhook.clone(),
                seq,
                event_id: d.event_id.clone(),
                attempt: first.attempt,
                at: d.last_attempt_at?,
                response_status: d.response_status,
                response_body: d.response_body.clone(),
                error: d.error.clone(),
                duration_ms: d.duration_ms.unwrap_or_default(),
                outcome: first.outcome,
            },
        ))
    }
}

/// One change to the index, derived from a record and its effects.
#[derive(Debug, Clone)]
pub enum IndexOp {
    /// The event at `seq` was queued for `webhook` (published, or replayed; a replay does not carry the
    /// event's id and type, which are then read from the log when the row is new).
    Queued {
        webhook: WebhookId,
        seq: u64,
        event: Option<(EventId, EventType)>,
    },
    /// An attempt, recorded at `record_seq` (boxed: an attempt record is large, and a fan-out's
    /// `Queued` ops, by far the most numerous, need not be that size).
    Attempt {
        record_seq: u64,
        attempt: Box<AttemptRecord>,
    },
    /// The webhook is gone: its rows go too.
    WebhookDeleted(WebhookId),
}

#[derive(Clone)]
pub struct DeliveryIndex {
    tree: sled::Tree,
    /// The last pages the writer's latest batches left (only [`DeliveryIndex::apply`] and
    /// [`DeliveryIndex::forget`], both on the index writer's thread, lock it; readers read the tree).
    tails: std::sync::Arc<parking_lot::Mutex<Tails>>,
}

/// Crockford's base32 as ULIDs are written in generated ids (lower case).
const ULID_DIGITS: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `id` (the part after its prefix) as it is written into a key, so that no key is a prefix of another
/// id's: a generated id (a ULID in lower case, 26 digits) as `1` and its 16 bytes, which makes a key short
/// enough for sled to keep inline (a key of at most 22 bytes after the part its node shares needs no
/// allocation of its own); any other id as `2`, its text and `0` (ids never contain a `0` byte).
pub(crate) fn push_id(k: &mut Vec<u8>, id: &str) {
    if let Some(n) = ulid_value(id) {
        k.push(1);
        k.extend_from_slice(&n.to_be_bytes());
    } else {
        k.push(2);
        k.extend_from_slice(id.as_bytes());
        k.push(0);
    }
}

/// The value of a ULID written as generated ids write it (26 lower-case digits, the first at most `7`),
/// `None` for anything else (so a value stands for exactly one text).
fn ulid_value(text: &str) -> Option<u128> {
    let bytes = text.as_bytes();
    if bytes.len() != 26 || bytes[0] > b'7' {
        return None;
    }
    bytes.iter().try_fold(0u128, |n, b| {
        let digit = ULID_DIGITS.iter().position(|d| d == b)?;
        Some((n << 5) | digit as u128)
    })
}

/// `tag` and `webhook`'s id as keys hold it: the start of every key of one webhook (rows, attempts and,
/// in `stats.rs`, statistics).
pub(crate) fn prefix(tag: u8, webhook: &WebhookId) -> Vec<u8> {
    let mut k = Vec::with_capacity(28);
    k.push(tag);
    let id = webhook.as_str();
    push_id(&mut k, id.strip_prefix(WebhookId::PREFIX).unwrap_or(id));
    k
}

fn attempt_key(webhook: &WebhookId, seq: u64, record_seq: u64) -> Vec<u8> {
    let mut k = prefix(b'a', webhook);
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&record_seq.to_be_bytes());
    k
}

fn event_key(id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.push(b'e');
    let id = id.as_str();
    push_id(&mut k, id.strip_prefix(EventId::PREFIX).unwrap_or(id));
    k
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default()
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}

fn seq_suffix(k: &[u8]) -> Option<u64> {
    let tail = k.get(k.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

impl DeliveryIndex {
    /// The index in `tree`; one in another layout (or without its format mark) is cleared, so the engine
    /// rebuilds it from the log (its applied seq is then 0).
    pub(crate) fn open(tree: sled::Tree) -> Result<Self, LogError> {
        let format = tree.get(FORMAT_KEY)?;
        if format.as_deref() != Some(&[FORMAT][..]) {
            if !tree.is_empty() {
                tree.clear()?;
            }
            tree.insert(FORMAT_KEY, &[FORMAT])?;
        }
        Ok(Self {
            tree,
            tails: std::sync::Arc::new(parking_lot::Mutex::new(Tails::new())),
        })
    }

    /// The last log seq whose changes are in the index.
    pub fn applied_seq(&self) -> Result<u64, LogError> {
        Ok(self
            .tree
            .get(APPLIED)?
            .and_then(|v| seq_suffix(&v))
            .unwrap_or(0))
    }

    /// Records that the index holds every change up to `seq` (a checkpoint after the records up to it
    /// brought none); never moves backwards.
    pub fn mark_applied(&self, seq: u64) -> Result<(), LogError> {
        if seq > self.applied_seq()? {
            self.tree.insert(APPLIED, &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Applies `ops` and records `applied_seq`, atomically (no flush: the log is the truth).
    pub fn apply(
        &self,
        ops: &[IndexOp],
        applied_seq: u64,
        event_at: impl Fn(u64) -> Option<(EventId, EventType)>,
    ) -> Result<(), LogError> {
        let mut tails = self.tails.lock();
        let mut rows = PageSet::new(&self.tree, &mut tails);
        // Attempt keys written by this batch (removed again if their webhook is deleted later in it).
        let mut attempt_keys: Vec<Vec<u8>> = Vec::new();
        let mut stats = crate::stats::StatsDelta::default();
        let mut batch = sled::Batch::default();
        let mut ids_written = std::collections::HashSet::new();
        // Webhooks deleted earlier in this batch: later ops for them (an attempt that was in flight)
        // must not bring rows back that the tree still holds until the batch is applied.
        let mut deleted: std::collections::HashSet<&WebhookId> = std::collections::HashSet::new();
        for op in ops {
            let webhook = match op {
                IndexOp::Queued { webhook, .. } => Some(webhook),
                IndexOp::Attempt { attempt, .. } => Some(&attempt.webhook),
                IndexOp::WebhookDeleted(_) => None,
            };
            if webhook.is_some_and(|w| deleted.contains(w)) {
                continue;
            }
            match op {
                IndexOp::Queued {
                    webhook,
                    seq,
                    event: Some((id, t)),
                } => {
                    // A freshly published event: its row cannot exist yet (the index is applied in log
                    // order, atomically with the seq it reaches), so there is nothing to read.
                    if ids_written.insert(*seq) {
                        batch.insert(event_key(id), &seq.to_be_bytes());
                    }
                    rows.put(webhook, *seq, Row::queued(id.clone(), *t))?;
                }
                IndexOp::Queued {
                    webhook,
                    seq,
                    event: None,
                } => {
                    if let Some(r) = rows.row_mut(webhook, *seq)? {
                        r.delivery.requeue();
                    } else if let Some((id, t)) = event_at(*seq) {
                        // The event id → seq entry, once per event and batch (re-writing it later is
                        // harmless: it never changes).
                        if ids_written.insert(*seq) {
                            batch.insert(event_key(&id), &seq.to_be_bytes());
                        }
                        rows.put(webhook, *seq, Row::queued(id, t))?;
                    }
                }
                IndexOp::Attempt {
                    record_seq,
                    attempt,
                } => {
                    stats.add(attempt);
                    if let Some(row) = rows.row_mut(&attempt.webhook, attempt.seq)? {
                        if row.delivery.attempts == 0 {
                            row.first_attempt = Some(FirstAttempt {
                                record_seq: *record_seq,
                                attempt: attempt.attempt,
                                outcome: attempt.outcome,
                            });
                        } else {
                            // More than one attempt: all of them get their own key.
                            if let Some((first_seq, first)) =
                                row.first(&attempt.webhook, attempt.seq)
                            {
                                let k = attempt_key(&first.webhook, first.seq, first_seq);
                                batch.insert(k.clone(), enc(&first));
                                attempt_keys.push(k);
                            }
                            row.first_attempt = None;
                            let k = attempt_key(&attempt.webhook, attempt.seq, *record_seq);
                            batch.insert(k.clone(), enc(attempt));
                            attempt_keys.push(k);
                        }
                        row.delivery.record(attempt);
                    }
                }
                IndexOp::WebhookDeleted(w) => {
                    deleted.insert(w);
                    for p in [prefix(b'r', w), prefix(b'a', w), crate::stats::prefix(w)] {
                        for item in self.tree.scan_prefix(p) {
                            let (k, _) = item?;
                            batch.remove(k);
                        }
                    }
                    stats.forget(w);
                    // What this batch changed in its pages is dropped too, and the attempt keys it
                    // wrote (the scan above sees only the tree).
                    rows.drop_webhook(w);
                    let attempts_of = prefix(b'a', w);
                    for k in attempt_keys.iter().filter(|k| k.starts_with(&attempts_of)) {
                        batch.remove(k.as_slice());
                    }
                }
            }
        }
        let last_pages = rows.write(&mut batch);
        for (k, delta) in stats.0 {
            let mut row: HourRow = self.tree.get(&k)?.and_then(|b| dec(&b)).unwrap_or_default();
            row.merge(&delta);
            batch.insert(k, enc(&row));
        }
        batch.insert(APPLIED, &applied_seq.to_be_bytes());
        self.tree.apply_batch(batch)?;
        tails.keep(last_pages);
        // A row and two statistics rows per op at most (a deletion's removals are few by comparison).
        crate::reclaim(ops.len() * 3);
        Ok(())
    }

    /// `webhook`'s statistics rows of the buckets `from..=to` that had attempts, oldest first.
    pub fn stats(
        &self,
        webhook: &WebhookId,
        bucket: StatsBucket,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, StatsRow)>, LogError> {
        let (first, last) = crate::stats::hours_of(bucket, from, to);
        let start = crate::stats::key(webhook, first);
        let end = crate::stats::key(webhook, last);
        let mut out = Vec::new();
        for item in self.tree.range(start..=end) {
            let (k, v) = item?;
            if let (Some(hour), Some(row)) = (crate::stats::bucket_of(&k), dec::<HourRow>(&v)) {
                out.extend(row.rows(hour, bucket, from, to));
            }
        }
        Ok(out)
    }

    /// Drops the statistics of hours that ended before the hour before `before_ms` (older than anyone
    /// may ask for; the minutes of a kept hour go with it).
    pub fn prune_stats(&self, before_ms: i64) -> Result<usize, LogError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let last = StatsBucket::Hour.of(before_ms) - 1;
        for item in self.tree.scan_prefix([crate::stats::TAG]) {
            let (k, _) = item?;
            if crate::stats::bucket_of(&k).is_some_and(|b| b < last) {
                batch.remove(k);
                n += 1;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    pub fn seq_of(&self, event: &EventId) -> Result<Option<u64>, LogError> {
        Ok(self
            .tree
            .get(event_key(event))?
            .and_then(|v| seq_suffix(&v)))
    }

    pub fn delivery(&self, webhook: &WebhookId, seq: u64) -> Result<Option<Delivery>, LogError> {
        Ok(self
            .page_at(webhook, seq)?
            .and_then(|(_, page)| page.get(seq).map(|r| r.delivery.clone())))
    }

    /// The page that would hold `webhook`'s `seq` (the one with the greatest key at or below it), with
    /// its key.
    fn page_at(&self, webhook: &WebhookId, seq: u64) -> Result<Option<(u64, Page)>, LogError> {
        Ok(pages::floor_in(&self.tree, webhook, seq)?.map(|(at, v)| (at, Page::decode(&v))))
    }

    /// `webhook`'s deliveries, newest first, with seq < `before` (a cursor), optionally of one status.
    pub fn deliveries(
        &self,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Delivery)>, LogError> {
        let before = before.unwrap_or(u64::MAX);
        let start = pages::key(webhook, 0);
        let end = pages::key(webhook, before);
        let mut out = Vec::new();
        for item in self.tree.range(start..end).rev() {
            let (_, v) = item?;
            let page = Page::decode(&v);
            for (seq, row) in page.rows().rev().filter(|(seq, _)| *seq < before) {
                if status.is_none_or(|s| s == row.delivery.status) {
                    out.push((seq, row.delivery.clone()));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every attempt of `webhook` at the event `seq`, oldest first.
    pub fn attempts(&self, webhook: &WebhookId, seq: u64) -> Result<Vec<AttemptRecord>, LogError> {
        let inline = self
            .page_at(webhook, seq)?
            .and_then(|(_, page)| page.get(seq).and_then(|r| r.first(webhook, seq)));
        if let Some((_, first)) = inline {
            return Ok(vec![first]);
        }
        let mut p = prefix(b'a', webhook);
        p.extend_from_slice(&seq.to_be_bytes());
        self.tree
            .scan_prefix(p)
            .map(|item| {
                let (_, v) = item?;
                Ok(dec::<AttemptRecord>(&v))
            })
            .filter_map(Result::transpose)
            .collect()
    }

    /// Forgets everything about the events at `seqs` (retention removed them from the log).
    pub fn forget(
        &self,
        seqs: &std::collections::HashSet<u64>,
        ids: &[EventId],
    ) -> Result<usize, LogError> {
        // Held until the batch is written: the pages kept are re-read from the tree after it.
        let mut tails = self.tails.lock();
        tails.clear();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.tree.scan_prefix([b'r']) {
            let (k, v) = item?;
            let mut page = Page::decode(&v);
            let removed = page.remove(seqs);
            if removed > 0 {
                n += removed;
                if page.is_empty() {
                    batch.remove(k);
                } else {
                    batch.insert(k, page.encode());
                }
            }
        }
        for item in self.tree.scan_prefix([b'a']) {
            let (k, _) = item?;
            // Attempt keys end in the event's seq then the attempt record's seq.
            let seq = k.len().checked_sub(8).and_then(|e| seq_suffix(&k[..e]));
            if seq.is_some_and(|s| seqs.contains(&s)) {
                batch.remove(k);
                n += 1;
            }
        }
        for id in ids {
            batch.remove(event_key(id));
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// Seqs of `webhook`'s deliveries that are `failed`, in `from..to`.
    pub fn failed_in(&self, webhook: &WebhookId, from: u64, to: u64) -> Result<Vec<u64>, LogError> {
        let mut out = Vec::new();
        // From the page that holds `from` (its key may be below it).
        let first = self.page_at(webhook, from)?.map_or(from, |(at, _)| at);
        for item in self
            .tree
            .range(pages::key(webhook, first)..pages::key(webhook, to.max(from)))
        {
            let (_, v) = item?;
            let page = Page::decode(&v);
            out.extend(
                page.rows()
                    .filter(|(seq, row)| {
                        (from..to).contains(seq) && row.delivery.status == DeliveryStatus::Failed
                    })
                    .map(|(seq, _)| seq),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use buildr_core::{AttemptOutcome, Timestamp};

    fn index() -> DeliveryIndex {
        let db = sled::Config::new().temporary(true).open().unwrap();
        DeliveryIndex::open(db.open_tree("t").unwrap()).unwrap()
    }

    fn attempt(webhook: &WebhookId, seq: u64, n: u32, outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord {
            webhook: webhook.clone(),
            seq,
            event_id: "evt_01HZY0000000000000000000AA".parse().unwrap(),
            attempt: n,
            at: Timestamp::from_millis(1_000 * i64::from(n)),
            response_status: Some(if outcome == AttemptOutcome::Succeeded {
                200
            } else {
                500
            }),
            response_body: String::new(),
            error: None,
            duration_ms: 1,
            outcome,
        }
    }

    fn queued(webhook: &WebhookId, seq: u64) -> IndexOp {
        IndexOp::Queued {
            webhook: webhook.clone(),
            seq,
            event: Some((
                "evt_01HZY0000000000000000000AA".parse().unwrap(),
                EventType::ContactCreate,
            )),
        }
    }

    #[test]
    fn a_single_attempt_lives_in_its_row_and_a_second_moves_it_out() {
        let ix = index();
        let w: WebhookId = "wh_01HZY0000000000000000000AA".parse().unwrap();
        let retry = AttemptOutcome::Retrying {
            next_at: Timestamp::from_millis(5_000),
        };
        let first = attempt(&w, 7, 1, retry);
        let ops = [
            queued(&w, 7),
            IndexOp::Attempt {
                record_seq: 8,
                attempt: Box::new(first.clone()),
            },
        ];
        ix.apply(&ops, 8, |_| None).unwrap();
        assert_eq!(ix.attempts(&w, 7).unwrap(), vec![first.clone()]);
        assert_eq!(
            ix.tree.scan_prefix(prefix(b'a', &w)).count(),
            0,
            "no attempt key yet"
        );

        // In a later batch (the row is read back from the tree).
        let second = attempt(&w, 7, 2, AttemptOutcome::Succeeded);
        let ops = [IndexOp::Attempt {
            record_seq: 9,
            attempt: Box::new(second.clone()),
        }];
        ix.apply(&ops, 9, |_| None).unwrap();
        assert_eq!(ix.attempts(&w, 7).unwrap(), vec![first, second]);
        let row = ix.delivery(&w, 7).unwrap().unwrap();
        assert_eq!(row.attempts, 2);
        assert_eq!(row.status, DeliveryStatus::Succeeded);
        assert_eq!(ix.applied_seq().unwrap(), 9);
    }

    #[test]
    fn generated_ids_are_16_bytes_in_keys_and_no_id_s_key_is_a_prefix_of_another_s() {
        let generated = "01kbq3v0c8x9m2n4p6r8s0t2vw";
        let mut k = Vec::new();
        push_id(&mut k, generated);
        assert_eq!(k.len(), 17);
        // Not the canonical text of a ULID (upper case, too short or long, a letter ULIDs skip, too
        // large): written as text.
        let texts = [
            "01KBQ3V0C8X9M2N4P6R8S0T2VW",
            "01kbq3v0c8x9m2n4p6r8s0t2v",
            "01kbq3v0c8x9m2n4p6r8s0t2vwx",
            "01kbq3v0c8x9m2n4p6r8s0t2vu",
            "81kbq3v0c8x9m2n4p6r8s0t2vw",
            "a",
            "a_b",
        ];
        let mut keys = vec![k];
        for t in texts {
            let mut k = Vec::new();
            push_id(&mut k, t);
            assert_eq!(k, [&[2u8][..], t.as_bytes(), &[0]].concat(), "{t}");
            keys.push(k);
        }
        for a in &keys {
            for b in &keys {
                assert!(a == b || !b.starts_with(a), "{a:?} is a prefix of {b:?}");
            }
        }
        // Distinct ULIDs stay distinct and keep their order.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        push_id(&mut a, "01kbq3v0c8x9m2n4p6r8s0t2vw");
        push_id(&mut b, "01kbq3v0c8x9m2n4p6r8s0t2vx");
        assert!(a < b);
    }

    #[test]
    fn a_first_attempt_is_read_back_whole_from_its_row() {
        let ix = index();
        let w: WebhookId = "wh_01kbq3v0c8x9m2n4p6r8s0t2vw".parse().unwrap();
        let mut first = attempt(&w, 7, 1, AttemptOutcome::Succeeded);
        first.response_body = "ok".into();
        first.error = Some("none".into());
        first.duration_ms = 42;
        ix.apply(
            &[
                queued(&w, 7),
                IndexOp::Attempt {
                    record_seq: 8,
                    attempt: Box::new(first.clone()),
                },
            ],
            8,
            |_| None,
        )
        .unwrap();
        assert_eq!(ix.attempts(&w, 7).unwrap(), vec![first]);
    }

    /// A small deterministic generator (xorshift), so a failure replays the same way.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Rows in pages answer exactly as one key per row did: random batches of fresh deliveries,
    /// attempts (with answers of every size up to 1 KiB), replays of old events with and without a
    /// row (rows inserted between others, pages split), batches applied twice (a crash between the
    /// parts of a large batch), retention and webhook deletion, checked after every batch against a
    /// plain map of deliveries through every read: one row, pages of the list newest first with and
    /// without a status, attempts, failed seqs in a range.
    #[test]
    fn rows_in_pages_read_back_as_a_map_of_deliveries_would() {
        use std::collections::BTreeMap;
        let ix = index();
        let hooks: Vec<WebhookId> = [
            "wh_01HZY0000000000000000000AA",
            "wh_01HZY0000000000000000000AB",
            "wh_01HZY0000000000000000000AC",
        ]
        .iter()
        .map(|w| w.parse().unwrap())
        .collect();
        let id: EventId = "evt_01HZY0000000000000000000AA".parse().unwrap();
        let mut model: BTreeMap<(usize, u64), Delivery> = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seq = 0u64;
        let mut attempts_of: BTreeMap<(usize, u64), u32> = BTreeMap::new();
        for round in 0..60 {
            let mut ops = Vec::new();
            if round == 50 {
                // A webhook deleted in a batch that touches nothing else of it, its last page kept
                // from the batch before (later ops of a batch that deleted their webhook are dropped).
                let gone = [IndexOp::WebhookDeleted(hooks[0].clone())];
                ix.apply(&gone, seq, |_| None).unwrap();
                model.retain(|(w, _), _| *w != 0);
                attempts_of.retain(|(w, _), _| *w != 0);
            }
            // Fresh events, each to some of the webhooks (a fan-out makes many rows of one batch).
            for _ in 0..rng.below(100) {
                seq += 1 + rng.below(3);
                for (w, hook) in hooks.iter().enumerate() {
                    if rng.below(3) > 0 {
                        ops.push(queued(hook, seq));
                        model.insert(
                            (w, seq),
                            Delivery::queued(id.clone(), EventType::ContactCreate),
                        );
                    }
                }
            }
            // Attempts on existing rows, and on rows that do not exist (a deleted webhook's).
            let keys: Vec<(usize, u64)> = model.keys().copied().collect();
            for _ in 0..rng.below(200) {
                let (w, s) = if keys.is_empty() || rng.below(10) == 0 {
                    (rng.below(3) as usize, rng.below(seq + 1))
                } else {
                    keys[rng.below(keys.len() as u64) as usize]
                };
                let n = attempts_of.get(&(w, s)).copied().unwrap_or(0) + 1;
                let outcome = match rng.below(3) {
                    0 => AttemptOutcome::Succeeded,
                    1 => AttemptOutcome::Failed,
                    _ => AttemptOutcome::Retrying {
                        next_at: Timestamp::from_millis(9_000),
                    },
                };
                let mut a = attempt(&hooks[w], s, n, outcome);
                a.response_body = "x".repeat(rng.below(1025) as usize);
                seq += 1;
                ops.push(IndexOp::Attempt {
                    record_seq: seq,
                    attempt: Box::new(a.clone()),
                });
                if let Some(d) = model.get_mut(&(w, s)) {
                    d.record(&a);
                    attempts_of.insert((w, s), n);
                }
            }
            // Replays of older events: a row queued again, or made where there was none.
            for _ in 0..rng.below(20) {
                let w = rng.below(3) as usize;
                let s = 1 + rng.below(seq);
                ops.push(IndexOp::Queued {
                    webhook: hooks[w].clone(),
                    seq: s,
                    event: None,
                });
                model
                    .entry((w, s))
                    .and_modify(Delivery::requeue)
                    .or_insert_with(|| Delivery::queued(id.clone(), EventType::ContactCreate));
            }
            if round == 45 {
                // A replay of a whole range: rows fill the gaps between others, pages split.
                for s in 1..=seq.min(600) {
                    ops.push(IndexOp::Queued {
                        webhook: hooks[1].clone(),
                        seq: s,
                        event: None,
                    });
                    model
                        .entry((1, s))
                        .and_modify(Delivery::requeue)
                        .or_insert_with(|| Delivery::queued(id.clone(), EventType::ContactCreate));
                }
            }
            if round == 30 {
                ops.push(IndexOp::WebhookDeleted(hooks[2].clone()));
                model.retain(|(w, _), _| *w != 2);
                attempts_of.retain(|(w, _), _| *w != 2);
            }
            let at = |_| Some((id.clone(), EventType::ContactCreate));
            if round % 10 == 3 {
                // A large batch's fresh rows written first on their own, then (a crash between the
                // parts, start-up) the whole batch again.
                let fresh: Vec<IndexOp> = ops
                    .iter()
                    .filter(|op| matches!(op, IndexOp::Queued { event: Some(_), .. }))
                    .cloned()
                    .collect();
                ix.apply(&fresh, ix.applied_seq().unwrap(), at).unwrap();
            }
            ix.apply(&ops, seq, at).unwrap();
            if round % 20 == 19 {
                let gone: std::collections::HashSet<u64> =
                    (1..=seq).filter(|_| rng.below(4) == 0).collect();
                ix.forget(&gone, &[]).unwrap();
                model.retain(|(_, s), _| !gone.contains(s));
                attempts_of.retain(|(_, s), _| !gone.contains(s));
            }

            for (w, hook) in hooks.iter().enumerate() {
                let want: Vec<(u64, Delivery)> = model
                    .range((w, 0)..=(w, u64::MAX))
                    .rev()
                    .map(|((_, s), d)| (*s, d.clone()))
                    .collect();
                assert_eq!(
                    ix.deliveries(hook, None, None, usize::MAX).unwrap(),
                    want,
                    "round {round}"
                );
                // Page by page, 7 at a time (every few rounds: it reads the whole list again each time).
                if round % 4 == 0 {
                    let mut got = Vec::new();
                    let mut before = None;
                    loop {
                        let page = ix.deliveries(hook, None, before, 7).unwrap();
                        let Some(&(last, _)) = page.last() else { break };
                        got.extend(page);
                        before = Some(last);
                    }
                    assert_eq!(got, want, "round {round}, by pages");
                }
                for status in [DeliveryStatus::Pending, DeliveryStatus::Failed] {
                    let want: Vec<_> = want
                        .iter()
                        .filter(|(_, d)| d.status == status)
                        .cloned()
                        .collect();
                    assert_eq!(
                        ix.deliveries(hook, Some(status), None, usize::MAX).unwrap(),
                        want
                    );
                }
                let (from, to) = (rng.below(seq + 1), rng.below(seq + 1));
                let want_failed: Vec<u64> = model
                    .range((w, from)..(w, to.max(from)))
                    .filter(|(_, d)| d.status == DeliveryStatus::Failed)
                    .map(|((_, s), _)| *s)
                    .collect();
                assert_eq!(
                    ix.failed_in(hook, from, to).unwrap(),
                    want_failed,
                    "round {round}"
                );
                if round % 10 == 5 {
                    // Every row found by its seq (each in the page its key says).
                    for ((_, s), d) in model.range((w, 0)..=(w, u64::MAX)) {
                        assert_eq!(ix.delivery(hook, *s).unwrap().as_ref(), Some(d), "seq {s}");
                    }
                }
                for _ in 0..5 {
                    let s = rng.below(seq + 1);
                    assert_eq!(ix.delivery(hook, s).unwrap(), model.get(&(w, s)).cloned());
                    let n = ix.attempts(hook, s).unwrap().len() as u32;
                    assert_eq!(
                        n,
                        model.get(&(w, s)).map_or(0, |d| d.attempts),
                        "round {round} seq {s}"
                    );
                }
            }
        }
        let rows = model.len();
        let keys = ix.tree.scan_prefix([b'r']).count();
        assert!(keys * 4 < rows, "{rows} rows in {keys} keys");
    }

    #[test]
    fn an_index_in_another_layout_is_cleared_for_a_rebuild() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(APPLIED, &42u64.to_be_bytes()).unwrap();
        tree.insert(b"r-old-row", b"old layout").unwrap();
        let ix = DeliveryIndex::open(tree.clone()).unwrap();
        assert_eq!(
            ix.applied_seq().unwrap(),
            0,
            "rebuilt from the start of the log"
        );
        assert_eq!(tree.len(), 1, "only the format mark is left");
        // Opening it again keeps what it holds.
        ix.mark_applied(5).unwrap();
        let again = DeliveryIndex::open(tree).unwrap();
        assert_eq!(again.applied_seq().unwrap(), 5);
    }

    #[test]
    fn stats_add_up_across_batches_and_go_with_their_webhook() {
        let ix = index();
        let w: WebhookId = "wh_01HZY0000000000000000000AA".parse().unwrap();
        let retry = AttemptOutcome::Retrying {
            next_at: Timestamp::from_millis(5_000),
        };
        let op = |n, outcome| IndexOp::Attempt {
            record_seq: 10 + u64::from(n),
            attempt: Box::new(attempt(&w, 7, n, outcome)),
        };
        ix.apply(&[queued(&w, 7), op(1, retry)], 11, |_| None)
            .unwrap();
        ix.apply(&[op(2, AttemptOutcome::Succeeded)], 12, |_| None)
            .unwrap();
        // Both attempts (at 1 s and 2 s) are in minute 0 and hour 0.
        for bucket in [StatsBucket::Minute, StatsBucket::Hour] {
            let rows = ix.stats(&w, bucket, 0, 10).unwrap();
            assert_eq!(rows.len(), 1);
            let (n, row) = &rows[0];
            assert_eq!(
                (*n, row.attempts, row.succeeded, row.failed()),
                (0, 2, 1, 1)
            );
            assert_eq!(row.percentile(0.5), Some(1));
        }
        ix.apply(&[IndexOp::WebhookDeleted(w.clone())], 13, |_| None)
            .unwrap();
        assert!(ix.stats(&w, StatsBucket::Minute, 0, 10).unwrap().is_empty());
        assert_eq!(ix.prune_stats(i64::MAX / 2).unwrap(), 0);
    }

    #[test]
    fn minutes_and_hours_come_from_one_key_per_hour() {
        let ix = index();
        let w: WebhookId = "wh_01HZY0000000000000000000AB".parse().unwrap();
        // Attempts in minutes 59 and 61 (hours 0 and 1), two in minute 61.
        let at = |seq: u64, minute: i64, second: i64| {
            let mut a = attempt(&w, seq, 1, AttemptOutcome::Succeeded);
            a.at = Timestamp::from_millis(minute * 60_000 + second * 1_000);
            IndexOp::Attempt {
                record_seq: 100 + seq,
                attempt: Box::new(a),
            }
        };
        let ops = [
            queued(&w, 1),
            queued(&w, 2),
            queued(&w, 3),
            at(1, 59, 30),
            at(2, 61, 1),
            at(3, 61, 2),
        ];
        ix.apply(&ops, 103, |_| None).unwrap();
        let counts = |bucket, from, to| -> Vec<(i64, u64)> {
            ix.stats(&w, bucket, from, to)
                .unwrap()
                .into_iter()
                .map(|(n, r)| (n, r.attempts))
                .collect()
        };
        assert_eq!(counts(StatsBucket::Minute, 0, 200), [(59, 1), (61, 2)]);
        assert_eq!(counts(StatsBucket::Minute, 60, 61), [(61, 2)]);
        assert_eq!(counts(StatsBucket::Minute, 59, 60), [(59, 1)]);
        assert_eq!(counts(StatsBucket::Minute, 62, 119), []);
        assert_eq!(counts(StatsBucket::Hour, 0, 5), [(0, 1), (1, 2)]);
        assert_eq!(counts(StatsBucket::Hour, 1, 1), [(1, 2)]);
        // One key per hour, whatever the minutes.
        assert_eq!(ix.tree.scan_prefix([crate::stats::TAG]).count(), 2);
        // Pruning before hour 2 keeps hour 1 (the hour before the cut) and drops hour 0 with its minutes.
        assert_eq!(ix.prune_stats(2 * 3_600_000).unwrap(), 1);
        assert_eq!(counts(StatsBucket::Minute, 0, 200), [(61, 2)]);
    }
}
