//! End-to-end delivery: S2 (one webhook, publishing and delivering at once), S3 (fan-out to 100
//! webhooks) and S7 (S3's load on 50 healthy webhooks while 50 others time out).

use super::{Ctx, NO_RATE_LIMIT};
use crate::api::Api;
use crate::load;
use crate::report::Row;
use anyhow::Result;
use std::time::{Duration, Instant};

/// How long a scenario may wait for its deliveries after publishing.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);

/// Publishes `events` events in batches of 100, 4 requests at a time.
async fn publish_in_batches(api: &Api, events: u64) -> load::LoadResult {
    let batches = events.div_ceil(100);
    load::run(batches, 4, Duration::from_secs(120), |b| {
        let first = i64::try_from(b * 100).unwrap_or(0);
        let last = i64::try_from(((b + 1) * 100).min(events)).unwrap_or(0);
        async move { api.publish_batch(first..last).await }
    })
    .await
}

pub async fn s2(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    let (mut server, api) = ctx.fresh_server("s2", &[]).await?;
    api.create_webhook(&ctx.url("hook", 0), NO_RATE_LIMIT)
        .await?;
    ctx.receiver.reset().await?;
    let cpu0 = server.cpu_seconds()?;
    let started = Instant::now();
    let published = load::run(sz.s2_events, sz.clients, Duration::from_secs(300), |i| {
        let api = &api;
        async move { api.publish(i64::try_from(i).unwrap_or(0)).await }
    })
    .await;
    let (done, delivered) = ctx
        .receiver
        .wait_hook(published.ok, started + DELIVERY_DEADLINE)
        .await?;
    let cpu = server.cpu_seconds()?.since(cpu0);
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.kill9()?;
    let elapsed = done.unwrap_or_else(Instant::now) - started;
    let rate = delivered.min(published.ok) as f64 / elapsed.as_secs_f64();
    let base = ctx.baselines.http_one;
    Ok(Row::new(
        "S2",
        &format!(
            "1 webhook; {} clients publish {} events while delivery runs",
            sz.clients, sz.s2_events
        ),
        rate,
        "events/s",
    )
    .baseline("L-http, 32 in flight", base)
    .target(">= 50% of L-http", rate >= 0.5 * base)
    .extra("published", published.ok)
    .extra("delivered", delivered)
    .extra("complete", done.is_some())
    .extra("publish_events_per_s", published.rate())
    .extra("server_cpu_s", cpu.process)
    .extra("server_main_thread_cpu_s", cpu.main_thread)
    .extra(
        "server_cpu_s_per_1000_events",
        cpu.process * 1000.0 / published.ok.max(1) as f64,
    )
    .extra("rss_end_bytes", rss_end)
    .extra("errors", published.errors)
    .extra("first_error", published.first_error)
    .extra("seconds", elapsed.as_secs_f64()))
}

/// Fan-out: `healthy` webhooks on `/hook/*` and `bad` on `/slow/*`; publish, wait for every healthy
/// delivery.
async fn fan_out(ctx: &Ctx, name: &str, healthy: u64, bad: u64) -> Result<FanOut> {
    let events = ctx.sizes.s3_events;
    let (mut server, api) = ctx.fresh_server(name, &[]).await?;
    ctx.create_webhooks(&api, healthy + bad, NO_RATE_LIMIT, |n| {
        if n < healthy {
            ctx.url("hook", n)
        } else {
            ctx.url("slow", n)
        }
    })
    .await?;
    ctx.receiver.reset().await?;
    let cpu0 = server.cpu_seconds()?;
    let started = Instant::now();
    let published = publish_in_batches(&api, events).await;
    let events_in = if published.errors == 0 {
        events
    } else {
        (published.ok * 100).min(events)
    };
    let want = events_in * healthy;
    let (done, delivered) = ctx
        .receiver
        .wait_hook(want, started + DELIVERY_DEADLINE)
        .await?;
    let slow = ctx.receiver.stats().await?.slow;
    let cpu = server.cpu_seconds()?.since(cpu0);
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.kill9()?;
    let elapsed = done.unwrap_or_else(Instant::now) - started;
    Ok(FanOut {
        rate: delivered.min(want) as f64 / elapsed.as_secs_f64(),
        delivered,
        complete: done.is_some(),
        slow,
        published,
        cpu,
        rss_end,
        seconds: elapsed.as_secs_f64(),
    })
}

struct FanOut {
    /// Deliveries per second to the healthy webhooks.
    rate: f64,
    delivered: u64,
    complete: bool,
    /// Requests the timing-out receiver saw.
    slow: u64,
    published: load::LoadResult,
    cpu: crate::procs::CpuTime,
    /// The server's VmRSS once every delivery arrived.
    rss_end: u64,
    seconds: f64,
}

impl FanOut {
    fn extras(self, row: Row) -> Row {
        row.extra("delivered", self.delivered)
            .extra("complete", self.complete)
            .extra("seconds", self.seconds)
            .extra("server_cpu_s", self.cpu.process)
            .extra("server_main_thread_cpu_s", self.cpu.main_thread)
            .extra("rss_end_bytes", self.rss_end)
            .extra("errors", self.published.errors)
            .extra("first_error", self.published.first_error)
    }
}

pub async fn s3(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    let f = fan_out(ctx, "s3", sz.s3_webhooks, 0).await?;
    let rate = f.rate;
    // The ceiling for any sender: the better of the two concurrencies measured.
    let base = ctx.baselines.http_many.max(ctx.baselines.http_one);
    let row = Row::new(
        "S3",
        &format!(
            "fan-out: {} webhooks x {} events",
            sz.s3_webhooks, sz.s3_events
        ),
        rate,
        "deliveries/s",
    )
    .baseline("L-http, best of 32/256 in flight", base)
    .target(">= 50% of L-http", rate >= 0.5 * base);
    Ok(f.extras(row))
}

pub async fn s7(ctx: &Ctx, s3_rate: f64) -> Result<Row> {
    let sz = &ctx.sizes;
    let half = sz.s3_webhooks / 2;
    let f = fan_out(ctx, "s7", half, sz.s3_webhooks - half).await?;
    let (rate, slow) = (f.rate, f.slow);
    let mut row = Row::new(
        "S7",
        &format!(
            "S3's events to {half} healthy webhooks while {} time out",
            sz.s3_webhooks - half
        ),
        rate,
        "deliveries/s",
    );
    if s3_rate > 0.0 {
        row = row
            .baseline("S3, same run", s3_rate)
            .target(">= 90% of S3", rate >= 0.9 * s3_rate);
    }
    Ok(f.extras(row.extra("timed_out_requests", slow)))
}
