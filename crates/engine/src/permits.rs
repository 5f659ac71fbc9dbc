//! The bound on attempts in flight: at most `delivery.max_connections_per_host` to one destination
//! (scheme, host and port) and `delivery.max_in_flight_total` in all, shared by every delivery thread.
//!
//! A subscription actor takes a [`Permit`] before each attempt (and only then its rate-limit token, so a
//! wait here never lets a webhook's limiter be exceeded) and the attempt holds it until it ends. When none
//! is free the actor queues once, behind the other webhooks waiting for that host: a freed permit goes
//! to the first of them, and a webhook that wants another queues again at the back, so webhooks take
//! turns and one webhook's backlog cannot starve the others. Hosts that wait only for the total cap take
//! turns the same way.
//!
//! Taking turns is not enough when some of a host's endpoints hang: each of their attempts holds its
//! permit until the timeout, so in a few turns they would hold them all and the host's healthy webhooks
//! would get one permit per timeout. So a webhook may hold at most its **share** of a host's permits (the
//! host's cap over the webhooks holding or waiting for them, or done with one less than [`GRACE`] ago, at
//! least one) while others want them: one that asks beyond its share is parked, and queues again when one
//! of its own attempts ends (max-min fairness; a release stays O(1) however many webhooks wait).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Hands a permit granted later to its waiter; gives it back when the waiter is gone (an actor that
/// stopped), so it can go to the next one.
pub enum Grant {
    /// One waiter's own hand-over (an actor waiting for its next attempt).
    Once(Box<dyn FnOnce(Permit) -> Result<(), Permit> + Send>),
    /// A hand-over shared by many waiters, told whose [`Key`] the permit is for: the router's, for
    /// webhooks waiting to start. A burst to 100,000 webhooks queues that many; a closure and an id each
    /// were ~80 bytes per waiter.
    Shared(SharedGrant),
}

/// See [`Grant::Shared`].
pub type SharedGrant = Arc<dyn Fn(Key, Permit) -> Result<(), Permit> + Send + Sync>;

impl Grant {
    /// A grant of its own for one waiter.
    pub fn once(f: impl FnOnce(Permit) -> Result<(), Permit> + Send + 'static) -> Self {
        Self::Once(Box::new(f))
    }

    fn give(self, key: Key, permit: Permit) -> Result<(), Permit> {
        match self {
            Self::Once(f) => f(permit),
            Self::Shared(f) => f(key, permit),
        }
    }
}

/// Which webhook holds or waits for permits ([`key_of`]).
pub type Key = u64;

/// A webhook's [`Key`]: a hash of its id (two webhooks sharing a key would only share a share).
pub fn key_of(webhook: &impl std::hash::Hash) -> Key {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(webhook)
}

/// How long a webhook that holds and wants nothing still counts in its hosts' shares: between one attempt
/// ending and its next request a busy webhook is briefly neither holding nor waiting.
const GRACE: Duration = Duration::from_millis(100);

/// Room for one attempt to `host` for one webhook; given back when dropped.
pub struct Permit {
    permits: Arc<Permits>,
    /// The destination and the webhook holding it.
    slot: Option<(Arc<str>, Key)>,
}

impl Permit {
    /// The destination this permit is for.
    pub fn host(&self) -> &str {
        self.slot.as_ref().map(|(h, _)| &**h).unwrap_or_default()
    }

    fn disarm(mut self) -> Option<(Arc<str>, Key)> {
        self.slot.take()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.permits.release(slot);
        }
    }
}

/// A webhook that holds, waits for or lately held a host's permits.
#[derive(Default)]
struct Member {
    held: u32,
    /// Its grants queued in `waiters` or `parked`.
    waiting: u32,
    /// Since when it holds and waits for nothing (forgotten [`GRACE`] later).
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct Host {
    used: usize,
    waiters: VecDeque<(Key, Grant)>,
    /// Grants of webhooks that asked while holding their share: queued again when one of their
    /// permits comes back.
    parked: HashMap<Key, Vec<Grant>>,
    members: HashMap<Key, Member>,
    /// Members that became idle, oldest first (an entry is stale if the member is busy again).
    idle: VecDeque<(Instant, Key)>,
    /// In [`State::ready`].
    ready: bool,
}

impl Host {
    /// How many of this host's permits one webhook may hold while others want them.
    fn share(&self, per_host: usize) -> u32 {
        u32::try_from((per_host / self.members.len().max(1)).max(1)).unwrap_or(u32::MAX)
    }

