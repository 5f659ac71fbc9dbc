//! Runs the real binary: `buildr-webhooks serve --config config/test.toml` on a data dir of the test's.
//! With `BUILDR_E2E_CLUSTER=1` in the test's environment (or [`ServerBuilder::cluster`]) the same `Server`
//! is three cluster nodes on a three-server JetStream cluster (see [`crate::cluster`]): each request goes
//! to the next node in turn, and carries `Buildr-Min-Position` (the highest `Buildr-Position` any node
//! answered), so the test reads its own writes whichever node answers, as a client of the cluster would.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The binary under test: `$BUILDR_BIN`, else `target/<profile>/buildr-webhooks` beside this test binary.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("BUILDR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("buildr-webhooks");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`make test` does: cargo build --bin buildr-webhooks)",
        bin.display()
    );
    bin
}

pub struct ServerBuilder {
    env: Vec<(String, String)>,
    admin_token: Option<String>,
    data_dir: Option<PathBuf>,
    cluster: bool,
}

impl ServerBuilder {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Start without `BUILDR_ADMIN_TOKEN` (the server generates one).
    pub fn without_admin_token(mut self) -> Self {
        self.admin_token = None;
        self
    }

    pub fn data_dir(mut self, p: &Path) -> Self {
        self.data_dir = Some(p.to_path_buf());
        self
    }

    /// Three cluster nodes instead of one (what `BUILDR_E2E_CLUSTER=1` makes every `Server`).
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    pub fn start(self) -> Server {
        let (dir, data_dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().join("data");
                (Some(t), p)
            }
        };
        let cluster = self.cluster.then(crate::cluster::Nodes::new);
        let mut s = Server {
            _tmp: dir,
            data_dir,
            env: self.env,
            admin_token: self.admin_token,
            children: Vec::new(),
            base: String::new(),
            bases: Vec::new(),
            stdout_lines: Default::default(),
            cluster,
        };
        s.spawn();
        s
    }
}

