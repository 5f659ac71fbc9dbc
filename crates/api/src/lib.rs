//! The HTTP front door of Buildr Webhooks (API.md): routes, auth, strict JSON, errors. Handlers only
//! translate between HTTP and [`buildr_engine::Engine`] calls; no state lives here.
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod json;
pub mod routes;
pub mod views;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse, ResponseError};
use buildr_engine::Engine;
pub use error::ApiError;

/// The path prefix of every API route.
pub const API_PREFIX: &str = "/api/2023-01";

/// What handlers share.
pub struct AppState {
    pub engine: Engine,
    pub admin_token: auth::AdminToken,
    pub auth_failures: auth::AuthFailures,
}

impl AppState {
    pub fn new(engine: Engine, admin_token: &str) -> Self {
        Self {
            engine,
            admin_token: auth::AdminToken::new(admin_token),
            auth_failures: auth::AuthFailures::default(),
        }
    }
}

/// Registers every route. Use inside `App::new().configure(...)` with `web::Data<AppState>` set.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use routes::{accounts, deliveries, events, ops, webhooks};
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("bad query string: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
    )
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .service(
        web::scope(API_PREFIX)
            .wrap(from_fn(require_ready))
            .route("/event-types", web::get().to(ops::event_types))
            .service(
                web::resource("/accounts")
                    .route(web::post().to(accounts::create))
                    .route(web::get().to(accounts::list)),
            )
            .route("/accounts/{id}/keys", web::post().to(accounts::create_key))
            .route(
                "/accounts/{id}/keys/{prefix}",
                web::delete().to(accounts::revoke_key),
            )
            .service(
                web::resource("/webhooks")
                    .route(web::post().to(webhooks::create))
                    .route(web::get().to(webhooks::list)),
            )
            .service(
                web::resource("/webhooks/{id}")
                    .route(web::get().to(webhooks::get))
                    .route(web::patch().to(webhooks::patch))
                    .route(web::delete().to(webhooks::delete)),
            )
            .route("/webhooks/{id}/secret", web::get().to(webhooks::secret))
            .route(
                "/webhooks/{id}/secret/rotate",
                web::post().to(webhooks::rotate),
            )
            .route("/webhooks/{id}/deliveries", web::get().to(deliveries::list))
            .route(
                "/webhooks/{id}/deliveries/{event_id}/attempts",
                web::get().to(deliveries::attempts),
            )
            .route("/webhooks/{id}/replay", web::post().to(deliveries::replay))
            .route(
                "/webhooks/{id}/replays/{replay_id}",
                web::get().to(deliveries::replay_status),
            )
            .service(
                web::resource("/events")
                    .route(web::post().to(events::publish))
                    .route(web::get().to(events::list)),
            )
            .route("/events/batch", web::post().to(events::publish_batch))
            .default_service(web::to(not_found)),
    );
}

/// JSON 404 for unknown paths (mount with `App::default_service`).
pub async fn not_found() -> HttpResponse {
    ApiError::not_found("route").error_response()
}

/// API routes answer `503` with `Retry-After` until the start-up replay is done.
async fn require_ready(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    let ready = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.engine.is_ready());
    if !ready {
        let res =
            ApiError::unavailable("the service is starting up (replaying its log); retry shortly")
                .error_response();
        return Ok(req.into_response(res).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}
