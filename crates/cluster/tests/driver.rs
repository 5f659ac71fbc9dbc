//! The storage driver suite (buildr_log::drivertest) against the JetStream log on a real 3-server
//! JetStream cluster: the same checks the sled log passes.

use buildr_cluster::testkit::NatsCluster;
use buildr_cluster::{JetStreamConfig, JetStreamLog};
use buildr_log::drivertest::{self, Driver};
use buildr_log::{LogStore, StorageOptions};
use std::time::Duration;

struct JetStreamDriver {
    urls: Vec<String>,
    base: tempfile::TempDir,
    made: usize,
    nodes: usize,
}

impl JetStreamDriver {
    fn config(&self, node: usize) -> JetStreamConfig {
        JetStreamConfig {
            servers: self.urls.clone(),
            node_id: format!("node-{node}"),
            stream: format!("drivertest{}", self.made),
            replicas: 3,
            dir: self.base.path().join(format!("{}-{node}", self.made)),
            storage: StorageOptions {
                cache_bytes: 16 << 20,
                ..Default::default()
            },
            connect_timeout: Duration::from_secs(20),
            duplicate_window: Duration::from_secs(120),
        }
    }

    fn open(&self, node: usize) -> Result<Box<dyn LogStore>, String> {
        let (log, _) = JetStreamLog::open(&self.config(node)).map_err(|e| e.to_string())?;
        Ok(Box::new(log))
    }
}

impl Driver for JetStreamDriver {
    fn fresh(&mut self) -> Result<Box<dyn LogStore>, String> {
        self.made += 1;
        self.nodes = 1;
        self.open(0)
    }

    fn reopen(&mut self) -> Result<Box<dyn LogStore>, String> {
        self.open(0)
    }

    fn second_writer(&mut self) -> Result<Option<Box<dyn LogStore>>, String> {
        self.nodes += 1;
        self.open(self.nodes - 1).map(Some)
    }
}

#[test]
fn jetstream_log_passes_the_driver_suite() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let cluster = NatsCluster::start(3);
    let mut driver = JetStreamDriver {
        urls: cluster.urls(),
        base: tempfile::tempdir()
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}")),
        made: 0,
        nodes: 0,
    };
    assert_eq!(drivertest::run_all(&mut driver), Ok(()));
}
