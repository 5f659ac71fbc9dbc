//! The HTTP front door of Buildr Webhooks (API.md): routes, auth, strict JSON, errors. Handlers only
//! translate between HTTP and [`buildr_engine::Engine`] calls; no state lives here.
#![forbid(unsafe_code)]

pub mod auth;
pub mod developer_page;
pub mod error;
pub mod json;
pub mod openapi;
pub mod position;
pub mod request_log;
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
    /// The state with the default limit of failed authentications ([`auth::FAILED_AUTH_PER_MINUTE`]).
    pub fn new(engine: Engine, admin_token: &str) -> Self {
        Self {
            engine,
            admin_token: auth::AdminToken::new(admin_token),
            auth_failures: auth::AuthFailures::default(),
        }
    }

    /// Accepts `admin` as the admin token instead (cluster mode: a token known only by its hash).
    pub fn with_admin_token(mut self, admin: auth::AdminToken) -> Self {
        self.admin_token = admin;
        self
    }

    /// Failed authentications allowed per client address per minute (`auth.failed_per_minute`; 0 = off).
    pub fn with_failed_auth_limit(mut self, per_minute: u32) -> Self {
        self.auth_failures = auth::AuthFailures::per_minute(per_minute);
        self
    }
}

/// Declares the API routes once: they are registered from this list and the OpenAPI test checks every
/// one of them is documented, so a route cannot be added without its spec.
macro_rules! api_routes {
    ($( $path:literal => { $( $method:ident : $handler:path ),+ $(,)? } ),* $(,)?) => {
        /// Every route under [`API_PREFIX`]: (method, path).
        pub const ROUTES: &[(&str, &str)] = &[ $( $( (stringify!($method), $path) ),+ ),* ];

        fn register(scope: actix_web::Scope) -> actix_web::Scope {
            scope $( .service(web::resource($path) $( .route(web::$method().to($handler)) )+ ) )*
        }
    };
}

// actix tries the resources in this order, and each path with a `{…}` segment is a regex match
// (`actix_router`): publishing comes first, so an event never runs the eleven webhook and account patterns
// (2.5 % of the server's CPU in S2's profile).
api_routes! {
    "/events" => { post: routes::events::publish, get: routes::events::list },
    "/events/batch" => { post: routes::events::publish_batch },
    "/event-types" => { get: routes::ops::event_types },
    "/cluster" => { get: routes::ops::cluster },
    "/accounts" => { post: routes::accounts::create, get: routes::accounts::list },
    "/accounts/{id}/keys" => { post: routes::accounts::create_key },
    "/accounts/{id}/keys/{key_prefix}" => { delete: routes::accounts::revoke_key },
    "/webhooks" => { post: routes::webhooks::create, get: routes::webhooks::list },
    "/webhooks/{id}" => {
        get: routes::webhooks::get,
        patch: routes::webhooks::patch,
        delete: routes::webhooks::delete,
    },
    "/webhooks/{id}/secret" => { get: routes::webhooks::secret },
    "/webhooks/{id}/secret/rotate" => { post: routes::webhooks::rotate },
    "/webhooks/{id}/test" => { post: routes::webhooks::send_test },
    "/webhooks/{id}/deliveries" => { get: routes::deliveries::list },
    "/webhooks/{id}/deliveries/{event_id}/attempts" => { get: routes::deliveries::attempts },
    "/webhooks/{id}/replay" => { post: routes::deliveries::replay },
    "/webhooks/{id}/replays/{replay_id}" => { get: routes::deliveries::replay_status },
    "/webhooks/{id}/stats" => { get: routes::stats::webhook },
    "/stats" => { get: routes::stats::account },
}

/// Registers every route. Use inside `App::new().configure(...)` with `web::Data<AppState>` set.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use routes::ops;
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("bad query string: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request(e.to_string()).into()),
    )
    .configure(developer_page::configure)
    .route("/healthz", web::get().to(ops::healthz))
    .route("/readyz", web::get().to(ops::readyz))
    .route("/metrics", web::get().to(ops::metrics))
    // The spec needs no token and is served while the log replays.
    .route(
        &format!("{API_PREFIX}/openapi.json"),
        web::get().to(openapi::serve),
    )
    .service(
        register(web::scope(API_PREFIX))
            .default_service(web::to(not_found))
            .wrap(from_fn(position::at_least))
            .wrap(from_fn(require_ready)),
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
