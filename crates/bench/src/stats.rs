//! Percentiles of latency samples (nearest rank on a sorted copy; the samples are few enough).

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Summarises latencies given in nanoseconds.
pub fn summarize(mut nanos: Vec<i64>) -> Latency {
    if nanos.is_empty() {
        return Latency::default();
    }
    nanos.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len());
        nanos[rank - 1] as f64 / 1e6
    };
    Latency {
        count: nanos.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = summarize((1..=1000).map(|i| i * 1_000_000).collect());
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_ms, 500.0);
        assert_eq!(l.p99_ms, 990.0);
        assert_eq!(l.p999_ms, 999.0);
        assert_eq!(l.max_ms, 1000.0);
        assert_eq!(summarize(Vec::new()), Latency::default());
    }
}
