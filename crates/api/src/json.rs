//! The strict JSON body extractor: `Content-Type: application/json` (else 415), a size limit (else 413),
//! and decoding that names the field at fault (unknown fields, wrong types, missing fields → 400).

use crate::error::ApiError;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// Bodies over 256 KiB are refused.
pub const BODY_LIMIT: usize = 256 * 1024;
/// `/events/batch` bodies over 4 MiB are refused.
pub const BATCH_LIMIT: usize = 4 * 1024 * 1024;

/// A decoded body and the raw bytes it came from (for idempotency hashing).
pub struct StrictJson<T, const LIMIT: usize = BODY_LIMIT> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned + 'static, const LIMIT: usize> FromRequest for StrictJson<T, LIMIT> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = require_json_content_type(req).is_ok();
        let too_large = declared_length(req).is_some_and(|n| n > LIMIT);
        let read = read_body::<LIMIT>(req, payload);
        Box::pin(async move {
            // Refused before a byte of the body is read.
            if too_large {
                return Err(ApiError::too_large(LIMIT));
            }
            if !content_type_ok {
                return Err(ApiError::unsupported_media_type());
            }
            let raw = read.await?;
            let value = decode(&raw)?;
            Ok(StrictJson { value, raw })
        })
    }
}

/// An optional JSON body (routes such as `…/secret/rotate` take one or none): an empty body is `None`;
/// anything else must be JSON with the JSON content type, within `LIMIT` like [`StrictJson`].
pub struct OptionalJson<T, const LIMIT: usize = BODY_LIMIT>(pub Option<T>);

impl<T: DeserializeOwned + 'static, const LIMIT: usize> FromRequest for OptionalJson<T, LIMIT> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = require_json_content_type(req).is_ok();
        let read = read_body::<LIMIT>(req, payload);
        Box::pin(async move {
            let raw = read.await?;
            if raw.is_empty() {
                return Ok(OptionalJson(None));
            }
            if !content_type_ok {
                return Err(ApiError::unsupported_media_type());
            }
            decode(&raw).map(|v| OptionalJson(Some(v)))
        })
    }
}

/// Reads the whole body, refusing (413) a declared or actual size over `LIMIT` before buffering it.
fn read_body<const LIMIT: usize>(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<Bytes, ApiError>> {
    let declared = declared_length(req);
    let mut payload = payload.take();
    Box::pin(async move {
        if declared.is_some_and(|n| n > LIMIT) {
            return Err(ApiError::too_large(LIMIT));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("could not read the body: {e}")))?;
            if buf.len() + chunk.len() > LIMIT {
                return Err(ApiError::too_large(LIMIT));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    })
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Decodes JSON, turning serde's message into an error that names the field.
pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("the body is not valid JSON: {inner}"));
        }
        let message = inner.to_string();
        let message = strip_position(&message);
        let field = field_of(&path, message);
        ApiError::invalid(field, message.to_owned())
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// serde_json ends its messages with " at line 1 column 42"; the field says more.
fn strip_position(m: &str) -> &str {
    match m.rfind(" at line ") {
        Some(i) => &m[..i],
        None => m,
    }
}

/// The field a serde message is about: its path, plus the name a `missing field`/`unknown field`
/// message quotes when the path stops at the enclosing object.
fn field_of(path: &str, message: &str) -> String {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let named = quoted("missing field `").or_else(|| quoted("unknown field `"));
    match named {
        Some(name) if !path.ends_with(&name) => {
            if path.is_empty() || path == "." {
                name
            } else {
                format!("{path}.{name}")
            }
        }
        _ if path == "." => String::new(),
        _ => path.to_owned(),
    }
}

/// `Content-Type: application/json` (any parameters, such as `charset`), else 415.
pub fn require_json_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        webhook: Inner,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
        rate_limit: Option<i64>,
    }

    fn field(raw: &str) -> Option<String> {
        decode::<Outer>(raw.as_bytes()).err().and_then(|e| e.field)
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field(r#"{"webhook":{"url":"x","filter_type":[]}}"#).as_deref(),
            Some("webhook.filter_type")
        );
        assert_eq!(
            field(r#"{"webhook":{"rate_limit":1}}"#).as_deref(),
            Some("webhook.url")
        );
        assert_eq!(
            field(r#"{"webhook":{"url":"x","rate_limit":"9"}}"#).as_deref(),
            Some("webhook.rate_limit")
        );
        assert_eq!(field(r#"{"webhok":{}}"#).as_deref(), Some("webhok"));
        assert!(decode::<Outer>(b"{not json").is_err_and(|e| e.field.is_none()));
        assert!(decode::<Outer>(br#"{"webhook":{"url":"x"}} trailing"#).is_err());
    }
}
