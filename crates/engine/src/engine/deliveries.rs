//! Engine calls on deliveries and replays.

use crate::error::EngineError;
use crate::projection::ReplayState;
use crate::replay::{self, ReplayRange};
use buildr_core::{
    AccountId, AttemptRecord, DeliveryStatus, EventId, Record, ReplayId, Timestamp, WebhookId,
};

use super::{DeliveryPage, Engine};

/// How long a delivery read waits for the index to reach the log (it gathers for up to 50 ms; longer
/// means it is stuck, e.g. on a full disk).
pub const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Engine {
    /// `webhook`'s deliveries, newest first, before the seq `before` (a cursor), optionally of one
    /// status; and the cursor of the next page. Every event committed before the call is in it (see
    /// [`Engine::index_caught_up`]).
    pub async fn deliveries(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<DeliveryPage, EngineError> {
        self.get_webhook(account, webhook)?;
        self.index_caught_up().await?;
        let mut page = self
            .inner
            .log
            .index()?
            .deliveries(webhook, status, before, limit + 1)?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Ok((page, next))
    }

    /// Every attempt to deliver `event` to `webhook`, oldest first (every outcome recorded before the call).
    pub async fn attempts(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        event: &EventId,
    ) -> Result<Vec<AttemptRecord>, EngineError> {
        self.get_webhook(account, webhook)?;
        self.index_caught_up().await?;
        let index = self.inner.log.index()?;
        let seq = index
            .seq_of(event)?
            .ok_or(EngineError::NotFound("delivery"))?;
        if index.delivery(webhook, seq)?.is_none() {
            return Err(EngineError::NotFound("delivery"));
        }
        Ok(index.attempts(webhook, seq)?)
    }

    /// Waits until the delivery index holds everything committed to the log before this call, at most
    /// [`INDEX_WAIT`]; a stuck index is [`EngineError::IndexBehind`] (`503`), never a wrong answer.
    pub async fn index_caught_up(&self) -> Result<(), EngineError> {
        let running = self.running()?;
        Ok(running.indexer.caught_up(INDEX_WAIT).await?)
    }

    /// Queues the events of `range` again for `webhook` (with their original ids, under its rate limit).
    pub async fn replay(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        range: ReplayRange,
        only_failed: bool,
    ) -> Result<(ReplayId, u64), EngineError> {
        let w = self.get_webhook(account, webhook)?;
        let started = std::time::Instant::now();
        if only_failed {
            // Which deliveries failed is read from the delivery index: it must hold every outcome
            // committed before this call (on a cluster node, also those other nodes recorded and this
            // one has applied), as for a deliveries read.
            self.index_caught_up().await?;
        }
        let log = self.inner.log.clone();
        let seqs = actix_rt::task::spawn_blocking(move || {
            replay::plan_for(&*log, &w, range, only_failed, |_| {})
        })
        .await
        .map_err(|e| EngineError::Storage(format!("replay planning failed: {e}")))??;
        let planned = started.elapsed();
        let replay_id = ReplayId::generate();
        let n = seqs.len() as u64;
        self.submit(vec![Record::ReplayRequested {
            id: replay_id.clone(),
            webhook: webhook.clone(),
            seqs,
            at: Timestamp::now(),
        }])
        .await?;
        tracing::debug!(
            replay = %replay_id,
            events = n,
            plan_ms = planned.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "replay queued"
        );
        Ok((replay_id, n))
    }

    pub fn replay_status(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        id: &ReplayId,
    ) -> Result<ReplayState, EngineError> {
        self.running()?;
        self.inner
            .projection
            .read()
            .replay(account, webhook, id)
            .cloned()
            .ok_or(EngineError::NotFound("replay"))
    }
}
