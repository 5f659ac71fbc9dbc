//! One admin token for the whole cluster. When no node is given one (config or env), the first node to
//! start generates it and stores its SHA-256 in the KV bucket `<stream>-admin` with a create that fails
//! when the key exists (JetStream's compare-and-set on "no revision yet"): of nodes starting at once,
//! exactly one wins, prints its token, and every node accepts the hash stored there. The token itself is
//! never stored.

use crate::JetStreamLog;
use async_nats::jetstream::{self, kv};
use buildr_log::LogError;
use std::time::Duration;

/// The key holding the token's hash.
const KEY: &str = "token-sha256";

/// The cluster's admin token hash, and whether this node just made it (so it alone prints the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterAdmin {
    pub sha256: [u8; 32],
    pub generated_here: bool,
}

impl JetStreamLog {
    /// The cluster's admin token hash: the one stored, or `candidate` (the hash of a token this node
    /// generated) when none was stored yet. Retries until NATS answers, at most `timeout`.
    pub fn cluster_admin(
        &self,
        candidate: [u8; 32],
        replicas: usize,
        timeout: Duration,
    ) -> Result<ClusterAdmin, LogError> {
        let js = self.context();
        let bucket = format!("{}-admin", self.stream_name());
        crate::jetstream::run(self.runtime_handle(), timeout, async move {
            loop {
                match claim(&js, &bucket, candidate, replicas).await {
                    Ok(admin) => return Ok(admin),
                    Err(e) => {
                        tracing::warn!(error = %e, bucket, "cannot read or store the cluster's admin token yet; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    }
}

async fn claim(
    js: &jetstream::Context,
    bucket: &str,
    candidate: [u8; 32],
    replicas: usize,
) -> Result<ClusterAdmin, String> {
    let store = crate::connect::open_bucket(
        js,
        kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    match store.create(KEY, candidate.to_vec().into()).await {
        Ok(_) => {
            return Ok(ClusterAdmin {
                sha256: candidate,
                generated_here: true,
            })
        }
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.to_string()),
    }
    let stored = store
        .get(KEY)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the stored admin token hash vanished")?;
    let sha256: [u8; 32] = stored
        .as_ref()
        .try_into()
        .map_err(|_| format!("{bucket}/{KEY} holds {} bytes, not a SHA-256", stored.len()))?;
    Ok(ClusterAdmin {
        sha256,
        generated_here: false,
    })
}
