//! Embedding Buildr Webhooks in another Rust program as a single node, without HTTP:
//! start the engine on a data directory, register a webhook, publish an event, watch it arrive.
//!
//! Run: `cargo run -p buildr-engine --example embedded`
//! (it starts its own receiver on 127.0.0.1 and stops once the event has been delivered).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use buildr_core::{AccountId, EventData, EventType, ObjectId};
use buildr_engine::{Engine, EngineConfig, NewEvent, NewWebhook};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A receiver standing in for the customer's application.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let receiver = HttpServer::new(move || {
        let counter = counter.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let counter = counter.clone();
            async move {
                println!(
                    "receiver got webhook-id={} body={}",
                    req.headers()
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?"),
                    String::from_utf8_lossy(&body)
                );
                counter.fetch_add(1, Ordering::SeqCst);
                HttpResponse::Ok().finish()
            }
        }))
    })
    .bind(("127.0.0.1", 0))?;
    let url = format!("http://{}/hooks", receiver.addrs()[0]);
    actix_web::rt::spawn(receiver.run());

    // The engine: a sled log in a directory of ours.
    let dir = std::env::temp_dir().join(format!("buildr-embedded-{}", std::process::id()));
    let mut config = EngineConfig::new(&dir);
    config.delivery.allow_private_targets = true; // our receiver is on loopback
    let engine = Engine::start(config)?;
    engine.ready().await?;

    let account = AccountId::default_account();
    let webhook = engine
        .create_webhook(
            &account,
            NewWebhook {
                url,
                description: "embedded example".into(),
                filter_types: Some(vec![EventType::OpportunityCreate]),
                secret: None,
                rate_limit: 60,
                ordering: buildr_core::DeliveryOrder::Parallel,
            },
        )
        .await?;
    println!(
        "webhook {} signs with {}",
        webhook.id,
        webhook.secret.text()
    );

    let published = engine
        .publish(
            &account,
            vec![NewEvent {
                account: account.clone(),
                event_type: EventType::OpportunityCreate,
                data: EventData {
                    id: ObjectId::Int(2279),
                    url: "https://app.buildr.example/opportunities/2279".into(),
                },
            }],
            None,
            false,
        )
        .await?;
    println!("published {} (durable)", published.events[0].id);

    for _ in 0..100 {
        if received.load(Ordering::SeqCst) > 0 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if received.load(Ordering::SeqCst) == 0 {
        return Err("the event was not delivered".into());
    }
    Ok(())
}
