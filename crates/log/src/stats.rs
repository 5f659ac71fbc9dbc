//! Attempt statistics per webhook, kept in the delivery index's tree beside the delivery rows and
//! written in the same atomic batches (so they are rebuilt from the log with it, and never count an attempt
//! twice): one key per webhook and hour in which it had attempts (`h` webhook 0 hour → [`HourRow`]), holding
//! the hour's counts and latency histogram and the same for each of its minutes that had attempts. One key
//! rather than one per minute and one per hour: sled's cost per key dominates, and a burst to many
//! webhooks writes one statistics key per webhook.
//!
//! The histogram has exact 1 ms slots below 16 ms and then 8 slots per power of two (at most 12.5 % wide),
//! so a percentile is known within that much. Buckets merge by adding, so an hour row, an account's
//! series or a chart's bucket is a sum of rows.

use buildr_core::{AttemptOutcome, AttemptRecord, WebhookId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The width of a statistics bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsBucket {
    Minute,
    Hour,
}

impl StatsBucket {
    pub const fn millis(self) -> i64 {
        match self {
            StatsBucket::Minute => 60_000,
            StatsBucket::Hour => 3_600_000,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            StatsBucket::Minute => "1m",
            StatsBucket::Hour => "1h",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1m" => Some(StatsBucket::Minute),
            "1h" => Some(StatsBucket::Hour),
            _ => None,
        }
    }

    /// The bucket (number since the epoch) holding the time `ms`.
    pub fn of(self, ms: i64) -> i64 {
        ms.div_euclid(self.millis())
    }
}

/// The attempts of one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    pub attempts: u64,
    pub succeeded: u64,
    /// Latency slot → attempts, sorted by slot.
    hist: Vec<(u16, u64)>,
}

/// One webhook's attempts in one hour: the hour's row and each minute's that had attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HourRow {
    pub(crate) total: StatsRow,
    /// Minute of the hour (0–59) → its attempts, sorted by minute.
    pub(crate) minutes: Vec<(u8, StatsRow)>,
}

/// Minutes in an hour.
const MINUTES: i64 = StatsBucket::Hour.millis() / StatsBucket::Minute.millis();

impl HourRow {
    fn minute_mut(&mut self, minute: u8) -> &mut StatsRow {
        let i = match self.minutes.binary_search_by_key(&minute, |&(m, _)| m) {
            Ok(i) => i,
            Err(i) => {
                self.minutes.insert(i, (minute, StatsRow::default()));
                i
            }
        };
        &mut self.minutes[i].1
    }

    fn add(&mut self, minute: u8, a: &AttemptRecord) {
        self.total.add(a);
        self.minute_mut(minute).add(a);
    }

    pub(crate) fn merge(&mut self, other: &HourRow) {
        self.total.merge(&other.total);
        for (m, row) in &other.minutes {
            self.minute_mut(*m).merge(row);
        }
    }

    /// This hour's (`hour`) rows of `bucket` that lie in `from..=to` (bucket numbers), oldest first.
    pub(crate) fn rows(
        self,
        hour: i64,
        bucket: StatsBucket,
        from: i64,
        to: i64,
    ) -> Vec<(i64, StatsRow)> {
        match bucket {
            StatsBucket::Hour => vec![(hour, self.total)],
            StatsBucket::Minute => self
                .minutes
                .into_iter()
                .map(|(m, row)| (hour * MINUTES + i64::from(m), row))
                .filter(|(n, _)| (from..=to).contains(n))
                .collect(),
        }
    }
}

/// The hours (bucket numbers) that hold the `bucket` numbers `from..=to`.
pub(crate) fn hours_of(bucket: StatsBucket, from: i64, to: i64) -> (i64, i64) {
    match bucket {
        StatsBucket::Hour => (from, to),
        StatsBucket::Minute => (from.div_euclid(MINUTES), to.div_euclid(MINUTES)),
    }
}

/// Latencies below this many ms have a slot each.
const EXACT_BELOW: u64 = 16;

fn slot(ms: u64) -> u16 {
    if ms < EXACT_BELOW {
        return ms as u16;
    }
    let e = 63 - u64::from(ms.leading_zeros()); // ≥ 4
    let sub = (ms >> (e - 3)) & 7;
    (EXACT_BELOW + (e - 4) * 8 + sub) as u16
}

/// The middle of a slot's range of milliseconds.
fn slot_value(slot: u16) -> u64 {
    let s = u64::from(slot);
    if s < EXACT_BELOW {
        return s;
    }
    let e = (s - EXACT_BELOW) / 8 + 4;
    let sub = (s - EXACT_BELOW) % 8;
    let low = (8 + sub) << (e - 3);
    let width = 1u64 << (e - 3);
    low + width / 2
}

