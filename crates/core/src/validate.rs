//! Field rules shared by the API and the embedded Engine. Each failure names the field it is about.

use crate::event::EventType;
use crate::secret::Secret;
use std::collections::HashSet;

/// A rejected value: which field (e.g. `webhook.rate_limit`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
pub const RATE_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
pub const DEFAULT_RATE_LIMIT: u32 = 60;

/// A syntactically valid target URL: absolute `http`/`https`, a host, no credentials, ≤ 2048 bytes.
/// (Whether its host resolves to a public address is the engine's check.)
pub fn target_url(field: &str, raw: &str) -> Result<url::Url, FieldError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(FieldError::new(field, "must be at most 2048 bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| {
        FieldError::new(
            field,
            format!("must be an absolute http or https URL ({e})"),
        )
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(FieldError::new(field, "must use the http or https scheme"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new(field, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "must not contain credentials"));
    }
    Ok(url)
}

/// An absolute URL of a CRM object (an event's `data.url`).
pub fn object_url(field: &str, raw: &str) -> Result<(), FieldError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(FieldError::new(field, "must be at most 2048 bytes"));
    }
    match url::Url::parse(raw) {
        Ok(u) if !u.cannot_be_a_base() => Ok(()),
        _ => Err(FieldError::new(field, "must be an absolute URL")),
    }
}

pub const MAX_ACCOUNT_NAME_CHARS: usize = 256;

pub fn description(field: &str, d: &str) -> Result<(), FieldError> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(FieldError::new(field, "must be at most 1024 characters"));
    }
    Ok(())
}

/// An account name: 1–256 characters, not only white space, no control characters.
pub fn account_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.trim().is_empty() || name.chars().count() > MAX_ACCOUNT_NAME_CHARS {
        return Err(FieldError::new(
            field,
            "must be 1 to 256 characters, not only spaces",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A non-empty list of known event types without duplicates.
pub fn filter_types(field: &str, names: &[String]) -> Result<Vec<EventType>, FieldError> {
    if names.is_empty() {
        return Err(FieldError::new(
            field,
            "must not be empty; omit it or use null for all event types",
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let t: EventType = n
            .parse()
            .map_err(|e| FieldError::new(format!("{field}[{i}]"), format!("{e}")))?;
        if !seen.insert(t) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("duplicate event type `{n}`"),
            ));
        }
        out.push(t);
    }
    Ok(out)
}

pub fn rate_limit(field: &str, r: i64) -> Result<u32, FieldError> {
    u32::try_from(r)
        .ok()
        .filter(|r| RATE_LIMIT_RANGE.contains(r))
        .ok_or_else(|| {
            FieldError::new(
                field,
                "must be an integer from 1 to 1000000 (deliveries per minute)",
            )
        })
}

/// A webhook's `ordering`: `"parallel"` or `"fifo"`.
pub fn ordering(field: &str, s: &str) -> Result<crate::webhook::DeliveryOrder, FieldError> {
    crate::webhook::DeliveryOrder::parse(s)
        .ok_or_else(|| FieldError::new(field, "must be \"parallel\" or \"fifo\""))
}

pub fn secret(field: &str, s: &str) -> Result<Secret, FieldError> {
    Secret::parse(s).map_err(|e| FieldError::new(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(target_url("u", "https://example.com/hooks").is_ok());
        assert!(target_url("u", "http://127.0.0.1:8080/x").is_ok());
        for bad in [
            "",
            "example.com",
            "ftp://example.com",
            "https://user:pw@example.com/",
            "mailto:a@b.c",
            "http://",
        ] {
            assert!(target_url("u", bad).is_err(), "{bad}");
        }
        assert!(target_url("u", &format!("https://e.com/{}", "a".repeat(2048))).is_err());
    }

    #[test]
    fn filters_and_limits() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            filter_types("f", &names(&["contact.create"])).map(|v| v.len()),
            Ok(1)
        );
        assert_eq!(
            filter_types("f", &[]).map_err(|e| e.field),
            Err("f".to_string())
        );
        assert_eq!(
            filter_types("f", &names(&["contact.create", "contact.create"])).map_err(|e| e.field),
            Err("f[1]".to_string())
        );
        assert!(filter_types("f", &names(&["nope"])).is_err());
        assert!(rate_limit("r", 0).is_err());
        assert!(rate_limit("r", 1_000_001).is_err());
        assert!(rate_limit("r", -5).is_err());
        assert_eq!(rate_limit("r", 100), Ok(100));
        assert!(description("d", &"é".repeat(1024)).is_ok());
        assert!(description("d", &"é".repeat(1025)).is_err());
        assert!(account_name("n", "Acme").is_ok());
        assert!(account_name("n", "  ").is_err());
        assert!(account_name("n", "a\nb").is_err());
        assert!(account_name("n", &"é".repeat(256)).is_ok());
        assert!(account_name("n", &"é".repeat(257)).is_err());
    }
}
