//! `/webhooks/{id}/stats` and `/stats`: attempts per minute or hour, with their latency, for charts.

use super::webhook_id;
use crate::auth::Caller;
#[allow(unused_imports)]
use crate::error::{ApiError, ErrorBody};
use crate::views::{StatsResponse, StatsView};
use crate::AppState;
use actix_web::{web, HttpResponse};
use buildr_core::Timestamp;
use buildr_engine::StatsBucket;
use std::collections::HashMap;

/// `since` and `bucket` from the query string (unknown parameters are refused, like unknown fields).
fn query(q: &HashMap<String, String>) -> Result<(StatsBucket, Option<Timestamp>), ApiError> {
    if let Some(other) = q.keys().find(|k| *k != "since" && *k != "bucket") {
        return Err(ApiError::invalid(
            other,
            "unknown query parameter (since, bucket)",
        ));
    }
    let bucket = match q.get("bucket").map(String::as_str) {
        None => StatsBucket::Hour,
        Some(b) => StatsBucket::parse(b)
            .ok_or_else(|| ApiError::invalid("bucket", "must be \"1m\" or \"1h\""))?,
    };
    let since = q
        .get("since")
        .map(|s| {
            Timestamp::parse_rfc3339(s).ok_or_else(|| {
                ApiError::invalid(
                    "since",
                    "must be an RFC 3339 time, e.g. 2026-11-29T13:46:14.123Z",
                )
            })
        })
        .transpose()?;
    Ok((bucket, since))
}

#[utoipa::path(get, path = "/api/2023-01/webhooks/{id}/stats", tag = "deliveries", params(("id" = String, Path, description = "Webhook id (wh_…)"), ("since" = Option<String>, Query, description = "RFC 3339 time, at most 60 days back and not in the future; default: the last 24 h (1h buckets) or the last hour (1m buckets)"), ("bucket" = Option<String>, Query, description = "1m | 1h (default 1h); at most 1440 buckets")), responses((status = 200, description = "Attempts per bucket, oldest first, empty buckets included", body = StatsResponse), (status = 400, description = "Invalid query (the parameter is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up, or the delivery records are behind", body = ErrorBody), (status = 404, description = "Not found (or another account's)", body = ErrorBody)))]
pub async fn webhook(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let (bucket, since) = query(&q)?;
    let points = state
        .engine
        .webhook_stats(&caller.account, &id, bucket, since)
        .await?;
    Ok(HttpResponse::Ok().json(StatsResponse {
        stats: StatsView::new(bucket, &points),
    }))
}

#[utoipa::path(get, path = "/api/2023-01/stats", tag = "deliveries", params(("since" = Option<String>, Query, description = "RFC 3339 time, at most 60 days back and not in the future; default: the last 24 h (1h buckets) or the last hour (1m buckets)"), ("bucket" = Option<String>, Query, description = "1m | 1h (default 1h); at most 1440 buckets")), responses((status = 200, description = "Attempts of all the account's webhooks per bucket, oldest first", body = StatsResponse), (status = 400, description = "Invalid query (the parameter is named)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 503, description = "Starting up, or the delivery records are behind", body = ErrorBody)))]
pub async fn account(
    state: web::Data<AppState>,
    caller: Caller,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let (bucket, since) = query(&q)?;
    let points = state
        .engine
        .account_stats(&caller.account, bucket, since)
        .await?;
    Ok(HttpResponse::Ok().json(StatsResponse {
        stats: StatsView::new(bucket, &points),
    }))
}
