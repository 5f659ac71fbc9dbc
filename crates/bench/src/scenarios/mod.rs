//! The scenarios of issue 5. Each starts its own server on a fresh data dir (so one scenario's webhooks
//! never receive another's events), shares the one receiver, and returns one [`Row`].

mod delivery;
mod ingest;
mod latency;
mod memory;
mod reads;
mod restart;

pub use delivery::{s2, s3, s7};
pub use ingest::{s1_batch, s1_single};
pub use latency::{s4, s4a};
pub use memory::s5;
pub use reads::s8;
pub use restart::s6;

use crate::api::{Api, ReceiverApi};
use crate::procs::{Binaries, Server, ADMIN_TOKEN};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// How big each scenario is: the figures, or small ones for `--quick`.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub clients: usize,
    pub s1_batch_events: u64,
    pub s1_batch_size: u64,
    pub s1_single_events: u64,
    pub s2_events: u64,
    pub s3_webhooks: u64,
    pub s3_events: u64,
    pub s4_per_second: u64,
    pub s4_seconds: u64,
    pub s4_webhooks: u64,
    pub s4_baseline_seconds: u64,
    /// S4a: one webhook at this rate for this long (issue 12).
    pub s4a_per_second: u64,
    pub s4a_seconds: u64,
    /// How often each throughput scenario (S1, S2, S3, S7) runs; its row is the median.
    pub repeats: usize,
    pub s5_webhooks: u64,
    pub s6_events: u64,
    /// S8: events in the log, of which the small account's; `GET /events` and replay requests timed.
    pub s8_events: u64,
    pub s8_small_events: u64,
    pub s8_gets: u64,
    pub s8_replays: u64,
    /// A pause between S8's replay requests (0: back to back).
    pub s8_replay_gap_ms: u64,
    pub l_http_requests: u64,
    pub l_disk_records: u64,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            clients: 64,
            s1_batch_events: 100_000,
            s1_batch_size: 100,
            s1_single_events: 20_000,
            s2_events: 50_000,
            s3_webhooks: 100,
            s3_events: 1_000,
            s4_per_second: 1_000,
            s4_seconds: 30,
            s4_webhooks: 10,
            s4_baseline_seconds: 10,
            s4a_per_second: 500,
            s4a_seconds: 20,
            repeats: 3,
            s5_webhooks: 100_000,
            s6_events: 1_000_000,
            s8_events: 1_000_000,
            s8_small_events: 100,
            s8_gets: 500,
            s8_replays: 5,
            s8_replay_gap_ms: 0,
            l_http_requests: 100_000,
            l_disk_records: 100_000,
        }
    }

    pub fn quick() -> Self {
        Self {
            clients: 64,
            s1_batch_events: 2_000,
            s1_batch_size: 100,
            s1_single_events: 1_000,
            s2_events: 2_000,
            s3_webhooks: 100,
            s3_events: 20,
            s4_per_second: 1_000,
            s4_seconds: 2,
            s4_webhooks: 10,
            s4_baseline_seconds: 1,
            s4a_per_second: 500,
            s4a_seconds: 2,
            repeats: 3,
            s5_webhooks: 2_000,
            s6_events: 20_000,
            s8_events: 20_000,
            s8_small_events: 100,
            s8_gets: 50,
            s8_replays: 3,
            s8_replay_gap_ms: 0,
            l_http_requests: 5_000,
            l_disk_records: 5_000,
        }
    }
}

/// The machine's limits, measured once at the start of the run.
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    /// L-disk, records/s, one flush per `s1_batch_size` records.
    pub disk_batch: f64,
    /// L-disk, records/s, one flush per `clients` records (the most group commit can gather from
    /// `clients` concurrent single-event requests).
    pub disk_single: f64,
    /// L-http, requests/s at the server's per-webhook in-flight limit (32).
    pub http_one: f64,
    /// L-http, requests/s at 256 connections (fan-out to many webhooks).
    pub http_many: f64,
}

/// What every scenario needs.
pub struct Ctx {
    pub bins: Binaries,
    pub receiver: ReceiverApi,
    pub sizes: Sizes,
    pub baselines: Baselines,
    pub work_dir: PathBuf,
    /// `--perf DIR`: each scenario's server is profiled into `DIR/<name>.perf.data`.
    pub perf_dir: Option<PathBuf>,
    /// `--latency-dump DIR`: S4/S4a write their samples into `DIR/<id>.tsv`.
    pub latency_dump: Option<PathBuf>,
    /// `--server-env`: added to every server's environment.
    pub server_env: Vec<(String, String)>,
}

impl Ctx {
    /// A server on a fresh data dir `<work_dir>/<name>`, ready (`/readyz` 200), and a client for it.
    pub async fn fresh_server(&self, name: &str, env: &[(&str, &str)]) -> Result<(Server, Api)> {
        let dir = self.work_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let mut all: Vec<(&str, &str)> = self
            .server_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        let mut server = Server::start(&self.bins, &dir, &all)?;
        let api = Api::new(crate::api::client(512), &server.base, ADMIN_TOKEN);
        api.wait_ready(Duration::from_secs(60)).await?;
        if let Some(perf_dir) = &self.perf_dir {
            std::fs::create_dir_all(perf_dir)
                .with_context(|| format!("cannot create {}", perf_dir.display()))?;
            server.profile(&perf_dir.join(format!("{name}.perf.data")))?;
        }
        Ok((server, api))
    }

    /// A receiver URL on this machine, e.g. `hook(3)` = `http://127.0.0.1:PORT/hook/3`.
    pub fn url(&self, kind: &str, n: u64) -> String {
        format!("{}/{kind}/{n}", self.receiver.base)
    }

    /// Creates `count` webhooks (`rate_limit` each) concurrently; webhook `n` gets `url_of(n)`.
    pub async fn create_webhooks(
        &self,
        api: &Api,
        count: u64,
        rate_limit: u32,
        url_of: impl Fn(u64) -> String,
    ) -> Result<crate::load::LoadResult> {
        let r = crate::load::run(count, self.sizes.clients, Duration::from_secs(600), |n| {
            let url = url_of(n);
            async move { api.create_webhook(&url, rate_limit).await.map(drop) }
        })
        .await;
        if r.ok < count {
            anyhow::bail!(
                "created {} of {count} webhooks: {}",
                r.ok,
                r.first_error
                    .as_deref()
                    .unwrap_or("stopped by the time limit")
            );
        }
        Ok(r)
    }
}

/// Deliveries per minute that keep the rate limit out of the way.
pub const NO_RATE_LIMIT: u32 = 1_000_000;
