//! Operator metrics (Prometheus text). Low cardinality: no per-webhook labels. Counters and histograms
//! are updated where things happen; gauges of state (backlog, webhooks) are read from the projection
//! when scraped.

use crate::health::StorageHealth;
use crate::projection::Projection;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub events_published: IntCounter,
    /// By outcome: succeeded, retrying, failed.
    pub attempts: IntCounterVec,
    pub attempt_seconds: Histogram,
    pub retries_scheduled: IntCounter,
    pub log_batch_records: Histogram,
    pub log_flush_seconds: Histogram,
    /// Projection checkpoints that could not be written (each is tried again after a growing wait).
    pub checkpoint_failures: IntCounter,
    backlog: IntGauge,
    webhooks: IntGaugeVec,
    /// The bound on attempts in flight, once the engine runs (read when scraped).
    pub permits: std::sync::OnceLock<std::sync::Arc<crate::permits::Permits>>,
    attempts_in_flight: IntGauge,
    waiting_for_permit: IntGauge,
    /// Changes handed to the delivery-index writer and not yet written (crate::indexer).
    pub index_queued: IntGauge,
    /// Whether each store accepts writes (see [`StorageHealth`]).
    pub storage: StorageHealth,
}

impl Metrics {
    pub fn new() -> Self {
        // Metric definitions are constants: they can only fail through a programming mistake, which the
        // unit test below catches, never through input.
        const DEF: &str = "constant metric definition";
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect(DEF);
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect(DEF)
        };
        let m = Self {
            registry: Registry::new_custom(Some("buildr".into()), None).expect(DEF),
            events_published: counter(
                "events_published_total",
                "Events made durable by POST /events and /events/batch.",
            ),
            attempts: IntCounterVec::new(
                Opts::new("delivery_attempts_total", "Delivery attempts by outcome."),
                &["outcome"],
            )
            .expect(DEF),
            attempt_seconds: histogram(
                "delivery_attempt_duration_seconds",
                "Time from sending an attempt to its outcome.",
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
                ],
            ),
            retries_scheduled: counter(
                "retries_scheduled_total",
                "Failed attempts that were scheduled to be tried again.",
            ),
            log_batch_records: histogram(
                "log_batch_records",
                "Records made durable per log sync (group commit).",
                vec![1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
            ),
            log_flush_seconds: histogram(
                "log_flush_duration_seconds",
                "Time of one log sync (write + fsync of every batch written since the last).",
                vec![
                    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                ],
            ),
            checkpoint_failures: counter(
                "checkpoint_failures_total",
                "Projection checkpoints that could not be written (tried again after 1 s, doubling to the \
                 checkpoint interval); a restart replays more of the log until one succeeds.",
            ),
            backlog: IntGauge::new(
                "backlog_deliveries",
                "Deliveries not yet finished (pending or retrying).",
            )
            .expect(DEF),
            webhooks: IntGaugeVec::new(Opts::new("webhooks", "Webhooks by state."), &["state"])
                .expect(DEF),
            permits: std::sync::OnceLock::new(),
            attempts_in_flight: IntGauge::new(
                "delivery_attempts_in_flight",
                "Attempts under way (at most delivery.max_in_flight_total).",
            )
            .expect(DEF),
            waiting_for_permit: IntGauge::new(
                "delivery_waiting_for_permit",
                "Webhooks with a due delivery waiting for a free attempt slot (their host's or the total cap).",
            )
            .expect(DEF),
            index_queued: IntGauge::new(
                "delivery_index_queued_changes",
                "Delivery-index changes (rows, attempts) waiting for the index writer: what delivery reads \
                 lag the log by, and memory a burst holds until they are written.",
            )
            .expect(DEF),
            storage: StorageHealth::new(
                IntGaugeVec::new(
                    Opts::new(
                        "storage_writable",
                        "1 while the store accepts writes, 0 while it refuses them (e.g. a full disk).",
                    ),
                    &["store"],
                )
                .expect(DEF),
                IntCounterVec::new(
                    Opts::new("storage_write_errors_total", "Writes the store refused."),
                    &["store"],
                )
                .expect(DEF),
            ),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.events_published.clone()),
            Box::new(m.attempts.clone()),
            Box::new(m.attempt_seconds.clone()),
            Box::new(m.retries_scheduled.clone()),
            Box::new(m.log_batch_records.clone()),
            Box::new(m.log_flush_seconds.clone()),
            Box::new(m.checkpoint_failures.clone()),
            Box::new(m.backlog.clone()),
            Box::new(m.webhooks.clone()),
            Box::new(m.attempts_in_flight.clone()),
            Box::new(m.waiting_for_permit.clone()),
            Box::new(m.index_queued.clone()),
            Box::new(m.storage.writable_gauge()),
            Box::new(m.storage.errors_counter()),
        ];
        for c in collectors {
            if let Err(e) = m.registry.register(c) {
                tracing::error!(error = %e, "metric registration failed");
            }
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = prometheus::default_registry().register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::debug!(error = %e, "process metrics already registered");
        }
        m
    }

    /// The Prometheus text exposition of every metric, with state gauges read from `projection`.
    pub fn render(&self, projection: &Projection) -> String {
        self.backlog
            .set(i64::try_from(projection.backlog()).unwrap_or(i64::MAX));
        let (mut enabled, mut disabled) = (0i64, 0i64);
        for e in projection.all_webhooks() {
            if e.webhook.disabled {
                disabled += 1;
            } else {
                enabled += 1;
            }
        }
        self.webhooks.with_label_values(&["enabled"]).set(enabled);
        self.webhooks.with_label_values(&["disabled"]).set(disabled);
        if let Some(permits) = self.permits.get() {
            let usage = permits.usage();
            self.attempts_in_flight
                .set(i64::try_from(usage.in_flight).unwrap_or(i64::MAX));
            self.waiting_for_permit
                .set(i64::try_from(usage.waiting).unwrap_or(i64::MAX));
        }
        let mut families = self.registry.gather();
        families.extend(prometheus::default_registry().gather());
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Cluster mode's gauges, as of this node's last lease round: the shards it holds, how far it is behind
/// the stream, the live nodes. (The stream's publish latency is `buildr_log_flush_seconds`: in cluster mode
/// an append is a publish, its quorum acknowledgement and this node reading it back.)
pub fn cluster_text(c: &crate::ClusterStatus) -> String {
    let me = c.nodes.iter().find(|n| n.node_id == c.node_id);
    let mut out = String::new();
    for (name, help, value) in [
        (
            "buildr_cluster_shards_held",
            "Shards whose lease this node holds.",
            me.map_or(0, |n| u64::from(n.shards)),
        ),
        (
            "buildr_cluster_follower_lag_messages",
            "Stream messages this node has still to apply.",
            me.map_or(0, |n| n.lag),
        ),
        (
            "buildr_cluster_nodes",
            "Live nodes this node sees.",
            c.nodes.len() as u64,
        ),
        (
            "buildr_cluster_stream_last_seq",
            "The stream's last message seq.",
            c.stream_last_seq,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_defined_and_rendered() {
        let m = Metrics::new();
        m.events_published.inc();
        m.attempts.with_label_values(&["succeeded"]).inc();
        m.attempt_seconds.observe(0.01);
        let text = m.render(&Projection::default());
        for name in [
            "buildr_events_published_total 1",
            "buildr_delivery_attempts_total{outcome=\"succeeded\"} 1",
            "buildr_delivery_attempt_duration_seconds_bucket",
            "buildr_retries_scheduled_total",
            "buildr_log_batch_records",
            "buildr_log_flush_duration_seconds",
            "buildr_backlog_deliveries 0",
            "buildr_webhooks{state=\"enabled\"} 0",
            "buildr_delivery_attempts_in_flight 0",
            "buildr_delivery_waiting_for_permit 0",
            "buildr_delivery_index_queued_changes 0",
            "buildr_storage_writable{store=\"log\"} 1",
            "buildr_storage_writable{store=\"delivery_index\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
