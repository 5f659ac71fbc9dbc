//! `/webhooks`: create, list, read, change, delete, secret.

use super::{int_param, webhook_id};
use crate::auth::Caller;
#[allow(unused_imports)]
use crate::error::{ApiError, ErrorBody};
use crate::json::{OptionalJson, StrictJson};
use crate::views::{
    EventResponse, EventView, SecretResponse, WebhookList, WebhookResponse, WebhookView,
};
use crate::AppState;
use actix_web::{web, HttpResponse};
use buildr_core::{validate, DisabledReason, WebhookChanges, WebhookId};
use buildr_engine::NewWebhook;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    webhook: WebhookInput,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    /// Absolute http(s) URL of a public address, no credentials.
    #[schema(format = "uri", min_length = 8, max_length = 2048)]
    url: String,
    #[serde(default)]
    #[schema(max_length = 1024)]
    description: Option<String>,
    /// Omitted or null: all six types.
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::views::EventTypeName>>, min_items = 1, max_items = 6)]
    filter_types: Option<Vec<String>>,
    /// `whsec_` + base64 of 24-75 bytes, or 6-256 printable ASCII characters; omitted: generated.
    #[serde(default)]
    #[schema(min_length = 6, max_length = 256)]
    secret: Option<String>,
    /// Deliveries per minute (default 60).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000000)]
    rate_limit: Option<i64>,
    /// `parallel` (default) or `fifo`: one attempt in flight, deliveries in log order, a failing one
    /// holds the later ones back until it succeeds or is finally failed.
    #[serde(default)]
    #[schema(value_type = Option<crate::views::OrderingName>)]
    ordering: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    webhook: PatchInput,
}

/// A PATCH: absent fields stay as they are; `null` is accepted only where it means something
/// (`filter_types: null` = all types).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchInput {
    #[serde(default, deserialize_with = "present")]
    url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    filter_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    secret: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    disabled: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::views::OrderingName>)]
    ordering: Option<Option<String>>,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn not_null<T>(field: &str, v: Option<Option<T>>) -> Result<Option<T>, ApiError> {
    match v {
        Some(None) => Err(ApiError::invalid(field, "must not be null")),
        Some(Some(x)) => Ok(Some(x)),
        None => Ok(None),
    }
}

#[utoipa::path(post, path = "/api/2023-01/webhooks", tag = "webhooks", request_body = CreateBody, responses((status = 201, description = "Created; the only answer besides GET …/secret that shows the secret", body = WebhookResponse), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 422, description = "Refused value, e.g. a private target", body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: StrictJson<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let w = body.value.webhook;
    let url = validate::target_url("webhook.url", &w.url)?;
    let description = w.description.unwrap_or_default();
    validate::description("webhook.description", &description)?;
    let filter_types = w
        .filter_types
        .map(|f| validate::filter_types("webhook.filter_types", &f))
        .transpose()?;
    let secret = w
        .secret
        .map(|s| validate::secret("webhook.secret", &s))
        .transpose()?;
    let rate_limit = match w.rate_limit {
        Some(r) => validate::rate_limit("webhook.rate_limit", r)?,
        None => validate::DEFAULT_RATE_LIMIT,
    };
    let ordering = w
        .ordering
        .map(|o| validate::ordering("webhook.ordering", &o))
        .transpose()?
        .unwrap_or_default();
    let new = NewWebhook {
        url: url.to_string(),
        description,
        filter_types,
        secret,
        rate_limit,
        ordering,
    };
    let created = state.engine.create_webhook(&caller.account, new).await?;
    Ok(HttpResponse::Created().json(WebhookResponse {
        webhook: WebhookView::with_secret(&created),
    }))
}