    fn holds_share(&self, key: Key, per_host: usize) -> bool {
        self.members
            .get(&key)
            .is_some_and(|m| m.held >= self.share(per_host))
    }

    /// `key` as a member that is busy now.
    fn member(&mut self, key: Key) -> &mut Member {
        let m = self.members.entry(key).or_default();
        m.idle_since = None;
        m
    }

    /// Counts `key` in the shares from now on, if it is not counted yet and counting it can change a
    /// share: once as many webhooks as the host's cap are counted, every share is one, and a burst's
    /// waiters (100,000 in S5) need no entry each until they hold a permit.
    fn count_in(&mut self, key: Key, per_host: usize) -> bool {
        if let Some(m) = self.members.get_mut(&key) {
            m.idle_since = None;
            return true;
        }
        if self.members.len() < per_host {
            self.members.insert(key, Member::default());
            return true;
        }
        false
    }

    /// Queues `grant` for `key`: parked while it holds its share, else at the back.
    fn queue(&mut self, key: Key, grant: Grant, per_host: usize) {
        if self.count_in(key, per_host) {
            self.member(key).waiting += 1;
        }
        if self.holds_share(key, per_host) {
            self.parked.entry(key).or_default().push(grant);
        } else {
            self.waiters.push_back((key, grant));
        }
    }

    /// Marks `key` idle when it neither holds nor waits; forgets it at once while more webhooks than the
    /// cap are counted (every share is one then, with or without it).
    fn note_idle(&mut self, key: Key, now: Instant, per_host: usize) {
        let crowded = self.members.len() > per_host;
        let Some(m) = self.members.get_mut(&key) else {
            return;
        };
        if m.held > 0 || m.waiting > 0 || m.idle_since.is_some() {
            return;
        }
        if crowded {
            self.members.remove(&key);
        } else {
            m.idle_since = Some(now);
            self.idle.push_back((now, key));
        }
    }

    /// Forgets members idle for [`GRACE`]. Every other webhook's share may grow then, so the parked ones
    /// queue again (they are few: each holds at least one of the host's permits).
    fn expire(&mut self, now: Instant) {
        let mut forgot = false;
        while let Some(&(since, key)) = self.idle.front() {
            if now.duration_since(since) < GRACE {
                break;
            }
            self.idle.pop_front();
            if self
                .members
                .get(&key)
                .is_some_and(|m| m.idle_since == Some(since))
            {
                self.members.remove(&key);
                forgot = true;
            }
        }
        if forgot {
            for (k, grants) in self.parked.drain() {
                for grant in grants {
                    self.waiters.push_back((k, grant));
                }
            }
        }
    }

    fn idle(&self) -> bool {
        self.used == 0 && self.waiters.is_empty() && self.parked.is_empty()
    }
}

#[derive(Default)]
struct State {
    total: usize,
    hosts: HashMap<Arc<str>, Host>,
    /// Hosts with waiters and room of their own, waiting only for the total cap, in turn.
    ready: VecDeque<Arc<str>>,
}

pub struct Permits {
    per_host: usize,
    total: usize,
    state: Mutex<State>,
}

/// What is in use and waiting now (metrics, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub in_flight: usize,
    pub waiting: usize,
}

