//! Reaching the stream: connecting to NATS, getting or creating the stream, and the marker that ties a
//! node's derived state to the stream it was copied from.

use crate::jetstream::{unavailable, JetStreamConfig, PUBLISH_TIMEOUT};
use async_nats::jetstream::{self, stream};
use buildr_log::LogError;
use std::time::Duration;

/// How long one try to get or create the stream waits for an answer.
pub(crate) const SETUP_TRY_TIMEOUT: Duration = Duration::from_secs(2);

/// The file in `dir` naming the stream the derived state belongs to.
const MARKER: &str = "cluster-stream";

/// Connects (retrying until the caller's timeout) and gets or creates the stream.
pub(crate) async fn connect(
    cfg: JetStreamConfig,
) -> Result<(async_nats::Client, jetstream::Context, stream::Stream), LogError> {
    let addrs = cfg
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unavailable("a cluster.nats address is not a NATS URL", e))?;
    let servers = cfg.servers.join(",");
    let client = loop {
        let opts = async_nats::ConnectOptions::new()
            .name(format!("buildr-webhooks {}", cfg.node_id))
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2));
        match opts.connect(addrs.as_slice()).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, servers, "cannot reach NATS yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // Acknowledgements may take a leader election (seconds): our own timeout bounds the wait.
    let js = jetstream::ContextBuilder::new()
        .timeout(PUBLISH_TIMEOUT)
        .build(client.clone());
    let config = stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.log", cfg.stream)],
        num_replicas: cfg.replicas,
        storage: stream::StorageType::File,
        allow_direct: true,
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    };
    // Creating a replicated stream needs the JetStream meta leader: retry until there is one. A request
    // sent before it is elected gets no answer at all, so these tries wait 2 s, not a publish's timeout
    // (a cluster started together comes up in seconds, not in tens of them).
    let setup = jetstream::ContextBuilder::new()
        .timeout(SETUP_TRY_TIMEOUT)
        .build(client.clone());
    let stream = loop {
        // The handle the node keeps (`js`'s) waits as long as a publish for its answers.
        let tried = match setup.get_or_create_stream(config.clone()).await {
            Ok(_) => js.get_stream(&cfg.stream).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match tried {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, stream = cfg.stream, "cannot get or create the stream yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    Ok((client, js, stream))
}

/// One try to open (or create) the KV bucket `config` next to the stream, waiting at most
/// [`SETUP_TRY_TIMEOUT`]: like the stream's creation, a request that reaches JetStream between two meta
/// leaders gets no answer at all, and the caller's next try should not wait a publish's 10 s for it.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    config: jetstream::kv::Config,
) -> Result<jetstream::kv::Store, String> {
    match tokio::time::timeout(SETUP_TRY_TIMEOUT, js.create_or_update_key_value(config)).await {
        Ok(opened) => opened.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {SETUP_TRY_TIMEOUT:?}")),
    }
}

/// The derived state in `dir` must belong to this stream (its name and creation time); an empty
/// directory is claimed for it. A single-node log, or another stream's copy, is refused.
pub(crate) fn check_marker(cfg: &JetStreamConfig, created: i128) -> Result<(), LogError> {
    let want = format!("{}\n{created}\n", cfg.stream);
    let path = cfg.dir.join(MARKER);
    let io = |e: std::io::Error| LogError::Unavailable(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(&cfg.dir).map_err(io)?;
    match std::fs::read_to_string(&path) {
        Ok(found) if found == want => Ok(()),
        Ok(found) => Err(LogError::Unavailable(format!(
            "{} holds the derived state of another stream ({}); give this node an empty storage.path \
             (it is rebuilt from the stream)",
            cfg.dir.display(),
            found.lines().next().unwrap_or("?")
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let used = std::fs::read_dir(&cfg.dir).map_err(io)?.next().is_some();
            if used {
                return Err(LogError::Unavailable(format!(
                    "{} is not empty and not a cluster node's directory (a single-node log?); give \
                     cluster mode an empty storage.path",
                    cfg.dir.display()
                )));
            }
            std::fs::write(&path, want).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