pub struct Server {
    _tmp: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    admin_token: Option<String>,
    /// The server's process (one per node in cluster mode).
    children: Vec<Child>,
    /// `http://127.0.0.1:port` (of the first node in cluster mode)
    pub base: String,
    /// Every node's base (one on a single node).
    pub bases: Vec<String>,
    /// What the server printed on stdout (collected as it prints).
    pub stdout_lines: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    /// In cluster mode: the NATS cluster, the stream, which node is next and the position to read at.
    cluster: Option<crate::cluster::Nodes>,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            env: Vec::new(),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            data_dir: None,
            cluster: std::env::var("BUILDR_E2E_CLUSTER").is_ok_and(|v| v == "1"),
        }
    }

    pub fn start() -> Server {
        Self::builder().start()
    }

    pub fn token(&self) -> String {
        match &self.admin_token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(self.data_dir.join("admin.token"))
                .unwrap()
                .trim()
                .to_owned(),
        }
    }

    fn spawn(&mut self) {
        let nodes = self.cluster.as_ref().map_or(1, |_| crate::cluster::NODES);
        for i in 0..nodes {
            self.spawn_one(i);
        }
        self.base = self.bases[0].clone();
        for i in 0..nodes {
            let base = self.bases[i].clone();
            let ready = crate::wait_until(Duration::from_secs(60), || {
                matches!(request(&base, "GET", "/readyz", None, &[]).0, 200)
            });
            assert!(
                ready,
                "server did not become ready: {}",
                request(&base, "GET", "/readyz", None, &[]).1
            );
        }
        if let Some(c) = &self.cluster {
            c.wait_balanced(&self.bases, &self.token());
        }
    }

    /// Starts node `i` (the only one on a single node) and reads its address.
    fn spawn_one(&mut self, i: usize) {
        let data_dir = match &self.cluster {
            Some(_) => self.data_dir.join(format!("node-{i}")),
            None => self.data_dir.clone(),
        };
        let mut cmd = Command::new(super::server::binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(crate::repo_root().join("config/test.toml"))
            .env("BUILDR_STORAGE__PATH", &data_dir)
            .env("BUILDR_SERVER__BIND", "127.0.0.1:0")
            .env_remove("BUILDR_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(t) = &self.admin_token {
            cmd.env("BUILDR_ADMIN_TOKEN", t);
        }
        if let Some(c) = &self.cluster {
            for (k, v) in c.env(i) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let base = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("server did not print its address");
            lines.push(line.clone());
            if let Some(rest) = line.strip_prefix("buildr-webhooks listening on ") {
                break rest.trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        let sink = self.stdout_lines.clone();
        sink.lock().extend(lines);
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                sink.lock().push(line);
            }
        });
        if self.bases.len() > i {
            self.bases[i] = base;
        } else {
            self.bases.push(base);
        }
        self.children.push(child);
    }

    /// SIGKILL, no goodbye: what a crash looks like.
    pub fn kill9(&mut self) {
        for mut c in self.children.drain(..) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait: a clean stop (the server saves a checkpoint).
    pub fn stop(&mut self) {
        for mut c in self.children.drain(..) {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "server did not stop on SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts again on the same data directory (after [`Server::kill9`] or [`Server::stop`]).
    pub fn start_again(&mut self) {
        assert!(self.children.is_empty(), "stop or kill the server first");
        self.stdout_lines.lock().clear();
        self.spawn();
    }

    /// The env the server runs with (to run the binary's other commands on the same data dir).
    pub fn command_env(&self) -> Vec<(String, String)> {
        let mut env = vec![(
            "BUILDR_STORAGE__PATH".to_owned(),
            self.data_dir.display().to_string(),
        )];
        env.extend(self.env.iter().cloned());
        env
    }

    /// Starts again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts again on the same data directory with `k=v` set (or replaced) in its environment.
    pub fn restart_with_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_owned(), v.to_owned()));
        self.restart();
    }

    /// A request with the admin token and a JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(&self.token(), &[], method, path, body)
    }

    /// A request with `token` (an account key or the admin token), extra headers and a JSON body.
    pub fn call_with(
        &self,
        token: &str,
        extra: &[(&str, &str)],
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let token = format!("Bearer {token}");
        let body = body.map(|b| b.to_string());
        let mut headers = vec![("Authorization", token.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        headers.extend_from_slice(extra);
        let (status, text) = self.raw(
            method,
            &format!("/api/2023-01{path}"),
            body.as_deref(),
            &headers,
        );
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// The ids of the first 1,000 events `GET /events` lists, in seq order.
    pub fn event_ids(&self) -> Vec<String> {
        ids_of(&self.call("GET", "/events?limit=1000", None).1)
    }

    /// Creates a webhook to `url` (rate limit 60,000/min unless `extra` says otherwise; `extra`'s fields are
    /// added to the webhook object); asserts the 201 and returns its id.
    pub fn create_webhook(&self, url: &str, extra: Value) -> String {
        let mut w = serde_json::json!({"url": url, "rate_limit": 60000});
        if let (Some(o), Some(e)) = (w.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let (st, v) = self.call(
            "POST",
            "/webhooks",
            Some(serde_json::json!({ "webhook": w })),
        );
        assert_eq!(st, 201, "{v}");
        v["webhook"]["id"].as_str().unwrap_or_default().to_owned()
    }

    /// Publishes one event of type `t` about object `id` (its url is derived from the id); asserts the 202
    /// and returns the `event` of the answer.
    pub fn publish(&self, t: &str, id: Value) -> Value {
        let url = format!(
            "https://app.buildr.example/objects/{}",
            id.as_str().map_or_else(|| id.to_string(), str::to_owned)
        );
        let (status, v) = self.call(
            "POST",
            "/events",
            Some(serde_json::json!({"event": {"type": t, "data": {"id": id, "url": url}}})),
        );
        assert_eq!(status, 202, "{v}");
        v["event"].clone()
    }

    /// An admin call with a JSON body; returns the status and the value of response header `name`.
    pub fn call_for_header(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        name: &str,
    ) -> (u16, Option<String>) {
        let token = format!("Bearer {}", self.token());
        let headers = [
            ("Authorization", token.as_str()),
            ("Content-Type", "application/json"),
        ];
        let (status, _, value) = self.send(
            method,
            &format!("/api/2023-01{path}"),
            Some(&body.to_string()),
            &headers,
            name,
        );
        (status, value)
    }

    /// Any request, exactly as given; returns status and body text.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let (status, text, _) = self.send(method, path, body, headers, POSITION);
        (status, text)
    }

    /// Sends a request to this server (to the next node in cluster mode, at the position read so far);
    /// returns status, body text and the value of response header `name`.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
        name: &str,
    ) -> (u16, String, Option<String>) {
        let Some(c) = &self.cluster else {
            let (status, text, mut values) =
                request_with(&self.base, method, path, body, headers, &[name]);
            return (status, text, values.pop().flatten());
        };
        let min = c.position().to_string();
        let mut all = headers.to_vec();
        all.push(("Buildr-Min-Position", min.as_str()));
        let base = &self.bases[c.next_node(self.bases.len())];
        let (status, text, mut values) =
            request_with(base, method, path, body, &all, &[POSITION, name]);
        let value = values.pop().flatten();
        if let Some(p) = values.pop().flatten().and_then(|p| p.parse().ok()) {
            c.saw_position(p);
        }
        (status, text, value)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The response header with the position the answering node had applied (see `crates/api/src/position.rs`).
const POSITION: &str = "Buildr-Position";

/// One request to `base` (`http://127.0.0.1:port`); returns status and body text.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, text, _) = request_with(base, method, path, body, headers, &[]);
    (status, text)
}

/// One request to `base`; returns status, body text and the values of response headers `names`.
fn request_with(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    names: &[&str],
) -> (u16, String, Vec<Option<String>>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut req = agent.request(method, &format!("{base}{path}"));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let values = names
                .iter()
                .map(|n| r.header(n).map(str::to_owned))
                .collect();
            (r.status(), r.into_string().unwrap_or_default(), values)
        }
        Err(e) => (0, e.to_string(), vec![None; names.len()]),
    }
}

/// Runs the binary with `args` and env, returning (exit code, stdout+stderr). Killed after 60 s (and
/// then the exit code is -1), so a command that should have stopped cannot hang the suite.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_remove("BUILDR_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The `id`s of the events in a response's `events` array, in order.
pub fn ids_of(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}
