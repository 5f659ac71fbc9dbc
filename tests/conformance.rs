//! The Standard Webhooks signing vectors (tests/data/standard-webhooks-vectors.json, from the reference
//! libraries' tests; see tests/data/README.md), against our signer and verifier.
#![allow(clippy::unwrap_used)]

use buildr_core::signing::{sign, verify};
use buildr_core::Secret;
use serde_json::Value;

#[test]
fn standard_webhooks_vectors_pass_signer_and_verifier() {
    let path = buildr_e2e::repo_root().join("tests/data/standard-webhooks-vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let tol = v["tolerance_seconds"].as_i64().unwrap();
    let positives = v["positive"].as_array().unwrap();
    assert!(!positives.is_empty());
    for p in positives {
        let key = Secret::parse(p["secret"].as_str().unwrap()).unwrap();
        let (id, ts, body) = (
            p["msg_id"].as_str().unwrap(),
            p["timestamp"].as_i64().unwrap(),
            p["payload"].as_str().unwrap(),
        );
        assert_eq!(
            sign(key.key(), id, ts, body.as_bytes()),
            p["signature"].as_str().unwrap()
        );
        assert!(verify(
            key.key(),
            id,
            ts,
            ts,
            tol,
            body.as_bytes(),
            p["signature"].as_str().unwrap()
        )
        .is_ok());
        assert!(verify(
            key.key(),
            id,
            ts,
            ts + tol + 1,
            tol,
            body.as_bytes(),
            p["signature"].as_str().unwrap()
        )
        .is_err());
    }
    let first = &positives[0];
    let key = Secret::parse(first["secret"].as_str().unwrap()).unwrap();
    for d in v["negative_decoys"].as_array().unwrap() {
        let ts = first["timestamp"].as_i64().unwrap();
        let r = verify(
            key.key(),
            first["msg_id"].as_str().unwrap(),
            ts,
            ts,
            tol,
            first["payload"].as_str().unwrap().as_bytes(),
            d.as_str().unwrap(),
        );
        assert!(r.is_err(), "decoy {d} must be rejected");
    }
}
