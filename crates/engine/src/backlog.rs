//! A webhook's backlog, as its subscription actor holds it: every undelivered seq with the attempts made so
//! far, in delivery order. A seq is due (`ready`), waiting for a retry time, or in flight (in neither).
//!
//! Delivery order is `(queued_at, seq)`: `queued_at` is the seq of the log record that queued the delivery
//! (the event itself, or a replay), so replayed events go after what was queued before the replay. In
//! parallel mode it only decides which due seq starts first; in FIFO mode nothing starts while an earlier
//! one waits for its retry.

use buildr_core::Timestamp;
use std::collections::{BTreeSet, HashMap};

/// A delivery's place in the order: `(queued_at, seq)`.
pub type Key = (u64, u64);

#[derive(Debug, Clone, Copy)]
struct Held {
    queued_at: u64,
    attempts: u32,
    retry_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub struct Backlog {
    held: HashMap<u64, Held>,
    /// Due now, in delivery order: waiting only for the rate limit or a free in-flight slot.
    ready: BTreeSet<Key>,
    /// Failed, waiting for their retry time.
    waiting: BTreeSet<(Timestamp, u64)>,
    /// The same, in delivery order (FIFO's head may be among them).
    waiting_keys: BTreeSet<Key>,
}

impl Backlog {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            held: HashMap::with_capacity(n),
            ..Self::default()
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.held.contains_key(&seq)
    }

    /// Nothing due and nothing waiting (seqs in flight are the actor's to count).
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.waiting.is_empty()
    }

    /// Takes `seq` into the backlog after `attempts` attempts, due at `retry_at` (`None` or past: now).
    pub fn hold(
        &mut self,
        seq: u64,
        queued_at: u64,
        attempts: u32,
        retry_at: Option<Timestamp>,
        now: Timestamp,
    ) {
        self.forget(seq);
        self.held.insert(
            seq,
            Held {
                queued_at,
                attempts,
                retry_at: None,
            },
        );
        match retry_at {
            Some(t) if t > now => self.wait_until(seq, t),
            _ => {
                self.ready.insert((queued_at, seq));
            }
        }
    }

    /// Its delivery starts again from the first attempt, due now, queued at `queued_at`.
    pub fn restart(&mut self, seq: u64, queued_at: u64) {
        self.hold(seq, queued_at, 0, None, Timestamp::from_millis(0));
    }

    /// `seq` (held, not in flight) waits for a retry at `t`.
    pub fn wait_until(&mut self, seq: u64, t: Timestamp) {
        if let Some(h) = self.held.get_mut(&seq) {
            self.ready.remove(&(h.queued_at, seq));
            if let Some(old) = h.retry_at.replace(t) {
                self.waiting.remove(&(old, seq));
            }
            self.waiting.insert((t, seq));
            self.waiting_keys.insert((h.queued_at, seq));
        }
    }

    /// Moves every seq whose retry time has come to the due ones.
    pub fn release_due(&mut self, now: Timestamp) {
        while let Some(&(t, seq)) = self.waiting.first() {
            if t > now {
                break;
            }
            self.waiting.pop_first();
            if let Some(h) = self.held.get_mut(&seq) {
                h.retry_at = None;
                self.waiting_keys.remove(&(h.queued_at, seq));
                self.ready.insert((h.queued_at, seq));
            }
        }
    }

    /// The earliest retry time.
    pub fn next_retry(&self) -> Option<Timestamp> {
        self.waiting.first().map(|&(t, _)| t)
    }

    /// The next due seq to start. With `fifo`, only the first of the whole backlog, when it is due.
    pub fn next_due(&self, fifo: bool) -> Option<u64> {
        let &(queued_at, seq) = self.ready.first()?;
        if fifo
            && self
                .waiting_keys
                .first()
                .is_some_and(|w| *w < (queued_at, seq))
        {
            return None;
        }
        Some(seq)
    }

    /// `seq` starts an attempt: it is no longer due.
    pub fn start(&mut self, seq: u64) {
        if let Some(h) = self.held.get(&seq) {
            self.ready.remove(&(h.queued_at, seq));
        }
    }

    /// An attempt of `seq` ended: the number of attempts made so far (`None`: not held).
    pub fn attempted(&mut self, seq: u64) -> Option<u32> {
        let h = self.held.get_mut(&seq)?;
        h.attempts += 1;
        Some(h.attempts)
    }

    /// Delivered or given up: out of the backlog.
    pub fn remove(&mut self, seq: u64) {
        self.forget(seq);
    }

    fn forget(&mut self, seq: u64) {
        if let Some(h) = self.held.remove(&seq) {
            self.ready.remove(&(h.queued_at, seq));
            if let Some(t) = h.retry_at {
                self.waiting.remove(&(t, seq));
                self.waiting_keys.remove(&(h.queued_at, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn fifo_starts_nothing_while_an_earlier_delivery_waits_for_its_retry() {
        let mut b = Backlog::default();
        let now = at(1_000);
        for seq in [5, 3, 4] {
            b.hold(seq, seq, 0, None, now);
        }
        assert_eq!(b.next_due(true), Some(3));
        b.start(3);
        assert_eq!(b.attempted(3), Some(1));
        b.wait_until(3, at(2_000));
        assert_eq!(b.next_due(true), None, "3 holds 4 and 5 back");
        assert_eq!(b.next_due(false), Some(4), "parallel does not wait");
        b.release_due(at(1_500));
        assert_eq!(b.next_due(true), None);
        b.release_due(at(2_000));
        assert_eq!(b.next_due(true), Some(3));
        b.start(3);
        b.remove(3);
        assert_eq!(b.next_due(true), Some(4));
    }

    #[test]
    fn a_replay_goes_after_what_was_queued_before_it() {
        let mut b = Backlog::default();
        let now = at(0);
        b.hold(10, 10, 0, None, now);
        b.hold(11, 11, 0, None, now);
        // A replay at seq 12 queues 2 and restarts 10.
        b.hold(2, 12, 0, None, now);
        b.restart(10, 12);
        let mut order = Vec::new();
        while let Some(s) = b.next_due(true) {
            b.start(s);
            b.remove(s);
            order.push(s);
        }
        assert_eq!(order, vec![11, 2, 10]);
        assert!(b.is_idle());
    }
}
