//! S5: 100,000 idle webhooks (created through the API, 64 requests at a time); the server's resident
//! memory per webhook (VmRSS after − before, ÷ count), then one event that matches all of them, the
//! time until the receiver has every delivery and the server's peak VmRSS meanwhile (sampled every 10 ms).

use super::Ctx;
use crate::report::Row;
use anyhow::Result;
use std::time::{Duration, Instant};

/// Lets the allocator and the actors settle before reading VmRSS.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn s5(ctx: &Ctx) -> Result<Row> {
    let n = ctx.sizes.s5_webhooks;
    let (mut server, api) = ctx.fresh_server("s5", &[]).await?;
    actix_rt::time::sleep(SETTLE).await;
    let before = server.rss_bytes()?;
    let created = ctx
        .create_webhooks(&api, n, 60, |i| ctx.url("hook", i % 1000))
        .await?;
    actix_rt::time::sleep(SETTLE).await;
    let after = server.rss_bytes()?;
    let per_webhook = after.saturating_sub(before) as f64 / n as f64;

    ctx.receiver.reset().await?;
    // The burst's peak, sampled every 10 ms from the publish until the last delivery arrived.
    let sampler = server.sample_rss()?;
    let started = Instant::now();
    api.publish(1).await?;
    let (done, delivered) = ctx
        .receiver
        .wait_hook(n, started + Duration::from_secs(300))
        .await?;
    let deliver_all = done.unwrap_or_else(Instant::now) - started;
    let rss_end = server.rss_bytes().unwrap_or(0);
    let rss_peak = sampler.peak().max(rss_end);
    // The server's own count of attempts: its successful ones must equal the webhook count (more means a
    // delivery was sent twice).
    let metrics = api.metrics().await.unwrap_or_default();
    let attempts = |outcome: &str| {
        metrics.get(&format!(
            r#"buildr_delivery_attempts_total{{outcome="{outcome}"}}"#
        ))
    };
    // A graceful stop, so a profiler wrapped around the server (valgrind massif) can write its output.
    server.sigterm(Duration::from_secs(60))?;
    let deliver_s = deliver_all.as_secs_f64();
    Ok(Row::new(
        "S5",
        &format!("{n} idle webhooks, then one event that matches all: RSS per webhook"),
        per_webhook,
        "bytes/webhook",
    )
    .target(
        "<= 2 KiB/webhook and all delivered within 60 s",
        per_webhook <= 2048.0 && done.is_some() && deliver_s <= 60.0,
    )
    .extra("bytes_per_webhook", per_webhook)
    .extra("webhooks", n)
    .extra("rss_before", before)
    .extra("rss_after", after)
    .extra("rss_after_delivery", rss_end)
    .extra("rss_end_bytes", rss_end)
    .extra("rss_peak_bytes", rss_peak)
    .extra("create_per_s", created.rate())
    .extra("deliver_all_s", deliver_s)
    .extra("delivered", delivered)
    .extra("server_attempts_succeeded", attempts("succeeded"))
    .extra("server_attempts_retrying", attempts("retrying"))
    .extra("complete", done.is_some()))
}
