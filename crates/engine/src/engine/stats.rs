//! Engine calls on attempt statistics: a webhook's, or a whole account's, in minute or hour buckets.

use crate::error::EngineError;
use buildr_core::{AccountId, FieldError, Timestamp, WebhookId};
use buildr_log::{StatsBucket, StatsRow};

use super::Engine;

/// The most buckets one answer holds.
pub const MAX_STATS_BUCKETS: i64 = 1_440;
/// How far back statistics may be asked for (and are kept).
pub const STATS_HISTORY: std::time::Duration = std::time::Duration::from_secs(60 * 24 * 3_600);

/// One bucket of a statistics series: its start and what happened in it (empty buckets included).
pub type StatsPoint = (Timestamp, StatsRow);

/// The buckets `(from, to)` (numbers since the epoch, inclusive) for `since` (default: the last 24
/// hours in hour buckets, the last hour in minute buckets, the current bucket included).
fn window(bucket: StatsBucket, since: Option<Timestamp>) -> Result<(i64, i64), EngineError> {
    let now = Timestamp::now().as_millis();
    let to = bucket.of(now);
    let Some(since) = since else {
        let n = match bucket {
            StatsBucket::Hour => 24,
            StatsBucket::Minute => 60,
        };
        return Ok((to - n + 1, to));
    };
    let invalid = |m: &str| EngineError::Invalid(FieldError::new("since", m));
    let since = since.as_millis();
    if since > now {
        return Err(invalid("must not be in the future"));
    }
    if now - since > STATS_HISTORY.as_millis() as i64 {
        return Err(invalid("must be at most 60 days back"));
    }
    let from = bucket.of(since);
    if to - from + 1 > MAX_STATS_BUCKETS {
        return Err(invalid(
            "covers more than 1440 buckets: ask for a later since or a wider bucket",
        ));
    }
    Ok((from, to))
}

impl Engine {
    /// `webhook`'s attempts per bucket since `since`, oldest first, with every attempt recorded before
    /// the call.
    pub async fn webhook_stats(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        bucket: StatsBucket,
        since: Option<Timestamp>,
    ) -> Result<Vec<StatsPoint>, EngineError> {
        self.get_webhook(account, webhook)?;
        let (from, to) = window(bucket, since)?;
        self.index_caught_up().await?;
        self.series(std::slice::from_ref(webhook), bucket, from, to)
    }

    /// The same for all of `account`'s webhooks together.
    pub async fn account_stats(
        &self,
        account: &AccountId,
        bucket: StatsBucket,
        since: Option<Timestamp>,
    ) -> Result<Vec<StatsPoint>, EngineError> {
        self.require_account(account)?;
        let (from, to) = window(bucket, since)?;
        let webhooks: Vec<WebhookId> = self
            .inner
            .projection
            .read()
            .list_webhooks(account, None, usize::MAX)
            .into_iter()
            .map(|w| w.id.clone())
            .collect();
        self.index_caught_up().await?;
        self.series(&webhooks, bucket, from, to)
    }

    fn series(
        &self,
        webhooks: &[WebhookId],
        bucket: StatsBucket,
        from: i64,
        to: i64,
    ) -> Result<Vec<StatsPoint>, EngineError> {
        let index = self.inner.log.index()?;
        let len = usize::try_from(to - from + 1).unwrap_or(0);
        let mut rows = vec![StatsRow::default(); len];
        for w in webhooks {
            for (n, row) in index.stats(w, bucket, from, to)? {
                if let Some(slot) = usize::try_from(n - from).ok().and_then(|i| rows.get_mut(i)) {
                    slot.merge(&row);
                }
            }
        }
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let start = (from + i as i64) * bucket.millis();
                (Timestamp::from_millis(start), row)
            })
            .collect())
    }
}
