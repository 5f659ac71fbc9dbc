//! HTTP clients of the driver, on awc (the library the server delivers with): [`Api`] speaks the server's
//! public API (API.md) with the admin token; [`ReceiverApi`] reads the counting receiver's stats.

use anyhow::{bail, Context, Result};
use awc::http::header::{AUTHORIZATION, CONTENT_TYPE};
pub use awc::http::Method;
use std::ops::Range;
use std::time::{Duration, Instant};

/// A keep-alive client allowed `limit` connections (awc's default is 100).
pub fn client(limit: usize) -> awc::Client {
    // awc builds a rustls config even for plain http; ring is the one provider compiled in (as in the
    // server). Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connector = awc::Connector::new()
        .limit(limit)
        .timeout(Duration::from_secs(10));
    awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(60))
        .finish()
}

/// The event body the driver publishes: `data.id` is the driver's own number for the event (S4 uses it
/// to match an arrival to its publish time).
pub fn event_json(id: i64) -> String {
    format!(
        r#"{{"type":"contact.create","data":{{"id":{id},"url":"https://app.buildr.example/contacts/{id}"}}}}"#
    )
}

/// One scrape of the server's `/metrics`: samples by name (with labels as printed).
#[derive(Debug, Default)]
pub struct ServerMetrics(std::collections::HashMap<String, f64>);

impl ServerMetrics {
    pub fn get(&self, sample: &str) -> Option<f64> {
        self.0.get(sample).copied()
    }

    /// The mean of a histogram (`<name>_sum / <name>_count`), if it has samples.
    pub fn mean(&self, name: &str) -> Option<f64> {
        let count = self.get(&format!("{name}_count"))?;
        (count > 0.0).then(|| self.get(&format!("{name}_sum")).map(|s| s / count))?
    }

    /// The upper bound of the histogram bucket that holds its `q` quantile (e.g. 0.99): an upper
    /// estimate, as coarse as the buckets. `None` without samples or above the last finite bucket.
    /// How many observations of histogram `name` took longer than its bucket bound `le`.
    pub fn count_above(&self, name: &str, le: &str) -> Option<f64> {
        let count = self.get(&format!("{name}_count"))?;
        let within = self.get(&format!("{name}_bucket{{le=\"{le}\"}}"))?;
        Some(count - within)
    }

    pub fn quantile_bound(&self, name: &str, q: f64) -> Option<f64> {
        let count = self.get(&format!("{name}_count"))?;
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                Some((le.parse::<f64>().ok()?, *v))
            })
            .filter(|(le, _)| le.is_finite())
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        (count > 0.0)
            .then(|| {
                buckets
                    .iter()
                    .find(|(_, cumulative)| *cumulative >= q * count)
                    .map(|(le, _)| *le)
            })
            .flatten()
    }
}

/// The server's public API.
#[derive(Clone)]
pub struct Api {
    client: awc::Client,
    base: String,
    auth: String,
}

