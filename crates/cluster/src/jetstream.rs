//! [`JetStreamLog`]: the log of cluster mode. The truth is one JetStream stream (replicated, `R3`); this
//! node keeps, in its `storage.path`, only derived state: a copy of the stream's records (so reads —
//! retries, replays, listings — stay local), its projection checkpoint and its delivery index, all in
//! the same sled layout as single-node mode (a [`buildr_log::EventLog`]). Losing that directory costs a
//! rebuild from the stream, never data.
//!
//! - `append_batch` publishes the batch as one message (more only when it would not fit, split between
//!   atomic groups), waits for the stream's acknowledgement (a quorum has it, fsynced when the servers run
//!   with `sync_interval: always`), then waits until this node's follower has copied it, and hands out
//!   everything up to it in stream order (other nodes' records included). Seqs: see [`crate::message`].
//! - A follower task reads the stream in order with an ordered consumer from where the copy ends, stores
//!   each message's records in the copy and calls the engine's notify.
//! - async-nats runs on a small tokio runtime of this log's own; the engine's synchronous calls wait for
//!   it on a channel (the LogActor blocks on an append here as it blocks on sled's fsync).

use crate::connect::{check_marker, connect};
use crate::follower::{follow_stream, Followed};
use crate::message;
use async_nats::jetstream::{self, stream};
use buildr_core::{AccountId, Record, Timestamp};
use buildr_log::{
    Appended, DeliveryIndex, Entries, EventLog, EventRef, EventRefs, Group, LogError, LogStore,
    Notify, OpenReport, Refused, Reopened, StorageOptions,
};
use parking_lot::Mutex;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how to reach the stream.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// NATS server URLs (any of the cluster's servers).
    pub servers: Vec<String>,
    /// This node's name (the NATS connection name).
    pub node_id: String,
    /// The stream's name; created when missing. Records go to subject `<stream>.log`.
    pub stream: String,
    /// The stream's replication (3 for a cluster that survives the loss of any one server).
    pub replicas: usize,
    /// This node's derived state (copy of the stream, checkpoint, delivery index).
    pub dir: PathBuf,
    pub storage: StorageOptions,
    /// How long start-up waits for NATS and the stream before giving up.
    pub connect_timeout: Duration,
    /// How long the stream remembers a group's dedupe id (the idempotency TTL), for a new stream.
    pub duplicate_window: Duration,
}

/// How long a write waits for the stream's acknowledgement (a leader election takes a few seconds).
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write waits for the acknowledgement of a message it sent. A message sent to a leader that
/// dies before answering is never acknowledged: the write then fails (outcome unknown: `503`, and the
/// engine's healing writes again only facts the stream does not hold) instead of waiting out
/// [`PUBLISH_TIMEOUT`], so writes resume soon after a new leader is elected. A healthy stream answers in
/// milliseconds, fsync included.
const ACK_TIMEOUT: Duration = Duration::from_secs(4);
/// How long healing waits for the stream to answer (it tries again soon: see `max_heal_wait`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two tries to heal: a stream that elected a new leader answers within
/// seconds, and a probe is one small request.
const MAX_HEAL_WAIT: Duration = Duration::from_millis(500);
/// How long a write waits for this node's follower to have copied what the stream acknowledged.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Start-up's catch-up fails when the follower makes no progress for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many records are handed out by one catch-up (a rebuild applies the stream in chunks).
const CATCH_UP_CHUNK: usize = 20_000;
/// Room left in a message for its headers.
const HEADROOM: usize = 4096;

/// One message of an append.
struct Outgoing {
    payload: bytes::Bytes,
    records: usize,
    dedupe_id: Option<String>,
}

/// The index (in `groups`) of the group that message `k` carries, for a message that carries one group.
fn group_of_message(groups: &[Group], shape: &[(usize, bool)], k: usize) -> usize {
    let first_record: usize = shape.iter().take(k).map(|(n, _)| n).sum();
    groups
        .iter()
        .position(|g| g.start == first_record)
        .unwrap_or(0)
}

/// Whether a publish failed because another publish with the same `Nats-Msg-Id` is being stored.
fn duplicate_in_process(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| j.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
        || e.to_string().contains("error code 10158")
}

