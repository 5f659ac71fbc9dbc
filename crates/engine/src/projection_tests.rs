//! Unit tests of [`crate::projection`]: how replays of outstanding deliveries restart them, and accounts.
#![allow(clippy::unwrap_used)]

use super::*;
use buildr_core::{
    AttemptRecord, EventData, EventId, EventRecord, EventType, ObjectId, Secret, Webhook,
};

pub(crate) fn webhook() -> Webhook {
    let at = Timestamp::from_millis(1_795_000_000_000);
    Webhook {
        id: WebhookId::generate(),
        account: AccountId::default_account(),
        url: "https://example.com/h".into(),
        description: String::new(),
        filter_types: None,
        rate_limit: 60,
        secret: Secret::generate(),
        previous_secret: None,
        disabled: false,
        disabled_reason: None,
        created_at: at,
        updated_at: at,
        ordering: buildr_core::DeliveryOrder::Parallel,
    }
}

fn event() -> Record {
    Record::EventPublished(EventRecord {
        id: EventId::generate(),
        account: AccountId::default_account(),
        event_type: EventType::ContactCreate,
        data: EventData {
            id: ObjectId::Int(1),
            url: "https://x.example/1".into(),
        },
        created_at: Timestamp::now(),
        only_webhook: None,
    })
}

fn attempt(w: &WebhookId, seq: u64, outcome: AttemptOutcome) -> Record {
    Record::DeliveryAttempted(AttemptRecord {
        webhook: w.clone(),
        seq,
        event_id: EventId::generate(),
        attempt: 1,
        at: Timestamp::now(),
        response_status: Some(200),
        response_body: String::new(),
        error: None,
        duration_ms: 1,
        outcome,
    })
}

fn replay(w: &WebhookId, seqs: Vec<u64>) -> Record {
    Record::ReplayRequested {
        id: ReplayId::generate(),
        webhook: w.clone(),
        seqs,
        at: Timestamp::now(),
    }
}

/// Applies `records` from seq 1; returns the projection.
fn run(records: &[Record]) -> Projection {
    let mut p = Projection::default();
    for (i, r) in records.iter().enumerate() {
        p.apply(i as u64 + 1, r);
    }
    p
}

#[test]
fn an_attempt_of_a_replayed_pending_delivery_restarts_it_and_keeps_the_replay_open() {
    let w = webhook();
    let id = w.id.clone();
    // 1 webhook, 2 event, 3 replay while in flight, 4 the attempt that was in flight.
    let p = run(&[
        Record::WebhookCreated(w),
        event(),
        replay(&id, vec![2]),
        attempt(&id, 2, AttemptOutcome::Succeeded),
    ]);
    let e = p.webhook_by_id(&id).unwrap();
    assert_eq!(e.pending.get(&2), Some(&Pending::queued(3)), "sent again");
    let r = p.replays.values().next().unwrap();
    assert_eq!(r.done(), 0, "done only when the resend ends");
    let mut p = p;
    p.apply(5, &attempt(&id, 2, AttemptOutcome::Succeeded));
    assert!(p.webhook_by_id(&id).unwrap().pending.is_empty());
    assert_eq!(p.replays.values().next().unwrap().done(), 1);
}

#[test]
fn a_restart_for_one_replay_leaves_a_later_replay_pending() {
    let w = webhook();
    let id = w.id.clone();
    // Replays at 3 and 4; the actor restarted it for 3 (and then sent it), not yet for 4.
    let mut p = run(&[
        Record::WebhookCreated(w),
        event(),
        replay(&id, vec![2]),
        replay(&id, vec![2]),
        Record::DeliveryRestarted {
            webhook: id.clone(),
            seq: 2,
            replay: 3,
            at: Timestamp::now(),
        },
    ]);
    assert_eq!(
        p.webhook_by_id(&id)
            .unwrap()
            .pending
            .get(&2)
            .unwrap()
            .replayed,
        Some(4)
    );
    // The attempt after that restart ends; the later replay sends it once more.
    p.apply(6, &attempt(&id, 2, AttemptOutcome::Succeeded));
    assert_eq!(
        p.webhook_by_id(&id).unwrap().pending.get(&2),
        Some(&Pending::queued(4)),
        "queued again at the later replay"
    );
    p.apply(7, &attempt(&id, 2, AttemptOutcome::Succeeded));
    assert!(p.webhook_by_id(&id).unwrap().pending.is_empty());
    assert!(p.replays.values().all(|r| r.done() == 1));
}

/// Two nodes of a cluster starting at once may both record the default account: the second record
/// changes nothing (it must not forget the keys created in between).
#[test]
fn a_second_account_creation_keeps_the_first() {
    let mut p = Projection::default();
    let acc = AccountId::default_account();
    let created = |name: &str, ms| Record::AccountCreated {
        id: acc.clone(),
        name: name.into(),
        at: Timestamp::from_millis(ms),
    };
    p.apply(1, &created("Default", 1_000));
    p.apply(
        2,
        &Record::ApiKeyCreated {
            account: acc.clone(),
            prefix: "bk_abc".into(),
            hash: [7; 32],
            at: Timestamp::from_millis(2_000),
        },
    );
    p.apply(3, &created("Other", 3_000));
    let a = p.account(&acc).unwrap();
    assert_eq!(
        (a.name.as_str(), a.created_at, a.key_prefixes.clone()),
        (
            "Default",
            Timestamp::from_millis(1_000),
            vec!["bk_abc".to_owned()]
        )
    );
}

/// A webhook's id is held once however many maps name it, and its account's id once for all the
/// account's webhooks (what 100,000 webhooks cost in memory, issue 12).
#[test]
fn a_webhooks_ids_are_shared_not_copied() {
    let (a, b) = (webhook(), webhook());
    // Decoded records hold ids of their own, as records read from the log do.
    let decoded = |w: &Webhook| {
        let mut w = w.clone();
        w.id = w.id.as_str().parse().unwrap();
        w.account = w.account.as_str().parse().unwrap();
        Record::WebhookCreated(w)
    };
    let live = run(&[decoded(&a), decoded(&b)]);
    // A checkpoint decodes with a text of its own in every place; sharing is restored on the way in.
    let mut bytes = Vec::new();
    crate::checkpoint::encode(&live, &mut bytes).unwrap();
    let restored = crate::checkpoint::decode(&bytes).unwrap();
    assert_eq!(restored, live);
    for p in [&live, &restored] {
        let (key, entry) = p.webhooks.get_key_value(&a.id).unwrap();
        let (account, ids) = p.by_account.get_key_value(&a.account).unwrap();
        let same = |x: &str, y: &str| std::ptr::eq(x.as_ptr(), y.as_ptr());
        assert!(same(key.as_str(), entry.webhook.id.as_str()));
        assert!(same(key.as_str(), ids.get(&a.id).unwrap().as_str()));
        let other = &p.webhook_by_id(&b.id).unwrap().webhook;
        assert!(same(account.as_str(), entry.webhook.account.as_str()));
        assert!(same(account.as_str(), other.account.as_str()));
    }
}

/// What one webhook costs the projection, held to what it is now (issue 12: 100,000 webhooks in a
/// burst within 256 MB). The entry is boxed, so its size decides the allocator's size class: a field
/// added carelessly (an inline secret, an unboxed option) shows here first, not in a benchmark.
#[test]
fn a_webhook_entry_stays_small() {
    let size = std::mem::size_of::<WebhookEntry>();
    println!(
        "WebhookEntry: {size} bytes, Webhook: {}",
        std::mem::size_of::<Webhook>()
    );
    assert!(size <= 224, "WebhookEntry is {size} bytes");
}
