//! Whether this node is in sync with the stream: connected to NATS, the stream answering, and the
//! follower not far behind it. A watch task asks the stream for its last seq every second; the node
//! is out of sync (and `/readyz` is `503`, while reads are still served from the local copy) when the
//! connection is down, the stream has not answered for [`SILENT_AFTER`], or the copy has not reached
//! what the stream held [`BEHIND_AFTER`] ago (or is more than [`MAX_LAG`] messages behind it).

use crate::follower::Followed;
use async_nats::jetstream::stream;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the stream is asked for its last seq.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long one question may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Out of sync when the stream has not answered for this long.
const SILENT_AFTER: Duration = Duration::from_secs(4);
/// Out of sync when the copy has not reached what the stream held this long ago.
const BEHIND_AFTER: Duration = Duration::from_secs(5);
/// Out of sync when the copy is this many messages behind the stream's last answer.
const MAX_LAG: u64 = 10_000;

#[derive(Default)]
struct State {
    connected: bool,
    /// When the stream last answered.
    answered: Option<Instant>,
    /// The stream's last seq at each answer of the last [`BEHIND_AFTER`] and a little more.
    seen: VecDeque<(Instant, u64)>,
}

/// Shared between the watch task and the engine's `/readyz` question.
#[derive(Default)]
pub(crate) struct SyncWatch {
    state: Mutex<State>,
}

impl SyncWatch {
    /// Why this node is out of sync with the stream now, if it is.
    pub(crate) fn problem(&self, followed: u64) -> Option<String> {
        let s = self.state.lock();
        if !s.connected {
            return Some("not connected to NATS".into());
        }
        match s.answered {
            Some(at) if at.elapsed() < SILENT_AFTER => {}
            Some(at) => {
                return Some(format!(
                    "the stream has not answered for {} s",
                    at.elapsed().as_secs()
                ))
            }
            None => return Some("the stream has not answered yet".into()),
        }
        let last = s.seen.back().map_or(0, |&(_, seq)| seq);
        if last.saturating_sub(followed) > MAX_LAG {
            return Some(format!(
                "{} stream messages behind",
                last.saturating_sub(followed)
            ));
        }
        // What the stream held BEHIND_AFTER ago must be copied by now.
        let then = s
            .seen
            .iter()
            .rev()
            .find(|(at, _)| at.elapsed() >= BEHIND_AFTER)
            .map(|&(_, seq)| seq);
        match then {
            Some(then) if followed < then => Some(format!(
                "following the stream: at message {followed}, the stream held {then} more than {} s ago",
                BEHIND_AFTER.as_secs()
            )),
            _ => None,
        }
    }

    fn record(&self, connected: bool, last_seq: Option<u64>) {
        let mut s = self.state.lock();
        s.connected = connected;
        if let Some(seq) = last_seq {
            let now = Instant::now();
            s.answered = Some(now);
            s.seen.push_back((now, seq));
        }
        while s
            .seen
            .front()
            .is_some_and(|(at, _)| at.elapsed() > BEHIND_AFTER * 2)
        {
            s.seen.pop_front();
        }
    }
}

/// Asks the stream for its last seq every [`POLL_EVERY`] for as long as the log lives.
pub(crate) async fn watch(
    client: async_nats::Client,
    stream: stream::Stream,
    followed: Arc<Followed>,
    watch: Arc<SyncWatch>,
) {
    loop {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        let last = match tokio::time::timeout(POLL_TIMEOUT, stream.get_info()).await {
            Ok(Ok(i)) => Some(i.state.last_sequence),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "stream info");
                None
            }
            Err(_) => None,
        };
        if let Some(seq) = last {
            followed.known.fetch_max(seq, Ordering::AcqRel);
        }
        watch.record(connected, last);
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_sync_only_when_connected_answering_and_close_behind() {
        let w = SyncWatch::default();
        assert!(w.problem(0).is_some(), "nothing heard yet");
        w.record(false, Some(5));
        assert_eq!(w.problem(5).as_deref(), Some("not connected to NATS"));
        w.record(true, Some(5));
        assert_eq!(w.problem(5), None);
        // Just published: not yet copied, but not for long either.
        w.record(true, Some(9));
        assert_eq!(w.problem(5), None);
        w.record(true, Some(5 + MAX_LAG + 1));
        assert!(w.problem(5).is_some_and(|p| p.contains("behind")));
        assert_eq!(w.problem(5 + MAX_LAG + 1), None);
    }
}
