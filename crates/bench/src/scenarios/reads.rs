//! S8: reads that must not scan the log (issue 10, point 6). One server, one log of `s8_events` events
//! (1,000,000 in the full run):
//!
//! - the busy account (`acc_default`, the admin token) publishes almost all of them through
//!   `/events/batch` (1,000 per batch, 4 requests at a time); one in ten is a `contact.update` that a
//!   webhook of that account receives, so attempt records sit between the events as in a real log;
//! - a small account, made with `POST /accounts`, publishes `s8_small_events` events with its own API key,
//!   spread evenly through the log.
//!
//! Then, one request at a time:
//!
//! - **S8-events**: `GET /events?after_seq=0&limit=100` with the small account's key (every one of its
//!   events, found among the busy account's); p50/p99 per request.
//! - **S8-replay**: `POST /webhooks/{id}/replay` for a webhook of the busy account, `since`/`until` the
//!   `created_at` of the batches at 45 % and 55 % of the publishing, i.e. the middle tenth of the log by
//!   time (the whole log is written in seconds, so "one hour" is given as a share of the log); p50/max.
//!   The webhook is disabled, so the replayed events wait: the figure is the request (planning the replay
//!   and making it durable), not the deliveries after it.
//!
//! The baseline of both: the server stopped, its log read and decoded record by record with raw sled,
//! picking out the same events (what both reads did before the events index). The scan's counts check
//! the server's answers.

use super::{Ctx, NO_RATE_LIMIT};
use crate::api::{Api, Method};
use crate::baseline::{self, LogScan};
use crate::load;
use crate::report::Row;
use crate::stats::{summarize, Latency};
use anyhow::{Context, Result};
use buildr_core::{AccountId, Timestamp};
use std::cell::RefCell;
use std::time::{Duration, Instant};

const BATCH: u64 = 1_000;
/// One busy event in this many is a `contact.update`, delivered to the attempts webhook.
const DELIVERED_EVERY: u64 = 10;

