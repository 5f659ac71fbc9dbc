//! Replays: which events of the log a replay request covers. Shared by the API (`POST …/replay`) and the
//! offline `buildr-webhooks replay` command, so both queue exactly the same events.

use crate::error::EngineError;
use crate::projection::Projection;
use buildr_core::{FieldError, Record, Timestamp, WebhookId};
use buildr_log::LogStore;

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
    mut progress: impl FnMut(u64),
) -> Result<Vec<u64>, EngineError> {
    let entry = projection
        .webhook_by_id(webhook)
        .ok_or(EngineError::NotFound("webhook"))?;
    let w = &entry.webhook;
    let (from, to) = range.seq_bounds();
    let mut seqs = Vec::new();
    let take = |seq: u64, seqs: &mut Vec<u64>| -> Result<(), EngineError> {
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
    if only_failed {
        for seq in log.index()?.failed_in(webhook, from, to)? {
            progress(seq);
            if let Some(Record::EventPublished(e)) = log.get(seq)? {
                if range.admits(e.created_at) {
                    take(seq, &mut seqs)?;
                }
            }
        }
    } else {
        // The candidates: the account's events in the range, read through the events index (a range
        // read of this account's events, never a scan of the whole log).
        let candidates: Box<dyn Iterator<Item = Result<(u64, Record), buildr_log::LogError>>> =
            match range {
                ReplayRange::Time { since, until } => Box::new(
                    log.account_events_between(&w.account, since, until)?
                        .into_iter()
                        .filter_map(|seq| match log.get(seq) {
                            Ok(Some(r)) => Some(Ok((seq, r))),
                            Ok(None) => None,
                            Err(e) => Some(Err(e)),
                        }),
                ),
                ReplayRange::Seq { .. } => Box::new(
                    log.account_events(&w.account, from.saturating_sub(1))
                        .take_while(move |item| item.as_ref().map_or(true, |(seq, _)| *seq < to)),
                ),
            };
        for item in candidates {
            let (seq, record) = item?;
            progress(seq);
            if let Record::EventPublished(e) = record {
                let own_test = e.only_webhook.as_ref() == Some(webhook);
                let matches = match &e.only_webhook {
                    Some(_) => own_test,
                    None => e.account == w.account && w.wants(e.event_type),
                };
                if matches && range.admits(e.created_at) {
                    take(seq, &mut seqs)?;
                }
            }
        }
    }
    Ok(seqs)
}
