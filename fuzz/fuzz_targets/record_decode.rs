//! The log record decoder (`buildr_log::decode`) must return an error, never panic, on any bytes. The
//! input is tried as it is and again behind a valid header (version + CRC), so the fuzzer reaches the
//! payload decoder instead of stopping at the checksum. What decodes re-encodes to the same record.
#![no_main]

use buildr_log::{decode, encode, FORMAT_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed = Vec::with_capacity(data.len() + 5);
    framed.push(FORMAT_VERSION);
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    check(&framed);
});

fn check(bytes: &[u8]) {
    if let Ok(record) = decode(bytes) {
        assert_eq!(decode(&encode(&record)).ok(), Some(record));
    }
}
