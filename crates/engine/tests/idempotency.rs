//! The same Idempotency-Key used many times at once on one node (the embedded Engine on a real sled
//! dir): the log writer writes batches while earlier ones wait for their sync, so a second use can
//! arrive while the first is written but not yet durable. It must wait for the first and get its answer:
//! one set of events stored, every caller answered with the same events, a different body a conflict.
#![allow(clippy::unwrap_used)]

use buildr_core::{AccountId, EventData, EventType, ObjectId};
use buildr_engine::{Engine, EngineConfig, EngineError, NewEvent};

fn events(account: &AccountId, from: i64, n: i64) -> Vec<NewEvent> {
    (from..from + n)
        .map(|i| NewEvent {
            account: account.clone(),
            event_type: EventType::ContactCreate,
            data: EventData {
                id: ObjectId::Int(i),
                url: format!("https://app.buildr.example/contacts/{i}"),
            },
        })
        .collect()
}

#[actix_web::test]
async fn concurrent_uses_of_one_key_store_the_events_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(EngineConfig::new(dir.path())).unwrap();
    engine.ready().await.unwrap();
    let acc = AccountId::default_account();
    for round in 0..20i64 {
        let key = format!("key-{round}");
        let hash = [round as u8; 32];
        // Other publishes without a key keep the writer busy, so uses of the key land in different
        // batches, some while an earlier batch waits for its sync.
        let mut calls = Vec::new();
        for i in 0..24i64 {
            let engine = engine.clone();
            let acc = acc.clone();
            let key = key.clone();
            calls.push(actix_web::rt::spawn(async move {
                if i % 3 == 0 {
                    engine
                        .publish(&acc, events(&acc, 1_000 + i, 1), None, false)
                        .await
                        .map(|_| None)
                } else {
                    engine
                        .publish(&acc, events(&acc, 0, 3), Some((key, hash)), true)
                        .await
                        .map(Some)
                }
            }));
        }
        let mut answers = Vec::new();
        for call in calls {
            if let Some(published) = call.await.unwrap().unwrap() {
                answers.push(published);
            }
        }
        let first: Vec<_> = answers
            .iter()
            .filter(|p| !p.replayed)
            .map(|p| {
                p.events
                    .iter()
                    .map(|e| e.id.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            first.len(),
            1,
            "round {round}: exactly one use stored events"
        );
        for p in &answers {
            let ids: Vec<_> = p.events.iter().map(|e| e.id.to_string()).collect();
            assert_eq!(
                ids, first[0],
                "round {round}: every use answered with the first's events"
            );
        }
        // The same key with a different body: a conflict, nothing stored.
        let before = engine.list_events(&acc, 0, 100_000).unwrap().len();
        let other = engine
            .publish(&acc, events(&acc, 0, 3), Some((key, [255; 32])), true)
            .await;
        assert!(
            matches!(other, Err(EngineError::IdempotencyConflict)),
            "round {round}: a different body under a used key: {other:?}"
        );
        assert_eq!(engine.list_events(&acc, 0, 100_000).unwrap().len(), before);
    }
    // Every round stored its 3 keyed events once, besides the 8 unkeyed ones.
    let stored = engine.list_events(&acc, 0, 100_000).unwrap();
    assert_eq!(stored.len(), 20 * (3 + 8));
}
