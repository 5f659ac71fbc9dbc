//! Shard leases: webhooks hash into `shards`; each shard is leased by one node at a time in a replicated
//! JetStream KV bucket (`<stream>-leases`) whose keys live `lease_ttl` unless renewed. Only the holder
//! runs the shard's subscription actors. Each round (every `lease_ttl / 3`) a node:
//!
//! 1. writes its heartbeat (`node.<id>`), so every node knows how many are alive;
//! 2. renews each lease it holds by compare-and-set on the revision it last wrote (the revision is the
//!    fencing token: a lease another node took since cannot be renewed, and is dropped at once);
//! 3. releases leases above its fair share (`shards / live nodes`, one more for the first `shards % live
//!    nodes` by id), so a node that joins gets some;
//! 4. takes free shards (no key: never taken, released, or expired with a dead node) up to its share.
//!
//! 5. renews or takes the `maintenance` lease: its holder alone runs retention on the stream.
//!
//! Who is alive and who holds what comes from a watch on the bucket ([`LeaseView`]), not from reading it
//! each round: a round is the node's writes alone (its heartbeat, its renewals, the leases it takes or
//! gives back). A round also runs at once when a key runs out in the view (a dead node's leases are then
//! taken, see `take`), when the view sees a lease or a node given back or a new node, and again soon
//! after a round that lost a race for a free lease.
//!
//! A lease this node has not renewed for `2/3 × lease_ttl` (counted from the start of the round that last
//! wrote it) is dropped locally (its actors stop) before it can expire and be taken by another: two nodes
//! never deliver one shard knowingly at once. Each lease is judged alone, and a renewal that got no answer
//! is not a loss (the next round finds out: see `renew`). A round's writes go out together, so it takes
//! about one replicated write's time however many leases the node holds.

use crate::connect::SETUP_TRY_TIMEOUT;
use crate::follower::Followed;
use crate::lease_view::LeaseView;
use async_nats::jetstream::{self, kv};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The shard of a webhook (FNV-1a of its id: the same on every node and every version).
pub fn shard_of(webhook_id: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in webhook_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

/// What this node knows of the cluster's nodes, as of its last round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Each live node: (shards it holds, the last stream seq it has copied).
    pub nodes: BTreeMap<String, (u32, u64)>,
    /// The stream's last seq.
    pub stream_last_seq: u64,
}

struct State {
    node: String,
    /// This node's position in the stream (written in its heartbeat) and the stream's last seq as this
    /// node last heard it.
    followed: Arc<Followed>,
    shards: u32,
    /// Shard → the revision this node last wrote for it.
    held: RwLock<HashMap<u32, u64>>,
    /// Shard → when this node took it (a shard is taken over from a node that may have sent until
    /// shortly before).
    taken_at: RwLock<HashMap<u32, Instant>>,
    /// The membership as of the last round (answered while the view is not current).
    members: RwLock<Membership>,
    /// The bucket as the watch shows it.
    view: Mutex<LeaseView>,
    /// The revision of the `maintenance` lease this node holds (retention runs on its holder only),
    /// mirrored in `maintains` for the log.
    maintenance: RwLock<Option<u64>>,
    maintains: Arc<AtomicBool>,
    /// Set by [`Leases::quiesce`]: this node is stopping. It owns nothing any more (its actors finish what
    /// is in flight and stop) but keeps renewing its leases, and takes none, until they are released.
    quiescing: AtomicBool,
    changed: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Asks the lease task to release everything and end (a clean stop).
    stop: tokio::sync::Notify,
    released: tokio::sync::watch::Sender<bool>,
}

impl State {
    fn set_maintenance(&self, revision: Option<u64>) {
        *self.maintenance.write() = revision;
        self.maintains.store(revision.is_some(), Ordering::Release);
    }

    fn notify(&self) {
        if let Some(f) = self.changed.get() {
            f();
        }
    }

