//! Record encoding: `[format version: u8][crc32 of payload: u32 LE][bincode payload]`.

use buildr_core::Record;

/// The format written now. Readers accept every version listed in [`decode`].
pub const FORMAT_VERSION: u8 = 1;

/// Records larger than this are refused when decoding (a corrupt length can't make us allocate gigabytes).
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is too short ({0} bytes)")]
    Short(usize),
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    #[error("checksum mismatch")]
    Checksum,
    #[error("payload does not decode: {0}")]
    Payload(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION, 0, 0, 0, 0];
    // Encoding plain data into a Vec cannot fail; an empty payload would fail its checksum on read.
    let _ = bincode::serde::encode_into_std_write(record, &mut out, config());
    let crc = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes one stored record. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < 6 {
        return Err(DecodeError::Short(bytes.len()));
    }
    let version = bytes[0];
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[1..5]);
    let payload = &bytes[5..];
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(DecodeError::Checksum);
    }
    let (record, used) = bincode::serde::decode_from_slice::<Record, _>(payload, config())
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Payload(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildr_core::{AccountId, Timestamp};

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = encode(&Record::AccountCreated {
            id: AccountId::default_account(),
            name: "x".into(),
            at: Timestamp::now(),
        });
        assert!(decode(&good).is_ok());
        assert_eq!(decode(&[]), Err(DecodeError::Short(0)));
        assert_eq!(
            decode(&[9, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownVersion(9))
        );
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err());
        }
        // A valid checksum over garbage still fails in the payload decoder, not with a panic.
        let mut forged = vec![FORMAT_VERSION, 0, 0, 0, 0];
        forged.extend_from_slice(&[0xff; 64]);
        let crc = crc32fast::hash(&forged[5..]);
        forged[1..5].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&forged), Err(DecodeError::Payload(_))));
    }
}
