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
//! counts a key as gone `lease_ttl` after the write it saw, as the bucket does. Every write is dated by
//! when it arrived here, never by the server's clock (no clocks are compared between machines): the view
//! errs late, never early. A key the snapshot of a new watch shows is counted from then, so a node that
//! just started may see a dead node's leases for up to one `lease_ttl` longer than the bucket keeps them.
//!
//! A lease that ran out in the view is taken by compare-and-set on the revision last seen: it succeeds
//! only if no node wrote the key since, at least `lease_ttl` after its holder's last write (which
//! stopped using it at `2/3 × lease_ttl`), without waiting for the bucket's own removal. Any other free
//! lease is taken by a create, which fails while the key exists. So the view steers which leases to
//! try; the bucket decides who owns one.

use async_nats::jetstream::kv;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One key's latest write as seen.
#[derive(Debug, Clone)]
struct Seen {
    value: bytes::Bytes,
    revision: u64,
    /// When the write arrived here (this node's monotonic clock).
    at: Instant,
}

/// Who is alive and who holds which shard, as the view has it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Holders {
    /// Each live node (a heartbeat younger than `lease_ttl`) and the stream seq its heartbeat names.
    pub(crate) nodes: BTreeMap<String, u64>,
    /// Each shard whose lease is live, and the node that wrote it.
    pub(crate) owners: HashMap<u32, String>,
    /// Each shard whose lease ran out in the view without being given back, and the revision it was
    /// last written at: it is taken by a compare-and-set on that revision, which succeeds only if no
    /// node wrote it since, without waiting for the bucket to remove it.
    pub(crate) lapsed: HashMap<u32, u64>,
}

/// The lease bucket's live keys, kept from a watch's entries.
#[derive(Debug)]
pub(crate) struct LeaseView {
    ttl: Duration,
    keys: HashMap<String, Seen>,
    /// Shard leases that ran out in the view (shard → the revision last seen), until the key is written
    /// or deleted again.
    lapsed: HashMap<u32, u64>,
    /// Whether the watch has delivered everything the bucket held when it started (until then the view
    /// may miss keys, and a round neither takes nor releases leases by it).
    current: bool,
}

impl LeaseView {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keys: HashMap::new(),
            lapsed: HashMap::new(),
            current: false,
        }
    }

    /// Applies one entry of the watch, received at `now`. Returns whether a round is worth running
    /// at once: the view just became current or, once it is, a key was deleted (a lease or a node given
    /// back by a clean stop) or a node appeared.
    pub(crate) fn apply(&mut self, entry: &kv::Entry, now: Instant) -> bool {
        let became_current = !self.current && entry.delta == 0;
        self.current |= entry.delta == 0;
        if let Some(shard) = shard_of_key(&entry.key) {
            self.lapsed.remove(&shard);
        }
        let wake = match entry.operation {
            kv::Operation::Delete | kv::Operation::Purge => self.keys.remove(&entry.key).is_some(),
            kv::Operation::Put => {
                let fresh = !self.keys.contains_key(&entry.key);
                self.keys.insert(
                    entry.key.clone(),
                    Seen {
                        value: entry.value.clone(),
                        revision: entry.revision,
                        at: now,
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
        let lapsed = &mut self.lapsed;
        self.keys.retain(|key, seen| {
            let live = now.saturating_duration_since(seen.at) < ttl;
            if let Some(shard) = shard_of_key(key).filter(|_| !live) {
                lapsed.insert(shard, seen.revision);
            }
            live
        });
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
            } else if let Some(shard) = shard_of_key(key) {
                holders
                    .owners
                    .insert(shard, String::from_utf8_lossy(&seen.value).into_owned());
            }
        }
        holders.lapsed = self.lapsed.clone();
        Some(holders)
    }
}

/// The shard a lease key (`shard.<n>`) is for.
fn shard_of_key(key: &str) -> Option<u32> {
    key.strip_prefix("shard.").and_then(|s| s.parse().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        assert!(!v.apply(&put("node.a", "7", 2, false), t0));
        assert!(!v.apply(&put("shard.3", "a", 1, false), t0));
        assert_eq!(v.holders(t0), None, "the snapshot is not all in");
        assert!(
            v.apply(&put("shard.4", "b", 0, true), t0),
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
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut v = LeaseView::new(TTL);
        v.apply(&put("node.a", "1", 0, true), t0);
        // From the snapshot of a new watch, however old on the server's clock: counted from its arrival.
        v.restart();
        let mut old = put("shard.1", "a", 1, false);
        old.created = async_nats::datetime::from_nanos(0).unwrap();
        v.apply(&old, at(500));
        v.apply(&put("shard.2", "a", 0, true), t0);
        assert_eq!(v.holders(at(1900)).unwrap().owners.len(), 2);
        assert_eq!(
            v.holders(at(2100)).unwrap().owners,
            HashMap::from([(1, "a".to_owned())])
        );
        assert!(v.holders(at(2500)).unwrap().owners.is_empty());
        // Renewed: the clock starts again.
        v.apply(&put("node.a", "2", 0, true), at(1900));
        assert_eq!(v.holders(at(2500)).unwrap().nodes.get("a"), Some(&2));
        // A clean stop deletes its keys: gone at once, and worth a round.
        assert!(v.apply(&delete("node.a"), at(2600)));
        assert!(v.holders(at(2600)).unwrap().nodes.is_empty());
        assert!(
            !v.apply(&delete("node.a"), at(2600)),
            "nothing left to delete"
        );
    }

    #[test]
    fn the_next_expiry_is_the_oldest_write_plus_lease_ttl() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        assert_eq!(v.next_expiry(t0), None);
        v.apply(&put("node.a", "1", 0, true), t0);
        v.apply(&put("shard.1", "a", 0, true), t0 + TTL / 2);
        assert_eq!(v.next_expiry(t0), Some(t0 + TTL));
        // Past it, the expired key is forgotten and the next one named: never an instant already past.
        assert_eq!(v.next_expiry(t0 + TTL), Some(t0 + TTL / 2 + TTL));
        assert_eq!(v.next_expiry(t0 + TTL * 2), None);
    }

    #[test]
    fn a_lease_that_ran_out_is_lapsed_at_its_last_revision_until_written_again() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        v.apply(&put("node.a", "1", 0, true), t0);
        let mut lease = put("shard.5", "b", 0, true);
        lease.revision = 41;
        v.apply(&lease, t0);
        assert!(v.holders(t0).unwrap().lapsed.is_empty());
        let later = t0 + TTL;
        let h = v.holders(later).unwrap();
        assert!(!h.owners.contains_key(&5));
        assert_eq!(h.lapsed, HashMap::from([(5, 41)]));
        // Taken (by anyone): no longer lapsed, owned again.
        v.apply(&put("shard.5", "a", 0, true), later);
        let h = v.holders(later).unwrap();
        assert!(h.lapsed.is_empty());
        assert_eq!(h.owners.get(&5).map(String::as_str), Some("a"));
        // Given back: not lapsed either (a create takes it).
        v.apply(&delete("shard.5"), later);
        assert!(v.holders(later + TTL).unwrap().lapsed.is_empty());
    }

    #[test]
    fn a_new_node_wakes_a_round_and_a_renewal_does_not() {
        let t0 = Instant::now();
        let mut v = LeaseView::new(TTL);
        v.apply(&put("node.a", "1", 0, true), t0);
        assert!(!v.apply(&put("node.a", "2", 0, true), t0));
        assert!(!v.apply(&put("shard.9", "a", 0, true), t0));
        assert!(v.apply(&put("node.b", "1", 0, true), t0));
    }
}
