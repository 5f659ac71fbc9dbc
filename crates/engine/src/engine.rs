//! The [`Engine`] handle: start the engine on a data directory, then manage webhooks and publish events
//! without HTTP. The HTTP API is a thin layer over exactly these calls.

use crate::config::EngineConfig;
use crate::dispatcher::Dispatcher;
use crate::error::EngineError;
use crate::log_actor::{IdempotencyGuard, LogActor, LogStats, SetRouter, Submit, Submitted};
use crate::projection::Projection;
use crate::router::{ActiveSubscriptions, Router};
use crate::subscription::SubscriptionDeps;
use crate::target;
use actix::prelude::*;
use buildr_core::{
    validate, AccountId, Event, EventData, EventId, EventRecord, EventType, FieldError,
    IdempotencyRecord, Record, Secret, Timestamp, Webhook, WebhookChanges, WebhookId,
};
use buildr_log::{EventLog, OpenReport};
use parking_lot::RwLock;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A webhook to create (fields already checked with `buildr_core::validate`).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub description: String,
    pub filter_types: Option<Vec<EventType>>,
    /// `None`: generate one.
    pub secret: Option<Secret>,
    pub rate_limit: u32,
}

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub account: AccountId,
    pub event_type: EventType,
    pub data: EventData,
}

/// What a publish returned.
#[derive(Debug, Clone)]
pub struct Published {
    pub events: Vec<Event>,
    /// True when an `Idempotency-Key` repeat returned the first response and stored nothing.
    pub replayed: bool,
}

/// What start-up found: torn records cut from the tail, records replayed, time taken.
#[derive(Debug, Clone, Default)]
pub struct StartupReport {
    pub open: OpenReport,
    pub replayed_records: u64,
    pub millis: u128,
}

pub(crate) struct Running {
    log_actor: Addr<LogActor>,
    router: Addr<Router>,
}

pub(crate) struct Inner {
    config: EngineConfig,
    log: Arc<EventLog>,
    pub(crate) projection: Arc<RwLock<Projection>>,
    running: OnceLock<Running>,
    failed: OnceLock<String>,
    ready: AtomicBool,
    ready_notify: tokio::sync::Notify,
    report: RwLock<StartupReport>,
    stats: Arc<LogStats>,
}

