//! The target policy at connect time: with private targets off, the dispatcher's resolver refuses a host
//! name that resolves to loopback (the DNS-rebinding case: the name looked fine when it was saved), and the
//! attempt comes back failed with an error that says why. Nothing reaches the receiver.
#![allow(clippy::unwrap_used)]

use actix_web::{web, App, HttpResponse, HttpServer};
use buildr_core::{
    AccountId, EventData, EventId, EventRecord, EventType, ObjectId, Secret, Timestamp,
};
use buildr_engine::dispatcher::{AttemptClass, Dispatcher, Outgoing};
use buildr_engine::DeliveryConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn event() -> EventRecord {
    EventRecord {
        id: EventId::generate(),
        account: AccountId::default_account(),
        event_type: EventType::ContactCreate,
        data: EventData {
            id: ObjectId::Int(1),
            url: "https://app.buildr.example/contacts/1".into(),
        },
        created_at: Timestamp::now(),
        only_webhook: None,
    }
}

fn dispatcher(allow_private: bool) -> Dispatcher {
    Dispatcher::new(&DeliveryConfig {
        allow_private_targets: allow_private,
        timeout: std::time::Duration::from_secs(2),
        ..DeliveryConfig::default()
    })
}

#[actix_rt::test]
async fn loopback_names_and_literals_are_refused_at_connect_time_unless_allowed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let server = HttpServer::new(move || {
        let h = h.clone();
        App::new().default_service(web::to(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { HttpResponse::Ok().finish() }
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());

    let secret = Secret::generate();
    let e = Outgoing::from_record(&event());
    let secret = [secret];
    let refused = dispatcher(false);
    for url in [
        format!("http://localhost:{port}/x"),
        format!("http://127.0.0.1:{port}/x"),
        format!("http://[::1]:{port}/x"),
    ] {
        let r = refused.attempt(&url, &secret, &e).await;
        assert!(
            matches!(r.class, AttemptClass::Failed { .. }),
            "{url}: {r:?}"
        );
        assert_eq!(r.status, None, "{url}");
        let error = r.error.unwrap_or_default();
        assert!(
            error.contains("refused") && error.contains("allow_private_targets"),
            "{url}: the error says why: {error}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the receiver"
    );

    let allowed = dispatcher(true);
    let r = allowed
        .attempt(&format!("http://localhost:{port}/x"), &secret, &e)
        .await;
    assert_eq!(r.class, AttemptClass::Delivered, "{r:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
