//! A shared log may store a batch and still fail the append (its acknowledgement lost: a NATS server
//! killed between the quorum and the answer). The engine must then not write the batch's facts again:
//! an attempt is recorded once. The log here is the real sled `EventLog`, wrapped to answer such an
//! append as JetStream's does (an error; the stored records handed out later by `catch_up`).
#![allow(clippy::unwrap_used)]

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use buildr_core::{AccountId, EventData, EventType, ObjectId, Record, Timestamp};
use buildr_engine::{Engine, EngineConfig, NewEvent, NewWebhook, OwnsAll};
use buildr_log::{
    Appended, DeliveryIndex, Entries, EventLog, EventRef, EventRefs, Group, LogError, LogStore,
    Notify, Refused, Reopened,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The sled log, but the next `lose` appends that carry an attempt outcome are stored and then
/// answered with an error, their records handed out by `catch_up` instead; and the next `refuse`
/// appends of any kind are refused without storing anything (a stream with no leader yet).
struct AckLost {
    inner: EventLog,
    lose: AtomicUsize,
    refuse: AtomicUsize,
    lost: Mutex<Vec<(u64, Record)>>,
    notify: Mutex<Option<Notify>>,
}

impl LogStore for AckLost {
    fn kind(&self) -> &'static str {
        "ack-lost"
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    fn append_batch(&self, records: Vec<Record>, groups: &[Group]) -> Result<Appended, Refused> {
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Refused {
                error: LogError::Unavailable("no stream leader yet".into()),
                records,
            });
        }
        let outcome = records
            .iter()
            .any(|r| matches!(r, Record::DeliveryAttempted(_)));
        let appended = LogStore::append_batch(&self.inner, records, groups)?;
        if outcome
            && self
                .lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let records = appended.entries.iter().map(|(_, r)| r.clone()).collect();
            self.lost.lock().unwrap().extend(appended.entries);
            if let Some(n) = self.notify.lock().unwrap().as_ref() {
                n();
            }
            return Err(Refused {
                error: LogError::Unavailable("the acknowledgement was lost".into()),
                records,
            });
        }
        Ok(appended)
    }
    fn catch_up(&self, _to_end: bool) -> Result<Vec<(u64, Record)>, LogError> {
        Ok(std::mem::take(&mut *self.lost.lock().unwrap()))
    }
    fn follow(&self, _applied: u64, notify: Notify) -> Result<(), LogError> {
        *self.notify.lock().unwrap() = Some(notify);
        Ok(())
    }
    fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        self.inner.get(seq)
    }
    fn range(&self, from: u64, to: u64) -> Entries<'_> {
        Box::new(self.inner.range(from, to))
    }
    fn account_events(&self, account: &AccountId, after_seq: u64) -> Entries<'_> {
        Box::new(self.inner.account_events(account, after_seq))
    }
    fn account_events_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<EventRef>, LogError> {
        self.inner.account_events_between(account, since, until)
    }
    fn account_event_refs(&self, account: &AccountId, after_seq: u64) -> EventRefs<'_> {
        self.inner.account_event_refs(account, after_seq)
    }
    fn reopen(&self) -> Result<Reopened, LogError> {
        self.inner.reopen().map(|r| Reopened {
            unapplied: None,
            truncated: r.truncated,
        })
    }
    fn probe(&self) -> Result<(), LogError> {
        self.inner.probe()
    }
    fn reopen_index(&self) -> Result<(), LogError> {
        self.inner.reopen_index()
    }
    fn reset_index(&self) -> Result<(), LogError> {
        self.inner.reset_index()
    }
    fn remove(&self, seqs: &[u64]) -> Result<usize, LogError> {
        self.inner.remove(seqs)
    }
    fn stage_checkpoint(
        &self,
        seq: u64,
        write: &mut buildr_log::CheckpointWriter<'_>,
    ) -> Result<(), LogError> {
        self.inner.stage_checkpoint(seq, write)
    }
    fn commit_checkpoint(&self) -> Result<(), LogError> {
        self.inner.commit_checkpoint()
    }
    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        self.inner.load_checkpoint()
    }
    fn index(&self) -> Result<DeliveryIndex, LogError> {
        self.inner.index()
    }
    fn flush_index(&self) -> Result<(), LogError> {
        self.inner.flush_index()
    }
    fn flush(&self) -> Result<(), LogError> {
        self.inner.flush()
    }
}

