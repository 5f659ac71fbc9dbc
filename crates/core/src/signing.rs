//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
//! The `svix` and `standardwebhooks` libraries verify these unchanged.

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// One `v1,<base64>` signature.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, space-separated (newest key first).
pub fn signature_header<S: std::borrow::Borrow<Secret>>(
    secrets: &[S],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| sign(s.borrow().key(), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("timestamp outside the tolerance")]
    Timestamp,
    #[error("no matching signature")]
    Signature,
}

/// Verifies a signature header the way receivers do: the timestamp must be within `tolerance_s` of `now`
/// and one of the space-separated `v1,` signatures must match (compared in constant time).
pub fn verify(
    key: &[u8],
    msg_id: &str,
    timestamp: i64,
    now: i64,
    tolerance_s: i64,
    body: &[u8],
    header: &str,
) -> Result<(), VerifyError> {
    if (now - timestamp).abs() > tolerance_s {
        return Err(VerifyError::Timestamp);
    }
    let expected = sign(key, msg_id, timestamp, body);
    let found = header.split(' ').any(|candidate| {
        use subtle::ConstantTimeEq;
        candidate.len() == expected.len()
            && bool::from(candidate.as_bytes().ct_eq(expected.as_bytes()))
    });
    if found {
        Ok(())
    } else {
        Err(VerifyError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks vectors (tests/data/standard-webhooks-vectors.json), inlined so the unit test
    /// needs no file outside the crate; the e2e suite (tests/conformance.rs) reads that file itself.
    const VECTORS: &[(&str, &str, i64, &str, &str)] = &[
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            "{\"test\": 2432232314}",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            "{\"email\":\"test@example.com\",\"username\":\"test_user\"}",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];
    const DECOYS: &[&str] = &[
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
        "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
        "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=",
        "v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=",
    ];

    #[test]
    fn signer_matches_the_standard_webhooks_vectors() {
        for (secret, id, ts, payload, sig) in VECTORS {
            let s = Secret::parse(secret).expect("vector secret");
            assert_eq!(&sign(s.key(), id, *ts, payload.as_bytes()), sig);
            assert_eq!(
                verify(s.key(), id, *ts, *ts, 300, payload.as_bytes(), sig),
                Ok(())
            );
        }
    }

    #[test]
    fn verifier_rejects_decoys_and_stale_timestamps() {
        let (secret, id, ts, payload, sig) = VECTORS[0];
        let key = Secret::parse(secret).expect("vector secret");
        for decoy in DECOYS {
            assert_eq!(
                verify(key.key(), id, ts, ts, 300, payload.as_bytes(), decoy),
                Err(VerifyError::Signature)
            );
        }
        assert_eq!(
            verify(key.key(), id, ts, ts + 301, 300, payload.as_bytes(), sig),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify(key.key(), id, ts, ts - 301, 300, payload.as_bytes(), sig),
            Err(VerifyError::Timestamp)
        );
    }

    #[test]
    fn rotation_header_carries_both_signatures_and_each_verifies() {
        let new = Secret::generate();
        let old = Secret::parse("old-raw-secret").expect("raw");
        let h = signature_header(&[&new, &old], "evt_1", 10, b"{}");
        assert_eq!(h.split(' ').count(), 2);
        assert!(verify(new.key(), "evt_1", 10, 10, 300, b"{}", &h).is_ok());
        assert!(verify(old.key(), "evt_1", 10, 10, 300, b"{}", &h).is_ok());
    }
}
