//! The OpenAPI document, generated from the handlers' annotations and the response types (never written
//! by hand), served without a token at `GET /api/2023-01/openapi.json`.

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{accounts, deliveries, events, ops, webhooks};
use crate::views;
use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Buildr Webhooks",
        description = "Signed, rate-limited, never-lost webhook delivery for the Buildr platform."
    ),
    paths(
        webhooks::create, webhooks::list, webhooks::get, webhooks::patch, webhooks::delete,
        webhooks::secret, webhooks::rotate, webhooks::send_test,
        events::publish, events::publish_batch, events::list,
        deliveries::list, deliveries::attempts, deliveries::replay, deliveries::replay_status,
        ops::event_types, ops::healthz, ops::readyz, ops::metrics,
        accounts::create, accounts::list, accounts::create_key, accounts::revoke_key,
    ),
    components(schemas(
        ErrorBody, ErrorDetail,
        views::WebhookView, views::WebhookResponse, views::WebhookList, views::SecretResponse,
        views::EventView, views::DataView, views::EventResponse, views::EventsResponse, views::EventList,
        views::EventTypeView, views::EventTypeList, views::EventTypeName, views::OrderingName,
        views::DeliveryView, views::DeliveryList, views::AttemptView, views::AttemptList,
        views::ReplayCreated, views::ReplayCreatedView, views::ReplayResponse, views::ReplayView, views::Status,
        views::AccountView, views::AccountCreated, views::AccountList, views::KeyCreated,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "webhooks", description = "Subscriptions: where, which events, how fast, signed with what"),
        (name = "events", description = "What happened on the Buildr platform"),
        (name = "deliveries", description = "What happened to each event, and sending it again"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "accounts", description = "Tenants and their API keys (admin token only)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token or an account API key (bk_…)"))
                    .build(),
            ),
        );
        // Every route that can answer 401 can also answer 429: failed authentications are rate-limited
        // per client address. Said once here rather than on every handler.
        let limited = utoipa::openapi::ResponseBuilder::new()
            .description(
                "Too many failed authentications from this address; retry after Retry-After",
            )
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if op.responses.responses.contains_key("401") {
                    op.responses
                        .responses
                        .entry("429".to_owned())
                        .or_insert_with(|| limited.clone().into());
                }
            }
        }
    }
}

/// `GET /api/2023-01/openapi.json`
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{API_PREFIX, ROUTES};

    #[test]
    fn every_registered_route_is_in_the_spec() {
        let doc = ApiDoc::openapi();
        let mut missing = Vec::new();
        for (method, path) in ROUTES.iter().map(|(m, p)| (*m, format!("{API_PREFIX}{p}"))) {
            let item = doc.paths.paths.get(&path);
            let found = item.is_some_and(|i| match method {
                "get" => i.get.is_some(),
                "post" => i.post.is_some(),
                "patch" => i.patch.is_some(),
                "put" => i.put.is_some(),
                "delete" => i.delete.is_some(),
                _ => false,
            });
            if !found {
                missing.push(format!("{method} {path}"));
            }
        }
        assert!(
            missing.is_empty(),
            "routes missing from the OpenAPI document: {missing:?}"
        );
        for ops_path in ["/healthz", "/readyz", "/metrics"] {
            assert!(doc.paths.paths.contains_key(ops_path), "{ops_path}");
        }
        assert!(!ROUTES.is_empty());
    }
}
