//! The lease bucket as this node last saw it, kept by a watch on the bucket instead of read key by key
//! every round.
//!
//! Why a watch: reading the bucket each round (list the keys, then get each) took ~70 requests per node
//! per round, and listing waits for the last key it was promised; a key that expires while it is listed
//! (which is exactly when a dead node's leases run out) held the listing until the client's 5 s idle
//! heartbeat, so rounds timed out at the moment shards should move. A watch costs one consumer, delivers
//! each write once, and a round reads the view without a request.
//!
//! What a watch does not see is a key expiring (the bucket's `max_age` removes it silently), so the view
//! counts a key as gone `lease_ttl` after the write it saw, as the bucket does. A write seen as it happens
//! is dated by when it arrived (no clocks compared between machines); one from the snapshot a watch
//! starts with is dated by its age on the server's clock, at most `lease_ttl`. Either way the view errs
//! late, never early, unless clocks differ: a lease it thinks free is only tried with a create, which
//! fails while the key exists, so the view steers which leases to try and never decides who owns one.

use async_nats::jetstream::kv;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

/// One key's latest write as seen.
#[derive(Debug, Clone)]
struct Seen {
    value: bytes::Bytes,
    /// When the write was made, on this node's monotonic clock (as near as it can tell).
    at: Instant,
}

/// Who is alive and who holds which shard, as the view has it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Holders {
    /// Each live node (a heartbeat younger than `lease_ttl`) and the stream seq its heartbeat names.
    pub(crate) nodes: BTreeMap<String, u64>,
    /// Each shard whose lease is live, and the node that wrote it.
    pub(crate) owners: HashMap<u32, String>,
}

/// The lease bucket's live keys, kept from a watch's entries.
#[derive(Debug)]
pub(crate) struct LeaseView {
    ttl: Duration,
    keys: HashMap<String, Seen>,
    /// Whether the watch has delivered everything the bucket held when it started (until then the view
    /// may miss keys, and a round neither takes nor releases leases by it).
    current: bool,
}

impl LeaseView {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keys: HashMap::new(),
            current: false,
        }
    }

    /// Applies one entry of the watch, received at `now`; `age` is how old the write was by the server's
    /// clock (used only for the snapshot a watch starts with). Returns whether a round is worth running
    /// at once: the view just became current or, once it is, a key was deleted (a lease or a node given
    /// back by a clean stop) or a node appeared.
    pub(crate) fn apply(&mut self, entry: &kv::Entry, age: Duration, now: Instant) -> bool {
        let became_current = !self.current && entry.delta == 0;
        self.current |= entry.delta == 0;
        let wake = match entry.operation {
            kv::Operation::Delete | kv::Operation::Purge => self.keys.remove(&entry.key).is_some(),
            kv::Operation::Put => {
                // Written before the watch caught up: dated by its age; since then: by its arrival.
                let age = if entry.seen_current {
                    Duration::ZERO
                } else {
                    age.min(self.ttl)
                };
                let at = now.checked_sub(age).unwrap_or(now);
                let fresh = !self.keys.contains_key(&entry.key);
                self.keys.insert(
                    entry.key.clone(),
                    Seen {
                        value: entry.value.clone(),
                        at,
                    },
                );
                fresh && entry.key.starts_with("node.")
            }
        };
        became_current || (wake && self.current)
    }

    /// A new watch starts over with a snapshot: the view is not current until it has been delivered.
    /// What it held stays until it expires (a key removed meanwhile is not in the new snapshot).
    pub(crate) fn restart(&mut self) {
        self.current = false;
    }

    fn forget_expired(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.keys
            .retain(|_, seen| now.saturating_duration_since(seen.at) < ttl);
    }

    /// When the next key expires (a dead node's heartbeat or lease: a round then finds it free rather
    /// than up to a tick later). Forgets the keys that have expired by `now`.
    pub(crate) fn next_expiry(&mut self, now: Instant) -> Option<Instant> {
        self.forget_expired(now);
        self.keys.values().map(|seen| seen.at + self.ttl).min()
    }

    /// The live nodes and shard owners at `now`, or `None` while the view is not current. Forgets the
    /// keys that have expired.
    pub(crate) fn holders(&mut self, now: Instant) -> Option<Holders> {
        self.forget_expired(now);
        if !self.current {
            return None;
        }
        let mut holders = Holders::default();
        for (key, seen) in &self.keys {
            if let Some(node) = key.strip_prefix("node.") {
                let applied = std::str::from_utf8(&seen.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                holders.nodes.insert(node.to_owned(), applied);
            } else if let Some(shard) = key.strip_prefix("shard.").and_then(|s| s.parse().ok()) {
                holders
                    .owners
                    .insert(shard, String::from_utf8_lossy(&seen.value).into_owned());
            }
        }
        Some(holders)
    }
}

