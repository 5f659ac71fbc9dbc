//! The events index: each event's seq by account, and by account and time, so that listing an
//! account's events (`GET /events`) and planning a time-range replay are range reads of that account's
//! events instead of scans of the whole log (every account's events and every attempt record).
//!
//! It lives in the log's database, in a tree of its own, written right after each batch of records and
//! before the same flush, together with the seq it has indexed up to. It is derived: on open, the
//! records past that seq are indexed (all of them for a log written before the index existed).
//!
//! Keys: `s` account 0 seq → summary; `t` account 0 created_at seq → summary; `m indexed` → seq.
//! `created_at` is milliseconds with the sign bit flipped, so keys sort by time. The summary (format 1:
//! `1`, the event type's length and name, the test event's webhook id or nothing) is what a replay
//! decides by, so planning one reads no record; an entry written before summaries existed has an empty
//! value, and its record is read instead.

use crate::LogError;
use buildr_core::record::EventRecord;
use buildr_core::{AccountId, EventType, Record, Timestamp, WebhookId};

const INDEXED: &[u8] = b"mindexed";
const SUMMARY_FORMAT: u8 = 1;

/// One of an account's events as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub seq: u64,
    /// `None` for an entry indexed before summaries were kept: read the record to know more.
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

fn summary_value(e: &EventRecord) -> Vec<u8> {
    let name = e.event_type.as_str().as_bytes();
    let only = e
        .only_webhook
        .as_ref()
        .map_or("", |w| w.as_str())
        .as_bytes();
    let mut v = Vec::with_capacity(2 + name.len() + only.len());
    v.push(SUMMARY_FORMAT);
    // Event type names are short ASCII words (at most a few dozen bytes).
    v.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    v.extend_from_slice(name);
    v.extend_from_slice(only);
    v
}

/// The summary in an entry's value; `None` for an empty (older) or unreadable one.
fn parse_summary(v: &[u8]) -> Option<EventSummary> {
    let (&format, rest) = v.split_first()?;
    if format != SUMMARY_FORMAT {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let name = rest.get(..usize::from(len))?;
    let only = rest.get(usize::from(len)..)?;
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

fn event_ref(k: &[u8], v: &[u8]) -> Result<EventRef, LogError> {
    Ok(EventRef {
        seq: trailing_seq(k).ok_or(LogError::BadKey(0))?,
        summary: parse_summary(v),
    })
}

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

    /// Indexes `records` (at `first`, `first + 1`, …), then records the seq they reach.
    ///
    /// Plain inserts, not a sled batch: a batch costs sled two extra log writes (it writes its manifest
    /// in a buffer of its own and seals the buffer before it), which at a low event rate were most of an
    /// event's disk writes. Nothing is lost by it: sled recovers a prefix of its log (it stops at the
    /// first torn message), so when the seq survives a crash the entries written before it did too; an
    /// entry without its seq is written again, the same, by the catch-up on open.
    pub(crate) fn add<'a>(
        &self,
        records: impl IntoIterator<Item = (u64, &'a Record)>,
    ) -> Result<(), LogError> {
        let mut last = None;
        for (seq, record) in records {
            if let Record::EventPublished(e) = record {
                let summary = summary_value(e);
                self.tree
                    .insert(seq_key(&e.account, seq), summary.clone())?;
                self.tree
                    .insert(time_key(&e.account, e.created_at, seq), summary)?;
            }
            last = Some(seq);
        }
        if let Some(seq) = last {
            self.tree.insert(INDEXED, &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Empties every entry's summary, as an index written before summaries existed (tests).
    pub(crate) fn forget_summaries(&self) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for tag in [b's', b't'] {
            for item in self.tree.scan_prefix([tag]) {
                let (k, _) = item?;
                batch.insert(k, &[]);
            }
        }
        self.tree.apply_batch(batch)?;
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

    /// `account`'s events after `after_seq`, in order.
    pub(crate) fn refs_after(
        &self,
        account: &AccountId,
        after_seq: u64,
    ) -> impl Iterator<Item = Result<EventRef, LogError>> {
        let prefix = account_prefix(b's', account);
        let start = seq_key(account, after_seq.saturating_add(1));
        self.tree.range(start..prefix_end(&prefix)).map(|item| {
            let (k, v) = item?;
            event_ref(&k, &v)
        })
    }

    /// `account`'s events created in `[since, until)`, in seq order.
    pub(crate) fn refs_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<EventRef>, LogError> {
        let prefix = account_prefix(b't', account);
        let start = time_key(account, since, 0);
        let end = match until {
            Some(u) => time_key(account, u, 0),
            None => prefix_end(&prefix),
        };
        let mut refs = self
            .tree
            .range(start..end)
            .map(|item| {
                let (k, v) = item?;
                event_ref(&k, &v)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Times are not monotonic in log order (clocks, concurrent publishers): order by seq.
        refs.sort_unstable_by_key(|r| r.seq);
        Ok(refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildr_core::{EventData, EventId, ObjectId};

    fn event(event_type: EventType, only: Option<&str>) -> EventRecord {
        EventRecord {
            id: EventId::generate(),
            account: AccountId::default_account(),
            event_type,
            data: EventData {
                id: ObjectId::Int(1),
                url: "https://x.example/1".into(),
            },
            created_at: Timestamp::from_millis(1),
            only_webhook: only.and_then(|w| w.parse().ok()),
        }
    }

    #[test]
    fn summaries_round_trip_and_older_or_unknown_values_read_as_none() {
        for t in EventType::ALL {
            for only in [None, Some("wh_01abc")] {
                let e = event(t, only);
                assert_eq!(
                    parse_summary(&summary_value(&e)),
                    Some(EventSummary::of(&e))
                );
            }
        }
        // Written before summaries existed; a later format; cut short; an unknown type; a bad id.
        for v in [
            &b""[..],
            b"\x02\x0econtact.create",
            b"\x01\x0econtact.cre",
            b"\x01\x04nope",
            b"\x01\x0econtact.createxx_1",
        ] {
            assert_eq!(parse_summary(v), None, "{v:?}");
        }
    }
}
