//! The clock both processes share: CLOCK_REALTIME as unix nanoseconds. The driver stamps the start of a
//! publish request, the receiver stamps the arrival; both run on the same machine, so the difference is
//! the end-to-end latency (to within the kernel's clock reads).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
