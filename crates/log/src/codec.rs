//! Record encoding: `[format version: u8][crc32 of payload: u32 LE][bincode payload]`.
//!
//! Format 2 (written now) added `ordering` to webhooks; format 1 records (older logs) are still read, by
//! [`crate::codec_v1`], and come out as today's [`Record`].

use buildr_core::Record;

/// The format written now. Readers accept every version listed in [`decode`].
pub const FORMAT_VERSION: u8 = 2;

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
    /// A stored block of records (see `block.rs`) whose framing is damaged.
    #[error("block of records does not decode: {0}")]
    Block(String),
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

/// The payload as a `T`, all of it.
fn payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(payload, config())
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Payload(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// Decodes one stored record, of any format this version reads. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < 6 {
        return Err(DecodeError::Short(bytes.len()));
    }
    let version = bytes[0];
    if version != 1 && version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[1..5]);
    let body = &bytes[5..];
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return Err(DecodeError::Checksum);
    }
    match version {
        1 => payload::<crate::codec_v1::RecordV1>(body).map(Record::from),
        _ => payload::<Record>(body),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use buildr_core::{
        AccountId, AttemptOutcome, AttemptRecord, DisabledReason, EventData, EventId, EventRecord,
        EventType, IdempotencyRecord, ObjectId, ReplayId, Secret, Timestamp, Webhook,
        WebhookChanges, WebhookId,
    };

    /// One record of every kind.
    fn samples() -> Vec<Record> {
        let at = Timestamp::from_millis(1_795_000_000_123);
        let account = AccountId::default_account();
        let id = WebhookId::generate();
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|_| Secret::generate());
        vec![
            Record::AccountCreated {
                id: account.clone(),
                name: "Acme".into(),
                at,
            },
            Record::WebhookCreated(Webhook {
                id: id.clone(),
                account: account.clone(),
                url: "https://example.com/hooks".into(),
                description: "CRM".into(),
                filter_types: Some(vec![EventType::ContactCreate, EventType::CompanyUpdate]),
                rate_limit: 100,
                secret: secret.clone(),
                previous_secret: Some(Box::new((Secret::generate(), at))),
                disabled: true,
                disabled_reason: Some(DisabledReason::Failing),
                created_at: at,
                updated_at: at,
                ordering: buildr_core::DeliveryOrder::Fifo,
            }),
            Record::WebhookUpdated {
                id: id.clone(),
                changes: WebhookChanges {
                    url: Some("https://example.com/x".into()),
                    filter_types: Some(None),
                    disabled: Some((false, None)),
                    ordering: Some(buildr_core::DeliveryOrder::Parallel),
                    ..WebhookChanges::default()
                },
                at,
            },
            Record::SecretRotated {
                id: id.clone(),
                secret,
                previous_until: at,
                at,
            },
            Record::EventPublished(EventRecord {
                id: EventId::generate(),
                account: account.clone(),
                event_type: EventType::OpportunityCreate,
                data: EventData {
                    id: ObjectId::Str("o-1".into()),
                    url: "https://x.example/1".into(),
                },
                created_at: at,
                only_webhook: Some(id.clone()),
            }),
            Record::IdempotencyKeyUsed(IdempotencyRecord {
                account: account.clone(),
                key: "k".into(),
                request_hash: [7; 32],
                count: 2,
                batch: true,
                at,
            }),
            Record::DeliveryAttempted(AttemptRecord {
                webhook: id.clone(),
                seq: 9,
                event_id: EventId::generate(),
                attempt: 2,
                at,
                response_status: Some(500),
                response_body: "oops".into(),
                error: Some("receiver answered 500".into()),
                duration_ms: 12,
                outcome: AttemptOutcome::Retrying { next_at: at },
            }),
            Record::ReplayRequested {
                id: ReplayId::generate(),
                webhook: id.clone(),
                seqs: vec![1, 5, 9],
                at,
            },
            Record::WebhookDeleted { id, at },
            Record::ApiKeyCreated {
                account: account.clone(),
                prefix: "bk_12345678".into(),
                hash: [1; 32],
                at,
            },
            Record::ApiKeyRevoked {
                account,
                prefix: "bk_12345678".into(),
                at,
            },
            Record::DeliveryRestarted {
                webhook: WebhookId::generate(),
                seq: 9,
                replay: 12,
                at,
            },
            Record::ReplaysExpired {
                ids: vec![ReplayId::generate()],
                at,
            },
        ]
    }

    #[test]
    fn every_kind_of_record_round_trips() {
        for r in samples() {
            assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }

    /// Writes the samples as seeds for the `record_decode` fuzz target:
    /// `FUZZ_SEEDS=fuzz/seeds/record_decode cargo test -p buildr-log -- --ignored write_fuzz_seeds`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let Ok(dir) = std::env::var("FUZZ_SEEDS") else {
            return;
        };
        for (i, r) in samples().iter().enumerate() {
            let bytes = encode(r);
            // The target also tries its input behind a fresh header, so a bare payload is a seed too.
            std::fs::write(format!("{dir}/record-{i}"), &bytes).unwrap();
            std::fs::write(format!("{dir}/payload-{i}"), &bytes[5..]).unwrap();
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Records exactly as format 1 (the version before webhooks had `ordering`) wrote them: a webhook,
    /// a change to it, and the last variant format 1 knew.
    #[test]
    fn format_1_records_still_decode() {
        let at = Timestamp::from_millis(1_795_000_000_123);
        let id: WebhookId = "wh_01jdq3v8x6m0s4r2k9p7n5b3c1".parse().unwrap();
        let created = decode(&unhex(
            "0192bd64fc011d77685f30316a647133763878366d30733472326b3970376e35623363310b6163635f6465\
             6661756c741968747470733a2f2f6578616d706c652e636f6d2f686f6f6b730343524d01010e636f6e7461\
             63742e637265617465642677687365635f4d664b51397238474b59717254776a55504438494c505a496f32\
             4c614c615377000000fdf6bcacdc43030000fdf6bcacdc43030000",
        ));
        let Ok(Record::WebhookCreated(w)) = created else {
            panic!("{created:?}");
        };
        assert_eq!(
            (w.id.clone(), w.url.as_str(), w.rate_limit, w.created_at),
            (id.clone(), "https://example.com/hooks", 100, at)
        );
        assert_eq!(w.filter_types, Some(vec![EventType::ContactCreate]));
        assert_eq!(w.ordering, buildr_core::DeliveryOrder::Parallel);
        assert_eq!(
            decode(&unhex(
                "014360f3e7021d77685f30316a647133763878366d30733472326b3970376e3562336331000000010700\
                 01010102fdf6bcacdc43030000"
            )),
            Ok(Record::WebhookUpdated {
                id: id.clone(),
                changes: WebhookChanges {
                    rate_limit: Some(7),
                    disabled: Some((true, Some(DisabledReason::Manual))),
                    ..WebhookChanges::default()
                },
                at,
            })
        );
        assert_eq!(
            decode(&unhex(
                "010e5eb1c30b1d77685f30316a647133763878366d30733472326b3970376e35623363312a28fdf6\
                 bcacdc43030000"
            )),
            Ok(Record::DeliveryRestarted {
                webhook: id,
                seq: 42,
                replay: 40,
                at
            })
        );
    }

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
