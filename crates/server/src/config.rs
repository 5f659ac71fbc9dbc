//! The config file (TOML) and its `BUILDR_<SECTION>__<KEY>` environment overrides. Unknown keys and bad
//! values stop start-up with a message that names the key.

use anyhow::{bail, Context, Result};
use buildr_core::{HumanDuration, RetryPolicy};
use buildr_engine::{DeliveryConfig, EngineConfig};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub delivery: DeliverySection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub cluster: ClusterSection,
}

/// `[cluster]`: absent, or `nats = []`, is one node on sled (the embedded default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// NATS server URLs of the JetStream cluster; empty: single-node mode.
    #[serde(deserialize_with = "string_list")]
    pub nats: Vec<String>,
    /// Unique per node; empty: the host name.
    pub node_id: String,
    /// The JetStream stream (created when missing); KV buckets are named after it.
    pub stream: String,
    /// The stream's and the KV buckets' replication.
    pub replicas: usize,
    /// Webhooks are owned by shard; each shard by one node at a time.
    pub shards: u32,
    /// A dead node's shards move to the others after this.
    pub lease_ttl: HumanDuration,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            nats: Vec::new(),
            node_id: String::new(),
            stream: "buildr".into(),
            replicas: 3,
            shards: 64,
            lease_ttl: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl ClusterSection {
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    /// `node_id`, or the host name when it is empty.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into())
    }

    fn check(&self) -> Result<()> {
        for url in &self.nats {
            if let Err(e) = buildr_cluster::check_server_url(url) {
                bail!("invalid configuration: cluster.nats: {url:?} {e}");
            }
        }
        let name_ok = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c)
                })
        };
        if !self.node_id.is_empty() && !name_ok(&self.node_id, &['.']) {
            bail!("invalid configuration: cluster.node_id must be 1–64 letters, digits, '-', '_' or '.'");
        }
        if !name_ok(&self.stream, &[]) {
            bail!("invalid configuration: cluster.stream must be 1–64 letters, digits, '-' or '_'");
        }
        if !(1..=5).contains(&self.replicas) {
            bail!("invalid configuration: cluster.replicas must be between 1 and 5");
        }
        if !(1..=4096).contains(&self.shards) {
            bail!("invalid configuration: cluster.shards must be between 1 and 4096");
        }
        if self.lease_ttl.0 < Duration::from_secs(1) || self.lease_ttl.0 > Duration::from_secs(3600)
        {
            bail!("invalid configuration: cluster.lease_ttl must be between 1s and 1h");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub bind: SocketAddr,
    /// How long an idle keep-alive connection is kept open (`0s`: no keep-alive). 75 s by default, as
    /// common reverse proxies and load balancers keep theirs for 60 s: the proxy closes first, never us
    /// under a request it is about to send.
    pub keep_alive: HumanDuration,
    /// How long a client has to send a request's headers after connecting (`0s`: no limit).
    pub client_request_timeout: HumanDuration,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            keep_alive: HumanDuration(Duration::from_secs(75)),
            client_request_timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub path: PathBuf,
    /// Extension: write a projection checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or after this long if anything changed (and always on a clean stop).
    pub checkpoint_interval: HumanDuration,
    /// Extension: the most memory (MiB) sled may use to cache each of its two databases (the log, the
    /// delivery index). 128: ingest and delivery stop gaining at 64, and reads of a large log keep
    /// most of what 256 gives them with a third less memory (docs/BENCHMARKS.md, session 14).
    pub cache_mb: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data"),
            checkpoint_every: 100_000,
            checkpoint_interval: HumanDuration(Duration::from_secs(60)),
            cache_mb: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    pub admin_token: String,
    /// Failed authentications allowed per client address per minute (burst the same), then `429`;
    /// `0` turns the limit off (behind a proxy every client has its address; in load tests).
    pub failed_per_minute: u32,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            admin_token: String::new(),
            failed_per_minute: buildr_api::auth::FAILED_AUTH_PER_MINUTE,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySection {
    pub timeout: HumanDuration,
    #[serde(deserialize_with = "schedule")]
    pub retry_schedule: Vec<HumanDuration>,
    pub jitter: f64,
    pub disable_after: HumanDuration,
    pub secret_rotation_overlap: HumanDuration,
    pub allow_private_targets: bool,
    /// Extension: attempts in flight at once per webhook.
    pub max_in_flight: usize,
    /// Extension: attempts in flight at once to one destination host, all webhooks together.
    pub max_connections_per_host: usize,
    /// Extension: attempts in flight at once in all.
    pub max_in_flight_total: usize,
    /// Extension: accept and store everything, send nothing (deliveries wait durably).
    pub paused: bool,
    /// Extension: delivery threads (default: one per core).
    pub workers: usize,
}

impl Default for DeliverySection {
    fn default() -> Self {
        let d = DeliveryConfig::default();
        Self {
            timeout: HumanDuration(d.timeout),
            retry_schedule: d
                .retry
                .schedule
                .iter()
                .copied()
                .map(HumanDuration)
                .collect(),
            jitter: d.retry.jitter,
            disable_after: HumanDuration(d.disable_after),
            secret_rotation_overlap: HumanDuration(d.secret_rotation_overlap),
            allow_private_targets: d.allow_private_targets,
            max_in_flight: d.max_in_flight,
            max_connections_per_host: d.max_connections_per_host,
            max_in_flight_total: d.max_in_flight_total,
            paused: d.paused,
            workers: d.workers,
        }
    }
}

/// A list of durations, or (from the environment) one comma-separated string.
fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HumanDuration>, D::Error> {
    string_list(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// A list of strings, or (from the environment) one comma-separated string.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::One(s) if s.trim().is_empty() => Vec::new(),
        Raw::One(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    pub idempotency_ttl: HumanDuration,
}

impl Default for IngestSection {
    fn default() -> Self {
        Self {
            idempotency_ttl: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Finished events older than this are removed from the log ("0s": kept for ever).
    pub events: HumanDuration,
    /// Extension: how often retention runs.
    pub interval: HumanDuration,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            events: HumanDuration(Duration::from_secs(30 * 24 * 3600)),
            interval: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub level: LogLevel,
    pub format: LogFormat,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Loads `path` (when given) and the environment overrides.
pub fn load(path: Option<&Path>) -> Result<Config> {
    let mut figment = Figment::new();
    if let Some(p) = path {
        if !p.exists() {
            bail!("config file {} does not exist", p.display());
        }
        figment = figment.merge(Toml::file_exact(p));
    }
    // Only BUILDR_<SECTION>__<KEY>: BUILDR_ADMIN_TOKEN is read on its own (see `admin_token`).
    figment = figment.merge(
        Env::prefixed("BUILDR_")
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    let config: Config = figment.extract().map_err(|e| {
        let msgs: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
        anyhow::anyhow!("invalid configuration: {}", msgs.join("; "))
    })?;
    config.check()?;
    Ok(config)
}

/// One configuration error as `section.key: what is wrong (where it came from)`, the key in the same
/// lower-case dotted form as the docs and the TOML file, whether it was set in the file or the environment.
fn describe(e: &figment::Error) -> String {
    let mut path: Vec<String> = e.path.iter().map(|p| p.to_lowercase()).collect();
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        if path.last() != Some(&field.to_lowercase()) {
            path.push(field.to_lowercase());
        }
    }
    if path.is_empty() {
        return e.to_string();
    }
    let from = e
        .metadata
        .as_ref()
        .map(|m| format!(" (in {})", m.name))
        .unwrap_or_default();
    format!("{}: {}{from}", path.join("."), e.kind)
}

impl Config {
    fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.delivery.jitter) {
            bail!("invalid configuration: delivery.jitter must be between 0 and 1");
        }
        if self.delivery.timeout.0.is_zero() {
            bail!("invalid configuration: delivery.timeout must be more than 0");
        }
        if self.delivery.max_in_flight == 0 {
            bail!("invalid configuration: delivery.max_in_flight must be at least 1");
        }
        if self.delivery.max_connections_per_host == 0 {
            bail!("invalid configuration: delivery.max_connections_per_host must be at least 1");
        }
        if self.delivery.max_in_flight_total == 0 {
            bail!("invalid configuration: delivery.max_in_flight_total must be at least 1");
        }
        if self.storage.path.as_os_str().is_empty() {
            bail!("invalid configuration: storage.path must not be empty");
        }
        if self.storage.cache_mb < 8 {
            bail!("invalid configuration: storage.cache_mb must be at least 8 (MiB)");
        }
        self.cluster.check()
    }

    pub fn engine(&self) -> EngineConfig {
        let d = &self.delivery;
        EngineConfig {
            data_dir: self.storage.path.clone(),
            delivery: DeliveryConfig {
                timeout: d.timeout.0,
                retry: RetryPolicy {
                    schedule: d.retry_schedule.iter().map(|h| h.0).collect(),
                    jitter: d.jitter,
                },
                disable_after: d.disable_after.0,
                secret_rotation_overlap: d.secret_rotation_overlap.0,
                allow_private_targets: d.allow_private_targets,
                max_in_flight: d.max_in_flight,
                max_connections_per_host: d.max_connections_per_host,
                max_in_flight_total: d.max_in_flight_total,
                paused: d.paused,
                workers: d.workers.max(1),
                ..DeliveryConfig::default()
            },
            idempotency_ttl: self.ingest.idempotency_ttl.0,
            checkpoint_every: self.storage.checkpoint_every.max(1),
            checkpoint_interval: self
                .storage
                .checkpoint_interval
                .0
                .max(Duration::from_millis(100)),
            retention: Some(self.retention.events.0).filter(|d| !d.is_zero()),
            retention_interval: self.retention.interval.0.max(Duration::from_millis(100)),
            storage: buildr_log::StorageOptions {
                cache_bytes: self.storage.cache_mb.saturating_mul(1 << 20),
                ..Default::default()
            },
        }
    }
}

/// The admin token configured (`BUILDR_ADMIN_TOKEN` first, then `auth.admin_token`), if any.
pub fn configured_admin_token(config: &Config) -> Option<String> {
    std::env::var("BUILDR_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .or_else(|| Some(config.auth.admin_token.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// A new random admin token (`adm_` + 32 random bytes, base64url).
pub fn generate_admin_token() -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "adm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The admin token: `BUILDR_ADMIN_TOKEN`, else `auth.admin_token`, else the one stored in
/// `<storage.path>/admin.token`, else a new one written there (mode 0600). Returns the token and, when it
/// lives in the file, the file's path and whether it was just generated.
pub fn admin_token(config: &Config) -> Result<(String, Option<(PathBuf, bool)>)> {
    if let Some(t) = configured_admin_token(config) {
        return Ok((t, None));
    }
    let dir = &config.storage.path;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("admin.token");
    if path.exists() {
        let t = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let t = t.trim().to_owned();
        if t.is_empty() {
            bail!(
                "{} is empty; delete it to generate a new admin token",
                path.display()
            );
        }
        return Ok((t, Some((path, false))));
    }
    let token = generate_admin_token();
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, Some((path, true))))
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