    /// Who is alive and who holds what now: the view, with this node's own leases as it holds them (its
    /// writes may not have come back through the watch yet). `None` while the view is not current.
    fn cluster_now(&self) -> Option<Cluster> {
        let holders = self.view.lock().holders(Instant::now())?;
        let mut nodes: BTreeMap<String, (u32, u64)> = holders
            .nodes
            .into_iter()
            .map(|(node, applied)| (node, (0, applied)))
            .collect();
        nodes.insert(self.node.clone(), (0, self.followed.get()));
        let mut owners = holders.owners;
        for shard in self.held.read().keys() {
            owners.insert(*shard, self.node.clone());
        }
        Some(Cluster {
            nodes,
            owners,
            lapsed: holders.lapsed,
        })
    }

    /// `nodes` with the shards each holds, by `owners`.
    fn membership_of(
        &self,
        mut nodes: BTreeMap<String, (u32, u64)>,
        owners: &HashMap<u32, String>,
    ) -> Membership {
        for owner in owners.values() {
            if let Some((n, _)) = nodes.get_mut(owner) {
                *n += 1;
            }
        }
        Membership {
            nodes,
            stream_last_seq: self.followed.known.load(Ordering::Acquire),
        }
    }
}

/// The live nodes (shards held, counted by [`State::membership_of`]; stream position), the owner of each
/// live lease, and the leases that ran out (at their last revision).
struct Cluster {
    nodes: BTreeMap<String, (u32, u64)>,
    owners: HashMap<u32, String>,
    lapsed: HashMap<u32, u64>,
}

/// This node's leases, kept by a task on the log's NATS runtime.
#[derive(Clone)]
pub struct Leases {
    state: Arc<State>,
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub node_id: String,
    /// The stream's name; the bucket is `<stream>-leases`.
    pub stream: String,
    pub shards: u32,
    pub ttl: Duration,
    pub replicas: usize,
}

impl Leases {
    pub(crate) fn start(
        handle: &tokio::runtime::Handle,
        js: jetstream::Context,
        cfg: LeaseConfig,
        followed: Arc<Followed>,
        maintains: Arc<AtomicBool>,
    ) -> Self {
        let state = Arc::new(State {
            node: cfg.node_id.clone(),
            followed,
            shards: cfg.shards.max(1),
            held: RwLock::new(HashMap::new()),
            taken_at: RwLock::new(HashMap::new()),
            members: RwLock::new(Membership::default()),
            view: Mutex::new(LeaseView::new(cfg.ttl)),
            maintenance: RwLock::new(None),
            maintains,
            quiescing: AtomicBool::new(false),
            changed: OnceLock::new(),
            stop: tokio::sync::Notify::new(),
            released: tokio::sync::watch::Sender::new(false),
        });
        handle.spawn(keep(js, cfg, state.clone()));
        Self { state }
    }

    pub fn shards(&self) -> u32 {
        self.state.shards
    }

    /// Whether this node holds the lease of the shard `webhook_id` hashes into (and is not stopping).
    pub fn owns(&self, webhook_id: &str) -> bool {
        !self.state.quiescing.load(Ordering::Acquire)
            && self
                .state
                .held
                .read()
                .contains_key(&shard_of(webhook_id, self.state.shards))
    }

    /// The first step of a clean stop: from now on this node owns no webhook (the engine's actors send
    /// nothing more, finish and record the attempts they have in flight, and stop), while its leases are
    /// still renewed so no other node sends for its shards before those outcomes are in the stream. Then
    /// [`Leases::release_all`] gives them back.
    pub fn quiesce(&self) {
        self.state.quiescing.store(true, Ordering::Release);
        self.state.notify();
    }

    /// When this node took the lease of the shard `webhook_id` hashes into (if it holds it).
    pub fn taken_at(&self, webhook_id: &str) -> Option<Instant> {
        let shard = shard_of(webhook_id, self.state.shards);
        self.state
            .held
            .read()
            .contains_key(&shard)
            .then(|| self.state.taken_at.read().get(&shard).copied())
            .flatten()
    }

