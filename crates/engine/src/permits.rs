//! The bound on attempts in flight: at most `delivery.max_connections_per_host` to one destination
//! (scheme, host and port) and `delivery.max_in_flight_total` in all, shared by every delivery thread.
//!
//! A subscription actor takes a [`Permit`] before each attempt (and only then its rate-limit token, so a
//! wait here never lets a webhook's limiter be exceeded) and the attempt holds it until it ends. When none
//! is free the actor queues once, behind the other webhooks waiting for that host: a freed permit goes
//! to the first of them, and a webhook that wants another queues again at the back, so webhooks take
//! turns and one webhook's backlog cannot starve the others. Hosts that wait only for the total cap take
//! turns the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// Hands a permit granted later to its waiter; gives it back when the waiter is gone (an actor that
/// stopped), so it can go to the next one.
pub type Grant = Box<dyn FnOnce(Permit) -> Result<(), Permit> + Send>;

/// Room for one attempt to `host`; given back when dropped.
pub struct Permit {
    permits: Arc<Permits>,
    host: Option<Arc<str>>,
}

impl Permit {
    /// The destination this permit is for.
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or_default()
    }

    fn disarm(mut self) -> Option<Arc<str>> {
        self.host.take()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            self.permits.release(host);
        }
    }
}

#[derive(Default)]
struct Host {
    used: usize,
    waiters: VecDeque<Grant>,
    /// In [`State::ready`].
    ready: bool,
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

    /// A permit for `host` now, or `None` after queuing the grant `waiter()` makes: it is called with a
    /// permit once one is free and every waiter queued before it has had its turn (on the thread that
    /// frees it).
    pub fn acquire_or_wait(
        self: &Arc<Self>,
        host: &Arc<str>,
        waiter: impl FnOnce() -> Grant,
    ) -> Option<Permit> {
        let mut s = self.state.lock();
        let room = s.total < self.total && s.ready.is_empty();
        let h = s.hosts.entry(host.clone()).or_default();
        if room && h.used < self.per_host && h.waiters.is_empty() {
            h.used += 1;
            s.total += 1;
            return Some(Permit {
                permits: self.clone(),
                host: Some(host.clone()),
            });
        }
        h.waiters.push_back(waiter());
        if h.used < self.per_host && !h.ready {
            h.ready = true;
            s.ready.push_back(host.clone());
        }
        None
    }

    pub fn usage(&self) -> Usage {
        let s = self.state.lock();
        Usage {
            in_flight: s.total,
            waiting: s.hosts.values().map(|h| h.waiters.len()).sum(),
        }
    }

    fn release(self: &Arc<Self>, host: Arc<str>) {
        // A grant whose waiter is gone comes back here rather than through `Drop`, so a long queue of
        // stopped actors is walked in this loop, not by recursion.
        let mut freed = vec![host];
        while let Some(host) = freed.pop() {
            for (grant, permit) in self.hand_on(host) {
                if let Err(back) = grant(permit) {
                    freed.extend(back.disarm());
                }
            }
        }
    }

    /// Gives back one permit of `host` and takes out the grants that can go now.
    fn hand_on(self: &Arc<Self>, host: Arc<str>) -> Vec<(Grant, Permit)> {
        let mut s = self.state.lock();
        let s = &mut *s;
        s.total = s.total.saturating_sub(1);
        if let Some(h) = s.hosts.get_mut(&host) {
            h.used = h.used.saturating_sub(1);
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
            let Some(grant) = h.waiters.pop_front() else {
                continue;
            };
            h.used += 1;
            s.total += 1;
            if !h.waiters.is_empty() && h.used < self.per_host {
                h.ready = true;
                s.ready.push_back(next.clone());
            }
            grants.push((
                grant,
                Permit {
                    permits: self.clone(),
                    host: Some(next),
                },
            ));
        }
        if s.hosts
            .get(&host)
            .is_some_and(|h| h.used == 0 && h.waiters.is_empty())
        {
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
            Box::new(move |p: Permit| {
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
        let a1 = p.acquire_or_wait(&a, grant(&tx, 0, true));
        let a2 = p.acquire_or_wait(&a, grant(&tx, 0, true));
        assert!(a1.is_some() && a2.is_some());
        assert!(p.acquire_or_wait(&a, grant(&tx, 1, true)).is_none());
        let b1 = p.acquire_or_wait(&b, grant(&tx, 2, true));
        assert!(b1.is_some());
        assert!(p.acquire_or_wait(&b, grant(&tx, 3, true)).is_none());
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
        let first = p.acquire_or_wait(&h, grant(&tx, 0, true));
        assert!(first.is_some());
        // Webhook 1 (a big backlog) queues, then webhook 2; webhook 1 asks again after its grant.
        assert!(p.acquire_or_wait(&h, grant(&tx, 1, true)).is_none());
        assert!(p.acquire_or_wait(&h, grant(&tx, 2, true)).is_none());
        drop(first);
        let (who, permit) = rx.try_recv().expect("granted");
        assert_eq!(who, 1);
        assert!(p.acquire_or_wait(&h, grant(&tx, 1, true)).is_none());
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
        let first = p.acquire_or_wait(&a, grant(&tx, 0, true));
        assert!(p.acquire_or_wait(&a, grant(&tx, 1, true)).is_none());
        assert!(p.acquire_or_wait(&a, grant(&tx, 2, true)).is_none());
        assert!(p.acquire_or_wait(&b, grant(&tx, 3, true)).is_none());
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
        let first = p.acquire_or_wait(&h, grant(&tx, 0, true));
        for who in 1..1000 {
            assert!(p.acquire_or_wait(&h, grant(&tx, who, false)).is_none());
        }
        assert!(p.acquire_or_wait(&h, grant(&tx, 1000, true)).is_none());
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
    fn host_is_scheme_host_and_port() {
        assert_eq!(&*host_of("https://x.example/a?b"), "https://x.example:443");
        assert_eq!(&*host_of("http://x.example:8080/"), "http://x.example:8080");
        assert_eq!(&*host_of("not a url"), "not a url");
    }
}
