//! Retention: events older than `retention.events` whose deliveries are all finished are removed from
//! the log, with their attempt records and index rows. Seq order is kept (records are removed, never
//! renumbered), the last record is never removed (it fixes the next seq), undelivered events are kept
//! whatever their age, and so are the attempt records of a webhook that is failing now (they date its
//! `failing_since`), so a replay of what remains rebuilds the same state. Records nothing refers to any
//! more go too once older than the cutoff: the requests of replays the projection has forgotten (see
//! `ReplaysExpired`, itself removed with them) and every record of a deleted webhook (its creation,
//! changes, rotations and deletion: a webhook's creation is always older than its deletion, so both go
//! in the same pass and a replay never brings a deleted webhook back), and both records of a revoked API
//! key (its creation and revocation; a creation alone, when the revocation is younger than the cutoff,
//! changes nothing on a replay: the key is refused either way).

use crate::error::EngineError;
use buildr_core::{EventId, Record, ReplayId, Timestamp, WebhookId};
use buildr_log::LogStore;
use std::collections::HashSet;

/// What must stay whatever its age: undelivered seqs, webhooks failing now, the replays the projection
/// still serves, the webhooks that exist and the API keys that are not revoked (by prefix).
#[derive(Debug, Default, Clone)]
pub struct Keep {
    pub pending: HashSet<u64>,
    pub failing: HashSet<WebhookId>,
    pub replays: HashSet<ReplayId>,
    pub webhooks: HashSet<WebhookId>,
    pub api_keys: HashSet<String>,
}

/// What a compaction removes.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Every record to remove.
    pub records: Vec<u64>,
    /// The events among them (seqs and ids), for the delivery index.
    pub event_seqs: HashSet<u64>,
    pub event_ids: Vec<EventId>,
}

/// Records are close to time order, so the scan stops this long past the cutoff.
const SCAN_SLACK_MS: i64 = 3_600_000;

pub fn plan(log: &dyn LogStore, cutoff: Timestamp, keep: &Keep) -> Result<Plan, EngineError> {
    let mut plan = Plan::default();
    let last = log.last_seq();
    let stop_after = Timestamp::from_millis(cutoff.as_millis().saturating_add(SCAN_SLACK_MS));
    for item in log.range(1, last) {
        let (seq, record) = item?;
        match record {
            Record::EventPublished(e) => {
                if e.created_at >= stop_after {
                    break;
                }
                if e.created_at < cutoff && !keep.pending.contains(&seq) {
                    plan.records.push(seq);
                    plan.event_seqs.insert(seq);
                    plan.event_ids.push(e.id);
                }
            }
            Record::DeliveryAttempted(a)
                if a.at < cutoff
                    && !keep.pending.contains(&a.seq)
                    && !keep.failing.contains(&a.webhook) =>
            {
                plan.records.push(seq);
            }
            Record::IdempotencyKeyUsed(i) if i.at < cutoff => plan.records.push(seq),
            Record::ReplayRequested { id, at, .. }
                if at < cutoff && !keep.replays.contains(&id) =>
            {
                plan.records.push(seq)
            }
            Record::ReplaysExpired { at, .. } if at < cutoff => plan.records.push(seq),
            Record::WebhookCreated(w)
                if w.updated_at < cutoff && !keep.webhooks.contains(&w.id) =>
            {
                plan.records.push(seq)
            }
            Record::WebhookUpdated { id, at, .. }
            | Record::SecretRotated { id, at, .. }
            | Record::WebhookDeleted { id, at }
                if at < cutoff && !keep.webhooks.contains(&id) =>
            {
                plan.records.push(seq)
            }
            Record::ApiKeyCreated { prefix, at, .. } | Record::ApiKeyRevoked { prefix, at, .. }
                if at < cutoff && !keep.api_keys.contains(&prefix) =>
            {
                plan.records.push(seq)
            }
            // Kept exactly as long as the attempt records around it.
            Record::DeliveryRestarted {
                webhook,
                seq: s,
                at,
                ..
            } if at < cutoff && !keep.pending.contains(&s) && !keep.failing.contains(&webhook) => {
                plan.records.push(seq)
            }
            _ => {}
        }
    }
    Ok(plan)
}