    /// A clean stop: gives this node's leases back so other nodes take its shards at once rather than
    /// after `lease_ttl`. Waits at most `timeout` for NATS to confirm.
    pub async fn release_all(&self, timeout: Duration) {
        let mut released = self.state.released.subscribe();
        self.state.stop.notify_one();
        let _ = tokio::time::timeout(timeout, released.wait_for(|done| *done)).await;
    }

    /// How many shards this node holds now.
    pub fn held(&self) -> usize {
        self.state.held.read().len()
    }

    /// The live nodes and the shards each holds, as of the last round.
    pub fn node_id(&self) -> &str {
        &self.state.node
    }

    pub fn membership(&self) -> Membership {
        match self.state.cluster_now() {
            Some(cluster) => self.state.membership_of(cluster.nodes, &cluster.owners),
            None => self.state.members.read().clone(),
        }
    }

    /// `changed` is called whenever this node gains or loses a lease (once; later calls are ignored).
    pub fn on_change(&self, changed: Box<dyn Fn() + Send + Sync>) {
        let _ = self.state.changed.set(changed);
    }
}

/// The key of the lease whose holder runs retention on the stream.
const MAINTENANCE: &str = "maintenance";

fn shard_key(shard: u32) -> String {
    format!("shard.{shard}")
}

