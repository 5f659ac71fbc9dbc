//! Blocks: several records with consecutive seqs stored as one value, under the key of the first.
//!
//! Cluster mode's copy of the stream stores each stream message (a group-commit batch of records) as one
//! block ([`crate::EventLog::store_at`]): one sled insert per message instead of one per record, which was
//! most of what following the stream cost a node. The single-node log writes one record per key, except
//! attempt outcomes written one after another, which it stores as one block (`AttemptRun` in `lib.rs`);
//! every reader accepts both, so a value is either a record (its first byte a record format version, see
//! [`crate::codec`]) or a block:
//!
//! `[MARK][record count: u32 LE]`, then per record its length (`u32` LE) and its bytes in the record
//! encoding (each record keeps its own checksum).

use crate::codec::DecodeError;

/// The first byte of a block: never a record format version.
const MARK: u8 = 0xB1;
const HEADER: usize = 5;

/// The stored value of `records` (each already in the record encoding): the record itself when there is
/// one, a block otherwise.
pub(crate) fn encode(records: &[&[u8]]) -> Vec<u8> {
    if let [one] = records {
        return one.to_vec();
    }
    let len = HEADER + records.iter().map(|r| 4 + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(MARK);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// Whether a stored value is a block (else it is one record).
pub(crate) fn is_block(value: &[u8]) -> bool {
    value.first() == Some(&MARK)
}

/// The records of the value stored under `first`, with their seqs (`first`, `first + 1`, …). A value that
/// is not a block is one record. Only the block's framing is checked here; each record is checked when
/// decoded.
pub(crate) fn entries(first: u64, value: &[u8]) -> Result<Vec<(u64, &[u8])>, DecodeError> {
    if !is_block(value) {
        return Ok(vec![(first, value)]);
    }
    let mut out = Vec::with_capacity(count(value)?);
    walk(value, |i, record| {
        out.push((first + i as u64, record));
        true
    })?;
    Ok(out)
}

/// The record at `seq` of the value stored under `first`, if it holds one there (without collecting the
/// block's other records: a backlog reads a block's records one by one).
pub(crate) fn at(first: u64, value: &[u8], seq: u64) -> Result<Option<&[u8]>, DecodeError> {
    if seq < first {
        return Ok(None);
    }
    if !is_block(value) {
        return Ok((seq == first).then_some(value));
    }
    let wanted = usize::try_from(seq - first).unwrap_or(usize::MAX);
    let mut found = None;
    walk(value, |i, record| {
        if i == wanted {
            found = Some(record);
        }
        i < wanted
    })?;
    Ok(found)
}

/// A block's record count, checked against what its value can hold (4 bytes per record at least): a
/// damaged count is an error, not a reason to allocate.
fn count(value: &[u8]) -> Result<usize, DecodeError> {
    let count = read_u32(value, 1)? as usize;
    if count > (value.len() - HEADER) / 4 {
        return Err(DecodeError::Block(format!(
            "{count} records in {} bytes",
            value.len()
        )));
    }
    Ok(count)
}

/// Calls `each(index, record)` for the block's records in order while it returns true; checks the
/// framing of every record it passes, and of the whole block when it reaches the end.
fn walk<'a>(
    value: &'a [u8],
    mut each: impl FnMut(usize, &'a [u8]) -> bool,
) -> Result<(), DecodeError> {
    let count = count(value)?;
    let mut at = HEADER;
    for i in 0..count {
        let len = read_u32(value, at)? as usize;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= value.len())
            .ok_or_else(|| DecodeError::Block(format!("record {i} is cut short")))?;
        at = end;
        if !each(i, &value[start..end]) {
            return Ok(());
        }
    }
    if at != value.len() {
        return Err(DecodeError::Block(format!(
            "{} bytes after the last record",
            value.len() - at
        )));
    }
    Ok(())
}

fn read_u32(value: &[u8], at: usize) -> Result<u32, DecodeError> {
    value
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| DecodeError::Block(format!("cut short at byte {at}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_block_gives_back_its_records_at_consecutive_seqs() {
        let records: [&[u8]; 3] = [b"\x02one", b"\x02", b"\x02three"];
        let value = encode(&records);
        let got = entries(40, &value).unwrap();
        assert_eq!(
            got,
            vec![(40, &b"\x02one"[..]), (41, b"\x02"), (42, b"\x02three")]
        );
        assert_eq!(at(40, &value, 42).unwrap(), Some(&b"\x02three"[..]));
        assert_eq!(at(40, &value, 43).unwrap(), None);
        assert_eq!(at(40, &value, 39).unwrap(), None);
    }

    #[test]
    fn one_record_is_stored_as_itself() {
        let value = encode(&[b"\x02only"]);
        assert_eq!(value, b"\x02only");
        assert_eq!(entries(7, &value).unwrap(), vec![(7, &b"\x02only"[..])]);
        assert_eq!(at(7, &value, 7).unwrap(), Some(&b"\x02only"[..]));
        assert_eq!(at(7, &value, 8).unwrap(), None);
    }

    #[test]
    fn a_damaged_block_is_an_error_never_a_panic() {
        let value = encode(&[b"\x02one", b"\x02two"]);
        for cut in 1..value.len() {
            assert!(entries(1, &value[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = value.clone();
        longer.push(0);
        assert!(entries(1, &longer).is_err());
        let huge_count = [MARK, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(entries(1, &huge_count).is_err());
    }
}
