//! The dispatcher: one signed HTTP POST per attempt, with awc. It signs (Standard Webhooks), enforces the
//! target policy at connect time (see [`crate::target`]), never follows redirects, reads at most 1 KiB of
//! the answer, and classifies the outcome for the retry policy.

use crate::config::DeliveryConfig;
use crate::target::{self, TargetResolver};
use awc::http::header::{HeaderName, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use buildr_core::{signing, EventId, EventRecord, Secret, Timestamp};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The Standard Webhooks headers and their svix aliases, named once: a name given as a string is parsed
// and copied for every request (awc's `insert_header` showed in S2's profile).
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
const SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
const SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");

/// What is sent for one event: its id (the `webhook-id`) and its body. Made once when the event is
/// published and shared by every webhook it fans out to; the same bytes on every attempt and replay.
#[derive(Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub id: EventId,
    pub body: Bytes,
}

impl Outgoing {
    pub fn from_record(e: &EventRecord) -> Arc<Self> {
        Arc::new(Self {
            id: e.id.clone(),
            body: Bytes::from(buildr_core::event::payload(
                e.event_type,
                e.created_at,
                &e.data,
            )),
        })
    }
}

/// At most this much of a response body is kept.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// How an attempt ended, as far as the retry policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClass {
    /// A 2xx within the timeout.
    Delivered,
    /// `410 Gone`: the receiver asks us to stop; the webhook is disabled.
    Gone,
    /// Anything else: a non-2xx status, a timeout, a refused or failed connection. `retry_after` is the
    /// receiver's `Retry-After` on a 429/503.
    Failed { retry_after: Option<Duration> },
}

/// One attempt's result, as it is recorded.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub class: AttemptClass,
    pub at: Timestamp,
    pub status: Option<u16>,
    pub body: String,
    pub error: Option<String>,
    pub duration: Duration,
}

/// An idle pooled connection to a receiver is reused only within this time, then a new one is made.
/// Receivers commonly close idle connections after 5 s (Node.js, actix-web); awc's default (15 s) made
/// the client send on connections the receiver was closing at that moment, and such an attempt fails
/// ("connector has been disconnected") and waits for its retry: seen after a takeover in cluster mode,
/// when a node's connections had idled while the lease moved.
const IDLE_CONNECTION_REUSE: Duration = Duration::from_secs(3);

/// Sends attempts. Cheap to clone; lives on the arbiter thread of the subscription actors (awc is !Send).
#[derive(Clone)]
pub struct Dispatcher {
    client: awc::Client,
    timeout: Duration,
    allow_private: bool,
}

thread_local! {
    static THIS_THREAD: std::cell::OnceCell<Dispatcher> = const { std::cell::OnceCell::new() };
}

impl Dispatcher {
    /// The dispatcher of the calling thread (awc clients cannot cross threads; one per delivery arbiter,
    /// made on first use with `cfg`).
    pub fn for_this_thread(cfg: &DeliveryConfig) -> Self {
        THIS_THREAD.with(|d| d.get_or_init(|| Dispatcher::new(cfg)).clone())
    }

    pub fn new(cfg: &DeliveryConfig) -> Self {
        // rustls needs one process-wide crypto provider; ring is the one compiled in. An embedding program
        // may have installed one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tcp = actix_tls::connect::Connector::new(actix_tls::connect::Resolver::custom(
            TargetResolver {
                allow_private: cfg.allow_private_targets,
            },
        ))
        .service();
        let connector = awc::Connector::new()
            .connector(tcp)
            .timeout(cfg.timeout.min(Duration::from_secs(10)))
            .conn_keep_alive(IDLE_CONNECTION_REUSE)
            .limit(4096);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(cfg.timeout)
            .disable_redirects()
            .finish();
        Self {
            client,
            timeout: cfg.timeout,
            allow_private: cfg.allow_private_targets,
        }
    }

    /// POSTs `event` to `url`, signed with `secrets` (newest first).
    pub async fn attempt(&self, url: &str, secrets: &[Secret], event: &Outgoing) -> AttemptResult {
        let started = Instant::now();
        let at = Timestamp::now();
        let failed = |error: String, status: Option<u16>, body: String| AttemptResult {
            class: AttemptClass::Failed { retry_after: None },
            at,
            status,
            body,
            error: Some(error),
            duration: started.elapsed(),
        };
        if let Err(e) = target::check_literal(url, self.allow_private) {
            return failed(e, None, String::new());
        }
        let body = event.body.clone();
        let msg_id = event.id.as_str();
        let ts = at.unix_seconds();
        let signature = signing::signature_header(secrets, msg_id, ts, &body);
        let ts = ts.to_string();
        let request = self
            .client
            .post(url)
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((
                USER_AGENT,
                concat!("Buildr-Webhooks/", env!("CARGO_PKG_VERSION")),
            ))
            .insert_header((WEBHOOK_ID, msg_id))
            .insert_header((WEBHOOK_TIMESTAMP, ts.as_str()))
            .insert_header((WEBHOOK_SIGNATURE, signature.as_str()))
            .insert_header((SVIX_ID, msg_id))
            .insert_header((SVIX_TIMESTAMP, ts.as_str()))
            .insert_header((SVIX_SIGNATURE, signature.as_str()));
        let mut response = match request.send_body(body).await {
            Ok(r) => r,
            Err(e) => return failed(describe(&e), None, String::new()),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| buildr_core::retry::parse_retry_after(v, std::time::SystemTime::now()));
        let remaining = self.timeout.saturating_sub(started.elapsed());
        let excerpt = tokio::time::timeout(remaining, read_excerpt(&mut response))
            .await
            .unwrap_or_default();
        let code = status.as_u16();
        let class = if status.is_success() {
            AttemptClass::Delivered
        } else if code == 410 {
            AttemptClass::Gone
        } else if code == 429 || code == 503 {
            AttemptClass::Failed { retry_after }
        } else {
            AttemptClass::Failed { retry_after: None }
        };
        AttemptResult {
            class,
            at,
            status: Some(code),
            body: excerpt,
            error: (!status.is_success()).then(|| format!("receiver answered {status}")),
            duration: started.elapsed(),
        }
    }
}

/// The recorded error of a request that got no answer; a connect-time policy refusal says only that.
fn describe(e: &awc::error::SendRequestError) -> String {
    use awc::error::{ConnectError, SendRequestError};
    if let SendRequestError::Connect(ConnectError::Resolver(inner)) = e {
        if let Some(refused) = inner.downcast_ref::<target::TargetRefused>() {
            return refused.to_string();
        }
    }
    format!("request failed: {e}")
}

async fn read_excerpt<S>(response: &mut awc::ClientResponse<S>) -> String
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut buf = Vec::new();
    while let Some(Ok(chunk)) = response.next().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= RESPONSE_EXCERPT_BYTES {
            buf.truncate(RESPONSE_EXCERPT_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}