async fn keep(js: jetstream::Context, cfg: LeaseConfig, state: Arc<State>) {
    let bucket = kv::Config {
        bucket: format!("{}-leases", cfg.stream),
        history: 1,
        max_age: cfg.ttl,
        num_replicas: cfg.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let store = loop {
        match crate::connect::open_bucket(&js, bucket.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the lease bucket yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let watching = tokio::spawn(watch(store.clone(), state.clone(), wake.clone()));
    let tick = (cfg.ttl / 3).max(Duration::from_millis(100));
    let fence = cfg.ttl * 2 / 3;
    let mut renewed = Renewed::default();
    let mut quick_rounds = 0;
    let mut failed_rounds: u32 = 0;
    loop {
        let mut again_soon = false;
        let started = Instant::now();
        let ok = match tokio::time::timeout(tick * 2, round(&store, &state, started, &mut renewed))
            .await
        {
            Ok(Ok(outcome)) => {
                if outcome.changed {
                    state.notify();
                }
                // A few quick rounds at most: a lease that keeps failing waits for the tick.
                quick_rounds = if outcome.short { quick_rounds + 1 } else { 0 };
                again_soon = outcome.short && quick_rounds <= MAX_QUICK_ROUNDS;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease round failed");
                false
            }
            Err(_) => {
                tracing::warn!("lease round timed out");
                false
            }
        };
        failed_rounds = if ok {
            0
        } else {
            failed_rounds.saturating_add(1)
        };
        if renewed.fence(&state, fence) {
            tracing::warn!(
                "cannot renew shard leases; stopping this node's deliveries for them until it can"
            );
            state.notify();
        }
        // The next round: after a tick, or as soon as a key in the view runs out (a dead node's leases
        // are then free; live nodes renew theirs well before), or when the view says one is worth
        // running now.
        let wait = if again_soon {
            AGAIN_SOON
        } else if failed_rounds > 0 {
            // A round that failed (a bucket not ready yet, NATS away) is tried again soon, not a tick
            // later: with a long lease TTL a node would otherwise hold no shards for up to a third of it.
            (RETRY_AFTER_FAILURE * 2u32.saturating_pow(failed_rounds.min(8) - 1)).min(tick)
        } else {
            tick
        };
        let next = tokio::time::Instant::now() + wait;
        let expiry = state
            .view
            .lock()
            .next_expiry(Instant::now())
            .map(|at| tokio::time::Instant::from_std(at + EXPIRY_MARGIN));
        tokio::select! {
            _ = tokio::time::sleep_until(expiry.map_or(next, |at| at.min(next))) => {}
            _ = wake.notified() => {}
            _ = state.stop.notified() => {
                release(&store, &state).await;
                watching.abort();
                return;
            }
        }
    }
}

/// When a round could not take all the leases it wanted (another node took some first), the next one
/// runs this soon rather than a tick later.
const AGAIN_SOON: Duration = Duration::from_millis(100);
const MAX_QUICK_ROUNDS: u32 = 5;

/// The wait after a failed round, doubled after each further failure up to the tick.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// How long after a key's expiry in the view the round that takes it runs (so the view has it expired).
const EXPIRY_MARGIN: Duration = Duration::from_millis(50);

/// Keeps `view` from a watch on the bucket for as long as the leases are kept, starting a new watch (with
/// a new snapshot) whenever one ends or fails; wakes a round when the view says one is worth running.
async fn watch(store: kv::Store, state: Arc<State>, wake: Arc<tokio::sync::Notify>) {
    use futures_util::StreamExt;
    let view = &state.view;
    loop {
        view.lock().restart();
        let started = tokio::time::timeout(SETUP_TRY_TIMEOUT, store.watch_with_history(">")).await;
        match started.unwrap_or_else(|_| Err(kv::WatchErrorKind::TimedOut.into())) {
            Ok(mut entries) => {
                while let Some(entry) = entries.next().await {
                    match entry {
                        Ok(entry) => {
                            if view.lock().apply(&entry, Instant::now()) {
                                wake.notify_one();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the lease bucket failed; watching it again");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the lease bucket yet; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When this node last renewed (or took) each lease it holds: the start of the round that wrote it, since
/// a lease's TTL runs from the write, which may be anywhere in the round.
#[derive(Default)]
struct Renewed {
    shards: HashMap<u32, Instant>,
    maintenance: Option<Instant>,
}

impl Renewed {
    /// Drops, on this node, every lease not renewed for `fence`: it may expire and be taken by another
    /// node any moment, so its actors stop now. Each lease is judged alone, so one slow renewal costs
    /// one shard, not all of them. Returns whether a shard was dropped.
    fn fence(&mut self, state: &State, fence: Duration) -> bool {
        let fresh = |at: Option<&Instant>| at.is_some_and(|t| t.elapsed() < fence);
        let stale: Vec<u32> = state
            .held
            .read()
            .keys()
            .filter(|s| !fresh(self.shards.get(s)))
            .copied()
            .collect();
        {
            let mut held = state.held.write();
            for shard in &stale {
                held.remove(shard);
            }
            self.shards.retain(|s, _| held.contains_key(s));
        }
        if state.maintenance.read().is_some() && !fresh(self.maintenance.as_ref()) {
            state.set_maintenance(None);
        }
        !stale.is_empty()
    }
}

/// Gives every lease this node holds back (a clean stop), so the others take them at their next round
/// instead of after the TTL, and deletes its heartbeat.
async fn release(store: &kv::Store, state: &State) {
    let held: Vec<(u32, u64)> = state.held.write().drain().collect();
    state.notify();
    for (shard, revision) in held {
        if let Err(e) = store
            .delete_expect_revision(shard_key(shard), Some(revision))
            .await
        {
            tracing::debug!(shard, error = %e, "releasing a lease failed (it expires by itself)");
        }
    }
    let maintenance = *state.maintenance.read();
    state.set_maintenance(None);
    if let Some(revision) = maintenance {
        let _ = store
            .delete_expect_revision(MAINTENANCE, Some(revision))
            .await;
    }
    let _ = store.delete(format!("node.{}", state.node)).await;
    let _ = state.released.send(true);
}

type RoundError = Box<dyn std::error::Error + Send + Sync>;

/// What came of renewing one lease.
enum Renewal {
    Renewed(u64),
    /// Another node holds it now (or it expired): stop using it at once.
    Lost(kv::UpdateError),
    /// No answer (e.g. a timeout under load): the lease may still be ours; the fence decides.
    Unknown(kv::UpdateError),
}

/// Renews `key` by compare-and-set on `revision`. A renewal whose answer was lost may still have been
/// stored, so the next one finds a newer revision: the lease is still this node's when the key names it
/// (another node taking it writes its own id), and is renewed from that revision.
async fn renew(store: &kv::Store, node: &str, key: String, revision: u64) -> Renewal {
    use kv::UpdateErrorKind::WrongLastRevision;
    let value = || bytes::Bytes::copy_from_slice(node.as_bytes());
    match store.update(&key, value(), revision).await {
        Ok(r) => Renewal::Renewed(r),
        Err(e) if e.kind() == WrongLastRevision => match store.entry(&key).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.value == node.as_bytes() =>
            {
                match store.update(&key, value(), entry.revision).await {
                    Ok(r) => Renewal::Renewed(r),
                    Err(e) if e.kind() == WrongLastRevision => Renewal::Lost(e),
                    Err(e) => Renewal::Unknown(e),
                }
            }
            _ => Renewal::Lost(e),
        },
        Err(e) => Renewal::Unknown(e),
    }
}

/// Takes the free lease of `shard`: one that ran out at `lapsed` (its last revision in the view) by
/// compare-and-set on that revision, so it is taken `lease_ttl` after its holder's last write rather than
/// whenever the bucket gets round to removing it; a key never written, given back or already removed by
/// a create. Either fails when another node wrote the key since. The revision taken at, if taken.
async fn take(store: &kv::Store, node: &str, shard: u32, lapsed: Option<&u64>) -> Option<u64> {
    let value = || bytes::Bytes::copy_from_slice(node.as_bytes());
    if let Some(&revision) = lapsed {
        match store.update(shard_key(shard), value(), revision).await {
            Ok(r) => return Some(r),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(_) => return None,
        }
    }
    store.create(shard_key(shard), value()).await.ok()
}

/// What came of a round.
struct Outcome {
    /// This node's leases changed.
    changed: bool,
    /// It wanted leases that another node took first (a round should look again soon).
    short: bool,
}

/// One round. The heartbeat and every renewal go out at once
/// (one round trip, not one per lease: each is a replicated, fsynced write); then, by the view of the
/// bucket, the leases above this node's share are given back and free ones taken up to it.
async fn round(
    store: &kv::Store,
    state: &State,
    started: Instant,
    renewed: &mut Renewed,
) -> Result<Outcome, RoundError> {
    let mut changed = false;
    let held: Vec<(u32, u64)> = state.held.read().iter().map(|(s, r)| (*s, *r)).collect();
    let heartbeat = store.put(
        format!("node.{}", state.node),
        state.followed.get().to_string().into(),
    );
    let renewals =
        futures_util::future::join_all(held.iter().map(|&(shard, revision)| async move {
            (
                shard,
                renew(store, &state.node, shard_key(shard), revision).await,
            )
        }));
    let maintenance = *state.maintenance.read();
    let maintenance = async {
        match maintenance {
            Some(revision) => match renew(store, &state.node, MAINTENANCE.into(), revision).await {
                Renewal::Renewed(r) => Some(Some(r)),
                Renewal::Lost(e) => {
                    tracing::warn!(error = %e, "lost the maintenance lease");
                    Some(None)
                }
                Renewal::Unknown(_) => None,
            },
            // The maintenance lease (retention) is taken when free.
            None => Some(
                store
                    .create(MAINTENANCE, state.node.clone().into())
                    .await
                    .ok(),
            ),
        }
    };
    let (heartbeat, renewals, maintenance) = tokio::join!(heartbeat, renewals, maintenance);
    // The renewals that were stored count even when the heartbeat was not.
    for (shard, renewal) in renewals {
        match renewal {
            Renewal::Renewed(r) => {
                state.held.write().insert(shard, r);
                renewed.shards.insert(shard, started);
            }
            Renewal::Lost(e) => {
                tracing::warn!(shard, error = %e, "lost a shard lease");
                state.held.write().remove(&shard);
                renewed.shards.remove(&shard);
                changed = true;
            }
            Renewal::Unknown(e) => tracing::debug!(shard, error = %e, "renewal unanswered"),
        }
    }
    if let Some(maintenance) = maintenance {
        if maintenance.is_some() {
            renewed.maintenance = Some(started);
        }
        state.set_maintenance(maintenance);
    }
    heartbeat?;
    // Who is alive, and who holds what (nothing to decide before the view has the whole bucket).
    let Some(Cluster {
        nodes,
        mut owners,
        lapsed,
    }) = state.cluster_now()
    else {
        return Ok(Outcome {
            changed,
            short: false,
        });
    };
    let share = fair_share(state.shards, nodes.keys(), &state.node);
    // Above its share: release the highest shards so a newer node can take them.
    let mut mine: Vec<(u32, u64)> = state.held.read().iter().map(|(s, r)| (*s, *r)).collect();
    mine.sort_unstable();
    while mine.len() > share {
        let Some((shard, revision)) = mine.pop() else {
            break;
        };
        state.held.write().remove(&shard);
        renewed.shards.remove(&shard);
        changed = true;
        if let Err(e) = store
            .delete_expect_revision(shard_key(shard), Some(revision))
            .await
        {
            tracing::debug!(shard, error = %e, "releasing a lease failed (it expires by itself)");
        }
        owners.remove(&shard);
    }
    // Below it: take free shards, all wanted at once (none when stopping).
    let want = if state.quiescing.load(Ordering::Acquire) {
        0
    } else {
        share.saturating_sub(state.held.read().len())
    };
    // From a place of its own in the ring of shards, so that nodes taking at once mostly try different
    // ones.
    let from = shard_of(&state.node, state.shards);
    let free: Vec<u32> = (0..state.shards)
        .map(|i| (from + i) % state.shards)
        .filter(|s| !owners.contains_key(s))
        .take(want)
        .collect();
    let lapsed = &lapsed;
    let taken = futures_util::future::join_all(free.iter().map(|&shard| async move {
        (
            shard,
            take(store, &state.node, shard, lapsed.get(&shard)).await,
        )
    }))
    .await;
    let short = taken.iter().any(|(_, t)| t.is_none());
    for (shard, taken) in taken {
        if let Some(revision) = taken {
            state.held.write().insert(shard, revision);
            state.taken_at.write().insert(shard, Instant::now());
            renewed.shards.insert(shard, started);
            owners.insert(shard, state.node.clone());
            changed = true;
        }
    }
    *state.members.write() = state.membership_of(nodes, &owners);
    Ok(Outcome { changed, short })
}

/// How many of `shards` the node `me` holds among the live `nodes` (sorted, `me` among them): the first
/// `shards % n` nodes one more than the rest, so the shares sum to `shards` and differ by at most one.
fn fair_share<'a>(
    shards: u32,
    nodes: impl ExactSizeIterator<Item = &'a String>,
    me: &str,
) -> usize {
    let n = nodes.len().max(1) as u32;
    let mut nodes = nodes;
    let rank = nodes.position(|node| node == me).unwrap_or(0) as u32;
    (shards / n + u32::from(rank < shards % n)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fair_shares_sum_to_the_shards_and_differ_by_at_most_one() {
        for count in 1..=7 {
            let nodes: BTreeMap<String, ()> =
                (0..count).map(|i| (format!("node-{i}"), ())).collect();
            let shares: Vec<usize> = nodes
                .keys()
                .map(|me| fair_share(64, nodes.keys(), me))
                .collect();
            assert_eq!(shares.iter().sum::<usize>(), 64, "{shares:?}");
            let (min, max) = (shares.iter().min(), shares.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{shares:?}");
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("wh_01", 64), shard_of("wh_01", 64));
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(&format!("wh_{i:026}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    }
}
