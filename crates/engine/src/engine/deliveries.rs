//! Engine calls on deliveries and replays.

use crate::error::EngineError;
use crate::projection::ReplayState;
use crate::replay::{self, ReplayRange};
use buildr_core::{
    AccountId, AttemptRecord, DeliveryStatus, EventId, Record, ReplayId, Timestamp, WebhookId,
};

use super::{DeliveryPage, Engine};

impl Engine {
    /// `webhook`'s deliveries, newest first, before the seq `before` (a cursor), optionally of one
    /// status; and the cursor of the next page.
    pub fn deliveries(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        status: Option<DeliveryStatus>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<DeliveryPage, EngineError> {
        self.get_webhook(account, webhook)?;
        let mut page = self
            .inner
            .log
            .index()
            .deliveries(webhook, status, before, limit + 1)?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Ok((page, next))
    }

    /// Every attempt to deliver `event` to `webhook`, oldest first.
    pub fn attempts(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        event: &EventId,
    ) -> Result<Vec<AttemptRecord>, EngineError> {
        self.get_webhook(account, webhook)?;
        let index = self.inner.log.index();
        let seq = index
            .seq_of(event)?
            .ok_or(EngineError::NotFound("delivery"))?;
        if index.delivery(webhook, seq)?.is_none() {
            return Err(EngineError::NotFound("delivery"));
        }
        Ok(index.attempts(webhook, seq)?)
    }

    /// Queues the events of `range` again for `webhook` (with their original ids, under its rate limit).
    pub async fn replay(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        range: ReplayRange,
        only_failed: bool,
    ) -> Result<(ReplayId, u64), EngineError> {
        self.get_webhook(account, webhook)?;
        let log = self.inner.log.clone();
        let projection = self.inner.projection.clone();
        let id = webhook.clone();
        let seqs = actix_rt::task::spawn_blocking(move || {
            replay::plan(&*log, &projection.read(), &id, range, only_failed, |_| {})
        })
        .await
        .map_err(|e| EngineError::Storage(format!("replay planning failed: {e}")))??;
        let replay_id = ReplayId::generate();
        let n = seqs.len() as u64;
        self.submit(vec![Record::ReplayRequested {
            id: replay_id.clone(),
            webhook: webhook.clone(),
            seqs,
            at: Timestamp::now(),
        }])
        .await?;
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
