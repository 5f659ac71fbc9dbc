//! How records travel in stream messages, and how record seqs map onto stream seqs.
//!
//! **One message carries a batch** (group commit: the LogActor's whole batch, split only between atomic
//! groups when it would not fit in one message), so a stream write — and the fsync of every server's
//! `sync_interval: always` — is paid per batch, not per record, and an atomic group is one message: all
//! or nothing.
//!
//! **Record seq = stream seq × 4096 + index in the message** (`stream_seq << 12 | index`). Seqs stay one
//! monotonic `u64` (what the API exposes, and what pagination and replays compare), every node computes the
//! same seq for the same record without coordination, a message's records have consecutive seqs, and a
//! record's message is `seq >> 12`. Seqs are not contiguous across messages, which the engine never assumed
//! (retention already leaves gaps). A message holds at most [`MAX_RECORDS`] records. JavaScript clients can
//! hold seqs exactly up to 2^53, i.e. the first 2^41 (2.2 × 10^12) messages of a stream.
//!
//! Payload: `b'B'`, format version `1`, record count (`u16` LE), then per record its length (`u32` LE) and
//! its bytes in `buildr_log`'s record encoding (version + crc32 + bincode), so each record is checked when
//! read, as in the sled log.

/// Bits of a record seq that number a record inside its message.
pub const INDEX_BITS: u32 = 12;
/// The most records one message carries.
pub const MAX_RECORDS: usize = 1 << INDEX_BITS;

const MAGIC: u8 = b'B';
const VERSION: u8 = 1;
const HEADER: usize = 4;

/// The seq of record `index` of the message at `stream_seq`.
pub fn record_seq(stream_seq: u64, index: usize) -> u64 {
    (stream_seq << INDEX_BITS) | index as u64
}

/// The stream seq of the message holding the record at `seq`.
pub fn stream_seq(seq: u64) -> u64 {
    seq >> INDEX_BITS
}

/// The bytes one message adds to its payload for a record of `len` bytes.
pub fn framed_len(len: usize) -> usize {
    4 + len
}

/// The payload length of an empty message.
pub const EMPTY_LEN: usize = HEADER;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not a batch message (bad header)")]
    Header,
    #[error("batch message truncated at record {0}")]
    Truncated(usize),
    #[error("batch message has {0} bytes after its records")]
    Trailing(usize),
}

/// The payload of a message carrying `records` (each already in the record encoding).
pub fn encode<'a>(records: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let n = records.len().min(MAX_RECORDS);
    let mut out = Vec::with_capacity(HEADER + n * 256);
    out.push(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    for r in records.take(n) {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The records of a message payload (each still encoded), in order. Never panics, whatever the bytes.
pub fn decode(payload: &[u8]) -> Result<Vec<&[u8]>, MessageError> {
    if payload.len() < HEADER || payload[0] != MAGIC || payload[1] != VERSION {
        return Err(MessageError::Header);
    }
    let n = u16::from_le_bytes([payload[2], payload[3]]) as usize;
    let mut rest = &payload[HEADER..];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (len, tail) = rest.split_at_checked(4).ok_or(MessageError::Truncated(i))?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (record, tail) = tail
            .split_at_checked(len)
            .ok_or(MessageError::Truncated(i))?;
        out.push(record);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(MessageError::Trailing(rest.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_map_both_ways_and_increase() {
        assert_eq!(record_seq(1, 0), 4096);
        assert_eq!(record_seq(1, 4095), 8191);
        assert_eq!(record_seq(2, 0), 8192);
        assert_eq!(stream_seq(record_seq(77, 5)), 77);
        assert!(record_seq(1, MAX_RECORDS - 1) < record_seq(2, 0));
    }

    #[test]
    fn payload_round_trips_and_garbage_is_an_error() {
        let records: Vec<&[u8]> = vec![b"one", b"", b"three"];
        let payload = encode(records.iter().copied());
        assert_eq!(decode(&payload), Ok(records));
        assert_eq!(
            decode(&payload[..payload.len() - 1]),
            Err(MessageError::Truncated(2))
        );
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(MessageError::Trailing(1)));
        assert_eq!(decode(b"xx"), Err(MessageError::Header));
        for cut in 0..payload.len() {
            let _ = decode(&payload[..cut]);
        }
    }
}