pub struct JetStreamLog {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    copy: Arc<EventLog>,
    followed: Arc<Followed>,
    /// The last seq handed out to the engine (by `append_batch` or `catch_up`).
    handed: Mutex<u64>,
    max_payload: usize,
    follower: tokio::task::JoinHandle<()>,
    /// Whether this node is connected to the stream and keeping up with it (`/readyz`).
    sync: Arc<crate::sync::SyncWatch>,
    /// Whether this node runs retention on the stream: the holder of the `maintenance` lease once
    /// leases are kept (a log without leases, e.g. `log verify`'s copy, is its only user).
    maintains: Arc<std::sync::atomic::AtomicBool>,
    watcher: tokio::task::JoinHandle<()>,
    /// How long the last append waited for the stream's acknowledgement (seconds).
    publish_seconds: Mutex<f64>,
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what}: {e}"))
}

impl JetStreamLog {
    /// Connects, creates the stream when it is missing, opens the local copy and starts following.
    pub fn open(cfg: &JetStreamConfig) -> Result<(Self, OpenReport), LogError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats")
            .enable_all()
            .build()
            .map_err(|e| unavailable("cannot start the NATS client's runtime", e))?;
        let handle = runtime.handle().clone();
        let (client, js, stream) = run(&handle, cfg.connect_timeout, connect(cfg.clone()))?;
        let info = stream.cached_info().clone();
        check_marker(cfg, info.created.unix_timestamp_nanos())?;
        // The copy is derived (rebuilt from the stream when lost): its writes need no `fdatasync`.
        let storage = buildr_log::StorageOptions {
            sync_data: false,
            ..cfg.storage
        };
        let (copy, report) = EventLog::open_with(&cfg.dir, storage)?;
        let copy = Arc::new(copy);
        let followed = Arc::new(Followed::new(message::stream_seq(copy.last_seq())));
        let subject = format!("{}.log", cfg.stream);
        let follower = handle.spawn(follow_stream(
            stream.clone(),
            subject.clone(),
            copy.clone(),
            followed.clone(),
        ));
        let max_payload = client.server_info().max_payload;
        let sync = Arc::new(crate::sync::SyncWatch::default());
        let watcher = handle.spawn(crate::sync::watch(
            client,
            stream.clone(),
            followed.clone(),
            sync.clone(),
        ));
        let log = Self {
            runtime: Some(runtime),
            handle,
            js,
            stream,
            subject,
            copy,
            followed,
            handed: Mutex::new(0),
            max_payload,
            follower,
            sync,
            maintains: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            watcher,
            publish_seconds: Mutex::new(0.0),
        };
        Ok((log, report))
    }

    /// The stream's last seq (a message seq), asked of NATS now.
    pub fn stream_last_seq(&self) -> Result<u64, LogError> {
        self.stream_last_seq_within(PUBLISH_TIMEOUT)
    }

    fn stream_last_seq_within(&self, timeout: Duration) -> Result<u64, LogError> {
        let stream = self.stream.clone();
        run(&self.handle, timeout, async move {
            let info = stream
                .get_info()
                .await
                .map_err(|e| unavailable("stream info", e))?;
            Ok(info.state.last_sequence)
        })
    }

    /// Starts keeping this node's shard leases (on this log's NATS connection).
    pub fn leases(&self, cfg: crate::LeaseConfig) -> crate::Leases {
        self.maintains
            .store(false, std::sync::atomic::Ordering::Release);
        crate::Leases::start(
            &self.handle,
            self.js.clone(),
            cfg,
            self.followed.clone(),
            self.maintains.clone(),
        )
    }

    /// This log's JetStream context (for the KV buckets next to the stream).
    pub(crate) fn context(&self) -> jetstream::Context {
        self.js.clone()
    }

    /// The NATS runtime.
    pub(crate) fn runtime_handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream.cached_info().config.name
    }

    /// The last stream seq this node has copied (a message seq).
    pub fn followed_seq(&self) -> u64 {
        self.followed.get()
    }

    /// Splits `records` into messages between groups; a group with a dedupe id travels alone, with
    /// the id as its `Nats-Msg-Id`.
    fn messages(&self, records: &[Record], groups: &[Group]) -> Result<Vec<Outgoing>, LogError> {
        let limit = self.max_payload.saturating_sub(HEADROOM).max(1);
        let encoded: Vec<Vec<u8>> = records.iter().map(buildr_log::encode).collect();
        let mut out = Vec::new();
        let mut current: Vec<&[u8]> = Vec::new();
        let mut size = message::EMPTY_LEN;
        let mut starts: Vec<Group> = groups.to_vec();
        if starts.first().map(|g| g.start) != Some(0) {
            starts.insert(0, Group::at(0));
        }
        let close = |current: &mut Vec<&[u8]>, out: &mut Vec<Outgoing>, dedupe_id| {
            if !current.is_empty() {
                out.push(Outgoing {
                    payload: message::encode(current.iter().copied()).into(),
                    records: current.len(),
                    dedupe_id,
                });
                current.clear();
            }
        };
        for (i, g) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(encoded.len(), |n| n.start);
            let group = encoded.get(g.start..end).unwrap_or_default();
            let group_size: usize = group.iter().map(|r| message::framed_len(r.len())).sum();
            if message::EMPTY_LEN + group_size > limit || group.len() > message::MAX_RECORDS {
                return Err(LogError::Unavailable(format!(
                    "a batch of {} records ({group_size} bytes) does not fit in one NATS message \
                     (max_payload {})",
                    group.len(),
                    self.max_payload
                )));
            }
            if g.dedupe_id.is_some()
                || size + group_size > limit
                || current.len() + group.len() > message::MAX_RECORDS
            {
                close(&mut current, &mut out, None);
                size = message::EMPTY_LEN;
            }
            current.extend(group.iter().map(Vec::as_slice));
            size += group_size;
            if g.dedupe_id.is_some() {
                close(&mut current, &mut out, g.dedupe_id.clone());
                size = message::EMPTY_LEN;
            }
        }
        close(&mut current, &mut out, None);
        Ok(out)
    }

    /// Publishes `records` (see [`LogStore::append_batch`]) and hands out everything up to them.
    fn publish(&self, records: &[Record], groups: &[Group]) -> Result<Appended, LogError> {
        if records.is_empty() {
            return Ok(Appended::default());
        }
        let messages = self.messages(records, groups)?;
        let shape: Vec<(usize, bool)> = messages
            .iter()
            .map(|m| (m.records, m.dedupe_id.is_some()))
            .collect();
        let js = self.js.clone();
        let subject = self.subject.clone();
        let started = Instant::now();
        let acks = run(&self.handle, PUBLISH_TIMEOUT, async move {
            // Every message is sent before the first acknowledgement is awaited (one round trip).
            let send = |m: &Outgoing| {
                let mut headers = async_nats::HeaderMap::new();
                if let Some(id) = &m.dedupe_id {
                    headers.insert("Nats-Msg-Id", id.as_str());
                }
                js.publish_with_headers(subject.clone(), headers, m.payload.clone())
            };
            let mut pending = Vec::with_capacity(messages.len());
            for m in &messages {
                let ack = send(m)
                    .await
                    .map_err(|e| unavailable("publishing to the stream", e))?;
                pending.push(ack);
            }
            let mut acks = Vec::with_capacity(pending.len());
            let acked = |ack: jetstream::context::PublishAckFuture| async move {
                tokio::time::timeout(ACK_TIMEOUT, ack.into_future())
                    .await
                    .map_err(|_| {
                        unavailable(
                            "the stream did not acknowledge",
                            format!("no acknowledgement within {ACK_TIMEOUT:?}"),
                        )
                    })
            };
            for (m, ack) in messages.iter().zip(pending) {
                let mut ack = acked(ack).await?;
                // The same dedupe id is being stored by another node right now: once it is, the stream
                // answers with the first write's seq, as a duplicate. Or no server took the message
                // ("no stream found": a stream just created, or electing a leader): nothing was stored,
                // so it is sent again (all within the caller's timeout).
                let mut tries = 0;
                while ack.as_ref().is_err_and(|e| {
                    duplicate_in_process(e)
                        || e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                }) && tries < 100
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ack = match send(m).await {
                        Ok(a) => acked(a).await?,
                        Err(e) => Err(e),
                    };
                }
                let ack = ack.map_err(|e| unavailable("the stream did not acknowledge", e))?;
                acks.push((ack.sequence, ack.duplicate));
            }
            Ok(acks)
        })?;
        *self.publish_seconds.lock() = started.elapsed().as_secs_f64();
        let mut seqs = Vec::with_capacity(records.len());
        let mut duplicates = Vec::new();
        for (k, ((stream_seq, duplicate), (n, deduped))) in acks.iter().zip(&shape).enumerate() {
            seqs.extend((0..*n).map(|i| message::record_seq(*stream_seq, i)));
            if *duplicate && *deduped {
                // A deduplicated message carries exactly one group: find which.
                duplicates.push(group_of_message(groups, &shape, k));
            }
        }
        let last_message = acks.iter().map(|(s, _)| *s).max().unwrap_or(0);
        self.followed
            .known
            .fetch_max(last_message, std::sync::atomic::Ordering::AcqRel);
        if !self.followed.wait_for(last_message, APPLY_TIMEOUT) {
            return Err(LogError::Unavailable(
                "the stream stored the batch but this node has not read it back yet".into(),
            ));
        }
        // What the stream acknowledged must be what this node copied at those seqs: a 202 is never
        // answered for records the stream does not hold (the outcome is then unknown: 503).
        let mut first = 0;
        for ((stream_seq, duplicate), (n, _)) in acks.iter().zip(&shape) {
            let expected = records.get(first);
            first += n;
            if *duplicate {
                continue;
            }
            let found = self.copy.get(message::record_seq(*stream_seq, 0))?;
            if found.as_ref() != expected {
                tracing::error!(
                    message = stream_seq,
                    "the stream acknowledged a batch at this seq but holds other records there"
                );
                return Err(LogError::Unavailable(format!(
                    "the stream acknowledged message {stream_seq} but its copy here holds other records"
                )));
            }
        }
        // Everything up to the end of the last message acknowledged (a duplicate's first write included).
        let upto = message::record_seq(last_message, message::MAX_RECORDS - 1);
        let entries = self.hand_out(upto, usize::MAX)?;
        Ok(Appended {
            seqs,
            duplicates,
            entries,
        })
    }

    /// Records of the copy after the last one handed out, up to `upto` (inclusive), at most `limit`.
    fn hand_out(&self, upto: u64, limit: usize) -> Result<Vec<(u64, Record)>, LogError> {
        let mut handed = self.handed.lock();
        let from = handed.saturating_add(1);
        let entries: Vec<(u64, Record)> = self
            .copy
            .range(from, upto.saturating_add(1).max(from))
            .take(limit)
            .collect::<Result<_, _>>()?;
        if let Some(&(last, _)) = entries.last() {
            *handed = last;
        }
        Ok(entries)
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        // The follower's task holds the copy until it ends on the runtime, after this drop: opening
        // the same directory again in this process waits for it (`EventLog::closing`).
        self.copy.closing();
        self.follower.abort();
        self.watcher.abort();
        // Dropping a runtime may be done from inside another one (the engine's): never block here.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on the NATS runtime and waits for it (at most `timeout`) from a synchronous caller.
pub(crate) fn run<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    timeout: Duration,
    fut: impl Future<Output = Result<T, LogError>> + Send + 'static,
) -> Result<T, LogError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let out = tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(LogError::Unavailable(format!(
                    "no answer from NATS within {timeout:?}"
                )))
            });
        let _ = tx.send(out);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(LogError::Unavailable("the NATS client stopped".into())))
}

