//! Bounded load loops: `total` operations by `concurrency` workers on the driver's single thread, stopped
//! early at `time_limit`. Errors are counted (and the first kept), never retried.

use anyhow::Result;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Operations that succeeded.
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// True when `time_limit` stopped the loop before `total`.
    pub timed_out: bool,
}

impl LoadResult {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `op(0..total)` with `concurrency` in flight at once.
pub async fn run<F, Fut>(total: u64, concurrency: usize, time_limit: Duration, op: F) -> LoadResult
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let started = Instant::now();
    let next = Cell::new(0u64);
    let ok = Cell::new(0u64);
    let errors = Cell::new(0u64);
    let timed_out = Cell::new(false);
    let first_error = RefCell::new(None::<String>);
    let worker = || async {
        loop {
            let i = next.get();
            if i >= total {
                break;
            }
            if started.elapsed() >= time_limit {
                timed_out.set(true);
                break;
            }
            next.set(i + 1);
            match op(i).await {
                Ok(()) => ok.set(ok.get() + 1),
                Err(e) => {
                    errors.set(errors.get() + 1);
                    first_error
                        .borrow_mut()
                        .get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    };
    futures_util::future::join_all((0..concurrency.max(1)).map(|_| worker())).await;
    LoadResult {
        ok: ok.get(),
        errors: errors.get(),
        first_error: first_error.into_inner(),
        elapsed: started.elapsed(),
        timed_out: timed_out.get(),
    }
}

/// Open-loop pacing: starts `op(i)` at `i / per_second` seconds after the start, whether or not earlier
/// ones finished (a slow server does not slow the offered load). Returns the loop's result and, for each
/// `i`, the unix nanos at which its request was started.
pub async fn paced<F, Fut>(total: u64, per_second: u64, op: F) -> (LoadResult, Vec<i64>)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>> + 'static,
{
    let started = Instant::now();
    let step = Duration::from_nanos(1_000_000_000 / per_second.max(1));
    let mut starts = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut handles = Vec::with_capacity(starts.capacity());
    for i in 0..total {
        let at = started + step * u32::try_from(i).unwrap_or(u32::MAX);
        actix_rt::time::sleep_until(at.into()).await;
        starts.push(crate::clock::unix_nanos());
        handles.push(actix_rt::spawn(op(i)));
    }
    let mut result = LoadResult::default();
    for h in handles {
        match h.await {
            Ok(Ok(())) => result.ok += 1,
            Ok(Err(e)) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    result.elapsed = started.elapsed();
    (result, starts)
}

/// Latencies (ns) of arrivals `(i, arrival unix nanos)` against the start times of [`paced`].
pub fn latencies(starts: &[i64], arrivals: &[(i64, i64)]) -> Vec<i64> {
    matched(starts, arrivals)
        .map(|(_, latency)| latency)
        .collect()
}

/// Each arrival as (its publish start, latency), both in ns (the start since the Unix epoch), in publish
/// order.
pub fn timeline(starts: &[i64], arrivals: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = matched(starts, arrivals).collect();
    out.sort_unstable();
    out
}

/// Each arrival whose publish is known, as (publish start, latency).
fn matched<'a>(
    starts: &'a [i64],
    arrivals: &'a [(i64, i64)],
) -> impl Iterator<Item = (i64, i64)> + 'a {
    arrivals.iter().filter_map(|&(i, at)| {
        let start = *starts.get(usize::try_from(i).ok()?)?;
        Some((start, at - start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_matched_to_their_publish_and_unknown_ones_left_out() {
        let starts = [1_000, 2_000, 3_000];
        // Out of order, one of an index never published.
        let arrivals = [(2, 3_500), (7, 9_000), (0, 1_900)];
        assert_eq!(
            timeline(&starts, &arrivals),
            vec![(1_000, 900), (3_000, 500)]
        );
        assert_eq!(latencies(&starts, &arrivals), vec![500, 900]);
    }

    #[test]
    fn runs_each_index_once_and_counts_errors() {
        let seen = RefCell::new(Vec::new());
        let r = actix_rt::System::new().block_on(run(10, 3, Duration::from_secs(10), |i| {
            seen.borrow_mut().push(i);
            async move {
                if i == 4 {
                    anyhow::bail!("four")
                }
                Ok(())
            }
        }));
        assert_eq!((r.ok, r.errors, r.timed_out), (9, 1, false));
        assert_eq!(r.first_error.as_deref(), Some("four"));
        let mut seen = seen.into_inner();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
