//! The OpenAPI document, generated from the handlers' annotations and the response types (never written
//! by hand), served without a token at `GET /api/2023-01/openapi.json`.

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{accounts, deliveries, events, ops, stats, webhooks};
use crate::views;
use crate::API_PREFIX;
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
        stats::webhook, stats::account,
        ops::event_types, ops::healthz, ops::readyz, ops::metrics,
        accounts::create, accounts::list, accounts::create_key, accounts::revoke_key,
    ),
    components(schemas(
        ErrorBody, ErrorDetail,
        views::WebhookView, views::WebhookResponse, views::WebhookList, views::SecretResponse,
        views::EventView, views::DataView, views::EventResponse, views::EventsResponse, views::EventList,
        views::EventTypeView, views::EventTypeList, views::EventTypeName, views::OrderingName,
        views::StatsResponse, views::StatsView, views::StatsBucketView,
        views::DeliveryView, views::DeliveryList, views::AttemptView, views::AttemptList,
        views::ReplayCreated, views::ReplayCreatedView, views::ReplayResponse, views::ReplayView, views::Status,
        views::AccountView, views::AccountCreated, views::AccountList, views::KeyCreated,
    )),
    modifiers(&BearerAuth, &Links),
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

/// OpenAPI links: which response holds the id that other operations take. Clients can follow them, and
/// schemathesis's stateful phase chains calls along them, so the API fuzzing reaches the webhook-scoped
/// routes with real ids instead of 404s on invented ones.
struct Links;

/// One link: from `(method, path, status)` to `(method, path)`, with the target's path parameters as
/// runtime expressions. Paths are relative to the API prefix.
type LinkSpec = (
    (&'static str, &'static str, &'static str),
    (&'static str, &'static str),
    &'static [(&'static str, &'static str)],
);

const NEW_WEBHOOK: &[(&str, &str)] = &[("id", "$response.body#/webhook/id")];
const LISTED_WEBHOOK: &[(&str, &str)] = &[("id", "$response.body#/webhooks/0/id")];
const ATTEMPTS: (&str, &str) = ("get", "/webhooks/{id}/deliveries/{event_id}/attempts");
const REVOKE_KEY: (&str, &str) = ("delete", "/accounts/{id}/keys/{key_prefix}");

/// The links that need more than a webhook id (those that need only it are made for every operation
/// under `/webhooks/{id}` in `Links::modify`).
const LINKS: &[LinkSpec] = &[
    (
        ("post", "/webhooks/{id}/test", "202"),
        ATTEMPTS,
        &[
            ("id", "$request.path.id"),
            ("event_id", "$response.body#/event/id"),
        ],
    ),
    (
        ("get", "/webhooks/{id}/deliveries", "200"),
        ATTEMPTS,
        &[
            ("id", "$request.path.id"),
            ("event_id", "$response.body#/deliveries/0/event_id"),
        ],
    ),
    (
        ("post", "/webhooks/{id}/replay", "202"),
        ("get", "/webhooks/{id}/replays/{replay_id}"),
        &[
            ("id", "$request.path.id"),
            ("replay_id", "$response.body#/replay/id"),
        ],
    ),
    (
        ("post", "/accounts", "201"),
        ("post", "/accounts/{id}/keys"),
        &[("id", "$response.body#/account/id")],
    ),
    (
        ("post", "/accounts", "201"),
        REVOKE_KEY,
        &[
            ("id", "$response.body#/account/id"),
            ("key_prefix", "$response.body#/key_prefix"),
        ],
    ),
    (
        ("post", "/accounts/{id}/keys", "201"),
        REVOKE_KEY,
        &[
            ("id", "$request.path.id"),
            ("key_prefix", "$response.body#/key_prefix"),
        ],
    ),
];

fn operation_mut<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    method: &str,
    path: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = doc.paths.paths.get_mut(&format!("{API_PREFIX}{path}"))?;
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "patch" => item.patch.as_mut(),
        "put" => item.put.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
}

fn methods(item: &utoipa::openapi::PathItem) -> Vec<&'static str> {
    [
        ("get", item.get.is_some()),
        ("post", item.post.is_some()),
        ("patch", item.patch.is_some()),
        ("put", item.put.is_some()),
        ("delete", item.delete.is_some()),
    ]
    .into_iter()
    .filter_map(|(m, present)| present.then_some(m))
    .collect()
}

