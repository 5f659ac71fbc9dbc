//! Replays: which events of the log a replay request covers. Shared by the API (`POST …/replay`) and the
//! offline `buildr-webhooks replay` command, so both queue exactly the same events.

use crate::error::EngineError;
use crate::projection::Projection;
use buildr_core::webhook::Webhook;
use buildr_core::{FieldError, Record, Timestamp, WebhookId};
use buildr_log::{EventRefs, EventSummary, LogStore};

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
    let mut keep = |seq: u64| -> Result<(), EngineError> {
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
    // A test event is replayed only to the webhook it was sent to; any other event of the account when
    // the filter wants its type (with `only_failed`, every failed delivery found).
    let wanted = |summary: &EventSummary| match &summary.only_webhook {
        Some(only) => only == webhook,
        None => only_failed || w.wants(summary.event_type),
    };
    // The candidates come from an index (failed deliveries, or the account's events by time or seq),
    // never from a scan of the whole log. The events index says what a replay decides by, so only the
    // records it was written without (by an older version) are read, in dense runs.
    let mut unknown = Vec::new();
    if only_failed {
        unknown = log.index()?.failed_in(webhook, from, to)?;
    } else {
        let refs: EventRefs<'_> = match range {
            ReplayRange::Time { since, until } => Box::new(
                log.account_events_between(&w.account, since, until)?
                    .into_iter()
                    .map(Ok),
            ),
            ReplayRange::Seq { .. } => Box::new(
                log.account_event_refs(&w.account, from.saturating_sub(1))
                    .take_while(move |r| r.as_ref().map_or(true, |r| r.seq < to)),
            ),
        };
        for r in refs {
            let r = r?;
            progress(r.seq);
            match &r.summary {
                Some(summary) if wanted(summary) => keep(r.seq)?,
                Some(_) => {}
                None => unknown.push(r.seq),
            }
        }
    }
    if !unknown.is_empty() {
        let mut read = Vec::new();
        for item in log.records_at(&unknown) {
            let (seq, record) = item?;
            progress(seq);
            let Record::EventPublished(e) = record else {
                continue;
            };
            let own = only_failed || e.account == w.account;
            if own && range.admits(e.created_at) && wanted(&EventSummary::of(&e)) {
                read.push(seq);
            }
        }
        for seq in read {
            keep(seq)?;
        }
        seqs.sort_unstable();
    }
    Ok(seqs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use buildr_core::{AccountId, EventData, EventId, EventRecord, EventType, ObjectId};
    use buildr_log::EventLog;

    fn webhook(filter: Option<Vec<EventType>>) -> Webhook {
        Webhook {
            id: "wh_replaytest".parse().unwrap(),
            filter_types: filter,
            ..crate::projection::tests::webhook()
        }
    }

    /// Seqs 1..=8: contact.create at t=10, company.update at t=20, the other account's contact.create,
    /// a test event for `wh_replaytest`, a test event for another webhook, contact.create at t=60,
    /// company.update at t=70, contact.create at t=5 (a clock behind).
    fn log() -> (tempfile::TempDir, EventLog) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = EventLog::open(dir.path()).unwrap();
        let other: AccountId = "acc_other".parse().unwrap();
        let ev = |t: EventType, at: i64, account: &AccountId, only: Option<&str>| {
            Record::EventPublished(EventRecord {
                id: EventId::generate(),
                account: account.clone(),
                event_type: t,
                data: EventData {
                    id: ObjectId::Int(at),
                    url: "https://x.example/1".into(),
                },
                created_at: Timestamp::from_millis(at),
                only_webhook: only.map(|w| w.parse().unwrap()),
            })
        };
        let own = AccountId::default_account();
        let (c, u) = (EventType::ContactCreate, EventType::CompanyUpdate);
        log.append(&[
            ev(c, 10, &own, None),
            ev(u, 20, &own, None),
            ev(c, 30, &other, None),
            ev(u, 40, &own, Some("wh_replaytest")),
            ev(c, 50, &own, Some("wh_elsewhere")),
            ev(c, 60, &own, None),
            ev(u, 70, &own, None),
            ev(c, 5, &own, None),
        ])
        .unwrap();
        (dir, log)
    }

    fn plans(log: &EventLog) -> Vec<Vec<u64>> {
        let t = |ms| Timestamp::from_millis(ms);
        let contacts = webhook(Some(vec![EventType::ContactCreate]));
        let all = webhook(None);
        [
            (
                &contacts,
                ReplayRange::Time {
                    since: t(0),
                    until: None,
                },
            ),
            (
                &contacts,
                ReplayRange::Time {
                    since: t(10),
                    until: Some(t(61)),
                },
            ),
            (
                &all,
                ReplayRange::Time {
                    since: t(15),
                    until: Some(t(70)),
                },
            ),
            (
                &contacts,
                ReplayRange::Seq {
                    from: 2,
                    to: Some(8),
                },
            ),
            (&all, ReplayRange::Seq { from: 0, to: None }),
        ]
        .into_iter()
        .map(|(w, range)| plan_for(log, w, range, false, |_| {}).unwrap())
        .collect()
    }

    #[test]
    fn replays_take_the_webhooks_events_by_filter_range_and_test_mark() {
        let (_dir, log) = log();
        let want = vec![
            vec![1, 4, 6, 8],
            vec![1, 4, 6],
            vec![2, 4, 6],
            vec![4, 6],
            vec![1, 2, 4, 6, 7, 8],
        ];
        assert_eq!(plans(&log), want);
        // An index written by a version that kept no summaries: the records are read, same plans.
        log.forget_event_summaries().unwrap();
        assert_eq!(plans(&log), want);
    }
}
