//! Reading your own writes on any node of a cluster. Every API answer carries `Buildr-Position`: the log
//! position this node had applied when it answered (for a write: at least the write's own). A request
//! with `Buildr-Min-Position: <n>` is answered only once this node has applied position `n` (waiting at
//! most [`WAIT`], else `503` with `Retry-After`), so a client that sends back the highest position it was
//! given reads at least what it wrote, whichever node answers. On one node every position it handed out
//! is already applied, so the header never waits there.

use crate::{ApiError, AppState};
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use std::time::{Duration, Instant};

/// The request header naming the position a read must see.
pub const MIN_POSITION: &str = "buildr-min-position";
/// The response header with the position this node had applied when it answered.
pub const POSITION: &str = "buildr-position";
/// How long a request waits for this node to apply the position it names.
pub const WAIT: Duration = Duration::from_secs(3);
/// How often the applied position is looked at meanwhile.
const POLL: Duration = Duration::from_millis(2);

fn applied(state: &AppState) -> Option<u64> {
    state.engine.projection().ok().map(|p| p.last_seq)
}

/// Waits for `Buildr-Min-Position` (when sent) and answers with `Buildr-Position`.
pub async fn at_least(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    if let Some(value) = req.headers().get(MIN_POSITION) {
        let wanted = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let Some(wanted) = wanted else {
            let res = ApiError::bad_request(
                "Buildr-Min-Position must be a position (an unsigned integer)",
            )
            .with_field("Buildr-Min-Position")
            .error_response();
            return Ok(req.into_response(res).map_into_boxed_body());
        };
        let deadline = Instant::now() + WAIT;
        while applied(&state).is_some_and(|seq| seq < wanted) {
            if Instant::now() >= deadline {
                let res = ApiError::unavailable(format!(
                    "this node has not applied position {wanted} yet; retry shortly"
                ))
                .error_response();
                return Ok(req.into_response(res).map_into_boxed_body());
            }
            actix_web::rt::time::sleep(POLL).await;
        }
    }
    let mut res = next.call(req).await?;
    if let Some(seq) = applied(&state) {
        if let Ok(v) = HeaderValue::from_str(&seq.to_string()) {
            res.headers_mut()
                .insert(HeaderName::from_static(POSITION), v);
        }
    }
    Ok(res)
}
