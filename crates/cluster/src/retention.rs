//! Retention on the stream. The engine plans it the same way on every node; the stream loses whole
//! messages only, deleted by the node holding the `maintenance` lease, and every node drops from its
//! copy the records of the messages the stream no longer holds (so the copies agree, and a rebuild from
//! the stream gives the same records).

use crate::message;
use async_nats::jetstream::stream;
use buildr_log::{EventLog, LogError};
use std::collections::{BTreeMap, HashSet};

/// The stream messages all of whose records are in `seqs` (never the one holding the copy's last
/// record), each with those records.
pub(crate) fn whole_messages(
    copy: &EventLog,
    seqs: &[u64],
) -> Result<Vec<(u64, Vec<u64>)>, LogError> {
    let last = copy.last_seq();
    let wanted: HashSet<u64> = seqs.iter().copied().filter(|&s| s < last).collect();
    let mut by_message: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &s in &wanted {
        by_message
            .entry(message::stream_seq(s))
            .or_default()
            .push(s);
    }
    let mut whole = Vec::new();
    for (m, mut in_it) in by_message {
        let from = message::record_seq(m, 0);
        let to = message::record_seq(m + 1, 0);
        let present: Vec<u64> = copy
            .range(from, to)
            .map(|r| r.map(|(s, _)| s))
            .collect::<Result<_, _>>()?;
        in_it.sort_unstable();
        if !present.is_empty() && present == in_it && to <= last {
            whole.push((m, present));
        }
    }
    Ok(whole)
}

/// Of `messages`, those the stream no longer holds: deleted now (when this node maintains the stream)
/// or before, by the node that does.
pub(crate) async fn delete_or_find_gone(
    stream: &stream::Stream,
    messages: Vec<u64>,
    maintains: bool,
) -> Result<Vec<u64>, LogError> {
    let first = stream
        .get_info()
        .await
        .map_err(|e| LogError::Unavailable(format!("stream info: {e}")))?
        .state
        .first_sequence;
    let mut gone = Vec::new();
    for m in messages {
        if m < first {
            gone.push(m);
            continue;
        }
        if maintains {
            match stream.delete_message(m).await {
                Ok(_) => {
                    gone.push(m);
                    continue;
                }
                Err(e) => tracing::debug!(error = %e, message = m, "stream message not deleted"),
            }
        }
        match stream.direct_get(m).await {
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => gone.push(m),
            Err(e) => {
                tracing::debug!(error = %e, message = m, "cannot tell whether a stream message is gone")
            }
            Ok(_) => {}
        }
    }
    Ok(gone)
}