/// `POST /events/batch` body of the busy account's events numbered `ids`.
fn busy_batch(ids: std::ops::Range<u64>) -> String {
    let events: Vec<String> = ids
        .map(|i| {
            let kind = if i % DELIVERED_EVERY == 0 {
                "contact.update"
            } else {
                "contact.create"
            };
            format!(
                r#"{{"type":"{kind}","data":{{"id":{i},"url":"https://app.buildr.example/contacts/{i}"}}}}"#
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// The log S8 reads: what was published and the replay window.
struct Built {
    events: u64,
    delivered: u64,
    small_account: AccountId,
    small_api: Api,
    /// `created_at` of the batches at 45 % and 55 % of the publishing (RFC 3339, as the server wrote them).
    window: (String, String),
    publish_seconds: f64,
}

async fn build(ctx: &Ctx, api: &Api, base: &str) -> Result<Built> {
    let sz = &ctx.sizes;
    let account = api
        .send_expecting(
            Method::POST,
            "/accounts",
            Some(r#"{"account":{"name":"small"}}"#.to_owned()),
            201,
            "creating the small account",
        )
        .await?;
    let small_account: AccountId = account["account"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("the account answer has no account.id")?;
    let key = account["api_key"]
        .as_str()
        .context("the account answer has no api_key")?;
    let small_api = Api::new(crate::api::client(4), base, key);
    api.send_expecting(
        Method::POST,
        "/webhooks",
        Some(format!(
            r#"{{"webhook":{{"url":"{}","filter_types":["contact.update"],"rate_limit":{NO_RATE_LIMIT}}}}}"#,
            ctx.url("hook", 0)
        )),
        201,
        "creating the attempts webhook",
    )
    .await?;
    ctx.receiver.reset().await?;

    let batches = sz.s8_events.div_ceil(BATCH).max(1);
    let small = sz.s8_small_events;
    let busy = sz.s8_events.saturating_sub(small);
    let created_at: RefCell<Vec<Option<String>>> =
        RefCell::new(vec![None; usize::try_from(batches).unwrap_or(0)]);
    let started = Instant::now();
    let r = load::run(batches, 4, Duration::from_secs(900), |b| {
        let (created_at, small_api) = (&created_at, &small_api);
        async move {
            // The small account's events whose even share of the log falls in this batch.
            for k in (0..small).filter(|k| k * batches / small.max(1) == b) {
                small_api.publish(i64::try_from(k).unwrap_or(0)).await?;
            }
            let (first, last) = ((b * BATCH).min(busy), ((b + 1) * BATCH).min(busy));
            if first == last {
                return Ok(());
            }
            let answer = api
                .send_expecting(
                    Method::POST,
                    "/events/batch",
                    Some(busy_batch(first..last)),
                    202,
                    "publishing a batch",
                )
                .await?;
            let at = answer["events"][0]["created_at"]
                .as_str()
                .map(str::to_owned);
            if let Some(slot) = created_at.borrow_mut().get_mut(usize::try_from(b)?) {
                *slot = at;
            }
            Ok(())
        }
    })
    .await;
    let publish_seconds = started.elapsed().as_secs_f64();
    if r.errors > 0 || r.ok < batches {
        anyhow::bail!(
            "published {} of {batches} batches: {}",
            r.ok,
            r.first_error
                .as_deref()
                .unwrap_or("stopped by the time limit")
        );
    }
    let want = busy.div_ceil(DELIVERED_EVERY);
    let (_, delivered) = ctx
        .receiver
        .wait_hook(want, Instant::now() + Duration::from_secs(600))
        .await?;
    let at = created_at.into_inner();
    // The first `created_at` at or after `share` % of the batches that is later than `after` (the same
    // RFC 3339 form throughout, so the strings sort by time).
    let pick = |share: u64, after: &str| {
        let b = usize::try_from(batches * share / 100).unwrap_or(0);
        at.iter()
            .skip(b)
            .flatten()
            .find(|t| t.as_str() > after)
            .cloned()
    };
    let since = pick(45, "").context("no created_at at 45 % of the log")?;
    let until = pick(55, &since).context("no created_at after 55 % of the log")?;
    let window = (since, until);
    Ok(Built {
        events: busy + small,
        delivered,
        small_account,
        small_api,
        window,
        publish_seconds,
    })
}

/// Times `n` requests made one after another by `op`; each must succeed.
async fn timed<F, Fut>(n: u64, op: F) -> Result<Latency>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut nanos = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        let started = Instant::now();
        op().await?;
        nanos.push(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX));
    }
    Ok(summarize(nanos))
}

/// `GET /events?after_seq=0&limit=100` as `api`; fails unless it lists `want` events.
async fn list_first_page(api: &Api, want: u64) -> Result<()> {
    let v = api
        .send_expecting(
            Method::GET,
            "/events?after_seq=0&limit=100",
            None,
            200,
            "GET /events",
        )
        .await?;
    let got = v["events"].as_array().map_or(0, Vec::len) as u64;
    anyhow::ensure!(
        got == want,
        "GET /events listed {got} events, expected {want}"
    );
    Ok(())
}

pub async fn s8(ctx: &Ctx) -> Result<Vec<Row>> {
    let sz = &ctx.sizes;
    let (mut server, api) = ctx.fresh_server("s8", &[]).await?;
    let built = build(ctx, &api, &server.base.clone()).await?;

    let small_want = sz.s8_small_events.min(100);
    let small = timed(sz.s8_gets, || list_first_page(&built.small_api, small_want)).await?;
    // The same page of the busy account: the cost of reading 100 events, nothing skipped.
    let busy = timed(sz.s8_gets, || list_first_page(&api, 100)).await?;

    let replay_hook = api
        .create_webhook(&ctx.url("hook", 1), NO_RATE_LIMIT)
        .await?;
    api.send_expecting(
        Method::PATCH,
        &format!("/webhooks/{replay_hook}"),
        Some(r#"{"webhook":{"disabled":true}}"#.to_owned()),
        200,
        "disabling the replay webhook",
    )
    .await?;
    let (since, until) = &built.window;
    let body = format!(r#"{{"since":"{since}","until":"{until}"}}"#);
    // Each replay request timed alone; around it, the server's log flush time (append + fsync) from its
    // metrics: the part of the request that makes the replay durable rather than finds its events
    // (nothing else writes meanwhile).
    let flush_total = |m: &crate::api::ServerMetrics| {
        m.get("buildr_log_flush_duration_seconds_sum")
            .unwrap_or(0.0)
    };
    let (mut replayed, mut nanos, mut flushed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sz.s8_replays {
        actix_rt::time::sleep(Duration::from_millis(sz.s8_replay_gap_ms)).await;
        let before = flush_total(&api.metrics().await?);
        let started = Instant::now();
        let v = api
            .send_expecting(
                Method::POST,
                &format!("/webhooks/{replay_hook}/replay"),
                Some(body.clone()),
                202,
                "replaying",
            )
            .await?;
        nanos.push(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX));
        replayed.push(v["replay"]["events"].as_u64().unwrap_or(0));
        flushed.push((flush_total(&api.metrics().await?) - before) * 1e3);
    }
    let replay_each: Vec<f64> = nanos.iter().map(|&n| n as f64 / 1e6).collect();
    let replay = summarize(nanos);
    let rss_end = server.rss_bytes().unwrap_or(0);
    server.sigterm(Duration::from_secs(120))?;

    let window = (
        Timestamp::parse_rfc3339(since).context("the window start is not RFC 3339")?,
        Timestamp::parse_rfc3339(until).context("the window end is not RFC 3339")?,
    );
    let scan = baseline::l_disk_scan(
        &server.data_dir,
        &built.small_account,
        &AccountId::default_account(),
        window,
    )?;
    let replay_events = replayed.first().copied().unwrap_or(0);
    Ok(vec![
        events_row(ctx, &built, &small, &busy, &scan).extra("rss_end_bytes", rss_end),
        replay_row(ctx, &built, &replay, replay_events, &scan)
            .extra("rss_end_bytes", rss_end)
            .extra("replay_events_each", replayed)
            .extra("replay_ms_each", replay_each)
            .extra("replay_server_flush_ms_each", flushed)
            .extra("replay_gap_ms", sz.s8_replay_gap_ms)
            .extra("window_since", since.as_str())
            .extra("window_until", until.as_str()),
    ])
}

/// The figures every S8 row carries about the log it read.
fn with_log(row: Row, built: &Built, scan: &LogScan) -> Row {
    row.extra("log_events", built.events)
        .extra("log_records", scan.records)
        .extra("attempts_delivered", built.delivered)
        .extra("publish_seconds", built.publish_seconds)
        .extra("baseline_scan_ms", scan.secs * 1e3)
}

fn events_row(ctx: &Ctx, built: &Built, small: &Latency, busy: &Latency, scan: &LogScan) -> Row {
    let sz = &ctx.sizes;
    let row = Row::new(
        "S8-events",
        &format!(
            "GET /events (limit 100) of an account with {} events among {} in the log, p99 of {} requests",
            sz.s8_small_events, built.events, sz.s8_gets
        ),
        small.p99_ms,
        "ms",
    )
    .baseline("raw sled scan + decode of the log", scan.secs * 1e3)
    .target("p99 <= 50 ms", small.p99_ms <= 50.0)
    .extra("p50_ms", small.p50_ms)
    .extra("p99_ms", small.p99_ms)
    .extra("max_ms", small.max_ms)
    .extra("requests", small.count)
    .extra("busy_account_p50_ms", busy.p50_ms)
    .extra("busy_account_p99_ms", busy.p99_ms)
    .extra("small_account_events", scan.account_events);
    with_log(row, built, scan)
}

fn replay_row(ctx: &Ctx, built: &Built, replay: &Latency, events: u64, scan: &LogScan) -> Row {
    let sz = &ctx.sizes;
    let row = Row::new(
        "S8-replay",
        &format!(
            "POST /webhooks/{{id}}/replay of the middle 10% of a {}-event log by time ({events} events), max of {}",
            built.events, sz.s8_replays
        ),
        replay.max_ms,
        "ms",
    )
    .baseline("raw sled scan + decode of the log", scan.secs * 1e3)
    .target("max <= 1 s", replay.max_ms <= 1_000.0)
    .extra("p50_ms", replay.p50_ms)
    .extra("max_ms", replay.max_ms)
    .extra("requests", replay.count)
    .extra("replay_events", events)
    .extra("window_events_in_log", scan.window_events);
    with_log(row, built, scan)
}
