//! Replays: which events of the log a replay request covers. Shared by the API (`POST …/replay`) and the
//! offline `buildr-webhooks replay` command, so both queue exactly the same events.

use crate::error::EngineError;
use crate::projection::Projection;
use buildr_core::webhook::Webhook;
use buildr_core::{FieldError, Record, Timestamp, WebhookId};
use buildr_log::{Entries, LogStore};

/// The most events one replay may queue; a larger range is refused (split it).
pub const MAX_REPLAY_EVENTS: usize = 1_000_000;

/// The part of the log a replay covers: `since`/`from` inclusive, `until`/`to` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRange {
    Time {
        since: Timestamp,
        until: Option<Timestamp>,
    },
    Seq {
        from: u64,
        to: Option<u64>,
    },
}

impl ReplayRange {
    fn seq_bounds(self) -> (u64, u64) {
        match self {
            ReplayRange::Seq { from, to } => (from.max(1), to.unwrap_or(u64::MAX)),
            ReplayRange::Time { .. } => (1, u64::MAX),
        }
    }

    fn admits(self, created_at: Timestamp) -> bool {
        match self {
            ReplayRange::Time { since, until } => {
                created_at >= since && until.is_none_or(|u| created_at < u)
            }
            ReplayRange::Seq { .. } => true,
        }
    }
}

/// The seqs a replay of `webhook` over `range` queues: the events of its account that its filter matches,
/// or with `only_failed` those whose delivery to it is `failed`. `progress` is called with each seq read.
pub fn plan(
    log: &dyn LogStore,
    projection: &Projection,
    webhook: &WebhookId,
    range: ReplayRange,
    only_failed: bool,
    progress: impl FnMut(u64),
) -> Result<Vec<u64>, EngineError> {
    let entry = projection
        .webhook_by_id(webhook)
        .ok_or(EngineError::NotFound("webhook"))?;
    plan_for(log, &entry.webhook, range, only_failed, progress)
}

/// [`plan`] for a webhook already looked up: the log reads need no lock on the projection, so the log
/// writer keeps applying while a large replay is planned.
pub fn plan_for(
    log: &dyn LogStore,
    w: &Webhook,
    range: ReplayRange,
    only_failed: bool,
    mut progress: impl FnMut(u64),
) -> Result<Vec<u64>, EngineError> {
    let webhook = &w.id;
    let (from, to) = range.seq_bounds();
    let mut seqs = Vec::new();
    let mut take = |seq: u64, record: Record| -> Result<(), EngineError> {
        progress(seq);
        let Record::EventPublished(e) = record else {
            return Ok(());
        };
        let matches = match &e.only_webhook {
            // A test event is replayed only to the webhook it was sent to.
            Some(only) => only == webhook,
            None => only_failed || (e.account == w.account && w.wants(e.event_type)),
        };
        if !matches || !range.admits(e.created_at) {
            return Ok(());
        }
        if seqs.len() >= MAX_REPLAY_EVENTS {
            return Err(EngineError::Invalid(FieldError::new(
                "replay",
                format!(
                    "covers more than {MAX_REPLAY_EVENTS} events; split it into smaller ranges"
                ),
            )));
        }
        seqs.push(seq);
        Ok(())
    };
    // The candidates come from an index (failed deliveries, or the account's events by time or seq),
    // never from a scan of the whole log; their records are read in dense runs.
    let candidates: Entries<'_> = match (only_failed, range) {
        (true, _) => {
            let failed = log.index()?.failed_in(webhook, from, to)?;
            Box::new(log.records_at(&failed).collect::<Vec<_>>().into_iter())
        }
        (false, ReplayRange::Time { since, until }) => {
            let found = log.account_events_between(&w.account, since, until)?;
            Box::new(log.records_at(&found).collect::<Vec<_>>().into_iter())
        }
        (false, ReplayRange::Seq { .. }) => Box::new(
            log.account_events(&w.account, from.saturating_sub(1))
                .take_while(move |item| item.as_ref().map_or(true, |(seq, _)| *seq < to)),
        ),
    };
    for item in candidates {
        let (seq, record) = item?;
        take(seq, record)?;
    }
    Ok(seqs)
}
