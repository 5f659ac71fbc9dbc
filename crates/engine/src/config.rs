//! What the engine needs to know to run. The server fills it from the config file; embedders build it.

use buildr_core::RetryPolicy;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The sled directory; created when missing.
    pub data_dir: PathBuf,
    pub delivery: DeliveryConfig,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// A projection checkpoint is written after this many records…
    pub checkpoint_every: u64,
    /// …or after this long if anything changed (and on a clean stop).
    pub checkpoint_interval: Duration,
    /// Finished events older than this are removed from the log (`None`: kept for ever).
    pub retention: Option<Duration>,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How the log's sled databases are opened (their cache size).
    pub storage: buildr_log::StorageOptions,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// A delivery succeeds on a 2xx within this time.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Disable a webhook whose attempts have all failed for this long.
    pub disable_after: Duration,
    /// How long the previous key keeps signing after a rotation.
    pub secret_rotation_overlap: Duration,
    /// Allow loopback/private targets (development and tests only).
    pub allow_private_targets: bool,
    /// Attempts in flight at once to one webhook.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one destination (scheme, host and port), all webhooks together.
    pub max_connections_per_host: usize,
    /// Attempts in flight at once in all.
    pub max_in_flight_total: usize,
    /// Delivery threads (arbiters) the subscription actors are spread over.
    pub workers: usize,
    /// Accept and store everything but send nothing (maintenance; API fuzzing). Deliveries wait, durably.
    pub paused: bool,
    /// A webhook's actor stops after it has been idle this long (at least until its rate limiter is full
    /// again); the next event starts a new one.
    pub idle_stop: Duration,
}

impl EngineConfig {
    /// The production defaults of API.md, on `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            delivery: DeliveryConfig::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            checkpoint_every: 100_000,
            checkpoint_interval: Duration::from_secs(60),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_interval: Duration::from_secs(3600),
            storage: buildr_log::StorageOptions::default(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            secret_rotation_overlap: Duration::from_secs(24 * 3600),
            allow_private_targets: false,
            max_in_flight: 32,
            max_connections_per_host: 256,
            max_in_flight_total: 1024,
            paused: false,
            idle_stop: Duration::from_secs(60),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}
