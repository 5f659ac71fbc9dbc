//! The follower: every node copies the stream, in order, into its local copy (a [`buildr_log::EventLog`])
//! for as long as its log lives, re-making its consumer when the server it sat on dies.

use crate::message;
use async_nats::jetstream::{consumer, stream};
use buildr_log::{EventLog, Notify};
use futures_util::StreamExt;
use parking_lot::{Condvar, Mutex};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long one request of the follower to JetStream (make a consumer, start reading, stream info) may
/// take. The client's own timeout is the publish timeout (10 s): during a leader election a request to the
/// dead leader would hang that long, and the node's writes (which wait for this copy) with it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What the follower has copied, shared with the engine's calls.
pub(crate) struct Followed {
    /// The last stream seq copied into the local copy (0: none).
    stream_seq: Mutex<u64>,
    /// A stream seq known to exist (acknowledged to this node, or seen in the stream's info): a follower
    /// that stays behind it without progress is stuck (its consumer was on a server that died).
    pub(crate) known: std::sync::atomic::AtomicU64,
    moved: Condvar,
    pub(crate) notify: OnceLock<Notify>,
}

impl Followed {
    /// What a copy ending at message `stream_seq` has followed.
    pub(crate) fn new(stream_seq: u64) -> Self {
        Self {
            stream_seq: Mutex::new(stream_seq),
            known: std::sync::atomic::AtomicU64::new(0),
            moved: Condvar::new(),
            notify: OnceLock::new(),
        }
    }

    fn advance(&self, stream_seq: u64) {
        *self.stream_seq.lock() = stream_seq;
        self.moved.notify_all();
        if let Some(n) = self.notify.get() {
            n();
        }
    }

    /// Waits until the copy reaches `target`; false on timeout.
    pub(crate) fn wait_for(&self, target: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut at = self.stream_seq.lock();
        while *at < target {
            if self.moved.wait_until(&mut at, deadline).timed_out() {
                return *at >= target;
            }
        }
        true
    }

    pub(crate) fn get(&self) -> u64 {
        *self.stream_seq.lock()
    }
}

/// Copies the stream into `copy` in order, from the message after the copy's last, for as long as the
/// log lives; reconnects by itself.
pub(crate) async fn follow_stream(
    stream: stream::Stream,
    subject: String,
    copy: Arc<EventLog>,
    followed: Arc<Followed>,
) {
    loop {
        let next = followed.get() + 1;
        let consumer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            stream.create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: next,
                },
                ..Default::default()
            }),
        )
        .await;
        let messages = match consumer {
            Ok(Ok(c)) => tokio::time::timeout(REQUEST_TIMEOUT, c.messages())
                .await
                .map_err(|_| "no answer".to_owned())
                .and_then(|m| m.map_err(|e| e.to_string())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer".to_owned()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the stream; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut quiet = 0u32;
        loop {
            // A consumer on a server that died can stay silent for a long time: when the stream is known
            // to hold more than was copied and nothing arrives for 2 s, it is made again.
            let item = match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    quiet += 1;
                    if quiet.is_multiple_of(5) {
                        if let Ok(Ok(info)) =
                            tokio::time::timeout(REQUEST_TIMEOUT, stream.get_info()).await
                        {
                            followed.known.fetch_max(
                                info.state.last_sequence,
                                std::sync::atomic::Ordering::AcqRel,
                            );
                        }
                    }
                    if quiet >= 2
                        && followed.known.load(std::sync::atomic::Ordering::Acquire)
                            > followed.get()
                    {
                        tracing::warn!("following the stream stalled; following it again");
                        break;
                    }
                    continue;
                }
            };
            quiet = 0;
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "following the stream failed; resuming");
                    break;
                }
            };
            let Ok(seq) = msg.info().map(|i| i.stream_sequence) else {
                tracing::warn!("a stream message without its position; resuming");
                break;
            };
            if seq <= followed.get() {
                continue;
            }
            match message::decode(&msg.payload) {
                Ok(records) => {
                    if let Err(e) = copy.store_at(message::record_seq(seq, 0), &records) {
                        tracing::error!(error = %e, seq, "cannot copy the stream to local storage; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
                // Every node skips the same message the same way, so their projections still agree.
                Err(e) => {
                    tracing::error!(error = %e, seq, "a stream message is not a batch of records; skipped")
                }
            }
            followed.advance(seq);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
