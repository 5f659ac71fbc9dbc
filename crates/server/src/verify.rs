//! `buildr-webhooks log verify`: reads every record of a stopped data dir, checks it decodes, and
//! rebuilds the projection from the whole log.

use crate::config;
use anyhow::{Context, Result};
use std::path::Path;

pub fn run(config_path: Option<&Path>) -> Result<()> {
    let cfg = config::load(config_path)?;
    if cfg.cluster.enabled() {
        // The nodes may be running: the stream is read into a fresh copy of its own.
        let dir = std::env::temp_dir().join(format!("buildr-verify-{}", std::process::id()));
        let checked = crate::cluster::copy_of_stream(&cfg, &dir).and_then(|log| check(&cfg, &log));
        let _ = std::fs::remove_dir_all(&dir);
        return checked;
    }
    let (log, report) = buildr_log::EventLog::open(&cfg.storage.path).with_context(|| {
        format!(
            "cannot open the log in {} (is the server still running?)",
            cfg.storage.path.display()
        )
    })?;
    if !report.truncated.is_empty() {
        println!("cut torn records at the tail: {:?}", report.truncated);
    }
    check(&cfg, &log)
}

/// Every record decodes, and the checkpoint (if any) plus the tail equals a full replay.
fn check(cfg: &config::Config, log: &dyn buildr_log::LogStore) -> Result<()> {
    let (mut projection, records) =
        buildr_engine::full_replay(log).context("the log does not replay")?;
    // Idempotency keys expire in the live projection as time passes; compare both as of now.
    let ttl = i64::try_from(cfg.ingest.idempotency_ttl.0.as_millis()).unwrap_or(i64::MAX);
    let cutoff = buildr_core::Timestamp::from_millis(
        buildr_core::Timestamp::now()
            .as_millis()
            .saturating_sub(ttl),
    );
    projection.expire_idempotency(cutoff);
    // The checkpoint (if any) plus the tail must give exactly what the full replay gives.
    let (mut restored, rebuilt) =
        buildr_engine::checkpoint::restore(log, |_, _, _| {}).context("the log does not replay")?;
    restored.expire_idempotency(cutoff);
    if let Some(seq) = rebuilt.from_checkpoint {
        if restored != projection {
            anyhow::bail!("the projection checkpoint at seq {seq} plus the log tail differs from a full replay");
        }
        println!(
            "checkpoint at seq {seq} plus {} tail records matches the full replay",
            rebuilt.replayed
        );
    }
    println!(
        "ok: {records} records (last seq {}), {} webhooks, {} undelivered",
        log.last_seq(),
        projection.webhook_count(),
        projection.backlog()
    );
    Ok(())
}
