//! The retry policy: when a failed attempt is tried again.

use rand::Rng;
use std::time::{Duration, SystemTime};

/// The wait a receiver asked for in a `Retry-After` header (RFC 9110 §10.2.3): a whole number of seconds
/// (`120`) or an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`, or the two obsolete date forms), read against
/// `now`. A date in the past is no wait; anything unparsable is `None`, and the retry schedule applies.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time": the cap applies.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

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
    fn retry_after_is_seconds_or_an_http_date_and_anything_else_is_ignored() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_792_567_680); // 2026-10-21T07:28:00Z
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(parse_retry_after("120", now), s(120));
        assert_eq!(parse_retry_after(" 0 ", now), s(0));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            s(u64::MAX)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:30:00 GMT", now),
            s(120)
        );
        // RFC 850 and asctime forms, which RFC 9110 says recipients must accept.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-26 07:29:00 GMT", now),
            s(60)
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:29:30 2026", now), s(90));
        assert_eq!(
            parse_retry_after("Tue, 20 Oct 2026 07:28:00 GMT", now),
            s(0),
            "a date in the past is no wait"
        );
        for bad in [
            "",
            "soon",
            "-5",
            "1.5",
            "12s",
            "Wed, 32 Oct 2026 07:28:00 GMT",
            "2026-10-21T07:30:00Z",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
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
