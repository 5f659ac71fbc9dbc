pub mod accounts;
pub mod deliveries;
pub mod events;
pub mod ops;
pub mod stats;
pub mod webhooks;

use crate::error::ApiError;

/// Parses an optional integer query parameter within `range`, naming it in the error.
pub fn int_param(
    name: &str,
    raw: Option<&String>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A webhook id from the path; one that cannot exist is simply not found.
pub fn webhook_id(raw: &str) -> Result<buildr_core::WebhookId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("webhook"))
}
