//! S1: durable ingest. 100k events via `/events/batch` (100 per batch) and 20k via `/events`, each by 64
//! concurrent clients; a `202` means durable, so acknowledged events/s is durable events/s.

use super::Ctx;
use crate::load;
use crate::report::Row;
use anyhow::Result;
use std::time::Duration;

pub async fn s1_batch(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    let (mut server, api) = ctx.fresh_server("s1-batch", &[]).await?;
    let batch = sz.s1_batch_size;
    let requests = sz.s1_batch_events / batch;
    let r = load::run(requests, sz.clients, Duration::from_secs(300), |i| {
        let first = i64::try_from(i * batch).unwrap_or(0);
        let api = &api;
        async move { api.publish_batch(first..first + batch as i64).await }
    })
    .await;
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.kill9()?;
    let rate = r.rate() * batch as f64;
    Ok(Row::new(
        "S1-batch",
        &format!(
            "ingest {} events via /events/batch ({batch} per batch), {} clients",
            sz.s1_batch_events, sz.clients
        ),
        rate,
        "events/s",
    )
    .baseline(&format!("L-disk, {batch}/flush"), ctx.baselines.disk_batch)
    .target(">= 50% of L-disk", rate >= 0.5 * ctx.baselines.disk_batch)
    .extra("events", r.ok * batch)
    .extra("errors", r.errors)
    .extra("first_error", r.first_error)
    .extra("rss_end_bytes", rss_end)
    .extra("seconds", r.elapsed.as_secs_f64()))
}

pub async fn s1_single(ctx: &Ctx) -> Result<Row> {
    let sz = &ctx.sizes;
    let (mut server, api) = ctx.fresh_server("s1-single", &[]).await?;
    let r = load::run(
        sz.s1_single_events,
        sz.clients,
        Duration::from_secs(300),
        |i| {
            let api = &api;
            async move { api.publish(i64::try_from(i).unwrap_or(0)).await }
        },
    )
    .await;
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.kill9()?;
    let rate = r.rate();
    Ok(Row::new(
        "S1-single",
        &format!(
            "ingest {} events via /events, {} clients",
            sz.s1_single_events, sz.clients
        ),
        rate,
        "events/s",
    )
    .baseline(
        &format!("L-disk, {}/flush", sz.clients),
        ctx.baselines.disk_single,
    )
    .target(">= 15,000 events/s", rate >= 15_000.0)
    .extra("events", r.ok)
    .extra("errors", r.errors)
    .extra("first_error", r.first_error)
    .extra("rss_end_bytes", rss_end)
    .extra("seconds", r.elapsed.as_secs_f64()))
}