impl Permits {
    pub fn new(per_host: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_host: per_host.max(1),
            total: total.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// A permit for webhook `key` to `host` now, or `None` after queuing the grant `waiter()` makes: it
    /// is called with a permit once one is free, every waiter queued before it has had its turn, and the
    /// webhook holds less than its share of the host (on the thread that frees it).
    pub fn acquire_or_wait(
        self: &Arc<Self>,
        host: &Arc<str>,
        key: Key,
        waiter: impl FnOnce() -> Grant,
    ) -> Option<Permit> {
        let mut s = self.state.lock();
        let room = s.total < self.total && s.ready.is_empty();
        let h = s.hosts.entry(host.clone()).or_default();
        h.expire(Instant::now());
        h.count_in(key, self.per_host);
        if room
            && h.used < self.per_host
            && h.waiters.is_empty()
            && !h.holds_share(key, self.per_host)
        {
            h.used += 1;
            h.member(key).held += 1;
            s.total += 1;
            return Some(Permit {
                permits: self.clone(),
                slot: Some((host.clone(), key)),
            });
        }
        h.queue(key, waiter(), self.per_host);
        if h.used < self.per_host && !h.waiters.is_empty() && !h.ready {
            h.ready = true;
            s.ready.push_back(host.clone());
        }
        None
    }

    pub fn usage(&self) -> Usage {
        let s = self.state.lock();
        Usage {
            in_flight: s.total,
            waiting: s
                .hosts
                .values()
                .map(|h| h.waiters.len() + h.parked.values().map(Vec::len).sum::<usize>())
                .sum(),
        }
    }

    fn release(self: &Arc<Self>, slot: (Arc<str>, Key)) {
        // A grant whose waiter is gone comes back here rather than through `Drop`, so a long queue of
        // stopped actors is walked in this loop, not by recursion.
        let mut freed = vec![slot];
        while let Some(slot) = freed.pop() {
            for (key, grant, permit) in self.hand_on(slot) {
                if let Err(back) = grant.give(key, permit) {
                    freed.extend(back.disarm());
                }
            }
        }
    }

    /// Gives back one permit of `host` held for `key` and takes out the grants that can go now.
    fn hand_on(self: &Arc<Self>, (host, key): (Arc<str>, Key)) -> Vec<(Key, Grant, Permit)> {
        let now = Instant::now();
        let mut s = self.state.lock();
        let s = &mut *s;
        s.total = s.total.saturating_sub(1);
        if let Some(h) = s.hosts.get_mut(&host) {
            h.used = h.used.saturating_sub(1);
            if let Some(m) = h.members.get_mut(&key) {
                m.held = m.held.saturating_sub(1);
            }
            // One of its attempts ended: a parked webhook queues again (at the back: its turn).
            if let Some(parked) = h.parked.remove(&key) {
                for grant in parked {
                    h.waiters.push_back((key, grant));
                }
            }
            h.note_idle(key, now, self.per_host);
            h.expire(now);
            if !h.waiters.is_empty() && !h.ready {
                h.ready = true;
                s.ready.push_back(host.clone());
            }
        }
        let mut grants = Vec::new();
        while s.total < self.total {
            let Some(next) = s.ready.pop_front() else {
                break;
            };
            let Some(h) = s.hosts.get_mut(&next) else {
                continue;
            };
            h.ready = false;
            // The first waiter below its share; those at their share are parked on the way (each
            // only until one of its own permits comes back, so this walks each waiter once per release
            // of its own).
            let mut chosen = None;
            while let Some((k, grant)) = h.waiters.pop_front() {
                if h.holds_share(k, self.per_host) {
                    h.parked.entry(k).or_default().push(grant);
                } else {
                    chosen = Some((k, grant));
                    break;
                }
            }
            let Some((k, grant)) = chosen else {
                continue;
            };
            h.used += 1;
            let m = h.member(k);
            m.held += 1;
            m.waiting = m.waiting.saturating_sub(1);
            s.total += 1;
            if !h.waiters.is_empty() && h.used < self.per_host {
                h.ready = true;
                s.ready.push_back(next.clone());
            }
            grants.push((
                k,
                grant,
                Permit {
                    permits: self.clone(),
                    slot: Some((next, k)),
                },
            ));
        }
        if s.hosts.get(&host).is_some_and(Host::idle) {
            s.hosts.remove(&host);
        }
        grants
    }
}

/// The destination an attempt to `url` connects to: scheme, host and port (the URL itself when it does
/// not parse; the attempt then fails on its own).
pub fn host_of(url: &str) -> Arc<str> {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        )
        .into(),
        Err(_) => url.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    type Got = mpsc::Receiver<(usize, Permit)>;

    /// A grant that sends the permit, tagged `who`, down a channel (or gives it back when `alive` is false).
    fn grant(
        tx: &mpsc::Sender<(usize, Permit)>,
        who: usize,
        alive: bool,
    ) -> impl FnOnce() -> Grant {
        let tx = tx.clone();
        move || {
            Grant::once(move |p: Permit| {
                if !alive {
                    return Err(p);
                }
                tx.send((who, p)).map_err(|e| e.0 .1)
            })
        }
    }