impl LogStore for JetStreamLog {
    fn kind(&self) -> &'static str {
        "jetstream"
    }

    fn last_seq(&self) -> u64 {
        self.copy.last_seq()
    }

    fn out_of_sync(&self) -> Option<String> {
        self.sync.problem(self.followed.get())
    }

    fn append_batch(&self, records: Vec<Record>, groups: &[Group]) -> Result<Appended, Refused> {
        match self.publish(&records, groups) {
            Ok(appended) => Ok(appended),
            Err(error) => Err(Refused { error, records }),
        }
    }

    fn catch_up(&self, to_end: bool) -> Result<Vec<(u64, Record)>, LogError> {
        if to_end {
            let target = self.stream_last_seq()?;
            let mut last = self.followed.get();
            while !self.followed.wait_for(target, STALL_TIMEOUT) {
                let now = self.followed.get();
                if now == last {
                    return Err(LogError::Unavailable(format!(
                        "following the stream stalled at message {now} of {target}"
                    )));
                }
                last = now;
            }
        }
        self.hand_out(u64::MAX, CATCH_UP_CHUNK)
    }

    fn follow(&self, applied: u64, notify: Notify) -> Result<(), LogError> {
        *self.handed.lock() = applied;
        let _ = self.followed.notify.set(notify);
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        self.copy.get(seq)
    }

    fn range(&self, from: u64, to: u64) -> Entries<'_> {
        Box::new(self.copy.range(from, to))
    }

    fn account_events(&self, account: &AccountId, after_seq: u64) -> Entries<'_> {
        Box::new(self.copy.account_events(account, after_seq))
    }

    fn account_events_between(
        &self,
        account: &AccountId,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Result<Vec<EventRef>, LogError> {
        self.copy.account_events_between(account, since, until)
    }

    fn account_event_refs(&self, account: &AccountId, after_seq: u64) -> EventRefs<'_> {
        self.copy.account_event_refs(account, after_seq)
    }

    /// Reopens the local copy and follows the stream to its end, so the copy holds whatever a failed
    /// append stored after all (a message whose acknowledgement was lost): the engine then writes again
    /// only what is not there. Those records are handed out by the follower, never "unapplied" here.
    fn reopen(&self) -> Result<Reopened, LogError> {
        // Most failures here are NATS's, not the local disk's: the copy is reopened only when it fails.
        let truncated = match self.copy.probe() {
            Ok(()) => Vec::new(),
            Err(_) => self.copy.reopen()?.truncated,
        };
        let end = self.stream_last_seq_within(PROBE_TIMEOUT)?;
        if !self.followed.wait_for(end, APPLY_TIMEOUT) {
            return Err(LogError::Unavailable(format!(
                "following the stream: not at its end ({end}) yet"
            )));
        }
        Ok(Reopened {
            unapplied: None,
            truncated,
        })
    }

    /// The local disk accepts writes and the stream answers.
    fn probe(&self) -> Result<(), LogError> {
        self.copy.probe()?;
        self.stream_last_seq_within(PROBE_TIMEOUT).map(|_| ())
    }

    fn reopen_index(&self) -> Result<(), LogError> {
        self.copy.reopen_index()
    }

    fn reset_index(&self) -> Result<(), LogError> {
        self.copy.reset_index()
    }

    fn max_heal_wait(&self) -> Duration {
        MAX_HEAL_WAIT
    }

    fn maintains(&self) -> bool {
        self.maintains.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Only whole stream messages go: those whose every record is to be removed (never the last). The
    /// node that maintains the stream deletes them there; every node (that one included) then drops from
    /// its copy the records of those the stream no longer holds, so all copies lose the same records.
    fn remove(&self, seqs: &[u64]) -> Result<usize, LogError> {
        let messages = crate::retention::whole_messages(&self.copy, seqs)?;
        let stream = self.stream.clone();
        let numbers: Vec<u64> = messages.iter().map(|(m, _)| *m).collect();
        let maintains = self.maintains();
        let gone = run(&self.handle, PUBLISH_TIMEOUT, async move {
            crate::retention::delete_or_find_gone(&stream, numbers, maintains).await
        })?;
        let records: Vec<u64> = messages
            .into_iter()
            .filter(|(m, _)| gone.contains(m))
            .flat_map(|(_, r)| r)
            .collect();
        self.copy.remove(&records)
    }

    fn stage_checkpoint(
        &self,
        seq: u64,
        write: &mut buildr_log::CheckpointWriter<'_>,
    ) -> Result<(), LogError> {
        self.copy.stage_checkpoint(seq, write)
    }

    fn commit_checkpoint(&self) -> Result<(), LogError> {
        self.copy.commit_checkpoint()
    }

    fn load_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        self.copy.load_checkpoint()
    }

    fn index(&self) -> Result<DeliveryIndex, LogError> {
        self.copy.index()
    }

    fn flush_index(&self) -> Result<(), LogError> {
        self.copy.flush_index()
    }

    fn flush(&self) -> Result<(), LogError> {
        self.copy.flush()
    }
}
