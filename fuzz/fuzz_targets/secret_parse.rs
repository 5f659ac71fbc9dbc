//! `buildr_core::Secret::parse` (and the API key prefix parser) on any string: never a panic, and what
//! parses keeps its promises (the text round-trips; a `whsec_` key is 24–75 bytes).
#![no_main]

use buildr_core::{api_key, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(secret) = Secret::parse(text) {
        assert_eq!(secret.as_str(), text);
        assert!(!secret.key().is_empty());
        if text.starts_with("whsec_") {
            assert!((24..=75).contains(&secret.key().len()));
        } else {
            assert_eq!(secret.key(), text.as_bytes());
        }
        assert!(Secret::parse(secret.as_str()).is_ok_and(|again| again == secret));
    }
    if let Some(prefix) = api_key::prefix_of(text) {
        assert!(text.starts_with(prefix));
        assert_eq!(prefix.len(), api_key::KEY_PREFIX_LEN);
    }
    let _ = api_key::is_prefix(text);
});
