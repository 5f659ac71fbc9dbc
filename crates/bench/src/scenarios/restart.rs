//! S6: restart with 1M events in the log. The log is built through `/events/batch` (1,000 per batch) with
//! no webhooks, so nothing is delivered. Then (a) kill -9 and time a start to `/readyz` 200, and (b) a
//! graceful SIGTERM stop and the same timing: (b) is the start that can use a projection checkpoint
//! written at shutdown. The baseline is reading every record of the same dir with raw sled.

use super::Ctx;
use crate::api::Api;
use crate::baseline;
use crate::load;
use crate::procs::Server;
use crate::report::Row;
use anyhow::Result;
use std::time::{Duration, Instant};

const BATCH: u64 = 1_000;

/// Starts the stopped `server` again and times it from spawn to `/readyz` 200.
async fn timed_start(server: &mut Server, api_of: impl Fn(&str) -> Api) -> Result<(f64, Api)> {
    let started = Instant::now();
    server.spawn()?;
    let api = api_of(&server.base);
    api.wait_ready(Duration::from_secs(600)).await?;
    Ok((started.elapsed().as_secs_f64(), api))
}

pub async fn s6(ctx: &Ctx) -> Result<Row> {
    let events = ctx.sizes.s6_events;
    let (mut server, api) = ctx.fresh_server("s6", &[]).await?;
    let r = load::run(events.div_ceil(BATCH), 4, Duration::from_secs(600), |b| {
        let first = i64::try_from(b * BATCH).unwrap_or(0);
        let last = i64::try_from(((b + 1) * BATCH).min(events)).unwrap_or(0);
        let api = &api;
        async move { api.publish_batch(first..last).await }
    })
    .await;
    let ingest_rate = (r.ok * BATCH).min(events) as f64 / r.elapsed.as_secs_f64();
    drop(api);
    let api_of = |base: &str| Api::new(crate::api::client(4), base, crate::procs::ADMIN_TOKEN);

    server.kill9()?;
    let (after_kill9, _) = timed_start(&mut server, api_of).await?;
    let stop_s = server.sigterm(Duration::from_secs(120))?.as_secs_f64();
    let (after_sigterm, _) = timed_start(&mut server, api_of).await?;
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.sigterm(Duration::from_secs(120))?;
    let (read_s, records) = baseline::l_disk_read(&server.data_dir)?;

    Ok(Row::new(
        "S6",
        &format!("restart with {events} events in the log, after a graceful stop (checkpoint)"),
        after_sigterm,
        "s to /readyz",
    )
    .baseline("raw sled open + read all", read_s)
    .target("<= 5 s with a checkpoint", after_sigterm <= 5.0)
    .extra("after_sigterm_s", after_sigterm)
    .extra("after_kill9_s", after_kill9)
    .extra("graceful_stop_s", stop_s)
    .extra("events", (r.ok * BATCH).min(events))
    .extra("log_records", records)
    .extra("ingest_events_per_s", ingest_rate)
    .extra("rss_end_bytes", rss_end)
    .extra("errors", r.errors)
    .extra("first_error", r.first_error))
}
