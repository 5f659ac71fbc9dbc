//! Webhook signing secrets: `whsec_` + base64 of 24–75 bytes (the key is the decoded bytes), or any other
//! string of 6–256 printable ASCII characters (the key is its bytes: receivers verify in "raw" format).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;

pub const WHSEC_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret starting with `whsec_` must be base64 of 24 to 75 bytes after the prefix")]
    BadWhsec,
    #[error("a secret must be 6 to 256 printable ASCII characters without spaces (0x21-0x7E), or `whsec_` followed by base64")]
    BadRaw,
}

/// A signing secret: the HMAC key, and which of the two forms the customer gave it in. Only the key is
/// kept (a webhook's secret was its text and its key, ~120 bytes per webhook); the text is made again
/// when shown, and is the same text: a `whsec_` secret is accepted only in canonical base64 (padded,
/// no stray bits), so encoding its key gives back what was given, and a raw secret's key is its text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Secret {
    key: Box<[u8]>,
    whsec: bool,
}

impl Secret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if let Some(b64) = text.strip_prefix(WHSEC_PREFIX) {
            let key = STANDARD.decode(b64).map_err(|_| SecretError::BadWhsec)?;
            if !(24..=75).contains(&key.len()) {
                return Err(SecretError::BadWhsec);
            }
            return Ok(Self {
                key: key.into(),
                whsec: true,
            });
        }
        let ok_len = (6..=256).contains(&text.len());
        if !ok_len || !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(SecretError::BadRaw);
        }
        Ok(Self {
            key: text.as_bytes().into(),
            whsec: false,
        })
    }

    /// `whsec_` + base64 of 24 random bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 24];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            key: key.into(),
            whsec: true,
        }
    }

    /// The secret as the customer gave it (or as it was generated).
    pub fn text(&self) -> String {
        if self.whsec {
            format!("{WHSEC_PREFIX}{}", STANDARD.encode(&self.key))
        } else {
            // A raw secret's key is its text: printable ASCII, checked when parsed.
            String::from_utf8_lossy(&self.key).into_owned()
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl TryFrom<String> for Secret {
    type Error = SecretError;
    fn try_from(s: String) -> Result<Self, SecretError> {
        Secret::parse(&s)
    }
}

impl From<Secret> for String {
    fn from(s: Secret) -> String {
        s.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whsec_secrets_decode_to_their_key() {
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(s.key().len(), 24);
        assert!(Secret::parse("whsec_notbase64!!").is_err());
        assert!(Secret::parse("whsec_AAAA").is_err(), "3 bytes is too short");
        assert!(Secret::parse(&format!("whsec_{}", STANDARD.encode([0u8; 76]))).is_err());
    }

    #[test]
    fn raw_secrets_are_their_bytes() {
        let s = Secret::parse("secret").expect("valid");
        assert_eq!(s.key(), b"secret");
        assert!(Secret::parse("short").is_err());
        assert!(Secret::parse("has space").is_err());
        assert!(Secret::parse("héllo-world").is_err());
        assert!(Secret::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn generated_secrets_parse() {
        let g = Secret::generate();
        assert!(g.text().starts_with("whsec_"));
        assert_eq!(Secret::parse(&g.text()).ok(), Some(g));
    }

    #[test]
    fn the_text_shown_is_the_text_given() {
        for len in 24..=75 {
            let key: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let text = format!("whsec_{}", STANDARD.encode(&key));
            let s = Secret::parse(&text).expect("valid");
            assert_eq!(s.text(), text);
            assert_eq!(s.key(), key.as_slice());
            // The same key in a form that is not canonical (padding dropped, stray bits set) is refused,
            // so no accepted text is shown back differently.
            let unpadded = text.trim_end_matches('=');
            if unpadded != text {
                assert!(Secret::parse(unpadded).is_err(), "{unpadded}");
            }
        }
        // 25 bytes end in one byte and two `=`: its quad's second digit has four bits that must be 0.
        let zeros = STANDARD.encode([0u8; 25]);
        assert!(zeros.ends_with("AA=="));
        let stray = format!("whsec_{}B==", &zeros[..zeros.len() - 3]);
        assert!(Secret::parse(&stray).is_err(), "{stray}");
        let raw = Secret::parse("my-s3cret!~").expect("valid");
        assert_eq!(raw.text(), "my-s3cret!~");
        let json = serde_json::to_string(&raw).expect("encodes");
        assert_eq!(json, "\"my-s3cret!~\"");
    }
}
