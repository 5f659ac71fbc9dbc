//! S4: a steady 1,000 events/s for 30 s to 10 webhooks; latency from the start of each publish request
//! (driver clock) to its arrival at the receiver (receiver clock; both CLOCK_REALTIME on this machine).
//! The baseline is the same measurement for signed POSTs sent straight to the receiver at the same rate.

use super::{Ctx, NO_RATE_LIMIT};
use crate::baseline;
use crate::load;
use crate::report::Row;
use crate::stats::summarize;
use anyhow::Result;
use std::time::{Duration, Instant};

pub async fn s4(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    let (_, base_lat) = baseline::l_http_latency(
        &ctx.receiver,
        sz.s4_per_second * sz.s4_baseline_seconds,
        sz.s4_per_second,
    )
    .await?;
    let base = summarize(base_lat);
    let fsync = summarize(baseline::l_disk_flush_latencies(
        sz.s4_per_second.min(1_000),
    )?);

    let (mut server, api) = ctx.fresh_server("s4", &[]).await?;
    for n in 0..sz.s4_webhooks {
        api.create_webhook(&ctx.url("lat", n), NO_RATE_LIMIT)
            .await?;
    }
    ctx.receiver.reset().await?;
    let events = sz.s4_per_second * sz.s4_seconds;
    let (published, starts) = load::paced(events, sz.s4_per_second, |i| {
        let api = api.clone();
        async move { api.publish(i64::try_from(i).unwrap_or(0)).await }
    })
    .await;
    let want = published.ok * sz.s4_webhooks;
    let (done, delivered) = ctx
        .receiver
        .wait_hook(want, Instant::now() + Duration::from_secs(60))
        .await?;
    let arrivals = ctx.receiver.latencies().await?;
    // Where the time goes inside the server: its log flushes (group commit + fsync) and attempts.
    let metrics = api.metrics().await.unwrap_or_default();
    let flush_mean_ms = metrics
        .mean("buildr_log_flush_duration_seconds")
        .map(|s| s * 1e3);
    let batch_mean = metrics.mean("buildr_log_batch_records");
    let attempt_mean_ms = metrics
        .mean("buildr_delivery_attempt_duration_seconds")
        .map(|s| s * 1e3);
    server.kill9()?;
    let ours = summarize(load::latencies(&starts, &arrivals));
    Ok(Row::new(
        "S4",
        &format!(
            "steady {}/s for {} s to {} webhooks: publish start to receipt, p99",
            sz.s4_per_second, sz.s4_seconds, sz.s4_webhooks
        ),
        ours.p99_ms,
        "ms",
    )
    .baseline("L-http p99, same rate", base.p99_ms)
    .target("p99 <= 5 ms", ours.p99_ms <= 5.0 && done.is_some())
    .extra("p50_ms", ours.p50_ms)
    .extra("p99_ms", ours.p99_ms)
    .extra("p999_ms", ours.p999_ms)
    .extra("max_ms", ours.max_ms)
    .extra("samples", ours.count)
    .extra("baseline_p50_ms", base.p50_ms)
    .extra("baseline_p999_ms", base.p999_ms)
    .extra("flush_p50_ms", fsync.p50_ms)
    .extra("flush_p99_ms", fsync.p99_ms)
    .extra("server_flush_mean_ms", flush_mean_ms)
    .extra("server_batch_mean_records", batch_mean)
    .extra("server_attempt_mean_ms", attempt_mean_ms)
    .extra("delivered", delivered)
    .extra("complete", done.is_some())
    .extra("publish_seconds", published.elapsed.as_secs_f64())
    .extra("errors", published.errors)
    .extra("first_error", published.first_error))
}
