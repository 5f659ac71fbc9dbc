//! `/webhooks/{id}/deliveries`, `/attempts`, `/replay` and `/replays`: what happened to each event, and
//! sending it again.

use super::{int_param, webhook_id};
use crate::auth::Caller;
#[allow(unused_imports)]
use crate::error::{ApiError, ErrorBody};
use crate::json::StrictJson;
use crate::views::{
    AttemptList, AttemptView, DeliveryList, DeliveryView, ReplayCreated, ReplayCreatedView,
    ReplayResponse, ReplayView,
};
use crate::AppState;
use actix_web::{web, HttpResponse};
use buildr_core::{DeliveryStatus, EventId, ReplayId, Timestamp};
use buildr_engine::ReplayRange;
use serde::Deserialize;
use std::collections::HashMap;

#[utoipa::path(get, path = "/api/2023-01/webhooks/{id}/deliveries", tag = "deliveries", params(("id" = String, Path, description = "Webhook id (wh_…)"), ("status" = Option<String>, Query, description = "pending | retrying | succeeded | failed"), ("limit" = Option<u32>, Query, description = "1-250, default 50", minimum = 1, maximum = 250), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Deliveries, newest first", body = DeliveryList), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let limit = int_param("limit", query.get("limit"), 50, 1..=250)?;
    let status = match query.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<DeliveryStatus>().map_err(|()| {
            ApiError::invalid(
                "status",
                "must be one of pending, retrying, succeeded, failed",
            )
        })?),
    };
    let before = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))?,
        ),
    };
    let (page, next) = state
        .engine
        .deliveries(&caller.account, &id, status, before, limit as usize)
        .await?;
    let views: Vec<DeliveryView> = page
        .iter()
        .map(|(seq, d)| DeliveryView::new(*seq, d))
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryList {
        deliveries: views,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[utoipa::path(get, path = "/api/2023-01/webhooks/{id}/deliveries/{event_id}/attempts", tag = "deliveries", params(("id" = String, Path, description = "Webhook id (wh_…)"), ("event_id" = String, Path, description = "Event id (evt_…)")), responses((status = 200, description = "Every attempt, oldest first", body = AttemptList), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn attempts(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (wh, ev) = path.into_inner();
    let id = webhook_id(&wh)?;
    let event: EventId = ev.parse().map_err(|_| ApiError::not_found("delivery"))?;
    let attempts = state.engine.attempts(&caller.account, &id, &event).await?;
    let views: Vec<AttemptView> = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| AttemptView::new(i as u32 + 1, a))
        .collect();
    Ok(HttpResponse::Ok().json(AttemptList { attempts: views }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    to_seq: Option<u64>,
    #[serde(default)]
    only_failed: bool,
}

fn time(field: &str, raw: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(raw).ok_or_else(|| {
        ApiError::invalid(
            field,
            "must be an RFC 3339 time, e.g. 2026-11-29T13:46:14.123Z",
        )
    })
}

fn range(b: &ReplayBody) -> Result<ReplayRange, ApiError> {
    match (&b.since, b.from_seq) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "from_seq",
            "give either since/until or from_seq/to_seq, not both",
        )),
        (None, None) => Err(ApiError::invalid("since", "is required (or from_seq)")),
        (Some(since), None) => {
            if b.to_seq.is_some() {
                return Err(ApiError::invalid("to_seq", "goes with from_seq, not since"));
            }
            let since = time("since", since)?;
            let until = b.until.as_deref().map(|u| time("until", u)).transpose()?;
            if until.is_some_and(|u| u <= since) {
                return Err(ApiError::invalid("until", "must be after since"));
            }
            Ok(ReplayRange::Time { since, until })
        }
        (None, Some(from)) => {
            if b.until.is_some() {
                return Err(ApiError::invalid("until", "goes with since, not from_seq"));
            }
            if b.to_seq.is_some_and(|t| t <= from) {
                return Err(ApiError::invalid("to_seq", "must be greater than from_seq"));
            }
            Ok(ReplayRange::Seq { from, to: b.to_seq })
        }
    }
}

#[utoipa::path(post, path = "/api/2023-01/webhooks/{id}/replay", tag = "deliveries", params(("id" = String, Path, description = "Webhook id (wh_…)")), request_body = ReplayBody, responses((status = 202, description = "Queued again with their original ids", body = ReplayCreated), (status = 400, description = "Invalid request (the field is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Body is not JSON", body = ErrorBody), (status = 503, description = "Starting up or storage unavailable", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn replay(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: StrictJson<ReplayBody>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let range = range(&body.value)?;
    let (replay, events) = state
        .engine
        .replay(&caller.account, &id, range, body.value.only_failed)
        .await?;
    Ok(HttpResponse::Accepted().json(ReplayCreated {
        replay: ReplayCreatedView {
            id: replay.to_string(),
            events,
        },
    }))
}

#[utoipa::path(get, path = "/api/2023-01/webhooks/{id}/replays/{replay_id}", tag = "deliveries", params(("id" = String, Path, description = "Webhook id (wh_…)"), ("replay_id" = String, Path, description = "Replay id (rp_…)")), responses((status = 200, description = "Progress", body = ReplayResponse), (status = 400, description = "Invalid query", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn replay_status(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (wh, rp) = path.into_inner();
    let id = webhook_id(&wh)?;
    let rp: ReplayId = rp.parse().map_err(|_| ApiError::not_found("replay"))?;
    let r = state.engine.replay_status(&caller.account, &id, &rp)?;
    Ok(HttpResponse::Ok().json(ReplayResponse {
        replay: ReplayView {
            id: rp.to_string(),
            events: r.events,
            done: r.done(),
            created_at: r.created_at.to_string(),
        },
    }))
}