#[utoipa::path(get, path = "/api/2023-01/webhooks", tag = "webhooks", params(("limit" = Option<u32>, Query, description = "1-250, default 50", minimum = 1, maximum = 250), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "A page of webhooks, oldest first", body = WebhookList), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let limit = int_param("limit", query.get("limit"), 50, 1..=250)?;
    let cursor = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.parse::<WebhookId>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))?,
        ),
    };
    let (page, next) =
        state
            .engine
            .list_webhooks(&caller.account, cursor.as_ref(), limit as usize)?;
    let views: Vec<WebhookView> = page.iter().map(WebhookView::new).collect();
    Ok(HttpResponse::Ok().json(WebhookList {
        webhooks: views,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/2023-01/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Webhook id (wh_…)")), responses((status = 200, description = "The webhook", body = WebhookResponse), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let w = state
        .engine
        .get_webhook(&caller.account, &webhook_id(&path)?)?;
    Ok(HttpResponse::Ok().json(WebhookResponse {
        webhook: WebhookView::new(&w),
    }))
}

#[utoipa::path(patch, path = "/api/2023-01/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Webhook id (wh_…)")), request_body = PatchBody, responses((status = 200, description = "Changed", body = WebhookResponse), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody), (status = 422, description = "Refused value, e.g. a private target", body = ErrorBody)))]
pub async fn patch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: StrictJson<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let p = body.value.webhook;
    let mut changes = WebhookChanges::default();
    if let Some(u) = not_null("webhook.url", p.url)? {
        changes.url = Some(validate::target_url("webhook.url", &u)?.to_string());
    }
    if let Some(d) = p.description {
        let d = d.unwrap_or_default();
        validate::description("webhook.description", &d)?;
        changes.description = Some(d);
    }
    if let Some(f) = p.filter_types {
        changes.filter_types = Some(
            f.map(|f| validate::filter_types("webhook.filter_types", &f))
                .transpose()?,
        );
    }
    if let Some(s) = not_null("webhook.secret", p.secret)? {
        changes.secret = Some(validate::secret("webhook.secret", &s)?);
    }
    if let Some(r) = not_null("webhook.rate_limit", p.rate_limit)? {
        changes.rate_limit = Some(validate::rate_limit("webhook.rate_limit", r)?);
    }
    if let Some(o) = not_null("webhook.ordering", p.ordering)? {
        changes.ordering = Some(validate::ordering("webhook.ordering", &o)?);
    }
    if let Some(d) = not_null("webhook.disabled", p.disabled)? {
        changes.disabled = Some((d, d.then_some(DisabledReason::Manual)));
    }
    let w = state
        .engine
        .update_webhook(&caller.account, &id, changes)
        .await?;
    Ok(HttpResponse::Ok().json(WebhookResponse {
        webhook: WebhookView::new(&w),
    }))
}

#[utoipa::path(delete, path = "/api/2023-01/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Webhook id (wh_…)")), responses((status = 204, description = "Deleted"), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .engine
        .delete_webhook(&caller.account, &webhook_id(&path)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/2023-01/webhooks/{id}/secret", tag = "webhooks", params(("id" = String, Path, description = "Webhook id (wh_…)")), responses((status = 200, description = "The signing secret", body = SecretResponse), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn secret(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let w = state
        .engine
        .get_webhook(&caller.account, &webhook_id(&path)?)?;
    Ok(HttpResponse::Ok().json(SecretResponse {
        secret: w.secret.text(),
    }))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    #[serde(default)]
    secret: Option<String>,
}

#[utoipa::path(post, path = "/api/2023-01/webhooks/{id}/secret/rotate", tag = "webhooks", params(("id" = String, Path, description = "Webhook id (wh_…)")), request_body(content = Option<RotateBody>, description = "Optional: the new secret; omitted, one is generated"), responses((status = 200, description = "The new secret; the previous one keeps signing for secret_rotation_overlap", body = SecretResponse), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: OptionalJson<RotateBody>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    // The body is optional: an empty one (or no `secret`) generates a new secret.
    let requested = body
        .0
        .and_then(|b| b.secret)
        .map(|s| validate::secret("secret", &s))
        .transpose()?;
    let secret = state
        .engine
        .rotate_secret(&caller.account, &id, requested)
        .await?;
    Ok(HttpResponse::Ok().json(SecretResponse {
        secret: secret.text(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    #[serde(rename = "type")]
    event_type: String,
}

/// `POST /webhooks/{id}/test`: an example event of the given type, delivered to this webhook only.
#[utoipa::path(post, path = "/api/2023-01/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path, description = "Webhook id (wh_…)")), request_body = TestBody, responses((status = 202, description = "An example event, delivered to this webhook only", body = EventResponse), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody), (status = 422, description = "Refused value, e.g. a private target", body = ErrorBody)))]
pub async fn send_test(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: StrictJson<TestBody>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let t: buildr_core::EventType = body
        .value
        .event_type
        .parse()
        .map_err(|e| ApiError::invalid("type", format!("{e}")))?;
    let event = state.engine.send_test(&caller.account, &id, t).await?;
    Ok(HttpResponse::Accepted().json(EventResponse {
        event: EventView::new(&event),
    }))
}
