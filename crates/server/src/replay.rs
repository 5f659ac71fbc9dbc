//! `buildr-webhooks replay`: records a replay in a stopped data dir; the next `serve` carries it out. In
//! cluster mode it appends the replay to the cluster's stream (the nodes may be running).
//! It queues exactly what `POST /webhooks/{id}/replay` would (the same planner).

use crate::config;
use anyhow::{bail, Context, Result};
use buildr_core::{Record, ReplayId, Timestamp, WebhookId};
use buildr_engine::ReplayRange;
use buildr_log::{Group, LogStore};
use std::path::Path;

pub struct Args<'a> {
    pub config: Option<&'a Path>,
    pub webhook: &'a str,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub only_failed: bool,
}

fn time(flag: &str, raw: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(raw).with_context(|| {
        format!("{flag} must be an RFC 3339 time, e.g. 2026-11-29T13:46:14Z (got `{raw}`)")
    })
}

pub fn run(args: Args<'_>) -> Result<()> {
    let cfg = config::load(args.config)?;
    let webhook: WebhookId = args
        .webhook
        .parse()
        .context("--webhook must be a webhook id (wh_…)")?;
    let range = match (args.since, args.from_seq) {
        (Some(s), None) => ReplayRange::Time {
            since: time("--since", s)?,
            until: args.until.map(|u| time("--until", u)).transpose()?,
        },
        (None, Some(from)) => ReplayRange::Seq {
            from,
            to: args.to_seq,
        },
        _ => bail!(
            "give either --since (and optionally --until) or --from-seq (and optionally --to-seq)"
        ),
    };
    if cfg.cluster.enabled() {
        // The nodes may be running: the stream is read into a fresh copy of its own (with the delivery
        // index built, for --only-failed), and the replay is appended to the stream, where the node
        // owning the webhook picks it up at once.
        let dir = std::env::temp_dir().join(format!("buildr-replay-{}", std::process::id()));
        let done = crate::cluster::copy_of_stream(&cfg, &dir).and_then(|log| {
            let (projection, _) =
                buildr_engine::indexer::catch_up(&log).context("the stream does not replay")?;
            let (id, n) = record(&log, &projection, &webhook, range, args.only_failed)?;
            println!(
                "replay {id} recorded in the cluster's stream {:?}: {n} events queued again for {webhook}; \
                 the node that owns it delivers them",
                cfg.cluster.stream
            );
            Ok(())
        });
        let _ = std::fs::remove_dir_all(&dir);
        return done;
    }
    let (log, _) = buildr_log::EventLog::open(&cfg.storage.path).with_context(|| {
        format!(
            "cannot open the log in {} (stop the server first)",
            cfg.storage.path.display()
        )
    })?;
    let (projection, _) = buildr_engine::checkpoint::restore(&log, |_, _, _| {})
        .context("the log does not replay")?;
    let (id, n) = record(&log, &projection, &webhook, range, args.only_failed)?;
    println!("replay {id} recorded: {n} events queued again for {webhook}; the next `serve` delivers them");
    Ok(())
}

/// Plans the replay on `log` as `POST /webhooks/{id}/replay` would and appends its record.
fn record(
    log: &dyn LogStore,
    projection: &buildr_engine::Projection,
    webhook: &WebhookId,
    range: ReplayRange,
    only_failed: bool,
) -> Result<(ReplayId, usize)> {
    let last = log.last_seq();
    let bar = indicatif::ProgressBar::new(last);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scanning the log {bar:40} {pos}/{len} records ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let seqs = buildr_engine::replay::plan(log, projection, webhook, range, only_failed, |seq| {
        if seq % 4096 == 0 {
            bar.set_position(seq);
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    bar.finish_and_clear();
    let id = ReplayId::generate();
    let n = seqs.len();
    log.append_batch(
        vec![Record::ReplayRequested {
            id: id.clone(),
            webhook: webhook.clone(),
            seqs,
            at: Timestamp::now(),
        }],
        &[Group::at(0)],
    )
    .map_err(|refused| refused.error)
    .context("cannot write the replay to the log")?;
    Ok((id, n))
}
