//! S4: a steady 1,000 events/s for 30 s to 10 webhooks, and S4a: 500 events/s for 20 s to one webhook (the
//! rate of the side-by-side comparison with Svix); latency from the start of each publish request (driver
//! clock) to its arrival at the receiver (receiver clock; both CLOCK_REALTIME on this machine). The
//! baseline is the same measurement for signed POSTs sent straight to the receiver at the same rate.

use super::{Ctx, NO_RATE_LIMIT};
use crate::baseline;
use crate::load;
use crate::report::Row;
use crate::stats::summarize;
use anyhow::Result;
use std::time::{Duration, Instant};

/// One open-loop latency run: `per_second` events for `seconds` to `webhooks` webhooks.
struct Steady {
    id: &'static str,
    per_second: u64,
    seconds: u64,
    webhooks: u64,
    /// The target on p99, in ms.
    p99_target_ms: f64,
}

pub async fn s4(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    steady(
        ctx,
        Steady {
            id: "S4",
            per_second: sz.s4_per_second,
            seconds: sz.s4_seconds,
            webhooks: sz.s4_webhooks,
            p99_target_ms: 5.0,
        },
    )
    .await
}

pub async fn s4a(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    steady(
        ctx,
        Steady {
            id: "S4a",
            per_second: sz.s4a_per_second,
            seconds: sz.s4a_seconds,
            webhooks: 1,
            p99_target_ms: 1.0,
        },
    )
    .await
}

async fn steady(ctx: &Ctx, run: Steady) -> Result<Row> {
    let sz = &ctx.sizes;
    let (_, base_lat) = baseline::l_http_latency(
        &ctx.receiver,
        run.per_second * sz.s4_baseline_seconds,
        run.per_second,
    )
    .await?;
    let base = summarize(base_lat);
    let fsync = summarize(baseline::l_disk_flush_latencies(run.per_second.min(1_000))?);

    let (mut server, api) = ctx.fresh_server(&run.id.to_ascii_lowercase(), &[]).await?;
    for n in 0..run.webhooks {
        api.create_webhook(&ctx.url("lat", n), NO_RATE_LIMIT)
            .await?;
    }
    ctx.receiver.reset().await?;
    let probe = baseline::DiskProbe::start(&ctx.work_dir)?;
    let cpu0 = server.cpu_seconds()?;
    let events = run.per_second * run.seconds;
    let (published, starts) = load::paced(events, run.per_second, |i| {
        let api = api.clone();
        async move { api.publish(i64::try_from(i).unwrap_or(0)).await }
    })
    .await;
    let want = published.ok * run.webhooks;
    let (done, delivered) = ctx
        .receiver
        .wait_hook(want, Instant::now() + Duration::from_secs(60))
        .await?;
    let cpu = server.cpu_seconds()?.since(cpu0);
    let disk = probe.finish()?;
    let disk_stalls = disk.iter().filter(|&&ns| ns > 25_000_000).count();
    let disk = summarize(disk);
    let arrivals = ctx.receiver.latencies().await?;
    // Where the time goes inside the server: its log flushes (group commit + fsync) and attempts.
    let metrics = api.metrics().await.unwrap_or_default();
    let flush_mean_ms = metrics
        .mean("buildr_log_flush_duration_seconds")
        .map(|s| s * 1e3);
    let flush_p99_bound_ms = metrics
        .quantile_bound("buildr_log_flush_duration_seconds", 0.99)
        .map(|s| s * 1e3);
    let batch_mean = metrics.mean("buildr_log_batch_records");
    let attempt_p99_bound_ms = metrics
        .quantile_bound("buildr_delivery_attempt_duration_seconds", 0.99)
        .map(|s| s * 1e3);
    let attempt_mean_ms = metrics
        .mean("buildr_delivery_attempt_duration_seconds")
        .map(|s| s * 1e3);
    // Stalls: syncs and attempts that took longer than 25 ms (one such stall at S4's 10,000 deliveries/s
    // holds up hundreds of samples).
    let flushes_over_25ms = metrics.count_above("buildr_log_flush_duration_seconds", "0.025");
    let attempts_over_25ms =
        metrics.count_above("buildr_delivery_attempt_duration_seconds", "0.025");
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.kill9()?;
    if let Some(dir) = &ctx.latency_dump {
        dump_timeline(dir, run.id, &load::timeline(&starts, &arrivals))?;
    }
    let ours = summarize(load::latencies(&starts, &arrivals));
    let target = format!("p99 <= {} ms", run.p99_target_ms);
    Ok(Row::new(
        run.id,
        &format!(
            "steady {}/s for {} s to {} webhook{}: publish start to receipt, p99",
            run.per_second,
            run.seconds,
            run.webhooks,
            if run.webhooks == 1 { "" } else { "s" }
        ),
        ours.p99_ms,
        "ms",
    )
    .baseline("L-http p99, same rate", base.p99_ms)
    .target(&target, ours.p99_ms <= run.p99_target_ms && done.is_some())
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
    .extra("server_flush_p99_bucket_ms", flush_p99_bound_ms)
    .extra("server_attempt_p99_bucket_ms", attempt_p99_bound_ms)
    .extra("server_flushes_over_25ms", flushes_over_25ms)
    .extra("disk_probe_syncs", disk.count)
    .extra("disk_probe_syncs_over_25ms", disk_stalls)
    .extra("disk_probe_max_ms", disk.max_ms)
    .extra("server_attempts_over_25ms", attempts_over_25ms)
    .extra("server_cpu_s", cpu.process)
    .extra(
        "server_cpu_s_per_1000_events",
        cpu.process * 1000.0 / published.ok.max(1) as f64,
    )
    .extra("delivered", delivered)
    .extra("complete", done.is_some())
    .extra("rss_end_bytes", rss_end)
    .extra("publish_seconds", published.elapsed.as_secs_f64())
    .extra("errors", published.errors)
    .extra("first_error", published.first_error))
}

/// Writes `DIR/<id>.tsv`: per sample, its publish start (ms since the Unix epoch) and latency in ms.
fn dump_timeline(dir: &std::path::Path, id: &str, samples: &[(i64, i64)]) -> Result<()> {
    use anyhow::Context;
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = String::from("start_unix_ms\tlatency_ms\n");
    for &(start, latency) in samples {
        let _ = writeln!(
            text,
            "{:.3}\t{:.3}",
            start as f64 / 1e6,
            latency as f64 / 1e6
        );
    }
    let path = dir.join(format!("{id}.tsv"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}
