//! Liveness, readiness and the event-type catalogue.

use crate::auth::Caller;
use crate::AppState;
use actix_web::{web, HttpResponse};
use buildr_core::EventType;
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.engine.is_ready() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({ "status": "starting", "message": "replaying the event log" }))
    }
}

pub async fn event_types(_caller: Caller) -> HttpResponse {
    let types: Vec<_> = EventType::ALL
        .iter()
        .map(|t| json!({ "name": t.as_str(), "description": t.description() }))
        .collect();
    HttpResponse::Ok().json(json!({ "event_types": types }))
}

/// Prometheus text. Like `/healthz`, it needs no token: expose it only where operators can reach it.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.engine.metrics_text())
}