    fn host(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn bounds_each_host_and_the_total() {
        let p = Permits::new(2, 3);
        let (tx, _rx): (_, Got) = mpsc::channel();
        let a = host("http://a:80");
        let b = host("http://b:80");
        let a1 = p.acquire_or_wait(&a, 0 as Key, grant(&tx, 0, true));
        let a2 = p.acquire_or_wait(&a, 0 as Key, grant(&tx, 0, true));
        assert!(a1.is_some() && a2.is_some());
        assert!(p
            .acquire_or_wait(&a, 1 as Key, grant(&tx, 1, true))
            .is_none());
        let b1 = p.acquire_or_wait(&b, 2 as Key, grant(&tx, 2, true));
        assert!(b1.is_some());
        assert!(p
            .acquire_or_wait(&b, 3 as Key, grant(&tx, 3, true))
            .is_none());
        assert_eq!(
            p.usage(),
            Usage {
                in_flight: 3,
                waiting: 2
            }
        );
        drop((a1, a2, b1));
        assert_eq!(p.usage().in_flight, 2, "both waiters were granted");
    }

    #[test]
    fn waiters_take_turns_and_newcomers_queue_behind_them() {
        let p = Permits::new(1, 10);
        let (tx, rx): (_, Got) = mpsc::channel();
        let h = host("http://slow:80");
        let first = p.acquire_or_wait(&h, 0 as Key, grant(&tx, 0, true));
        assert!(first.is_some());
        // Webhook 1 (a big backlog) queues, then webhook 2; webhook 1 asks again after its grant.
        assert!(p
            .acquire_or_wait(&h, 1 as Key, grant(&tx, 1, true))
            .is_none());
        assert!(p
            .acquire_or_wait(&h, 2 as Key, grant(&tx, 2, true))
            .is_none());
        drop(first);
        let (who, permit) = rx.try_recv().expect("granted");
        assert_eq!(who, 1);
        assert!(p
            .acquire_or_wait(&h, 1 as Key, grant(&tx, 1, true))
            .is_none());
        drop(permit);
        let (who, permit) = rx.try_recv().expect("granted");
        assert_eq!(
            who, 2,
            "the other webhook's turn comes before the backlog's next attempt"
        );
        drop(permit);
        assert_eq!(rx.try_recv().expect("granted").0, 1);
    }

    #[test]
    fn hosts_waiting_for_the_total_take_turns() {
        let p = Permits::new(10, 1);
        let (tx, rx): (_, Got) = mpsc::channel();
        let (a, b) = (host("http://a:80"), host("http://b:80"));
        let first = p.acquire_or_wait(&a, 0 as Key, grant(&tx, 0, true));
        assert!(p
            .acquire_or_wait(&a, 1 as Key, grant(&tx, 1, true))
            .is_none());
        assert!(p
            .acquire_or_wait(&a, 2 as Key, grant(&tx, 2, true))
            .is_none());
        assert!(p
            .acquire_or_wait(&b, 3 as Key, grant(&tx, 3, true))
            .is_none());
        drop(first);
        let (who, permit) = rx.try_recv().expect("granted");
        assert_eq!(who, 1);
        drop(permit);
        assert_eq!(
            rx.try_recv().expect("granted").0,
            3,
            "host b's turn before a's second waiter"
        );
    }

    #[test]
    fn a_gone_waiter_passes_its_grant_on() {
        let p = Permits::new(1, 1);
        let (tx, rx): (_, Got) = mpsc::channel();
        let h = host("http://a:80");
        let first = p.acquire_or_wait(&h, 0 as Key, grant(&tx, 0, true));
        for who in 1..1000 {
            assert!(p
                .acquire_or_wait(&h, who as Key, grant(&tx, who, false))
                .is_none());
        }
        assert!(p
            .acquire_or_wait(&h, 1000 as Key, grant(&tx, 1000, true))
            .is_none());
        drop(first);
        let (who, permit) = rx.try_recv().expect("granted");
        assert_eq!(who, 1000);
        drop(permit);
        assert_eq!(
            p.usage(),
            Usage {
                in_flight: 0,
                waiting: 0
            }
        );
        assert!(
            p.state.lock().hosts.is_empty(),
            "an unused host is forgotten"
        );
    }

    #[test]
    fn a_lone_webhook_may_use_the_whole_host() {
        let p = Permits::new(4, 100);
        let (tx, _rx): (_, Got) = mpsc::channel();
        let h = host("http://a:80");
        let held: Vec<_> = (0..4)
            .map(|_| p.acquire_or_wait(&h, 1, grant(&tx, 1, true)))
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert!(p.acquire_or_wait(&h, 1, grant(&tx, 1, true)).is_none());
    }

    /// S7 in small: a webhook whose attempts hang holds a host's permits; another webhook there keeps
    /// getting permits as fast as it gives them back, and the hanging one never holds more than its share.
    #[test]
    fn a_webhook_at_its_share_waits_while_another_keeps_cycling() {
        let p = Permits::new(4, 100);
        let (tx, rx): (_, Got) = mpsc::channel();
        let h = host("http://a:80");
        let (slow, healthy) = (1 as Key, 2 as Key);
        let mut hanging: Vec<Permit> = (0..4)
            .filter_map(|_| p.acquire_or_wait(&h, slow, grant(&tx, 1, true)))
            .collect();
        assert_eq!(hanging.len(), 4, "alone, it may use the whole host");
        assert!(p.acquire_or_wait(&h, slow, grant(&tx, 1, true)).is_none());
        assert!(p
            .acquire_or_wait(&h, healthy, grant(&tx, 2, true))
            .is_none());
        // One hanging attempt times out: the healthy webhook is next, not the slow one's next request.
        drop(hanging.pop());
        let (who, mut permit) = rx.try_recv().expect("granted");
        assert_eq!(who, 2);
        // The healthy webhook gives its permit back and asks again, over and over: it gets one each time,
        // while the slow one (3 held, share 2) stays parked.
        for _ in 0..100 {
            drop(permit);
            permit = p
                .acquire_or_wait(&h, healthy, grant(&tx, 2, true))
                .expect("the healthy webhook gets the freed permit at once");
        }
        assert!(rx.try_recv().is_err(), "the slow webhook got nothing more");
        // A second hanging attempt times out: the slow one (2 held) is at its share and stays parked;
        // the healthy one may now hold two.
        drop(hanging.pop());
        assert!(rx.try_recv().is_err());
        let second = p.acquire_or_wait(&h, healthy, grant(&tx, 2, true));
        assert!(
            second.is_some(),
            "room for the healthy webhook's second attempt"
        );
        assert_eq!(p.usage().in_flight, 4);
    }

    #[test]
    fn the_share_grows_back_when_the_other_webhook_is_gone() {
        let p = Permits::new(4, 100);
        let (tx, rx): (_, Got) = mpsc::channel();
        let h = host("http://a:80");
        let mut held: Vec<Permit> = (0..4)
            .filter_map(|_| p.acquire_or_wait(&h, 1, grant(&tx, 1, true)))
            .collect();
        assert!(p.acquire_or_wait(&h, 2, grant(&tx, 2, true)).is_none());
        drop(held.pop());
        let (who, other) = rx.try_recv().expect("granted");
        assert_eq!(who, 2);
        assert!(p.acquire_or_wait(&h, 1, grant(&tx, 1, true)).is_none());
        drop(other);
        assert!(rx.try_recv().is_err(), "webhook 1 holds 3, its share is 2");
        // Webhook 2 wants nothing more: once it has been idle for the grace period, webhook 1's share is
        // the whole host again, and its request goes at the next release.
        std::thread::sleep(GRACE + Duration::from_millis(50));
        drop(held.pop());
        let (who, _again) = rx.try_recv().expect("granted");
        assert_eq!(who, 1);
        assert_eq!(p.usage().in_flight, 3);
    }

    /// S5's burst: 100,000 webhooks wait for one host. Only as many as the cap are counted with an entry
    /// of their own (every share is one by then); each still gets its turn, in order.
    #[test]
    fn a_burst_of_waiters_needs_no_entry_each() {
        let p = Permits::new(4, 100);
        let (tx, rx): (_, Got) = mpsc::channel();
        let h = host("http://a:80");
        let mut held: Vec<Permit> = (0..4)
            .filter_map(|who| p.acquire_or_wait(&h, who as Key, grant(&tx, who, true)))
            .collect();
        for who in 4..10_000 {
            assert!(p
                .acquire_or_wait(&h, who as Key, grant(&tx, who, true))
                .is_none());
        }
        assert!(p.state.lock().hosts[&h].members.len() <= 4);
        let mut served = Vec::new();
        while let Some(permit) = held.pop() {
            drop(permit);
            while let Ok((who, permit)) = rx.try_recv() {
                served.push(who);
                held.push(permit);
            }
            assert!(p
                .state
                .lock()
                .hosts
                .get(&h)
                .is_none_or(|h| h.members.len() <= 8));
        }
        assert_eq!(
            served,
            (4..10_000).collect::<Vec<_>>(),
            "every waiter in turn"
        );
        assert_eq!(
            p.usage(),
            Usage {
                in_flight: 0,
                waiting: 0
            }
        );
    }

    #[test]
    fn host_is_scheme_host_and_port() {
        assert_eq!(&*host_of("https://x.example/a?b"), "https://x.example:443");
        assert_eq!(&*host_of("http://x.example:8080/"), "http://x.example:8080");
        assert_eq!(&*host_of("not a url"), "not a url");
    }
}