impl StatsRow {
    pub fn failed(&self) -> u64 {
        self.attempts - self.succeeded
    }

    fn add(&mut self, a: &AttemptRecord) {
        self.attempts += 1;
        if a.outcome == AttemptOutcome::Succeeded {
            self.succeeded += 1;
        }
        let s = slot(a.duration_ms);
        match self.hist.binary_search_by_key(&s, |&(k, _)| k) {
            Ok(i) => self.hist[i].1 += 1,
            Err(i) => self.hist.insert(i, (s, 1)),
        }
    }

    pub fn merge(&mut self, other: &StatsRow) {
        self.attempts += other.attempts;
        self.succeeded += other.succeeded;
        let mut all: BTreeMap<u16, u64> = self.hist.iter().copied().collect();
        for &(k, n) in &other.hist {
            *all.entry(k).or_default() += n;
        }
        self.hist = all.into_iter().collect();
    }

    /// The latency (ms) at or below which a share `q` (0–1) of the attempts ended; `None` without attempts.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.hist.iter().map(|&(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(k, n) in &self.hist {
            seen += n;
            if seen >= rank {
                return Some(slot_value(k));
            }
        }
        self.hist.last().map(|&(k, _)| slot_value(k))
    }
}

/// The first bytes of `webhook`'s statistics keys.
pub(crate) fn prefix(webhook: &WebhookId) -> Vec<u8> {
    crate::index::prefix(TAG, webhook)
}

/// The key of `webhook`'s statistics of hour `hour`.
pub(crate) fn key(webhook: &WebhookId, hour: i64) -> Vec<u8> {
    let mut k = prefix(webhook);
    k.extend_from_slice(&hour.to_be_bytes());
    k
}

/// The first byte of every statistics key.
pub(crate) const TAG: u8 = b'h';

/// The bucket number at the end of a key.
pub(crate) fn bucket_of(key: &[u8]) -> Option<i64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(i64::from_be_bytes(tail.try_into().ok()?))
}

/// What one index batch adds to the statistics rows, by key.
#[derive(Default)]
pub(crate) struct StatsDelta(pub(crate) std::collections::HashMap<Vec<u8>, HourRow>);

impl StatsDelta {
    pub(crate) fn add(&mut self, a: &AttemptRecord) {
        let ms = a.at.as_millis();
        let hour = StatsBucket::Hour.of(ms);
        let minute = StatsBucket::Minute.of(ms) - hour * MINUTES;
        self.0
            .entry(key(&a.webhook, hour))
            .or_default()
            .add(u8::try_from(minute).unwrap_or(0), a);
    }

    /// Drops what this batch added for a webhook deleted later in it.
    pub(crate) fn forget(&mut self, webhook: &WebhookId) {
        let p = prefix(webhook);
        self.0.retain(|k, _| !k.starts_with(&p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exact_below_16_ms_then_within_an_eighth() {
        for ms in 0..16 {
            assert_eq!(slot_value(slot(ms)), ms);
        }
        for ms in [16u64, 17, 100, 999, 1_000, 15_000, 3_600_000, u64::MAX / 4] {
            let v = slot_value(slot(ms));
            let err = v.abs_diff(ms) as f64 / ms as f64;
            assert!(err <= 0.0625, "{ms} → {v}");
        }
        let mut last = 0;
        for ms in 0..100_000u64 {
            let s = slot(ms);
            assert!(s >= last, "slots grow with the latency");
            last = s;
        }
    }

    #[test]
    fn percentiles_of_a_merged_row() {
        let mut a = StatsRow::default();
        let mut b = StatsRow::default();
        for (i, ms) in (1..=100u64).enumerate() {
            let row = if i % 2 == 0 { &mut a } else { &mut b };
            row.attempts += 1;
            let s = slot(ms);
            match row.hist.binary_search_by_key(&s, |&(k, _)| k) {
                Ok(i) => row.hist[i].1 += 1,
                Err(i) => row.hist.insert(i, (s, 1)),
            }
        }
        a.merge(&b);
        assert_eq!(a.attempts, 100);
        let p50 = a.percentile(0.5).unwrap_or(0);
        let p99 = a.percentile(0.99).unwrap_or(0);
        assert!((47..=53).contains(&p50), "{p50}");
        assert!((93..=105).contains(&p99), "{p99}");
        assert_eq!(StatsRow::default().percentile(0.5), None);
    }
}