/// A running engine. Cheap to clone, `Send + Sync`: share it between threads and HTTP workers.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    /// Opens the log in `config.data_dir` and starts rebuilding the projection in the background. Must be
    /// called inside an actix `System`; the actors run on the calling arbiter. Calls made before the
    /// rebuild is done fail with [`EngineError::NotReady`]; await [`Engine::ready`] to wait for it.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            EngineError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let (log, open) = EventLog::open(&config.data_dir)?;
        for seq in &open.truncated {
            tracing::warn!(
                seq,
                "cut a torn record off the end of the log (a write interrupted by a crash)"
            );
        }
        let inner = Arc::new(Inner {
            config,
            log: Arc::new(log),
            projection: Arc::new(RwLock::new(Projection::default())),
            running: OnceLock::new(),
            failed: OnceLock::new(),
            ready: AtomicBool::new(false),
            ready_notify: tokio::sync::Notify::new(),
            report: RwLock::new(StartupReport {
                open,
                ..Default::default()
            }),
            stats: Arc::new(LogStats::default()),
        });
        let engine = Engine { inner };
        let starting = engine.clone();
        actix_rt::spawn(async move {
            if let Err(e) = starting.boot().await {
                tracing::error!(error = %e, "start-up failed");
                let _ = starting.inner.failed.set(e.to_string());
                starting.inner.ready_notify.notify_waiters();
            }
        });
        Ok(engine)
    }

    async fn boot(&self) -> Result<(), EngineError> {
        let started = Instant::now();
        let log = self.inner.log.clone();
        let (projection, replayed) = actix_rt::task::spawn_blocking(move || rebuild(&log))
            .await
            .map_err(|e| EngineError::Storage(format!("replay task failed: {e}")))??;
        *self.inner.projection.write() = projection;

        let cfg = &self.inner.config;
        let projection = self.inner.projection.clone();
        let log_actor = LogActor::create(|_| {
            LogActor::new(
                self.inner.log.clone(),
                projection.clone(),
                cfg.idempotency_ttl,
                self.inner.stats.clone(),
            )
        });
        let deps = Rc::new(SubscriptionDeps {
            log: self.inner.log.clone(),
            log_actor: log_actor.clone(),
            dispatcher: Dispatcher::new(&cfg.delivery),
            config: cfg.delivery.clone(),
        });
        let router = Router::new(projection.clone(), deps).start();
        log_actor
            .send(SetRouter(router.clone()))
            .await
            .map_err(|_| EngineError::Stopped)?;
        let _ = self.inner.running.set(Running { log_actor, router });

        if projection
            .read()
            .account(&AccountId::default_account())
            .is_none()
        {
            self.submit(vec![Record::AccountCreated {
                id: AccountId::default_account(),
                name: "Default".into(),
                at: Timestamp::now(),
            }])
            .await?;
        }
        {
            let mut report = self.inner.report.write();
            report.replayed_records = replayed;
            report.millis = started.elapsed().as_millis();
            tracing::info!(
                records = replayed,
                millis = report.millis,
                "event log replayed; ready"
            );
        }
        self.inner.ready.store(true, Ordering::Release);
        self.inner.ready_notify.notify_waiters();
        Ok(())
    }

    /// Waits until start-up replay is done (or has failed).
    pub async fn ready(&self) -> Result<(), EngineError> {
        loop {
            let notified = self.inner.ready_notify.notified();
            if self.is_ready() {
                return Ok(());
            }
            if let Some(e) = self.inner.failed.get() {
                return Err(EngineError::Storage(e.clone()));
            }
            notified.await;
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub fn startup_report(&self) -> StartupReport {
        self.inner.report.read().clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn log_stats(&self) -> &LogStats {
        &self.inner.stats
    }

    /// Read access to the projection (for metrics and tools; request handlers use the scoped getters).
    pub fn projection(&self) -> Result<parking_lot::RwLockReadGuard<'_, Projection>, EngineError> {
        self.running()?;
        Ok(self.inner.projection.read())
    }

    pub(crate) fn running(&self) -> Result<&Running, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotReady);
        }
        self.inner.running.get().ok_or(EngineError::NotReady)
    }

    pub(crate) async fn submit(&self, records: Vec<Record>) -> Result<u64, EngineError> {
        match self.submit_guarded(records, None).await? {
            Submitted::Committed { first_seq } => Ok(first_seq),
            Submitted::AlreadyUsed(_) => {
                Err(EngineError::Storage("unexpected idempotency answer".into()))
            }
        }
    }

    async fn submit_guarded(
        &self,
        records: Vec<Record>,
        guard: Option<IdempotencyGuard>,
    ) -> Result<Submitted, EngineError> {
        let running = self.inner.running.get().ok_or(EngineError::NotReady)?;
        running
            .log_actor
            .send(Submit { records, guard })
            .await
            .map_err(|_| EngineError::Stopped)?
            .map_err(|e| EngineError::Storage(e.to_string()))
    }

    fn require_account(&self, account: &AccountId) -> Result<(), EngineError> {
        self.running()?;
        match self.inner.projection.read().account(account) {
            Some(_) => Ok(()),
            None => Err(EngineError::NotFound("account")),
        }
    }

    // ---- webhooks ----

    pub async fn create_webhook(
        &self,
        account: &AccountId,
        new: NewWebhook,
    ) -> Result<Webhook, EngineError> {
        self.require_account(account)?;
        let url = validate::target_url("webhook.url", &new.url).map_err(EngineError::Invalid)?;
        target::check_url(&url, self.inner.config.delivery.allow_private_targets)
            .await
            .map_err(|m| EngineError::Unprocessable(FieldError::new("webhook.url", m)))?;
        let now = Timestamp::now();
        let webhook = Webhook {
            id: WebhookId::generate(),
            account: account.clone(),
            url: new.url,
            description: new.description,
            filter_types: new.filter_types,
            rate_limit: new.rate_limit,
            secret: new.secret.unwrap_or_else(Secret::generate),
            previous_secret: None,
            disabled: false,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        self.submit(vec![Record::WebhookCreated(webhook.clone())])
            .await?;
        Ok(webhook)
    }

    pub fn get_webhook(&self, account: &AccountId, id: &WebhookId) -> Result<Webhook, EngineError> {
        self.running()?;
        self.inner
            .projection
            .read()
            .webhook(account, id)
            .map(|e| e.webhook.clone())
            .ok_or(EngineError::NotFound("webhook"))
    }

    /// `account`'s webhooks after `after` (a cursor), at most `limit`; and the cursor of the next page.
    pub fn list_webhooks(
        &self,
        account: &AccountId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> Result<(Vec<Webhook>, Option<WebhookId>), EngineError> {
        self.running()?;
        let projection = self.inner.projection.read();
        let mut page: Vec<Webhook> = projection
            .list_webhooks(account, after, limit + 1)
            .into_iter()
            .cloned()
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|w| w.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    pub async fn update_webhook(
        &self,
        account: &AccountId,
        id: &WebhookId,
        changes: WebhookChanges,
    ) -> Result<Webhook, EngineError> {
        self.get_webhook(account, id)?;
        if let Some(u) = &changes.url {
            let url = validate::target_url("webhook.url", u).map_err(EngineError::Invalid)?;
            target::check_url(&url, self.inner.config.delivery.allow_private_targets)
                .await
                .map_err(|m| EngineError::Unprocessable(FieldError::new("webhook.url", m)))?;
        }
        if !changes.is_empty() {
            self.submit(vec![Record::WebhookUpdated {
                id: id.clone(),
                changes,
                at: Timestamp::now(),
            }])
            .await?;
        }
        self.get_webhook(account, id)
    }

    pub async fn delete_webhook(
        &self,
        account: &AccountId,
        id: &WebhookId,
    ) -> Result<(), EngineError> {
        self.get_webhook(account, id)?;
        self.submit(vec![Record::WebhookDeleted {
            id: id.clone(),
            at: Timestamp::now(),
        }])
        .await?;
        Ok(())
    }

    /// Replaces the signing key; the previous one keeps signing for `secret_rotation_overlap`.
    pub async fn rotate_secret(
        &self,
        account: &AccountId,
        id: &WebhookId,
        secret: Option<Secret>,
    ) -> Result<Secret, EngineError> {
        self.get_webhook(account, id)?;
        let secret = secret.unwrap_or_else(Secret::generate);
        let at = Timestamp::now();
        let previous_until = at.plus(self.inner.config.delivery.secret_rotation_overlap);
        self.submit(vec![Record::SecretRotated {
            id: id.clone(),
            secret: secret.clone(),
            previous_until,
            at,
        }])
        .await?;
        Ok(secret)
    }

    // ---- events ----

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
        for (i, e) in events.iter().enumerate() {
            if self.inner.projection.read().account(&e.account).is_none() {
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
                        Record::EventPublished(e) => Some(to_event(first_seq + i as u64, e)),
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
                let events = self.read_events(entry.first_seq, end, None, usize::MAX)?;
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
        self.read_events(after_seq.saturating_add(1), u64::MAX, Some(account), limit)
    }

    fn read_events(
        &self,
        from: u64,
        to: u64,
        account: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<Event>, EngineError> {
        let mut out = Vec::new();
        for item in self.inner.log.range(from, to) {
            if out.len() >= limit {
                break;
            }
            if let (seq, Record::EventPublished(e)) = item? {
                if account.is_none_or(|a| *a == e.account) {
                    out.push(to_event(seq, e));
                }
            }
        }
        Ok(out)
    }

    /// Replays the whole log into a fresh projection (for checks: it must equal the live one).
    pub fn rebuild_projection(&self) -> Result<Projection, EngineError> {
        rebuild(&self.inner.log).map(|(p, _)| p)
    }

    /// How many subscription actors run (one per enabled webhook).
    pub async fn active_subscriptions(&self) -> Result<usize, EngineError> {
        let running = self.running()?;
        running
            .router
            .send(ActiveSubscriptions)
            .await
            .map_err(|_| EngineError::Stopped)
    }
}

fn to_event(seq: u64, e: EventRecord) -> Event {
    Event {
        seq,
        id: e.id,
        account: e.account,
        event_type: e.event_type,
        data: e.data,
        created_at: e.created_at,
    }
}

/// Rebuilds the projection by replaying the whole log. Corruption anywhere is an error, never a skip.
pub fn rebuild(log: &EventLog) -> Result<(Projection, u64), EngineError> {
    let mut projection = Projection::default();
    let mut n = 0u64;
    for item in log.tail(1) {
        let (seq, record) = item?;
        projection.apply(seq, &record);
        n += 1;
    }
    Ok((projection, n))
}
