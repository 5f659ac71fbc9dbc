//! A webhook's rate limiter: governor's direct limiter for `rate_limit` deliveries per minute, evenly
//! spaced, with a burst of ⌈rate_limit/60⌉ (at least 1). The limiter is shared (`Arc`) so that when the
//! router stops an idle actor whose limiter is not full again, it keeps the limiter itself and hands it to
//! the webhook's next actor: stopping and starting an actor never grants a fresh burst (see
//! [`crate::router`]). A limiter is full again (a new one would allow the same) at the latest one refill
//! time (`burst` cells) after its last granted cell.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a stopped actor's limiter leaves behind while it is not full again.
#[derive(Clone)]
pub struct LimiterState {
    limiter: Arc<DefaultDirectRateLimiter>,
    rate_limit: u32,
    full_at: Instant,
}

impl LimiterState {
    /// When the limiter is full again (from then on nothing needs keeping).
    pub fn full_at(&self) -> Instant {
        self.full_at
    }
}

pub struct Limiter {
    limiter: Arc<DefaultDirectRateLimiter>,
    rate_limit: u32,
    /// `burst` cells: how long after a granted cell the limiter is full again, at the latest.
    refill: Duration,
    /// When this limiter is full again (`None`: never used).
    full_at: Option<Instant>,
}

/// The burst for `rate_limit` per minute: ⌈rate_limit/60⌉ (at least 1).
pub fn burst(rate_limit: u32) -> u32 {
    rate_limit.div_ceil(60).max(1)
}

impl Limiter {
    /// `rate_limit` per minute (at least 1), with a burst of [`burst`].
    pub fn per_minute(rate_limit: u32) -> Self {
        let rate = NonZeroU32::new(rate_limit.max(1)).unwrap_or(NonZeroU32::MIN);
        let cells = NonZeroU32::new(burst(rate_limit)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate).allow_burst(cells);
        Self {
            limiter: Arc::new(RateLimiter::direct(quota)),
            rate_limit,
            refill: quota.replenish_interval() * cells.get(),
            full_at: None,
        }
    }

    /// Continues the limiter a previous actor of the webhook left (see [`Self::state`]), if it is of the
    /// same rate and not full again yet; otherwise this fresh one is the same as it.
    pub fn resume(mut self, state: Option<LimiterState>) -> Self {
        if let Some(s) = state.filter(|s| s.rate_limit == self.rate_limit) {
            self.limiter = s.limiter;
            self.full_at = Some(s.full_at);
        }
        self
    }

    /// Takes a cell now, or says how long until one is free.
    pub fn check(&mut self) -> Result<(), Duration> {
        match self.limiter.check() {
            Ok(()) => {
                let full_at = Instant::now() + self.refill;
                self.full_at = Some(self.full_at.map_or(full_at, |at| at.max(full_at)));
                Ok(())
            }
            Err(not_until) => Err(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// What a next limiter must continue from, or `None` when this one is full again (a new limiter is
    /// then the same as this one).
    pub fn state(&self, now: Instant) -> Option<LimiterState> {
        self.full_at
            .filter(|at| *at > now)
            .map(|full_at| LimiterState {
                limiter: self.limiter.clone(),
                rate_limit: self.rate_limit,
                full_at,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_spaces_evenly() {
        let mut l = Limiter::per_minute(120); // 2 per second, burst 2
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        let wait = l.check().expect_err("a third at once exceeds the burst");
        assert!(wait <= Duration::from_millis(500) && wait > Duration::from_millis(300));

        let mut l = Limiter::per_minute(60);
        assert!(l.check().is_ok());
        assert!(l.check().is_err());
    }

    #[test]
    fn a_resumed_limiter_grants_no_fresh_burst_and_a_full_one_leaves_nothing() {
        let mut l = Limiter::per_minute(600); // burst 10, one per 100 ms
        assert!(l.state(Instant::now()).is_none(), "never used: full");
        for _ in 0..10 {
            assert!(l.check().is_ok());
        }
        let state = l.state(Instant::now());
        let full_at = state.as_ref().map(LimiterState::full_at);
        assert!(full_at.is_some_and(|at| at > Instant::now() + Duration::from_millis(900)));
        let mut next = Limiter::per_minute(600).resume(state.clone());
        assert!(next.check().is_err(), "the burst was spent");
        // Another rate: the kept limiter does not apply.
        let mut other = Limiter::per_minute(6_000).resume(state);
        assert!(other.check().is_ok());
        // Once full again there is nothing to keep.
        assert!(l.state(Instant::now() + Duration::from_secs(2)).is_none());
    }
}
