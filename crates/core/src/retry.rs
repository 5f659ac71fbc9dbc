//! The retry policy: when a failed attempt is tried again.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before attempt 2, 3, …: the delivery is `failed` after `1 + schedule.len()` attempts.
    pub schedule: Vec<Duration>,
    /// Relative jitter, e.g. 0.2 for ±20 %.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let s = |secs| Duration::from_secs(secs);
        Self {
            schedule: vec![s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)],
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Attempts a delivery gets before it is `failed`.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait after attempt number `attempt` (1-based) failed, or `None` when the schedule is used up.
    /// `retry_after` (from a `429`/`503`) makes the wait at least that long, capped by the schedule's
    /// longest step so a receiver cannot park a delivery for ever.
    pub fn delay_after(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let idx = usize::try_from(attempt).ok()?.checked_sub(1)?;
        let base = *self.schedule.get(idx)?;
        let factor = if self.jitter > 0.0 {
            1.0 + rng.gen_range(-self.jitter..=self.jitter)
        } else {
            1.0
        };
        let mut delay = base.mul_f64(factor.max(0.0));
        if let Some(ra) = retry_after {
            let cap = self.schedule.iter().copied().max().unwrap_or(base);
            delay = delay.max(ra.min(cap));
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_followed_with_bounded_jitter_then_ends() {
        let p = RetryPolicy::default();
        let mut rng = rand::thread_rng();
        assert_eq!(p.max_attempts(), 8);
        for _ in 0..200 {
            let d = p.delay_after(1, None, &mut rng).expect("first retry");
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        assert!(p.delay_after(7, None, &mut rng).is_some());
        assert_eq!(p.delay_after(8, None, &mut rng), None);
        assert_eq!(p.delay_after(0, None, &mut rng), None);
    }

    #[test]
    fn retry_after_waits_at_least_that_long_but_is_capped() {
        let p = RetryPolicy {
            schedule: vec![Duration::from_millis(10), Duration::from_secs(2)],
            jitter: 0.0,
        };
        let mut rng = rand::thread_rng();
        assert_eq!(
            p.delay_after(1, Some(Duration::from_secs(1)), &mut rng),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.delay_after(1, Some(Duration::from_secs(3600)), &mut rng),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.delay_after(2, Some(Duration::from_millis(1)), &mut rng),
            Some(Duration::from_secs(2))
        );
    }
}
