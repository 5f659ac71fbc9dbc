//! `/events`: the Buildr platform reports what happened. Answers `202` only once the events are durable.

use super::int_param;
use crate::auth::Caller;
#[allow(unused_imports)]
use crate::error::{ApiError, ErrorBody};
use crate::json::{StrictJson, BATCH_LIMIT};
use crate::views::{EventList, EventResponse, EventView, EventsResponse};
use crate::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use buildr_core::{validate, AccountId, EventData, EventType, ObjectId};
use buildr_engine::NewEvent;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const MAX_BATCH: usize = 1000;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_STRING_ID: usize = 255;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    event: EventInput,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<EventInput>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EventInput {
    #[serde(rename = "type")]
    #[schema(value_type = crate::views::EventTypeName)]
    event_type: String,
    #[serde(default)]
    account: Option<String>,
    data: DataInput,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DataInput {
    #[schema(schema_with = crate::views::object_id_schema)]
    id: Value,
    url: String,
}

fn to_new_event(caller: &Caller, e: EventInput, prefix: &str) -> Result<NewEvent, ApiError> {
    let event_type: EventType = e
        .event_type
        .parse()
        .map_err(|err| ApiError::invalid(format!("{prefix}.type"), format!("{err}")))?;
    let account = match e.account {
        None => caller.account.clone(),
        Some(a) => a.parse::<AccountId>().map_err(|_| {
            ApiError::invalid(format!("{prefix}.account"), "must be an account id (acc_…)")
        })?,
    };
    if !caller.admin && account != caller.account {
        return Err(ApiError::forbidden(
            "an account key may only publish into its own account",
        ));
    }
    let id = match e.data.id {
        Value::Number(n) => n.as_i64().map(ObjectId::Int).ok_or_else(|| {
            ApiError::invalid(
                format!("{prefix}.data.id"),
                "must be a 64-bit integer or a string",
            )
        })?,
        Value::String(s) if !s.is_empty() && s.len() <= MAX_STRING_ID => ObjectId::Str(s),
        _ => {
            return Err(ApiError::invalid(
                format!("{prefix}.data.id"),
                "must be an integer or a non-empty string of at most 255 bytes",
            ))
        }
    };
    validate::object_url(&format!("{prefix}.data.url"), &e.data.url)?;
    Ok(NewEvent {
        account,
        event_type,
        data: EventData {
            id,
            url: e.data.url,
        },
    })
}

fn idempotency(req: &HttpRequest, raw: &[u8]) -> Result<Option<(String, [u8; 32])>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some((key.to_owned(), Sha256::digest(raw).into())))
}

#[utoipa::path(post, path = "/api/2023-01/events", tag = "events", params(("Idempotency-Key" = Option<String>, Header, description = "≤ 255 chars; a repeat with the same body returns the first answer")), request_body = PublishBody, responses((status = 202, description = "Durable on disk", body = EventResponse), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 403, description = "Publishing into another account", body = ErrorBody), (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody), (status = 422, description = "Refused value, e.g. a private target", body = ErrorBody)))]
pub async fn publish(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: StrictJson<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let idem = idempotency(&req, &body.raw)?;
    let event = to_new_event(&caller, body.value.event, "event")?;
    let published = state
        .engine
        .publish(&caller.account, vec![event], idem, false)
        .await?;
    let event = published
        .events
        .first()
        .map(EventView::new)
        .ok_or_else(|| ApiError::internal("the event was not stored"))?;
    Ok(HttpResponse::Accepted().json(EventResponse { event }))
}

#[utoipa::path(post, path = "/api/2023-01/events/batch", tag = "events", params(("Idempotency-Key" = Option<String>, Header, description = "≤ 255 chars")), request_body = BatchBody, responses((status = 202, description = "All durable, or none stored", body = EventsResponse), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 403, description = "Publishing into another account", body = ErrorBody), (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody), (status = 422, description = "Refused value, e.g. a private target", body = ErrorBody)))]
pub async fn publish_batch(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: StrictJson<BatchBody, BATCH_LIMIT>,
) -> Result<HttpResponse, ApiError> {
    let idem = idempotency(&req, &body.raw)?;
    let inputs = body.value.events;
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(ApiError::invalid("events", "must hold 1 to 1000 events"));
    }
    let events = inputs
        .into_iter()
        .enumerate()
        .map(|(i, e)| to_new_event(&caller, e, &format!("events[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let published = state
        .engine
        .publish(&caller.account, events, idem, true)
        .await?;
    let views: Vec<EventView> = published.events.iter().map(EventView::new).collect();
    Ok(HttpResponse::Accepted().json(EventsResponse { events: views }))
}

#[utoipa::path(get, path = "/api/2023-01/events", tag = "events", params(("after_seq" = Option<u64>, Query, description = "default 0"), ("limit" = Option<u32>, Query, description = "1-1000, default 100", minimum = 1, maximum = 1000)), responses((status = 200, description = "The caller's events after after_seq", body = EventList), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let after = int_param("after_seq", query.get("after_seq"), 0, 0..=u64::MAX)?;
    let limit = int_param("limit", query.get("limit"), 100, 1..=1000)?;
    let events = state
        .engine
        .list_events(&caller.account, after, limit as usize)?;
    let next_seq = events.last().map_or(after, |e| e.seq);
    let views: Vec<EventView> = events.iter().map(EventView::new).collect();
    Ok(HttpResponse::Ok().json(EventList {
        events: views,
        next_seq,
    }))
}