impl Api {
    pub fn new(client: awc::Client, base: &str, token: &str) -> Self {
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {token}"),
        }
    }

    /// Sends `method` to `/api/2023-01{path}` with a JSON body (if any); returns the status and the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, bytes::Bytes)> {
        let url = format!("{}/api/2023-01{path}", self.base);
        let req = self
            .client
            .request(method.clone(), &url)
            .insert_header((AUTHORIZATION, self.auth.as_str()));
        let sent = match body {
            Some(body) => {
                req.insert_header((CONTENT_TYPE, "application/json"))
                    .send_body(body)
                    .await
            }
            None => req.send().await,
        };
        let mut res = sent.map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
        let body = res
            .body()
            .limit(64 << 20)
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?;
        Ok((res.status().as_u16(), body))
    }

    /// POSTs JSON to `/api/2023-01{path}`; returns the status and the body.
    pub async fn post(&self, path: &str, body: String) -> Result<(u16, bytes::Bytes)> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Sends like [`Api::send`] and fails (saying `what` answered what) unless the status is `want`;
    /// returns the answer as JSON.
    pub async fn send_expecting(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        want: u16,
        what: &str,
    ) -> Result<serde_json::Value> {
        let (status, answer) = self.send(method, path, body).await?;
        if status != want {
            bail!(
                "{what} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        serde_json::from_slice(&answer).with_context(|| format!("{what}: the answer is not JSON"))
    }

    /// POSTs like [`Api::post`] and fails (saying `what` answered what) unless the status is `want`.
    async fn post_expecting(
        &self,
        path: &str,
        body: String,
        want: u16,
        what: &str,
    ) -> Result<bytes::Bytes> {
        let (status, answer) = self.post(path, body).await?;
        if status != want {
            bail!(
                "{what} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(answer)
    }

    /// Creates a webhook for every event type; returns its id.
    pub async fn create_webhook(&self, url: &str, rate_limit: u32) -> Result<String> {
        let body = format!(
            r#"{{"webhook":{{"url":"{url}","description":"bench","rate_limit":{rate_limit},"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}}}"#
        );
        let answer = self
            .post_expecting("/webhooks", body, 201, "creating a webhook")
            .await?;
        let v: serde_json::Value =
            serde_json::from_slice(&answer).context("the webhook answer is not JSON")?;
        v["webhook"]["id"]
            .as_str()
            .map(str::to_owned)
            .context("the webhook answer has no webhook.id")
    }

    /// `POST /events`: one event; `Ok` only on `202` (durable).
    pub async fn publish(&self, id: i64) -> Result<()> {
        let body = format!(r#"{{"event":{}}}"#, event_json(id));
        self.post_expecting("/events", body, 202, "publishing")
            .await
            .map(drop)
    }

    /// `POST /events/batch` with the events numbered `ids`; `Ok` only on `202`.
    pub async fn publish_batch(&self, ids: Range<i64>) -> Result<()> {
        let events: Vec<String> = ids.map(event_json).collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        self.post_expecting("/events/batch", body, 202, "publishing a batch")
            .await
            .map(drop)
    }

    /// The server's Prometheus samples (`GET /metrics`), by name with its labels as printed (e.g.
    /// `buildr_delivery_attempts_total{outcome="succeeded"}`); histogram buckets are left out.
    pub async fn metrics(&self) -> Result<ServerMetrics> {
        let url = format!("{}/metrics", self.base);
        let mut res = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        let body = res
            .body()
            .limit(16 << 20)
            .await
            .with_context(|| format!("GET {url}: reading the answer"))?;
        Ok(ServerMetrics(
            String::from_utf8_lossy(&body)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        ))
    }

    /// Whether `GET /readyz` answers `200`.
    pub async fn ready(&self) -> bool {
        match self
            .client
            .get(format!("{}/readyz", self.base))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16() == 200,
            Err(_) => false,
        }
    }

    /// Polls `/readyz` every 2 ms until `200` or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ready().await {
                return Ok(());
            }
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
        bail!("the server was not ready within {timeout:?}")
    }
}

/// The counting receiver's control paths.
#[derive(Clone)]
pub struct ReceiverApi {
    client: awc::Client,
    pub base: String,
}

/// What the receiver has counted.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct ReceiverStats {
    pub hook: u64,
    pub slow: u64,
}

impl ReceiverApi {
    pub fn new(client: awc::Client, base: &str) -> Self {
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub async fn stats(&self) -> Result<ReceiverStats> {
        let mut res = self
            .client
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("receiver stats: {e}"))?;
        res.json()
            .await
            .map_err(|e| anyhow::anyhow!("receiver stats: {e}"))
    }

    pub async fn reset(&self) -> Result<()> {
        self.client
            .post(format!("{}/reset", self.base))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("receiver reset: {e}"))?;
        Ok(())
    }

    /// Every `(data id, arrival unix nanos)` recorded on `/lat/*` since the last call.
    pub async fn latencies(&self) -> Result<Vec<(i64, i64)>> {
        let mut res = self
            .client
            .get(format!("{}/latencies", self.base))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("receiver latencies: {e}"))?;
        let body = res
            .body()
            .limit(512 << 20)
            .await
            .context("receiver latencies: reading the answer")?;
        serde_json::from_slice(&body).context("receiver latencies: not JSON")
    }

    /// Polls every 5 ms until `hook >= count`; returns when it was reached, or `None` at `deadline`
    /// (with the last count).
    pub async fn wait_hook(&self, count: u64, deadline: Instant) -> Result<(Option<Instant>, u64)> {
        loop {
            let s = self.stats().await?;
            if s.hook >= count {
                return Ok((Some(Instant::now()), s.hook));
            }
            if Instant::now() >= deadline {
                return Ok((None, s.hook));
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