/// How old `entry`'s write is on this node's clock (its stamp is the server's); zero when this node's
/// clock is behind.
pub(crate) fn age_of(entry: &kv::Entry) -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::from(entry.created))
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const TTL: Duration = Duration::from_secs(2);

    fn put(key: &str, value: &str, delta: u64, seen_current: bool) -> kv::Entry {
        kv::Entry {
            bucket: "e2e-leases".into(),
            key: key.into(),
            value: bytes::Bytes::copy_from_slice(value.as_bytes()),
            revision: 1,
            delta,
            created: async_nats::datetime::now(),
            operation: kv::Operation::Put,
            seen_current,
        }
    }

    fn delete(key: &str) -> kv::Entry {
        kv::Entry {
            operation: kv::Operation::Delete,
            ..put(key, "", 0, true)
        }
    }

    #[test]
    fn holders_are_known_once_the_snapshot_is_in() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        assert!(!v.apply(&put("node.a", "7", 2, false), Duration::ZERO, t0));
        assert!(!v.apply(&put("shard.3", "a", 1, false), Duration::ZERO, t0));
        assert_eq!(v.holders(t0), None, "the snapshot is not all in");
        assert!(
            v.apply(&put("shard.4", "b", 0, true), Duration::ZERO, t0),
            "the view became current: a round now"
        );
        let h = v.holders(t0).unwrap();
        assert_eq!(h.nodes, BTreeMap::from([("a".to_owned(), 7)]));
        assert_eq!(
            h.owners,
            HashMap::from([(3, "a".to_owned()), (4, "b".to_owned())])
        );
    }

    #[test]
    fn a_key_is_gone_lease_ttl_after_the_write_it_saw_or_when_deleted() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        v.apply(&put("node.a", "1", 0, true), Duration::ZERO, t0);
        // From the snapshot, written 1.5 s ago by the server's clock: 0.5 s left.
        v.restart();
        v.apply(
            &put("shard.1", "a", 1, false),
            Duration::from_millis(1500),
            t0,
        );
        // Seen live, whatever the server's clock says: a full lease_ttl left.
        v.apply(&put("shard.2", "a", 0, true), Duration::from_secs(60), t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(v.holders(at(400)).unwrap().owners.len(), 2);
        assert_eq!(
            v.holders(at(600)).unwrap().owners,
            HashMap::from([(2, "a".to_owned())])
        );
        // A snapshot entry older than lease_ttl by the server's clock is already gone.
        v.apply(
            &put("shard.3", "a", 0, false),
            Duration::from_secs(9),
            at(600),
        );
        assert!(!v.holders(at(600)).unwrap().owners.contains_key(&3));
        // Renewed: the clock starts again.
        v.apply(&put("node.a", "2", 0, true), Duration::ZERO, at(1900));
        assert_eq!(v.holders(at(2100)).unwrap().nodes.get("a"), Some(&2));
        assert!(v.holders(at(2100)).unwrap().owners.is_empty());
        // A clean stop deletes its keys: gone at once, and worth a round.
        assert!(v.apply(&delete("node.a"), Duration::ZERO, at(2200)));
        assert!(v.holders(at(2200)).unwrap().nodes.is_empty());
        assert!(
            !v.apply(&delete("node.a"), Duration::ZERO, at(2200)),
            "nothing left to delete"
        );
    }

    #[test]
    fn the_next_expiry_is_the_oldest_write_plus_lease_ttl() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        assert_eq!(v.next_expiry(t0), None);
        v.apply(&put("node.a", "1", 0, true), Duration::ZERO, t0);
        v.apply(&put("shard.1", "a", 0, true), Duration::ZERO, t0 + TTL / 2);
        assert_eq!(v.next_expiry(t0), Some(t0 + TTL));
        // Past it, the expired key is forgotten and the next one named: never an instant already past.
        assert_eq!(v.next_expiry(t0 + TTL), Some(t0 + TTL / 2 + TTL));
        assert_eq!(v.next_expiry(t0 + TTL * 2), None);
    }

    #[test]
    fn a_new_node_wakes_a_round_and_a_renewal_does_not() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        v.apply(&put("node.a", "1", 0, true), Duration::ZERO, t0);
        assert!(!v.apply(&put("node.a", "2", 0, true), Duration::ZERO, t0));
        assert!(!v.apply(&put("shard.9", "a", 0, true), Duration::ZERO, t0));
        assert!(v.apply(&put("node.b", "1", 0, true), Duration::ZERO, t0));
    }

    #[test]
    fn the_age_of_a_write_is_read_from_its_stamp() {
        let mut e = put("node.a", "1", 0, true);
        assert!(age_of(&e) < Duration::from_secs(1));
        let old = SystemTime::now() - Duration::from_secs(30);
        let nanos = old.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128;
        e.created = async_nats::datetime::from_nanos(nanos).unwrap();
        let age = age_of(&e);
        assert!(
            age >= Duration::from_secs(30) && age < Duration::from_secs(31),
            "{age:?}"
        );
        // A stamp ahead of this node's clock: no age, never negative.
        let ahead = SystemTime::now() + Duration::from_secs(30);
        let nanos = ahead.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128;
        e.created = async_nats::datetime::from_nanos(nanos).unwrap();
        assert_eq!(age_of(&e), Duration::ZERO);
    }
}
