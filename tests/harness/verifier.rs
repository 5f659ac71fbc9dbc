//! Runs the independent verifier (`tests/verifier/verify.mjs`, the svix npm package) over received
//! requests, and a second, raw HMAC check written here from the Standard Webhooks text.

use crate::receiver::Received;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::process::Command;

/// Verifies each request with svix's `Webhook.verify`; `raw` selects `{format: "raw"}` for non-whsec
/// secrets. Returns one `Ok(())` or `Err(message)` per request.
pub fn svix_verify(secret: &str, raw: bool, received: &[Received]) -> Vec<Result<(), String>> {
    let dir = crate::repo_root().join("tests/verifier");
    assert!(
        dir.join("node_modules/svix").exists(),
        "the svix verifier is not installed: run `make test` (it runs npm ci in tests/verifier)"
    );
    let cases: Vec<Value> = received
        .iter()
        .map(|r| {
            json!({
                "secret": secret,
                "raw": raw,
                "headers": {
                    "svix-id": r.header("svix-id"),
                    "svix-timestamp": r.header("svix-timestamp"),
                    "svix-signature": r.header("svix-signature"),
                    "webhook-id": r.header("webhook-id"),
                    "webhook-timestamp": r.header("webhook-timestamp"),
                    "webhook-signature": r.header("webhook-signature"),
                },
                "body": r.body,
            })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&cases).unwrap()).unwrap();
    let out = Command::new("node")
        .arg(dir.join("verify.mjs"))
        .arg(file.path())
        .output()
        .expect("node is required");
    assert!(
        out.status.success(),
        "verifier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| {
            if r["ok"] == Value::Bool(true) {
                Ok(())
            } else {
                Err(r["error"].as_str().unwrap_or("?").to_owned())
            }
        })
        .collect()
}

/// HMAC-SHA256 over "{id}.{timestamp}.{body}" with `key`, base64, as `v1,…`; true when one of the
/// header's signatures equals it.
pub fn hmac_matches(key: &[u8], r: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.body
        )
        .as_bytes(),
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}
