//! A webhook's rate limiter: `rate_limit` deliveries per minute, evenly spaced, with a burst of
//! ⌈rate_limit/60⌉ (at least 1). It is the generic cell rate algorithm (GCRA) exactly as governor's
//! direct limiter runs it for `Quota::per_minute(rate).allow_burst(burst)`, kept here because its whole
//! state is one instant (the theoretical arrival time of the next cell): the router keeps that instant
//! when it stops an idle actor whose limiter is not full again, and hands it to the next actor of the
//! webhook, so stopping and starting an actor never grants a fresh burst (see [`crate::router`]).

use std::time::{Duration, Instant};

/// The state a stopped actor's limiter leaves behind: the theoretical arrival time of its next cell.
/// Only meaningful while it is in the future (a limiter whose `tat` has passed is full, like a new one).
pub type LimiterState = Instant;

#[derive(Debug, Clone)]
pub struct Limiter {
    /// One cell every `t`.
    t: Duration,
    /// How far ahead of now `tat` may be and still allow a cell: `t × (burst − 1)`.
    tau: Duration,
    /// The theoretical arrival time (`None`: never used, full).
    tat: Option<Instant>,
}

/// The burst for `rate_limit` per minute: ⌈rate_limit/60⌉ (at least 1).
pub fn burst(rate_limit: u32) -> u32 {
    rate_limit.div_ceil(60).max(1)
}

impl Limiter {
    /// `rate_limit` per minute (at least 1), with a burst of [`burst`].
    pub fn per_minute(rate_limit: u32) -> Self {
        let rate = u64::from(rate_limit.max(1));
        // governor's `Quota::per_minute`: the minute in nanoseconds divided by the rate (rounded down).
        let t = Duration::from_nanos((60_000_000_000 / rate).max(1));
        Self {
            t,
            tau: t * (burst(rate_limit) - 1),
            tat: None,
        }
    }

    /// Continues from the state a previous limiter of the same rate left (see [`Self::state`]).
    pub fn resume(mut self, state: Option<LimiterState>) -> Self {
        self.tat = state;
        self
    }

    /// Takes a cell now, or says how long until one is free.
    pub fn check(&mut self) -> Result<(), Duration> {
        self.check_at(Instant::now())
    }

    pub fn check_at(&mut self, now: Instant) -> Result<(), Duration> {
        let tat = self.tat.unwrap_or(now);
        // Allowed when now ≥ tat − tau.
        if tat > now + self.tau {
            return Err(tat - self.tau - now);
        }
        self.tat = Some(tat.max(now) + self.t);
        Ok(())
    }

    /// What a next limiter must continue from, or `None` when this one is full again (a new limiter is
    /// then the same as this one).
    pub fn state(&self, now: Instant) -> Option<LimiterState> {
        self.tat.filter(|tat| *tat > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_spaces_evenly() {
        let now = Instant::now();
        let mut l = Limiter::per_minute(120); // 2 per second, burst 2
        assert!(l.check_at(now).is_ok());
        assert!(l.check_at(now).is_ok());
        let wait = l
            .check_at(now)
            .expect_err("third in the same instant exceeds the burst");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(l.check_at(now + Duration::from_millis(499)).is_err());
        assert!(l.check_at(now + Duration::from_millis(500)).is_ok());
        assert!(l.check_at(now + Duration::from_millis(500)).is_err());

        let mut l = Limiter::per_minute(60);
        assert!(l.check_at(now).is_ok());
        assert!(l.check_at(now).is_err());
        assert!(l.check_at(now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn matches_governor() {
        use governor::clock::FakeRelativeClock;
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;
        for rate in [1, 59, 60, 61, 120, 1_000, 60_000] {
            let clock = FakeRelativeClock::default();
            let quota = Quota::per_minute(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst(rate)).unwrap_or(NonZeroU32::MIN));
            let theirs = RateLimiter::direct_with_clock(quota, clock.clone());
            let start = Instant::now();
            let mut ours = Limiter::per_minute(rate);
            let mut elapsed = Duration::ZERO;
            for step in 0..2_000u64 {
                // Uneven steps, some of them zero: bursts and pauses.
                let d = Duration::from_micros((step * 7_919) % 23_000) * u32::from(step % 3 == 0);
                clock.advance(d);
                elapsed += d;
                assert_eq!(
                    ours.check_at(start + elapsed).is_ok(),
                    theirs.check().is_ok(),
                    "rate {rate}, step {step}"
                );
            }
        }
    }

    #[test]
    fn a_resumed_limiter_grants_no_fresh_burst() {
        let now = Instant::now();
        let mut l = Limiter::per_minute(600); // burst 10, one per 100 ms
        for _ in 0..10 {
            assert!(l.check_at(now).is_ok());
        }
        let state = l.state(now);
        assert!(state.is_some());
        let mut next = Limiter::per_minute(600).resume(state);
        assert!(next.check_at(now).is_err(), "the burst was spent");
        assert!(next.check_at(now + Duration::from_millis(100)).is_ok());
        // Once full again there is nothing to keep.
        assert_eq!(l.state(now + Duration::from_secs(1)), None);
    }
}
