//! The two processes under the driver: the real server binary on a fresh data dir, and the counting
//! receiver. Each prints its address on stdout; we parse it and keep draining stdout so neither blocks on
//! a full pipe. Dropping a handle kills its process (SIGKILL).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The admin token every bench server runs with.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// Where the binaries and the config are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub server: PathBuf,
    pub receiver: PathBuf,
    pub config: PathBuf,
}

/// A running child that printed `<prefix>http://ADDR` on stdout.
struct Announced {
    child: Child,
    base: String,
}

fn spawn_announced(mut cmd: Command, prefix: &str, what: &str) -> Result<Announced> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("{what} has no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading to the end so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} did not print its address (`{prefix}…`) within 60 s");
            }
        };
        if let Some(rest) = line.strip_prefix(prefix) {
            return Ok(Announced {
                child,
                base: rest.trim().to_owned(),
            });
        }
    }
}

/// The counting receiver (`buildr-bench-receiver`).
pub struct Receiver {
    child: Child,
    pub base: String,
}

impl Receiver {
    pub fn start(bin: &Path, slow_ms: u64) -> Result<Receiver> {
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1:0", "--slow-ms", &slow_ms.to_string()]);
        let a = spawn_announced(cmd, "receiver listening on ", "the receiver")?;
        Ok(Receiver {
            child: a.child,
            base: a.base,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary on its own data directory.
pub struct Server {
    child: Option<Child>,
    /// `perf record` attached to the server (`--perf`); it ends when the server does.
    profiler: Option<Child>,
    bins: Binaries,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    pub base: String,
}

impl Server {
    /// Starts `buildr-webhooks serve` on `data_dir` (created by the server if missing). Returns once it
    /// printed its address; call [`crate::api::Api::wait_ready`] for `/readyz`.
    pub fn start(bins: &Binaries, data_dir: &Path, env: &[(&str, &str)]) -> Result<Server> {
        let mut s = Server {
            child: None,
            profiler: None,
            bins: bins.clone(),
            data_dir: data_dir.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            base: String::new(),
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts the process again on the same data directory (after [`Server::kill9`] or [`Server::sigterm`]).
    pub fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("the server is already running");
        }
        let mut cmd = Command::new(&self.bins.server);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.bins.config)
            .env_remove("RUST_LOG")
            .env("BUILDR_STORAGE__PATH", &self.data_dir)
            .env("BUILDR_SERVER__BIND", "127.0.0.1:0")
            .env("BUILDR_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("BUILDR_DELIVERY__ALLOW_PRIVATE_TARGETS", "true");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let a = spawn_announced(cmd, "buildr-webhooks listening on ", "the server")?;
        self.base = a.base;
        self.child = Some(a.child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the server process, from `/proc/<pid>/status` (VmRSS).
    pub fn rss_bytes(&self) -> Result<u64> {
        rss_of(self.pid().context("the server is not running")?)
    }

    /// Starts sampling the server's VmRSS every 10 ms on a thread of its own (the driver's one thread is
    /// busy with the load); [`RssSampler::peak`] stops it and gives the highest sample.
    pub fn sample_rss(&self) -> Result<RssSampler> {
        let pid = self.pid().context("the server is not running")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0u64;
            // Bounded: at most an hour of samples, and it ends when the process is gone.
            for _ in 0..360_000 {
                match rss_of(pid) {
                    Ok(rss) => peak = peak.max(rss),
                    Err(_) => break,
                }
                if stop_seen.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Ok(RssSampler { stop, thread })
    }

    /// Attaches `perf record` (call graphs, 499 Hz) to the running server, writing `out`. It stops when
    /// the server stops.
    pub fn profile(&mut self, out: &Path) -> Result<()> {
        let pid = self.pid().context("the server is not running")?;
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start perf (apt-get install linux-perf)")?;
        self.profiler = Some(child);
        // Let perf attach before the load starts.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// Waits (up to 60 s) for an attached `perf record` to write its data after the server ended.
    fn finish_profile(&mut self) {
        if let Some(mut p) = self.profiler.take() {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// CPU seconds (user + system) used so far by the whole server and by its main thread (where the
    /// engine's actors and the dispatcher run), from `/proc/<pid>/stat` and `/proc/<pid>/task/<pid>/stat`.
    pub fn cpu_seconds(&self) -> Result<CpuTime> {
        let pid = self.pid().context("the server is not running")?;
        Ok(CpuTime {
            process: stat_cpu(&format!("/proc/{pid}/stat"))?,
            main_thread: stat_cpu(&format!("/proc/{pid}/task/{pid}/stat"))?,
        })
    }

    /// SIGKILL: what a crash looks like.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("cannot kill the server")?;
            c.wait().context("cannot reap the server")?;
        }
        self.finish_profile();
        Ok(())
    }

    /// SIGTERM (through `kill(1)`: no unsafe code here), then waits up to `grace` for a clean exit, after
    /// which it is killed. Returns how long the graceful stop took.
    pub fn sigterm(&mut self, grace: Duration) -> Result<Duration> {
        let Some(mut child) = self.child.take() else {
            return Ok(Duration::ZERO);
        };
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("cannot run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        while started.elapsed() < grace {
            if child
                .try_wait()
                .context("cannot wait for the server")?
                .is_some()
            {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child
            .kill()
            .context("cannot kill the server after its grace time")?;
        child.wait().context("cannot reap the server")?;
        bail!("the server did not stop within {grace:?} of SIGTERM")
    }
}

/// VmRSS of process `pid` in bytes, from `/proc/<pid>/status`.
fn rss_of(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

/// A running sample of the server's peak RSS ([`Server::sample_rss`]).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    /// Stops sampling; the highest VmRSS seen (bytes).
    pub fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// CPU seconds of the server: all threads, and the main thread alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub process: f64,
    pub main_thread: f64,
}

impl CpuTime {
    /// CPU used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            process: self.process - earlier.process,
            main_thread: self.main_thread - earlier.main_thread,
        }
    }
}

/// utime + stime of a `/proc/.../stat` file, in seconds (the kernel's USER_HZ is 100 on Linux).
fn stat_cpu(path: &str) -> Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the `(comm)`, which may itself hold spaces: state is field 3, utime 14, stime 15.
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no comm"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {} is missing", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}
