//! Engine calls on events: publish (with idempotency) and read.

use crate::error::EngineError;
use crate::log_actor::{IdempotencyGuard, Submitted};
use buildr_core::{
    AccountId, Event, EventId, EventRecord, EventType, FieldError, IdempotencyRecord, Record,
    Timestamp, WebhookId,
};

use super::{Engine, NewEvent, Published};

impl Engine {
    /// Publishes `events` atomically; returns once they are durable. With `idempotency` (key and a hash of
    /// the request), a repeat of the same key and hash returns the first answer and stores nothing, and a
    /// repeat with another hash is [`EngineError::IdempotencyConflict`].
    pub async fn publish(
        &self,
        caller: &AccountId,
        events: Vec<NewEvent>,
        idempotency: Option<(String, [u8; 32])>,
        batch: bool,
    ) -> Result<Published, EngineError> {
        self.running()?;
        let unknown = {
            let projection = self.inner.projection.read();
            events
                .iter()
                .position(|e| projection.account(&e.account).is_none())
        };
        if let Some(i) = unknown {
            let field = if batch {
                format!("events[{i}].account")
            } else {
                "event.account".into()
            };
            return Err(EngineError::Unprocessable(FieldError::new(
                field,
                "unknown account",
            )));
        }
        let now = Timestamp::now();
        let mut records: Vec<Record> = events
            .into_iter()
            .map(|e| {
                Record::EventPublished(EventRecord {
                    id: EventId::generate(),
                    account: e.account,
                    event_type: e.event_type,
                    data: e.data,
                    created_at: now,
                    only_webhook: None,
                })
            })
            .collect();
        let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        let guard = idempotency.as_ref().map(|(key, hash)| {
            records.push(Record::IdempotencyKeyUsed(IdempotencyRecord {
                account: caller.clone(),
                key: key.clone(),
                request_hash: *hash,
                count,
                batch,
                at: now,
            }));
            IdempotencyGuard {
                account: caller.clone(),
                key: key.clone(),
            }
        });
        match self.submit_guarded(records.clone(), guard).await? {
            Submitted::Committed { first_seq } => {
                let events = records
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, r)| match r {
                        Record::EventPublished(e) => {
                            Some(Event::from_record(first_seq + i as u64, e))
                        }
                        _ => None,
                    })
                    .collect();
                Ok(Published {
                    events,
                    replayed: false,
                })
            }
            Submitted::AlreadyUsed(entry) => {
                let hash = idempotency.map(|(_, h)| h);
                if Some(entry.request_hash) != hash || entry.batch != batch {
                    return Err(EngineError::IdempotencyConflict);
                }
                let end = entry.first_seq + u64::from(entry.count);
                let events = self.read_events(entry.first_seq, end)?;
                Ok(Published {
                    events,
                    replayed: true,
                })
            }
        }
    }

    /// `account`'s events with seq > `after_seq`, oldest first, at most `limit`.
    pub fn list_events(
        &self,
        account: &AccountId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, EngineError> {
        self.running()?;
        let mut out = Vec::new();
        // A range read of the account's own events (the events index), never a scan of the log.
        for item in self.inner.log.account_events(account, after_seq) {
            if out.len() >= limit {
                break;
            }
            // Test events are not the platform's facts: never listed.
            if let (seq, Record::EventPublished(e)) = item? {
                if e.only_webhook.is_none() {
                    out.push(Event::from_record(seq, e));
                }
            }
        }
        Ok(out)
    }

    /// Every event with `from <= seq < to`.
    fn read_events(&self, from: u64, to: u64) -> Result<Vec<Event>, EngineError> {
        let mut out = Vec::new();
        for item in self.inner.log.range(from, to) {
            if let (seq, Record::EventPublished(e)) = item? {
                out.push(Event::from_record(seq, e));
            }
        }
        Ok(out)
    }

    /// Sends an example event of type `t` to `webhook` only (whatever its filter); returns once durable.
    pub async fn send_test(
        &self,
        account: &AccountId,
        webhook: &WebhookId,
        t: EventType,
    ) -> Result<Event, EngineError> {
        let w = self.get_webhook(account, webhook)?;
        if w.disabled {
            return Err(EngineError::Unprocessable(FieldError::new(
                "webhook",
                "is disabled; enable it to send a test event",
            )));
        }
        let record = EventRecord {
            id: EventId::generate(),
            account: account.clone(),
            event_type: t,
            data: t.example_data(),
            created_at: Timestamp::now(),
            only_webhook: Some(webhook.clone()),
        };
        let seq = self
            .submit(vec![Record::EventPublished(record.clone())])
            .await?;
        Ok(Event::from_record(seq, record))
    }
}
