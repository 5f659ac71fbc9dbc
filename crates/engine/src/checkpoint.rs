//! Projection checkpoints: a snapshot of the projection and the seq it covers, so start-up replays only
//! the log's tail. A checkpoint is an optimisation, never the truth: one that does not decode (an older
//! format, damage) is ignored and the whole log is replayed.

use crate::error::EngineError;
use crate::projection::{Effect, Projection};
use buildr_log::LogStore;

/// Bumped whenever the projection's shape changes; older checkpoints are then ignored.
const CHECKPOINT_FORMAT: u8 = 4;

/// Writes `p` encoded to `out` as it goes (a checkpoint is never whole in memory).
pub fn encode(p: &Projection, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    out.write_all(&[CHECKPOINT_FORMAT])?;
    bincode::serde::encode_into_std_write(p, &mut &mut *out, bincode::config::standard())
        .map(|_| ())
        .map_err(|e| match e {
            bincode::error::EncodeError::Io { inner, .. } => inner,
            other => std::io::Error::other(other.to_string()),
        })
}

pub fn decode(bytes: &[u8]) -> Option<Projection> {
    let (&format, payload) = bytes.split_first()?;
    if format != CHECKPOINT_FORMAT {
        return None;
    }
    bincode::serde::decode_from_slice::<Projection, _>(payload, bincode::config::standard())
        .ok()
        .map(|(mut p, _)| {
            p.share_ids();
            p
        })
}

/// How start-up got its projection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// The checkpoint's seq, when one was used.
    pub from_checkpoint: Option<u64>,
    /// Records replayed after it (or in all).
    pub replayed: u64,
}

/// The projection at the log's end: the latest usable checkpoint plus the tail, or a full replay.
/// `on_effects` sees the effects of every replayed record with its seq (to catch up derived indexes).
pub fn restore(
    log: &dyn LogStore,
    on_effects: impl FnMut(u64, &buildr_core::Record, &[Effect]),
) -> Result<(Projection, Rebuilt), EngineError> {
    restore_up_to(log, u64::MAX, on_effects)
}

/// [`restore`], using a checkpoint only if it is at or before `usable_up_to` (the delivery index is
/// caught up from the records `on_effects` sees, so a checkpoint past the index's applied seq would
/// skip records the index still needs: then the whole log is replayed).
pub fn restore_up_to(
    log: &dyn LogStore,
    usable_up_to: u64,
    mut on_effects: impl FnMut(u64, &buildr_core::Record, &[Effect]),
) -> Result<(Projection, Rebuilt), EngineError> {
    let mut rebuilt = Rebuilt::default();
    let mut projection = Projection::default();
    if let Some((seq, bytes)) = log.load_checkpoint()? {
        match decode(&bytes) {
            Some(_) if seq > usable_up_to => tracing::info!(
                seq,
                index = usable_up_to,
                "the delivery index is behind the checkpoint; replaying the whole log to rebuild it"
            ),
            Some(p) if seq <= log.last_seq() && p.last_seq == seq => {
                projection = p;
                rebuilt.from_checkpoint = Some(seq);
            }
            _ => tracing::warn!(
                seq,
                "ignoring an unusable projection checkpoint; replaying the whole log"
            ),
        }
    }
    let from = rebuilt.from_checkpoint.map_or(1, |s| s + 1);
    for item in log.tail(from) {
        let (seq, record) = item?;
        let effects = projection.apply(seq, &record);
        on_effects(seq, &record, &effects);
        rebuilt.replayed += 1;
    }
    Ok((projection, rebuilt))
}

/// The projection from a replay of the whole log, ignoring any checkpoint.
pub fn full_replay(log: &dyn LogStore) -> Result<(Projection, u64), EngineError> {
    let mut projection = Projection::default();
    let mut n = 0u64;
    for item in log.tail(1) {
        let (seq, record) = item?;
        projection.apply(seq, &record);
        n += 1;
    }
    Ok((projection, n))
}
