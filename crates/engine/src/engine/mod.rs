//! The [`Engine`] handle: start the engine on a data directory, then manage webhooks and publish events
//! without HTTP. The HTTP API is a thin layer over exactly these calls.

use crate::checkpoint;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::indexer::{self, IndexWriter};
use crate::log_actor::{
    CatchUp, CheckpointPolicy, IdempotencyGuard, LogActor, LogSettings, SetRouter, Shutdown,
    Submit, Submitted,
};
use crate::metrics::Metrics;
use crate::projection::Projection;
use crate::router::{ActiveSubscriptions, Router};
use crate::subscription::SubscriptionDeps;
use actix::prelude::*;
use buildr_core::{AccountId, Delivery, Event, EventData, EventType, Record, Secret, Timestamp};
use buildr_log::{EventLog, LogStore, OpenReport};
use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long start-up keeps retrying its own first write while the storage refuses writes.
const BOOT_WRITE_WAIT: Duration = Duration::from_secs(60);

pub use accounts::CreatedKey;
pub use stats::{StatsPoint, MAX_STATS_BUCKETS, STATS_HISTORY};

mod accounts;
mod deliveries;
mod events;
mod stats;
mod webhooks;

/// A webhook to create (fields already checked with `buildr_core::validate`).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub description: String,
    pub filter_types: Option<Vec<EventType>>,
    /// `None`: generate one.
    pub secret: Option<Secret>,
    pub rate_limit: u32,
    pub ordering: buildr_core::DeliveryOrder,
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

/// A page of deliveries (seq and row, newest first) and the cursor of the next page.
pub type DeliveryPage = (Vec<(u64, Delivery)>, Option<u64>);

/// What start-up found: torn records cut from the tail, the checkpoint used, records replayed, time taken.
#[derive(Debug, Clone, Default)]
pub struct StartupReport {
    pub open: OpenReport,
    pub checkpoint_seq: Option<u64>,
    pub replayed_records: u64,
    pub millis: u128,
}

struct Running {
    log_actor: Addr<LogActor>,
    router: Addr<Router>,
    indexer: IndexWriter,
}

struct Inner {
    config: EngineConfig,
    log: Arc<dyn LogStore>,
    owner: Arc<dyn crate::Ownership>,
    projection: Arc<RwLock<Projection>>,
    running: OnceLock<Running>,
    failed: OnceLock<String>,
    ready: AtomicBool,
    ready_notify: tokio::sync::Notify,
    report: RwLock<StartupReport>,
    metrics: Arc<Metrics>,
}