/// A receiver counting the requests per `webhook-id`.
async fn receiver(got: Arc<Mutex<BTreeMap<String, u64>>>) -> String {
    let server = HttpServer::new(move || {
        let got = got.clone();
        App::new().default_service(web::to(move |req: HttpRequest| {
            let got = got.clone();
            async move {
                let id = req.headers().get("webhook-id").unwrap().to_str().unwrap();
                *got.lock().unwrap().entry(id.to_owned()).or_default() += 1;
                HttpResponse::Ok().finish()
            }
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let url = format!("http://{}/h", server.addrs()[0]);
    actix_web::rt::spawn(server.run());
    url
}

#[actix_web::test]
async fn outcomes_a_lost_acknowledgement_stored_are_not_recorded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, open) = EventLog::open(dir.path()).unwrap();
    let log = Arc::new(AckLost {
        inner,
        lose: AtomicUsize::new(0),
        refuse: AtomicUsize::new(0),
        lost: Mutex::default(),
        notify: Mutex::default(),
    });
    let mut config = EngineConfig::new(dir.path());
    config.delivery.allow_private_targets = true;
    let engine = Engine::start_on(config, log.clone(), open, Arc::new(OwnsAll)).unwrap();
    engine.ready().await.unwrap();
    let got = Arc::new(Mutex::new(BTreeMap::new()));
    let url = receiver(got.clone()).await;
    let acc = AccountId::default_account();
    let wh = engine
        .create_webhook(
            &acc,
            NewWebhook {
                url,
                description: String::new(),
                filter_types: None,
                secret: None,
                rate_limit: 600,
                ordering: buildr_core::DeliveryOrder::Parallel,
            },
        )
        .await
        .unwrap();
    // The next three batches of outcomes are stored, but their appends fail.
    log.lose.store(3, Ordering::SeqCst);
    let events: Vec<NewEvent> = (0..40)
        .map(|i| NewEvent {
            account: acc.clone(),
            event_type: EventType::ContactCreate,
            data: EventData {
                id: ObjectId::Int(i),
                url: format!("https://x.example/{i}"),
            },
        })
        .collect();
    engine.publish(&acc, events, None, true).await.unwrap();
    let mut recorded = BTreeMap::new();
    for _ in 0..200 {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let Ok((page, _)) = engine.deliveries(&acc, &wh.id, None, None, 100).await else {
            continue;
        };
        recorded = page
            .iter()
            .filter(|(_, d)| d.attempts > 0)
            .map(|(_, d)| (d.event_id.to_string(), u64::from(d.attempts)))
            .collect();
        if recorded.len() == 40 && log.lose.load(Ordering::SeqCst) == 0 {
            break;
        }
    }
    assert_eq!(log.lose.load(Ordering::SeqCst), 0, "no append was lost");
    assert_eq!(recorded.len(), 40, "every delivery recorded");
    assert_eq!(
        recorded,
        *got.lock().unwrap(),
        "recorded attempts = requests received"
    );
}

/// A storage that refuses the first writes (a cluster's stream still electing its leader when a node
/// starts) delays the start-up's own first write; it does not fail the start-up.
#[actix_web::test]
async fn start_up_waits_for_a_storage_that_refuses_its_first_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, open) = EventLog::open(dir.path()).unwrap();
    let log = Arc::new(AckLost {
        inner,
        lose: AtomicUsize::new(0),
        refuse: AtomicUsize::new(3),
        lost: Mutex::default(),
        notify: Mutex::default(),
    });
    let engine = Engine::start_on(
        EngineConfig::new(dir.path()),
        log.clone(),
        open,
        Arc::new(OwnsAll),
    )
    .unwrap();
    engine.ready().await.unwrap();
    assert_eq!(
        log.refuse.load(Ordering::SeqCst),
        0,
        "the writes were refused"
    );
    let acc = AccountId::default_account();
    let accounts = engine.list_accounts().unwrap();
    assert_eq!(
        accounts.iter().filter(|a| a.id == acc).count(),
        1,
        "the default account is recorded once"
    );
    let created = (1..=log.last_seq())
        .filter(|seq| matches!(log.get(*seq), Ok(Some(Record::AccountCreated { .. }))))
        .count();
    assert_eq!(created, 1, "one AccountCreated in the log");
}