/// Adds a link to the source response; nothing when the source or the target is not in the document
/// (the unit tests check every link the document should have is there).
fn add_link(
    doc: &mut utoipa::openapi::OpenApi,
    (from_method, from_path, status): (&str, &str, &str),
    (to_method, to_path): (&str, &str),
    params: &[(&str, &str)],
) {
    if operation_mut(doc, to_method, to_path).is_none() {
        return;
    }
    // A JSON pointer to the target operation (`/` is `~1` in a pointer): unambiguous without operationIds.
    // utoipa 5.5 serializes `Link::operation_ref` as `operation_ref`, which no client reads, so the
    // field goes in under its OpenAPI name through the (flattened, unfiltered) extensions map.
    let pointer = format!("{API_PREFIX}{to_path}")
        .replace('~', "~0")
        .replace('/', "~1");
    let operation_ref = utoipa::openapi::extensions::Extensions::from_iter([(
        "operationRef",
        format!("#/paths/{pointer}/{to_method}"),
    )]);
    let link = params
        .iter()
        .fold(
            utoipa::openapi::link::LinkBuilder::new().extensions(Some(operation_ref)),
            |b, (name, expr)| b.parameter(*name, *expr),
        )
        .build();
    let name: String = format!("{to_method}{to_path}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let Some(op) = operation_mut(doc, from_method, from_path) else {
        return;
    };
    if let Some(utoipa::openapi::RefOr::T(response)) = op.responses.responses.get_mut(status) {
        response.links.insert(name, link.into());
    }
}

impl Modify for Links {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scoped = format!("{API_PREFIX}/webhooks/{{id}}");
        // Every operation whose only path parameter is the webhook id.
        let by_webhook_id: Vec<(&'static str, String)> = doc
            .paths
            .paths
            .iter()
            .filter(|(path, _)| path.starts_with(&scoped) && path.matches('{').count() == 1)
            .flat_map(|(path, item)| {
                let rel = path[API_PREFIX.len()..].to_owned();
                methods(item).into_iter().map(move |m| (m, rel.clone()))
            })
            .collect();
        for (method, path) in &by_webhook_id {
            add_link(
                doc,
                ("post", "/webhooks", "201"),
                (method, path),
                NEW_WEBHOOK,
            );
            add_link(
                doc,
                ("get", "/webhooks", "200"),
                (method, path),
                LISTED_WEBHOOK,
            );
        }
        for (from, to, params) in LINKS {
            add_link(doc, *from, *to, params);
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

    fn json() -> serde_json::Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
    }

    /// The properties a request body must have, following its `$ref`.
    fn required_of_body(doc: &serde_json::Value, method: &str, path: &str) -> Vec<String> {
        let op = &doc["paths"][format!("{API_PREFIX}{path}")][method];
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        let name = schema["$ref"].as_str().unwrap_or_default();
        let name = name.rsplit('/').next().unwrap_or_default();
        doc["components"]["schemas"][name]["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn request_bodies_are_their_own_schemas() {
        // Two types of one name (webhooks::CreateBody, accounts::CreateBody) once made POST /webhooks
        // document the account body.
        let doc = json();
        for (method, path, wrapper) in [
            ("post", "/webhooks", "webhook"),
            ("patch", "/webhooks/{id}", "webhook"),
            ("post", "/accounts", "account"),
            ("post", "/events", "event"),
            ("post", "/events/batch", "events"),
        ] {
            assert_eq!(
                required_of_body(&doc, method, path),
                vec![wrapper.to_owned()],
                "{method} {path}"
            );
        }
    }

    /// Every operation a link names, as `(method, path)`.
    fn link_targets(doc: &serde_json::Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
        {
            for op in item.as_object().into_iter().flat_map(|i| i.values()) {
                for response in op["responses"]
                    .as_object()
                    .into_iter()
                    .flat_map(|r| r.values())
                {
                    for link in response["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        assert!(link.get("operation_ref").is_none(), "{link}");
                        let r = link["operationRef"].as_str().unwrap_or_default();
                        let r = r.strip_prefix("#/paths/").unwrap_or_default();
                        let (pointer, method) = r.rsplit_once('/').unwrap_or_default();
                        let path = pointer.replace("~1", "/").replace("~0", "~");
                        out.push((method.to_owned(), path));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn links_reach_every_webhook_scoped_operation_and_exist() {
        let doc = json();
        let targets = link_targets(&doc);
        assert!(!targets.is_empty());
        for (method, path) in &targets {
            assert!(
                doc["paths"][path][method].is_object(),
                "a link names {method} {path}, which is not in the document"
            );
        }
        let scoped = format!("{API_PREFIX}/webhooks/{{id}}");
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            if !path.starts_with(&scoped) {
                continue;
            }
            for method in item.as_object().into_iter().flat_map(|i| i.keys()) {
                assert!(
                    targets.iter().any(|(m, p)| m == method && p == path),
                    "no link leads to {method} {path}: fuzzing and clients cannot find its ids"
                );
            }
        }
        // Each hand-written link was added (its source response exists).
        for (from, _, _) in LINKS {
            let (method, path, status) = from;
            let links =
                &doc["paths"][format!("{API_PREFIX}{path}")][method]["responses"][status]["links"];
            assert!(links.is_object(), "{method} {path} {status} has no links");
        }
    }
}
