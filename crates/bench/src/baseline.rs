//! The machine's own limits, measured in the same run as the scenarios:
//!
//! - **L-disk**: raw sled 0.34 appends of records the same size as the server's event record (the real
//!   encoding), one atomic batch and one flush per `batch` records: the ceiling for durable ingest.
//! - **L-disk read**: opening a stopped server's sled dir and reading every record raw: the floor for a
//!   start-up that replays the log without a checkpoint.
//! - **L-http**: awc at a given concurrency POSTing the same signed body (signed per request, with the
//!   server's own signing code) straight to the counting receiver: the ceiling for any sender.

use crate::api::ReceiverApi;
use crate::load::{self, LoadResult};
use anyhow::{Context, Result};
use awc::http::header::{CONTENT_TYPE, USER_AGENT};
use buildr_core::{
    signing, AccountId, EventData, EventId, EventRecord, EventType, ObjectId, Record, Secret,
    Timestamp,
};
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn sample_data(id: i64) -> EventData {
    EventData {
        id: ObjectId::Int(id),
        url: format!("https://app.buildr.example/contacts/{id}"),
    }
}

/// The bytes the server stores for one of the driver's events (`buildr_log::encode`).
pub fn sample_record(id: i64) -> Vec<u8> {
    buildr_log::encode(&Record::EventPublished(EventRecord {
        id: EventId::generate(),
        account: AccountId::default_account(),
        event_type: EventType::ContactCreate,
        data: sample_data(id),
        created_at: Timestamp::now(),
        only_webhook: None,
    }))
}

/// A sled database in a fresh temp dir and its `records` tree (the dir lives as long as the guard).
fn temp_tree() -> Result<(tempfile::TempDir, sled::Db, sled::Tree)> {
    let dir = tempfile::tempdir().context("cannot make a temp dir for L-disk")?;
    // Flushed as the server's log is (`fdatasync`, `StorageOptions::sync_data`).
    let db = sled::Config::new()
        .path(dir.path())
        .sync_data(true)
        .open()
        .context("L-disk: cannot open sled")?;
    let tree = db
        .open_tree("records")
        .context("L-disk: cannot open tree")?;
    Ok((dir, db, tree))
}

/// Durable records per second for raw sled appends, `batch` records per flush.
pub fn l_disk(records: u64, batch: usize) -> Result<f64> {
    let (_dir, db, tree) = temp_tree()?;
    let value = sample_record(100_000);
    let batch = batch.max(1) as u64;
    let started = Instant::now();
    let mut seq = 1u64;
    while seq <= records {
        let mut b = sled::Batch::default();
        for s in seq..(seq + batch).min(records + 1) {
            b.insert(&s.to_be_bytes(), value.as_slice());
        }
        tree.apply_batch(b).context("L-disk: apply_batch")?;
        db.flush().context("L-disk: flush")?;
        seq += batch;
    }
    Ok(records as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Latency (ns) of each of `n` single-record sled appends with a flush: what one group commit costs at
/// least, so S4's tail can be told apart from the disk's.
pub fn l_disk_flush_latencies(n: u64) -> Result<Vec<i64>> {
    let (_dir, db, tree) = temp_tree()?;
    let value = sample_record(100_000);
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for seq in 1..=n {
        let started = Instant::now();
        tree.insert(seq.to_be_bytes(), value.as_slice())
            .context("L-disk: insert")?;
        db.flush().context("L-disk: flush")?;
        out.push(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX));
    }
    Ok(out)
}

/// The disk's own stalls while a scenario runs: every [`DiskProbe::EVERY`] a 4 KiB write and an
/// `fdatasync` (what each of the server's log flushes ends with) of a file beside the server's data,
/// on a thread of its own. At 20 syncs/s it adds little to the server's 500–1,000; a sync of its that
/// took over 25 ms while the server's did too says the latency tail was the disk's, not the server's.
/// Dropped without [`DiskProbe::finish`] (a scenario that failed half way), it stops all the same.
pub struct DiskProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Vec<i64>>>>,
}

impl DiskProbe {
    const EVERY: Duration = Duration::from_millis(50);

    /// Starts probing with a file in `dir` (removed when it stops).
    pub fn start(dir: &Path) -> Result<Self> {
        use std::io::Write;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut file = tempfile::tempfile_in(dir)
            .with_context(|| format!("disk probe: cannot make a file in {}", dir.display()))?;
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("disk-probe".into())
            .spawn(move || {
                let block = [0x5a_u8; 4096];
                let mut out = Vec::new();
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    let started = Instant::now();
                    file.write_all(&block).context("disk probe: write")?;
                    file.sync_data().context("disk probe: fdatasync")?;
                    out.push(i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX));
                    std::thread::sleep(Self::EVERY);
                }
                Ok(out)
            })
            .context("disk probe: cannot start its thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops probing; each sync's latency (ns).
    pub fn finish(mut self) -> Result<Vec<i64>> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread
            .take()
            .context("disk probe: already finished")?
            .join()
            .map_err(|_| anyhow::anyhow!("disk probe: its thread panicked"))?
    }
}