/// A running engine. Cheap to clone, `Send + Sync`: share it between threads and HTTP workers.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Opens the log in `config.data_dir` and starts rebuilding the projection in the background. Must be
    /// called inside an actix `System`: the subscription actors run on `delivery.workers` arbiters of that
    /// system, the log writer and the router on a thread of their own (see
    /// [`LogActor::start_on_own_thread`]). Calls made before the
    /// rebuild is done fail with [`EngineError::NotReady`]; await [`Engine::ready`] to wait for it.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            EngineError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let (log, open) = EventLog::open_with(&config.data_dir, config.storage)?;
        for seq in &open.truncated {
            tracing::warn!(
                seq,
                "cut a torn record off the end of the log (a write interrupted by a crash)"
            );
        }
        Self::start_on(config, Arc::new(log), open, Arc::new(crate::OwnsAll))
    }

    /// [`Engine::start`] on a log opened by the caller (the JetStream log of cluster mode; `open` is what
    /// opening it found). The engine uses only the [`LogStore`] interface, whichever log it is.
    /// `owner` says which webhooks this node delivers (in cluster mode: those of the shards it leases).
    pub fn start_on(
        config: EngineConfig,
        log: Arc<dyn LogStore>,
        open: OpenReport,
        owner: Arc<dyn crate::Ownership>,
    ) -> Result<Engine, EngineError> {
        let inner = Arc::new(Inner {
            config,
            log,
            owner,
            projection: Arc::new(RwLock::new(Projection::default())),
            running: OnceLock::new(),
            failed: OnceLock::new(),
            ready: AtomicBool::new(false),
            ready_notify: tokio::sync::Notify::new(),
            report: RwLock::new(StartupReport {
                open,
                ..Default::default()
            }),
            metrics: Arc::new(Metrics::new()),
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
        let (projection, rebuilt) =
            actix_rt::task::spawn_blocking(move || indexer::catch_up(&*log))
                .await
                .map_err(|e| EngineError::Storage(format!("replay task failed: {e}")))??;
        let checkpointed_seq = rebuilt.from_checkpoint.unwrap_or(0);
        let replayed = rebuilt.replayed;
        *self.inner.projection.write() = projection;

        let cfg = &self.inner.config;
        let projection = self.inner.projection.clone();
        let settings = LogSettings {
            checkpoint: CheckpointPolicy {
                every_records: cfg.checkpoint_every.max(1),
                interval: cfg.checkpoint_interval,
            },
            idempotency_ttl: cfg.idempotency_ttl,
            retention: cfg.retention,
            retention_interval: cfg.retention_interval,
        };
        let indexer = IndexWriter::start(self.inner.log.clone(), self.inner.metrics.clone());
        let (log_actor, facts, log_thread) = LogActor::start_on_own_thread(LogActor::new(
            self.inner.log.clone(),
            projection.clone(),
            indexer.clone(),
            (checkpointed_seq, replayed),
            settings,
            self.inner.metrics.clone(),
        ))
        .map_err(|e| EngineError::Storage(format!("cannot start the log writer: {e}")))?;
        let permits = crate::permits::Permits::new(
            cfg.delivery.max_connections_per_host,
            cfg.delivery.max_in_flight_total,
        );
        let _ = self.inner.metrics.permits.set(permits.clone());
        let deps = Arc::new(SubscriptionDeps {
            log: self.inner.log.clone(),
            log_actor: log_actor.clone(),
            facts,
            config: cfg.delivery.clone(),
            metrics: self.inner.metrics.clone(),
            permits: permits.clone(),
            live: Default::default(),
        });
        // One delivery arbiter (thread) per core; the actors of the webhooks are spread over them so one
        // thread's CPU is not the ceiling for all deliveries.
        let workers = cfg.delivery.workers.max(1);
        let arbiters: Vec<actix::ArbiterHandle> = (0..workers)
            .map(|_| actix::Arbiter::new().handle())
            .collect();
        // The router runs on the log writer's thread: the effects of a batch reach it as the writer's
        // next message, not through another thread's wake-up.
        let router = Router::new(projection.clone(), deps, arbiters, self.inner.owner.clone());
        let router = Router::start_in_arbiter(&log_thread, move |_| router);
        // It stops with the system the engine was started in (as it did when it ran there), so it does
        // not keep the log writer (its thread, the open log) alive after that system is gone.
        crate::router::stop_with_this_system(router.clone());
        log_actor
            .send(SetRouter(router.clone()))
            .await
            .map_err(|_| EngineError::Stopped)?;
        // On a shared log, apply what the other nodes appended since the checkpoint before being ready.
        log_actor
            .send(CatchUp { to_end: true })
            .await
            .map_err(|_| EngineError::Stopped)?
            .map_err(|e| EngineError::Storage(e.to_string()))?;
        let _ = self.inner.running.set(Running {
            log_actor,
            router,
            indexer,
        });

        self.create_default_account(&projection).await?;
        {
            let mut report = self.inner.report.write();
            report.replayed_records = replayed;
            report.checkpoint_seq = rebuilt.from_checkpoint;
            report.millis = started.elapsed().as_millis();
            tracing::info!(
                records = replayed,
                checkpoint = ?rebuilt.from_checkpoint,
                millis = report.millis,
                "event log replayed; ready"
            );
        }
        self.inner.ready.store(true, Ordering::Release);
        self.inner.ready_notify.notify_waiters();
        Ok(())
    }

    /// Records the default account on a log that has none. A storage that refuses the write for a while
    /// (a cluster's stream still electing its leader, a full disk) is retried for up to
    /// [`BOOT_WRITE_WAIT`], as any writer would, instead of failing the start-up at its first refusal.
    async fn create_default_account(
        &self,
        projection: &Arc<RwLock<Projection>>,
    ) -> Result<(), EngineError> {
        let deadline = Instant::now() + BOOT_WRITE_WAIT;
        loop {
            let exists = || {
                projection
                    .read()
                    .account(&AccountId::default_account())
                    .is_some()
            };
            if exists() {
                return Ok(());
            }
            let created = self
                .submit(vec![Record::AccountCreated {
                    id: AccountId::default_account(),
                    name: "Default".into(),
                    at: Timestamp::now(),
                }])
                .await;
            match created {
                Ok(_) => return Ok(()),
                Err(EngineError::Storage(e)) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot record the default account yet; retrying");
                    actix_rt::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
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

    /// Why storage refuses writes now (e.g. a full disk), if it does. The log writer and the index writer
    /// reopen their storage with backoff and clear this by themselves once writes succeed again.
    pub fn storage_problem(&self) -> Option<String> {
        self.inner.metrics.storage.problem()
    }

    /// Why this node may not hold everything the log holds now (a shared log it lost contact with or
    /// follows far behind), if so; never on a single node. Reads are still served from what it holds.
    pub fn out_of_sync(&self) -> Option<String> {
        self.inner.log.out_of_sync()
    }

    /// The cluster as this node sees it; `None` on a single node.
    pub fn cluster_status(&self) -> Option<crate::ClusterStatus> {
        self.inner.owner.cluster()
    }

    pub fn startup_report(&self) -> StartupReport {
        self.inner.report.read().clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Prometheus text of the engine's metrics (and the process's).
    pub fn metrics_text(&self) -> String {
        let mut text = self.inner.metrics.render(&self.inner.projection.read());
        if let Some(c) = self.inner.owner.cluster() {
            text.push_str(&crate::metrics::cluster_text(&c));
        }
        text
    }

    /// Read access to the projection (for metrics and tools; request handlers use the scoped getters).
    pub fn projection(&self) -> Result<parking_lot::RwLockReadGuard<'_, Projection>, EngineError> {
        self.running()?;
        Ok(self.inner.projection.read())
    }

    /// Replays the whole log into a fresh projection (for checks: it must equal the live one).
    pub fn rebuild_projection(&self) -> Result<Projection, EngineError> {
        checkpoint::full_replay(&*self.inner.log).map(|(p, _)| p)
    }

    /// A clean stop: writes what is queued, brings the delivery index up to date and saves a checkpoint,
    /// so the next start replays nothing. (A crash instead is safe too; the next start replays more.)
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        let running = self.inner.running.get().ok_or(EngineError::NotReady)?;
        running
            .log_actor
            .send(Shutdown)
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// How many delivery attempts are under way now (sent, not yet answered).
    pub fn attempts_in_flight(&self) -> Result<usize, EngineError> {
        self.running()?;
        Ok(self
            .inner
            .metrics
            .permits
            .get()
            .map_or(0, |p| p.usage().in_flight))
    }

    /// How many subscription actors run: one per enabled webhook with work (an idle one stops, see
    /// [`crate::subscription::SubscriptionActor::idle_stop_after`]).
    pub async fn active_subscriptions(&self) -> Result<usize, EngineError> {
        let running = self.running()?;
        running
            .router
            .send(ActiveSubscriptions)
            .await
            .map_err(|_| EngineError::Stopped)
    }

    fn running(&self) -> Result<&Running, EngineError> {
        if !self.is_ready() {
            return Err(EngineError::NotReady);
        }
        self.inner.running.get().ok_or(EngineError::NotReady)
    }

    async fn submit(&self, records: Vec<Record>) -> Result<u64, EngineError> {
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
}
