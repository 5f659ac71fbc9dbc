//! Liveness, readiness and the event-type catalogue.

use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::error::ErrorBody;
use crate::views::{ClusterResponse, EventTypeList, Status};
use crate::AppState;
use actix_web::{web, HttpResponse};

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status {
        status: "ok",
        message: None,
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()), responses((status = 200, description = "Start-up replay done, storage accepts writes and (cluster mode) the node is in sync with the stream", body = Status), (status = 503, description = "Replaying the log, storage refuses writes (e.g. a full disk: the service heals by itself once it accepts them again), or (cluster mode) not connected to NATS or behind the stream", body = Status)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (status, message) = if !state.engine.is_ready() {
        ("starting", "replaying the event log".to_owned())
    } else if let Some(problem) = state.engine.storage_problem() {
        (
            "storage_unwritable",
            format!("storage refuses writes: {problem}"),
        )
    } else if let Some(problem) = state.engine.out_of_sync() {
        (
            "out_of_sync",
            format!("not in sync with the cluster's stream: {problem}"),
        )
    } else {
        return HttpResponse::Ok().json(Status {
            status: "ready",
            message: None,
        });
    };
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(Status {
            status,
            message: Some(message),
        })
}

#[utoipa::path(get, path = "/api/2023-01/event-types", tag = "events", responses((status = 200, description = "The six event types", body = EventTypeList), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody)))]
pub async fn event_types(_caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(EventTypeList::all())
}

/// Prometheus text. Like `/healthz`, it needs no token: expose it only where operators can reach it.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()), responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.engine.metrics_text())
}

/// The cluster as this node sees it: its id, every live node with the shards it holds and its lag, the
/// stream. `404` on a single node.
#[utoipa::path(get, path = "/api/2023-01/cluster", tag = "operations", responses((status = 200, description = "The cluster", body = ClusterResponse), (status = 401, description = "Missing, unknown or revoked token", body = ErrorBody), (status = 403, description = "An account key: this route needs the admin token", body = ErrorBody), (status = 404, description = "A single node (not a cluster)", body = ErrorBody), (status = 429, description = "Too many failed authentications from this address", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody)))]
pub async fn cluster(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    match state.engine.cluster_status() {
        Some(s) => Ok(HttpResponse::Ok().json(ClusterResponse::new(s))),
        None => Err(ApiError::not_found("cluster")),
    }
}