impl Drop for DiskProbe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A stopped server's sled database and its log (the `records` tree), opened raw.
fn open_log(data_dir: &Path) -> Result<(sled::Db, sled::Tree)> {
    let db = sled::Config::new()
        .path(data_dir)
        .open()
        .with_context(|| format!("cannot open {} with sled", data_dir.display()))?;
    let tree = db
        .open_tree("records")
        .with_context(|| format!("{} has no records tree", data_dir.display()))?;
    Ok((db, tree))
}

/// Seconds to open `data_dir` with raw sled and read every value of its `records` tree; and the count.
pub fn l_disk_read(data_dir: &Path) -> Result<(f64, u64)> {
    let started = Instant::now();
    let (_db, tree) = open_log(data_dir)?;
    let mut count = 0u64;
    let mut bytes = 0usize;
    for item in tree.iter() {
        let (_, v) = item.context("L-disk read: iterating")?;
        bytes += v.len();
        count += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok((secs, count))
}

/// A signed POST of event `i`'s delivery body to `url`, the way the dispatcher sends it.
async fn signed_post(client: &awc::Client, url: &str, secret: &Secret, i: i64) -> Result<()> {
    let body =
        buildr_core::event::payload(EventType::ContactCreate, Timestamp::now(), &sample_data(i));
    let id = EventId::generate();
    let ts = Timestamp::now().unix_seconds();
    let sig = signing::signature_header(&[secret], id.as_str(), ts, &body);
    let ts = ts.to_string();
    let res = client
        .post(url)
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((USER_AGENT, "Buildr-Webhooks/bench"))
        .insert_header(("webhook-id", id.as_str()))
        .insert_header(("webhook-timestamp", ts.as_str()))
        .insert_header(("webhook-signature", sig.as_str()))
        .insert_header(("svix-id", id.as_str()))
        .insert_header(("svix-timestamp", ts.as_str()))
        .insert_header(("svix-signature", sig.as_str()))
        .send_body(body)
        .await
        .map_err(|e| anyhow::anyhow!("L-http POST {url}: {e}"))?;
    anyhow::ensure!(
        res.status().is_success(),
        "L-http: receiver answered {}",
        res.status()
    );
    Ok(())
}

/// L-http: `total` signed POSTs at `concurrency` to the receiver's `/hook/*`.
pub async fn l_http(receiver: &ReceiverApi, total: u64, concurrency: usize) -> Result<LoadResult> {
    let secret = Secret::parse(SECRET).map_err(|e| anyhow::anyhow!("bench secret: {e}"))?;
    let client = crate::api::client(concurrency);
    let base = receiver.base.clone();
    let r = load::run(total, concurrency, Duration::from_secs(120), |i| {
        let url = format!("{base}/hook/{}", i % 100);
        let (client, secret) = (&client, &secret);
        async move { signed_post(client, &url, secret, i64::try_from(i).unwrap_or(0)).await }
    })
    .await;
    Ok(r)
}

/// L-http latency: signed POSTs to `/lat/0` at `per_second` for `total`; send-start to arrival, in ns.
pub async fn l_http_latency(
    receiver: &ReceiverApi,
    total: u64,
    per_second: u64,
) -> Result<(LoadResult, Vec<i64>)> {
    let secret = Secret::parse(SECRET).map_err(|e| anyhow::anyhow!("bench secret: {e}"))?;
    let client = crate::api::client(256);
    let url = format!("{}/lat/0", receiver.base);
    receiver.latencies().await?;
    let (r, starts) = load::paced(total, per_second, |i| {
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        async move { signed_post(&client, &url, &secret, i64::try_from(i).unwrap_or(0)).await }
    })
    .await;
    let arrivals = receiver.latencies().await?;
    Ok((r, load::latencies(&starts, &arrivals)))
}

/// What a full read of the log finds: the floor for any read that scans it (S8's baseline).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogScan {
    /// Seconds to read and decode every record (the database already open).
    pub secs: f64,
    pub records: u64,
    /// Events of the account asked for.
    pub account_events: u64,
    /// Events of the other account asked for created in `[since, until)`.
    pub window_events: u64,
}

/// Opens the stopped server's `data_dir` with raw sled, then reads and decodes every record of its log in
/// order, picking out `account`'s events and `window_account`'s events created in `window`: what
/// `GET /events` and a time-range replay had to do before the events index. Only the scan is timed.
pub fn l_disk_scan(
    data_dir: &Path,
    account: &AccountId,
    window_account: &AccountId,
    window: (Timestamp, Timestamp),
) -> Result<LogScan> {
    let (_db, tree) = open_log(data_dir)?;
    let mut scan = LogScan::default();
    let started = Instant::now();
    for item in tree.iter() {
        let (_, v) = item.context("log scan: iterating")?;
        scan.records += 1;
        if let Ok(Record::EventPublished(e)) = buildr_log::decode(&v) {
            if e.only_webhook.is_some() {
                continue;
            }
            if &e.account == account {
                scan.account_events += 1;
            } else if &e.account == window_account
                && e.created_at >= window.0
                && e.created_at < window.1
            {
                scan.window_events += 1;
            }
        }
    }
    scan.secs = started.elapsed().as_secs_f64();
    Ok(scan)
}
